//! `lang-agent eval`: grades the box against a dataset, or (`--from-log`) makes a dataset from
//! the conversation log.
//!
//! A run takes `serve`'s options and builds the very pipeline `serve` answers with
//! ([`Pipeline::build`]) over a store of its own, `DIR/runs/<stamp>.sqlite3`, so its
//! conversations can be read with `lang-agent viewer --db` and the box's own log is never
//! touched. The rows, the judge and the reports are `eval/`. It exits non-zero only when the
//! dataset cannot be read, holds no row, or no row's turn finished; bad lines are reported on
//! stderr as `DATASET:LINE: reason` and counted.

use std::path::{Path, PathBuf};

use crate::cli::EvalArgs;
use crate::commands::pipeline::{Pipeline, PipelineError};
use crate::config::{Config, ServeConfig};
use crate::eval::dataset::Dataset;
use crate::eval::from_log::{self, FromLogError};
use crate::eval::judge::Judge;
use crate::eval::report::{self, RunSummary};
use crate::eval::run;
use crate::llm::{LlmClient, LlmError};
use crate::logging::{console_line, error_line};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Why `eval` failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read the dataset {path}: {source}")]
    Dataset {
        path: String,
        source: std::io::Error,
    },
    #[error("the dataset {0} holds no row to run")]
    NoRows(String),
    #[error("cannot write {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the run's store: {0}")]
    Store(StoreError),
    #[error("cannot build the turn pipeline: {0}")]
    Pipeline(#[from] PipelineError),
    #[error("cannot reach the judge: {0}")]
    Judge(#[from] LlmError),
    #[error("cannot read the judge prompt: {0}")]
    JudgePrompt(std::io::Error),
    #[error("no row ran: every turn failed (line {line}: {reason})")]
    NoRowRan { line: usize, reason: String },
    #[error("no conversation log at {0}")]
    NoLog(String),
    #[error(transparent)]
    FromLog(#[from] FromLogError),
}

fn output_error(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Output {
        path: path.display().to_string(),
        source,
    }
}

/// Runs the dataset of `args` through the pipeline `config` and `serve` describe.
pub async fn run(config: Config, serve: ServeConfig, args: &EvalArgs) -> Result<(), EvalError> {
    let dataset_path = args
        .dataset
        .clone()
        .expect("clap requires DATASET without --from-log");
    let shown = dataset_path.display().to_string();
    let text = std::fs::read_to_string(&dataset_path).map_err(|source| EvalError::Dataset {
        path: shown.clone(),
        source,
    })?;
    let dataset = Dataset::parse(&text);
    for bad in &dataset.bad_lines {
        error_line(format_args!("{shown}:{}: {}", bad.line, bad.reason));
    }
    if dataset.rows.is_empty() {
        return Err(EvalError::NoRows(shown));
    }

    let now = chrono::Utc::now();
    let stamp = now.format("%Y%m%dT%H%M%S%3fZ").to_string();
    let out = &args.out;
    std::fs::create_dir_all(out).map_err(output_error(out))?;
    let run_db = out.join("runs").join(format!("{stamp}.sqlite3"));
    let store = Store::open(&run_db).map_err(EvalError::Store)?;
    let pipeline = Pipeline::build(&config, &serve, store, Metrics::new(false)).await?;
    let judge_model = args
        .judge_model
        .clone()
        .unwrap_or_else(|| config.llm.model.clone());
    let prompt = Judge::load_prompt(&config.config_dir).map_err(EvalError::JudgePrompt)?;
    let judge = Judge::new(LlmClient::new(&config.llm)?, judge_model, prompt);

    error_line(format_args!(
        "eval: {} rows of {shown}, {} at a time; conversations in {}",
        dataset.rows.len(),
        args.concurrency,
        run_db.display()
    ));
    let results = run::run_rows(
        &pipeline.turns,
        &judge,
        dataset.rows,
        args.concurrency as usize,
    )
    .await;

    let csv = report::write_rows(out, &stamp, &results).map_err(output_error(out))?;
    let summary = RunSummary::of(
        crate::store::timestamp(now),
        shown,
        dataset.bad_lines.len(),
        &results,
        judge.model().to_string(),
        config.llm.model.clone(),
    );
    let history = report::append_history(out, &summary)
        .map_err(|e| output_error(&report::history_path(out))(e))?;
    console_line(format_args!("{}", summary.table(&results, &csv, &history)));
    match results.iter().find(|r| !r.ran) {
        Some(failed) if results.iter().all(|r| !r.ran) => Err(EvalError::NoRowRan {
            line: failed.line,
            reason: failed.reason.clone(),
        }),
        _ => Ok(()),
    }
}

/// `eval --from-log`: writes the log's finished turns as a dataset to `--out FILE`.
pub async fn make_dataset(config: &Config, args: &EvalArgs) -> Result<(), EvalError> {
    let db = config.sqlite_path();
    if !db.exists() {
        return Err(EvalError::NoLog(db.display().to_string()));
    }
    let store = Store::open(&db).map_err(EvalError::Store)?;
    let out: &PathBuf = &args.out;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(output_error(parent))?;
    }
    let rows = from_log::write_dataset(&store, args.since, args.until, out).await?;
    console_line(format_args!(
        "wrote {rows} rows from {} to {}",
        db.display(),
        out.display()
    ));
    Ok(())
}

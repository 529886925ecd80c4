//! `lang-agent stress`: runs the levels of `stress/` one after another with a progress bar
//! each (stderr; indicatif hides it when stderr is not a terminal), then prints the table to
//! stdout and writes the JSON and chart files asked for.
//!
//! The exit status is the verdict: any failed request makes it non-zero, after the table is
//! printed, so a script or a test can use the command as a check.

use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::StressArgs;
use crate::stress::{self, LevelFigures, Outcome, Report, Runner, StressError, Target};

pub async fn run(args: &StressArgs) -> Result<(), StressError> {
    let levels = stress::pair_levels(&args.concurrency, &args.requests)?;
    let runner = Runner::new(Target {
        url: args.url.trim_end_matches('/').to_string(),
        api: args.api,
        key: args.key.clone(),
        prompt: args.prompt.clone(),
        stream: args.stream,
        timeout: std::time::Duration::from_secs(args.timeout_secs),
    })?;
    match runner.server_pid() {
        Some(pid) => eprintln!("stress: {} (server process {pid})", args.url),
        None => eprintln!("stress: {} (server memory not measured)", args.url),
    }

    let mut figures: Vec<LevelFigures> = Vec::new();
    for (index, level) in levels.iter().enumerate() {
        let bar = level_bar(level.concurrency, level.requests);
        let shown = bar.clone();
        let on_done = Arc::new(move |outcome: &Outcome| {
            if outcome.error.is_some() {
                shown.set_message("failures");
            }
            shown.inc(1);
        });
        figures.push(runner.run_level(index, *level, on_done).await);
        bar.finish();
    }

    print!("{}", stress::table::render(&figures));
    for level in figures.iter().filter(|f| f.failed > 0) {
        eprintln!(
            "concurrency {}: {} failed: {}",
            level.concurrency,
            level.failed,
            level.errors.join("; ")
        );
    }
    if let Some(path) = &args.json {
        let report = Report {
            url: &args.url,
            api: args.api,
            stream: args.stream,
            levels: &figures,
        };
        let json = serde_json::to_string_pretty(&report).expect("figures serialize");
        stress::write_file(path, &json)?;
    }
    if let Some(path) = &args.chart {
        let title = format!(
            "lang-agent stress: {} {}",
            serde_json::to_value(args.api)
                .expect("api serializes")
                .as_str()
                .unwrap_or(""),
            if args.stream {
                "streaming"
            } else {
                "whole answers"
            },
        );
        let svg = stress::chart::render_svg(&figures, &title).map_err(StressError::Chart)?;
        stress::write_file(path, &svg)?;
    }
    let failed: usize = figures.iter().map(|f| f.failed).sum();
    let total: usize = figures.iter().map(|f| f.requests).sum();
    if failed > 0 {
        return Err(StressError::Failures { failed, total });
    }
    Ok(())
}

fn level_bar(concurrency: usize, requests: usize) -> ProgressBar {
    let bar = ProgressBar::new(requests as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "concurrency {prefix:>5} {bar:30} {pos}/{len} requests  {elapsed}  {msg}",
        )
        .expect("static template"),
    );
    bar.set_prefix(concurrency.to_string());
    bar
}

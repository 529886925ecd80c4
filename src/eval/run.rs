//! Running a dataset: each row is one turn through the box's own turn pipeline (the
//! [`TurnRunner`] `serve` answers with), on a thread of its own, then graded.
//!
//! Rows run at most `concurrency` at a time (`futures`' `buffer_unordered`), so a big dataset
//! neither floods the upstream nor takes all night; results come back in line order. A bar on
//! stderr shows how far the run is (hidden when stderr is not a terminal). A turn that fails
//! is a result too (verdict `error`, its reason the error), never the end of the run.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::dataset::{DatasetRow, Route};
use super::judge::Judge;
use super::report::{RowResult, join_tools};
use crate::agent::TurnOptions;
use crate::agent::turns::{ThreadChoice, TurnRequest, TurnRunner};
use crate::llm::ChatMessage;
use crate::store::Origin;

/// The verdict of a row whose turn failed: there is no answer to judge.
pub const TURN_FAILED: &str = "error";

/// Runs every row, `concurrency` at a time, and grades each; results in line order.
pub async fn run_rows(
    turns: &Arc<TurnRunner>,
    judge: &Judge,
    rows: Vec<DatasetRow>,
    concurrency: usize,
) -> Vec<RowResult> {
    let bar = progress_bar(rows.len() as u64);
    let mut results: Vec<RowResult> = futures::stream::iter(rows)
        .map(|row| {
            let bar = &bar;
            async move {
                let result = run_row(turns, judge, row).await;
                bar.inc(1);
                result
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    results.sort_by_key(|r| r.line);
    results
}

/// The thread a row's turn runs on: its own, named by its line, so the run's store shows
/// one conversation per row.
pub fn thread_of(line: usize) -> String {
    format!("eval-line-{line}")
}

async fn run_row(turns: &Arc<TurnRunner>, judge: &Judge, row: DatasetRow) -> RowResult {
    let started = Instant::now();
    let handle = turns.start(TurnRequest {
        thread: ThreadChoice::Remember(thread_of(row.line)),
        resent: Vec::new(),
        new_messages: vec![ChatMessage::user(row.question.clone())],
        options: TurnOptions::default(),
        session: None,
        profile: Arc::clone(turns.profiles().default_profile()),
        origin: Origin::Api,
    });
    let (answer, end) = handle.collect().await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let mut result = RowResult {
        line: row.line,
        question: row.question.clone(),
        expected_answer: row.expected_answer.clone().unwrap_or_default(),
        answer,
        expected_route: row.expected_route.map(Route::as_str).unwrap_or("").into(),
        route: String::new(),
        route_ok: None,
        expected_tools: row
            .expected_tools
            .as_deref()
            .map(join_tools)
            .unwrap_or_default(),
        tools: String::new(),
        tools_ok: None,
        verdict: String::new(),
        reason: String::new(),
        latency_ms,
        ran: false,
    };
    let summary = match end {
        Ok(summary) => summary,
        Err(error) => {
            // Nothing the turn did can be graded: every expectation it had is missed.
            result.route_ok = row.expected_route.map(|_| false);
            result.tools_ok = row.expected_tools.as_ref().map(|_| false);
            result.verdict = TURN_FAILED.into();
            result.reason = error.to_string();
            return result;
        }
    };
    result.ran = true;
    let called = summary.tools_called;
    let route = Route::taken(&called);
    result.route = route.as_str().into();
    result.route_ok = row.expected_route.map(|expected| expected == route);
    result.tools = join_tools(&called);
    result.tools_ok = row
        .expected_tools
        .as_ref()
        .map(|expected| expected.iter().all(|tool| called.contains(tool)));
    if let Some(expected) = &row.expected_answer {
        let verdict = judge.grade(&row.question, expected, &result.answer).await;
        result.verdict = verdict.kind.as_str().into();
        result.reason = verdict.reason;
    }
    result
}

fn progress_bar(rows: u64) -> ProgressBar {
    // indicatif draws on stderr only when it is a terminal.
    let bar = ProgressBar::new(rows);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} rows  {elapsed}  eta {eta}")
            .expect("static template"),
    );
    bar
}

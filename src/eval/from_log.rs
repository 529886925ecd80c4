//! The dataset maker (`eval --from-log`): the log's finished turns, between two dates, as a
//! dataset to grade later changes against.
//!
//! Each turn becomes one line: its user message as `inputs.text`, the logged answer as
//! `outputs.answer`, the tools it called as `outputs.tool_use`, and `route` `tool` when it
//! called any, else `chat`. The dates are UTC days, both included.

use std::io::Write as _;
use std::path::Path;

use chrono::NaiveDate;

use super::dataset::{DatasetLine, Inputs, Outputs, Route};
use crate::store::{AnsweredTurn, Store, StoreError};

/// Why the dataset could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FromLogError {
    #[error("reading the log: {0}")]
    Store(#[from] StoreError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The dataset line of a logged turn.
pub fn dataset_line(turn: AnsweredTurn) -> DatasetLine {
    let route = Route::taken(&turn.tools);
    DatasetLine {
        inputs: Inputs {
            text: turn.question,
        },
        outputs: Outputs {
            answer: Some(turn.answer),
            tool_use: Some(turn.tools),
        },
        route: Some(route),
    }
}

/// Writes the turns of `store` started on `since` … `until` (UTC days, both included) to
/// `out` as JSON Lines; returns how many lines were written. An existing `out` is replaced.
pub async fn write_dataset(
    store: &Store,
    since: Option<NaiveDate>,
    until: Option<NaiveDate>,
    out: &Path,
) -> Result<usize, FromLogError> {
    let since = since.map(|day| day.format("%Y-%m-%d").to_string());
    // Stored times sort as text: everything before the next day's midnight.
    let until = until
        .and_then(|day| day.succ_opt())
        .map(|day| day.format("%Y-%m-%d").to_string());
    let turns = store.answered_turns(since, until).await?;
    let mut text = String::new();
    let count = turns.len();
    for turn in turns {
        let line = serde_json::to_string(&dataset_line(turn)).expect("plain data serializes");
        text.push_str(&line);
        text.push('\n');
    }
    let written = std::fs::File::create(out).and_then(|mut f| f.write_all(text.as_bytes()));
    written.map_err(|source| FromLogError::Write {
        path: out.display().to_string(),
        source,
    })?;
    Ok(count)
}

//! What a run leaves behind: `DIR/eval-<UTC timestamp>.csv` with one row per dataset row,
//! one summary row appended to `DIR/history.csv` (its header written when the file is new),
//! and a summary table on stdout.
//!
//! An accuracy is the share of the rows that expected something and got it: route accuracy
//! over rows with an expected route, tool accuracy over rows with `tool_use`, answer accuracy
//! (`correct` verdicts) over rows with an expected answer. A turn that failed counts as a miss
//! for each. An accuracy with nothing to grade is left empty.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One graded dataset row: a line of the run's CSV, columns in this order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowResult {
    pub line: usize,
    pub question: String,
    pub expected_answer: String,
    pub answer: String,
    pub expected_route: String,
    pub route: String,
    /// Empty when the row expected no route.
    pub route_ok: Option<bool>,
    pub expected_tools: String,
    pub tools: String,
    /// Empty when the row had no `tool_use`.
    pub tools_ok: Option<bool>,
    /// `correct`, `incorrect`, `unknown`, `error` (the turn failed), or empty (not judged).
    pub verdict: String,
    pub reason: String,
    pub latency_ms: u64,
    /// The turn finished (whatever its grades).
    #[serde(skip)]
    pub ran: bool,
}

/// Tool names as one CSV cell.
pub fn join_tools(tools: &[String]) -> String {
    tools.join(";")
}

/// One row of `history.csv`: a run's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub timestamp: String,
    pub dataset: String,
    /// Dataset rows run (bad lines not counted).
    pub rows: usize,
    /// Dataset lines that could not be read.
    pub errors: usize,
    pub route_accuracy: Option<Accuracy>,
    pub tool_accuracy: Option<Accuracy>,
    pub answer_accuracy: Option<Accuracy>,
    pub judge_model: String,
    pub chat_model: String,
}

/// Hits out of graded rows; written as a fraction with three decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accuracy {
    pub hits: usize,
    pub graded: usize,
}

impl Accuracy {
    /// Of `grades` (one per row that expected something), the share that is true; `None` when
    /// there are none.
    fn of(grades: impl Iterator<Item = bool>) -> Option<Accuracy> {
        let (hits, graded) = grades.fold((0, 0), |(h, g), ok| (h + usize::from(ok), g + 1));
        (graded > 0).then_some(Accuracy { hits, graded })
    }

    pub fn ratio(self) -> f64 {
        self.hits as f64 / self.graded as f64
    }
}

impl Serialize for Accuracy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:.3}", self.ratio()))
    }
}

impl RunSummary {
    /// The figures of `results`.
    pub fn of(
        timestamp: String,
        dataset: String,
        errors: usize,
        results: &[RowResult],
        judge_model: String,
        chat_model: String,
    ) -> RunSummary {
        RunSummary {
            timestamp,
            dataset,
            rows: results.len(),
            errors,
            route_accuracy: Accuracy::of(results.iter().filter_map(|r| r.route_ok)),
            tool_accuracy: Accuracy::of(results.iter().filter_map(|r| r.tools_ok)),
            answer_accuracy: Accuracy::of(
                results
                    .iter()
                    .filter(|r| !r.expected_answer.is_empty())
                    .map(|r| r.verdict == "correct"),
            ),
            judge_model,
            chat_model,
        }
    }

    /// The table printed at the end of a run.
    pub fn table(&self, results: &[RowResult], csv: &Path, history: &Path) -> String {
        let failed = results.iter().filter(|r| !r.ran).count();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "eval of {}: {} rows ({} bad lines, {} failed turns); chat model {}, judge {}",
            self.dataset, self.rows, self.errors, failed, self.chat_model, self.judge_model
        );
        let _ = writeln!(
            out,
            "{:<8} {:>6} {:>6} {:>9}",
            "", "graded", "ok", "accuracy"
        );
        for (name, accuracy) in [
            ("route", self.route_accuracy),
            ("tools", self.tool_accuracy),
            ("answer", self.answer_accuracy),
        ] {
            let _ = match accuracy {
                Some(a) => writeln!(
                    out,
                    "{name:<8} {:>6} {:>6} {:>9.3}",
                    a.graded,
                    a.hits,
                    a.ratio()
                ),
                None => writeln!(out, "{name:<8} {:>6} {:>6} {:>9}", 0, 0, "-"),
            };
        }
        let _ = writeln!(out, "rows:    {}", csv.display());
        let _ = write!(out, "history: {}", history.display());
        out
    }
}

/// Writes the run's rows to a new `DIR/eval-<timestamp>.csv`; returns its path.
pub fn write_rows(dir: &Path, stamp: &str, results: &[RowResult]) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("eval-{stamp}.csv"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let mut writer = csv::Writer::from_writer(file);
    for result in results {
        writer.serialize(result).map_err(std::io::Error::other)?;
    }
    writer.flush()?;
    Ok(path)
}

/// The file of every run's summary, in `dir`.
pub fn history_path(dir: &Path) -> PathBuf {
    dir.join("history.csv")
}

/// Appends `summary` to `DIR/history.csv`, with the header first when the file is new.
pub fn append_history(dir: &Path, summary: &RunSummary) -> std::io::Result<PathBuf> {
    let path = history_path(dir);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)?;
    let new = file.metadata()?.len() == 0;
    let mut writer = csv::WriterBuilder::new()
        .has_headers(new)
        .from_writer(Vec::new());
    writer.serialize(summary).map_err(std::io::Error::other)?;
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    // One write: a row is never split by another run appending at the same time.
    file.write_all(&bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(line: usize, route_ok: Option<bool>, verdict: &str, expected: &str) -> RowResult {
        RowResult {
            line,
            question: format!("q{line}"),
            expected_answer: expected.into(),
            answer: "a".into(),
            expected_route: String::new(),
            route: "chat".into(),
            route_ok,
            expected_tools: String::new(),
            tools: String::new(),
            tools_ok: None,
            verdict: verdict.into(),
            reason: String::new(),
            latency_ms: 1,
            ran: verdict != "error",
        }
    }

    #[test]
    fn accuracies_count_only_rows_that_expected_something() {
        let results = [
            result(1, Some(true), "correct", "x"),
            result(2, Some(false), "incorrect", "y"),
            result(3, None, "", ""),
            result(4, Some(true), "error", "z"),
        ];
        let s = RunSummary::of("t".into(), "d".into(), 1, &results, "j".into(), "c".into());
        assert_eq!(s.rows, 4);
        assert_eq!(s.route_accuracy, Some(Accuracy { hits: 2, graded: 3 }));
        assert_eq!(s.tool_accuracy, None);
        assert_eq!(s.answer_accuracy, Some(Accuracy { hits: 1, graded: 3 }));
        let table = s.table(&results, Path::new("r.csv"), Path::new("h.csv"));
        assert!(
            table.contains("route         3      2     0.667"),
            "{table}"
        );
        assert!(
            table.contains("tools         0      0         -"),
            "{table}"
        );
        assert!(table.contains("1 failed turns"), "{table}");
    }

    #[test]
    fn history_gets_its_header_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = RunSummary::of("t".into(), "d".into(), 0, &[], "j".into(), "c".into());
        append_history(dir.path(), &s).unwrap();
        append_history(dir.path(), &s).unwrap();
        let text = std::fs::read_to_string(history_path(dir.path())).unwrap();
        assert_eq!(
            text,
            "timestamp,dataset,rows,errors,route_accuracy,tool_accuracy,answer_accuracy,judge_model,chat_model\n\
             t,d,0,0,,,,j,c\n\
             t,d,0,0,,,,j,c\n"
        );
    }
}

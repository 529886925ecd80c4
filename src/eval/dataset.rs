//! The evaluation dataset: JSON Lines in the original system's evaluation-set shape,
//! `{"inputs":{"text":…},"outputs":{"answer":…,"tool_use":["tool_name"]},"route":"chat"|"tool"}`.
//!
//! Each line is one question. Everything but `inputs.text` is optional: a row without an
//! expected answer is not judged, one without `tool_use` is not graded on tools, and the
//! expected route is `route` when given, else `tool` when `tool_use` names a tool and `chat`
//! when it is an empty list. A line that cannot be read is reported with its number and
//! skipped, so one typo does not cost the whole run. `eval --from-log` writes the same shape.

use serde::{Deserialize, Serialize};

/// Which branch of the route graph answers a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Chat,
    Tool,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Chat => "chat",
            Route::Tool => "tool",
        }
    }

    /// The route a turn that called `tools` took.
    pub fn taken(tools: &[String]) -> Route {
        if tools.is_empty() {
            Route::Chat
        } else {
            Route::Tool
        }
    }
}

/// One line of a dataset file, as written (and as `--from-log` writes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetLine {
    pub inputs: Inputs,
    #[serde(default)]
    pub outputs: Outputs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outputs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use: Option<Vec<String>>,
}

/// A question to run, with what is expected of its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRow {
    /// The line of the file it came from (1-based), which names it in the results.
    pub line: usize,
    pub question: String,
    pub expected_answer: Option<String>,
    pub expected_route: Option<Route>,
    pub expected_tools: Option<Vec<String>>,
}

/// A line that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// A dataset file's rows and the lines that were not rows.
#[derive(Debug, Default)]
pub struct Dataset {
    pub rows: Vec<DatasetRow>,
    pub bad_lines: Vec<BadLine>,
}

impl Dataset {
    /// Reads JSON Lines text; blank lines are skipped, every other line is a row or a bad line.
    pub fn parse(text: &str) -> Dataset {
        let mut dataset = Dataset::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if raw.trim().is_empty() {
                continue;
            }
            match parse_line(raw) {
                Ok(parsed) => dataset.rows.push(parsed.into_row(line)),
                Err(reason) => dataset.bad_lines.push(BadLine { line, reason }),
            }
        }
        dataset
    }
}

fn parse_line(raw: &str) -> Result<DatasetLine, String> {
    let parsed: DatasetLine = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    if parsed.inputs.text.trim().is_empty() {
        return Err("inputs.text is empty".into());
    }
    Ok(parsed)
}

impl DatasetLine {
    fn into_row(self, line: usize) -> DatasetRow {
        let expected_route = self.route.or_else(|| {
            let tools = self.outputs.tool_use.as_ref()?;
            Some(Route::taken(tools))
        });
        DatasetRow {
            line,
            question: self.inputs.text,
            expected_answer: self.outputs.answer.filter(|a| !a.trim().is_empty()),
            expected_route,
            expected_tools: self.outputs.tool_use,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rows_and_reports_bad_lines_by_number() {
        let text = r#"{"inputs":{"text":"hi"},"outputs":{"answer":"hello","tool_use":[]}}

{"inputs":{"text":"6*7?"},"outputs":{"answer":"42","tool_use":["calculator"]}}
not json
{"inputs":{"text":"just ask"}}
{"inputs":{"text":"  "}}
{"inputs":{"text":"routed"},"outputs":{"tool_use":["calculator"]},"route":"chat"}
{"outputs":{"answer":"no question"}}
"#;
        let dataset = Dataset::parse(text);
        let lines: Vec<usize> = dataset.rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [1, 3, 5, 7]);
        assert_eq!(dataset.rows[0].expected_route, Some(Route::Chat));
        assert_eq!(dataset.rows[0].expected_answer.as_deref(), Some("hello"));
        assert_eq!(dataset.rows[1].expected_route, Some(Route::Tool));
        assert_eq!(
            dataset.rows[1].expected_tools,
            Some(vec!["calculator".to_string()])
        );
        // Nothing expected: nothing graded but the answer's existence.
        assert_eq!(dataset.rows[2].expected_route, None);
        assert_eq!(dataset.rows[2].expected_answer, None);
        assert_eq!(dataset.rows[2].expected_tools, None);
        // An explicit route wins over the one tool_use implies.
        assert_eq!(dataset.rows[3].expected_route, Some(Route::Chat));
        let bad: Vec<usize> = dataset.bad_lines.iter().map(|b| b.line).collect();
        assert_eq!(bad, [4, 6, 8]);
        assert!(dataset.bad_lines[1].reason.contains("empty"));
        assert!(dataset.bad_lines[2].reason.contains("inputs"));
    }

    #[test]
    fn a_written_line_reads_back() {
        let line = DatasetLine {
            inputs: Inputs { text: "q".into() },
            outputs: Outputs {
                answer: Some("a".into()),
                tool_use: Some(vec!["calculator".into()]),
            },
            route: Some(Route::Tool),
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            r#"{"inputs":{"text":"q"},"outputs":{"answer":"a","tool_use":["calculator"]},"route":"tool"}"#
        );
        assert_eq!(serde_json::from_str::<DatasetLine>(&text).unwrap(), line);
    }
}

//! Tools the models may call: the local ones compiled in ([`local`]) and those of MCP servers
//! ([`mcp`]), gathered in one [`Toolbox`].
//!
//! The toolbox is what the tool loop sees: the tools as OpenAI function definitions and one
//! `call`. It hides where a tool lives, and it keeps three promises the loop relies on:
//! - a tool call always ends, within its timeout (`--tool-timeout-secs`, or a server's own
//!   `timeout`), and a failure is a [`ToolError`] the model can read, never a failed turn;
//! - two sources offering the same tool name are told apart by a source-name prefix
//!   (`kitchen_set_volume`, `porch_set_volume`), so the model can pick either;
//! - a tool whose input schema has `device_id` gets the turn's device injected when the session
//!   names one, and the model is not shown that parameter: it cannot pick the wrong device;
//! - what a tool answers (result or error text) is at most [`MAX_TOOL_RESULT_BYTES`]: a longer
//!   one is cut, with a note saying so, before the model or the log sees it.

pub mod local;
pub mod mcp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::metrics::{Metrics, UNKNOWN_TOOL};

/// The parameter a device-bound tool takes its device from.
pub const DEVICE_ID_PARAM: &str = "device_id";

/// `--tool-timeout-secs`' default: the time limit of one tool call, seconds.
pub const DEFAULT_TOOL_TIMEOUT_SECS: u64 = 20;

/// Longest tool answer, in bytes, passed to the model and the log (note included).
pub const MAX_TOOL_RESULT_BYTES: usize = 64 * 1024;

/// A tool as its source describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub input_schema: Value,
}

/// Why a tool call produced no result. The text goes to the model as the tool's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("there is no tool named {0:?}")]
    Unknown(String),
    #[error("the arguments are not a JSON object: {0}")]
    BadArguments(String),
    #[error("the tool failed: {0}")]
    Failed(String),
    #[error("the tool did not answer within {} seconds", .0.as_secs_f64())]
    TimedOut(Duration),
    #[error("the tool's server is not reachable: {0}")]
    Unavailable(String),
}

/// Somewhere tools come from: the local tools, or one MCP server.
pub trait ToolSource: Send + Sync + 'static {
    /// The source's name, used as the prefix that tells same-named tools apart.
    fn name(&self) -> &str;
    /// The tools offered right now (an MCP server that is down offers none).
    fn tools(&self) -> Vec<ToolSpec>;
    /// This source's own time limit per call, overriding the toolbox's.
    fn timeout(&self) -> Option<Duration> {
        None
    }
    /// Runs tool `tool` (its own name, not the prefixed one) with `arguments`.
    fn call<'a>(
        &'a self,
        tool: &'a str,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ToolError>>;
}

/// All the tools the models may use.
pub struct Toolbox {
    sources: Vec<Arc<dyn ToolSource>>,
    timeout: Duration,
    /// Where each call is counted, by tool and outcome.
    metrics: Arc<Metrics>,
}

/// One tool under the name the model knows it by.
struct Entry {
    exposed: String,
    source: Arc<dyn ToolSource>,
    spec: ToolSpec,
}

impl Toolbox {
    /// `sources` in priority order (their order is the order the model sees the tools in);
    /// `timeout` is the default limit of one call; calls are counted in `metrics`.
    pub fn new(
        sources: Vec<Arc<dyn ToolSource>>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Toolbox {
        Toolbox {
            sources,
            timeout,
            metrics,
        }
    }

    /// The names the tools are offered under.
    pub fn names(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .map(|entry| entry.exposed)
            .collect()
    }

    /// The tools as OpenAI `tools` definitions. With `device_known`, `device_id` parameters
    /// are left out: the toolbox supplies them.
    pub fn definitions(&self, device_known: bool) -> Vec<Value> {
        self.entries()
            .into_iter()
            .map(|entry| {
                let mut parameters = entry.spec.input_schema.clone();
                if device_known && takes_device(&parameters) {
                    hide_device_param(&mut parameters);
                }
                json!({"type": "function", "function": {
                    "name": entry.exposed,
                    "description": entry.spec.description,
                    "parameters": parameters,
                }})
            })
            .collect()
    }

    /// Calls the tool the model knows as `name` with `arguments` (JSON text, as the model
    /// wrote it), injecting `device_id` where the tool takes one; never takes longer than the
    /// tool's time limit.
    pub async fn call(
        &self,
        name: &str,
        arguments: &str,
        device_id: Option<&str>,
    ) -> Result<String, ToolError> {
        let Some(entry) = self.entries().into_iter().find(|e| e.exposed == name) else {
            // The model's made-up name is not a label: labels stay the configured tools'.
            self.metrics.tool_call(UNKNOWN_TOOL, false);
            return Err(ToolError::Unknown(name.to_string()));
        };
        let result = self.call_entry(&entry, arguments, device_id).await;
        self.metrics.tool_call(&entry.exposed, result.is_ok());
        result
    }

    async fn call_entry(
        &self,
        entry: &Entry,
        arguments: &str,
        device_id: Option<&str>,
    ) -> Result<String, ToolError> {
        let mut arguments = parse_arguments(arguments)?;
        if let Some(device) = device_id
            && takes_device(&entry.spec.input_schema)
        {
            arguments.insert(DEVICE_ID_PARAM.into(), Value::String(device.to_string()));
        }
        let limit = entry.source.timeout().unwrap_or(self.timeout);
        match tokio::time::timeout(limit, entry.source.call(&entry.spec.name, arguments)).await {
            Ok(Ok(text)) => Ok(bounded(text)),
            Ok(Err(ToolError::Failed(text))) => Err(ToolError::Failed(bounded(text))),
            Ok(Err(ToolError::Unavailable(text))) => Err(ToolError::Unavailable(bounded(text))),
            Ok(Err(other)) => Err(other),
            Err(_) => Err(ToolError::TimedOut(limit)),
        }
    }

    /// Every tool under its exposed name: its own name when no other source has one like it,
    /// else `<source>_<name>`; both cut to what OpenAI accepts (`[A-Za-z0-9_-]{1,64}`).
    fn entries(&self) -> Vec<Entry> {
        let listed: Vec<(Arc<dyn ToolSource>, Vec<ToolSpec>)> = self
            .sources
            .iter()
            .map(|s| (Arc::clone(s), s.tools()))
            .collect();
        let mut sources_per_name: HashMap<String, usize> = HashMap::new();
        for (_, specs) in &listed {
            let mut seen: Vec<String> = specs.iter().map(|t| function_name(&t.name)).collect();
            seen.sort();
            seen.dedup();
            for name in seen {
                *sources_per_name.entry(name).or_default() += 1;
            }
        }
        let mut entries = Vec::new();
        for (source, specs) in listed {
            for spec in specs {
                let plain = function_name(&spec.name);
                let exposed = if sources_per_name[&plain] > 1 {
                    function_name(&format!("{}_{}", source.name(), spec.name))
                } else {
                    plain
                };
                entries.push(Entry {
                    exposed,
                    source: Arc::clone(&source),
                    spec,
                });
            }
        }
        entries
    }
}

/// `text` if it fits in [`MAX_TOOL_RESULT_BYTES`]; else its start (cut on a character
/// boundary) and a note telling the model it was cut, together within the limit.
fn bounded(mut text: String) -> String {
    if text.len() <= MAX_TOOL_RESULT_BYTES {
        return text;
    }
    let total = text.len();
    let note =
        format!("\n[cut: the tool's answer was {total} bytes; only the first part of it is shown]");
    let mut keep = MAX_TOOL_RESULT_BYTES - note.len();
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    text.truncate(keep);
    text.push_str(&note);
    text
}

/// `name` as an OpenAI function name: other characters become `_`, at most 64 of them.
fn function_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "_".to_string()
    } else {
        cleaned
    }
}

fn parse_arguments(text: &str) -> Result<Map<String, Value>, ToolError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ToolError::BadArguments(format!("got {other}"))),
        Err(e) => Err(ToolError::BadArguments(e.to_string())),
    }
}

fn takes_device(schema: &Value) -> bool {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key(DEVICE_ID_PARAM))
}

fn hide_device_param(schema: &mut Value) {
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.remove(DEVICE_ID_PARAM);
    }
    if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| r != DEVICE_ID_PARAM);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::FutureExt;

    use super::*;

    /// A source whose tools echo their arguments, optionally after a pause.
    struct Echo {
        name: &'static str,
        tools: Vec<&'static str>,
        pause: Duration,
        calls: Mutex<Vec<(String, Map<String, Value>)>>,
    }

    impl Echo {
        fn new(name: &'static str, tools: &[&'static str]) -> Arc<Echo> {
            Arc::new(Echo {
                name,
                tools: tools.to_vec(),
                pause: Duration::ZERO,
                calls: Mutex::default(),
            })
        }
    }

    impl ToolSource for Echo {
        fn name(&self) -> &str {
            self.name
        }
        fn tools(&self) -> Vec<ToolSpec> {
            self.tools
                .iter()
                .map(|t| ToolSpec {
                    name: t.to_string(),
                    description: format!("{t} of {}", self.name),
                    input_schema: json!({"type": "object",
                        "properties": {"level": {"type": "integer"}, "device_id": {"type": "string"}},
                        "required": ["level", "device_id"]}),
                })
                .collect()
        }
        fn call<'a>(
            &'a self,
            tool: &'a str,
            arguments: Map<String, Value>,
        ) -> BoxFuture<'a, Result<String, ToolError>> {
            async move {
                tokio::time::sleep(self.pause).await;
                self.calls
                    .lock()
                    .unwrap()
                    .push((tool.to_string(), arguments.clone()));
                Ok(format!("{}:{tool}:{}", self.name, Value::Object(arguments)))
            }
            .boxed()
        }
    }

    fn names(definitions: &[Value]) -> Vec<String> {
        definitions
            .iter()
            .map(|d| d["function"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn same_named_tools_get_their_source_as_prefix_and_reach_the_right_source() {
        let kitchen = Echo::new("kitchen", &["set_volume", "timer"]);
        let porch = Echo::new("porch.box", &["set_volume"]);
        let toolbox = Toolbox::new(
            vec![kitchen.clone(), porch.clone()],
            Duration::from_secs(1),
            Metrics::new(false),
        );
        assert_eq!(
            names(&toolbox.definitions(false)),
            ["kitchen_set_volume", "timer", "porch_box_set_volume"]
        );
        let answer = toolbox
            .call("porch_box_set_volume", r#"{"level": 3}"#, None)
            .await
            .unwrap();
        assert_eq!(answer, r#"porch.box:set_volume:{"level":3}"#);
        assert!(kitchen.calls.lock().unwrap().is_empty());
        assert_eq!(
            toolbox.call("set_volume", "{}", None).await,
            Err(ToolError::Unknown("set_volume".into()))
        );
    }

    #[tokio::test]
    async fn device_id_is_hidden_from_the_model_and_injected_over_its_guess() {
        let source = Echo::new("hall", &["set_brightness"]);
        let toolbox = Toolbox::new(
            vec![source.clone()],
            Duration::from_secs(1),
            Metrics::new(false),
        );
        let shown = &toolbox.definitions(true)[0]["function"]["parameters"];
        assert_eq!(shown["required"], json!(["level"]));
        assert!(shown["properties"].get("device_id").is_none());
        // Without a device the model must see (and may fill) the parameter.
        let unbound = &toolbox.definitions(false)[0]["function"]["parameters"];
        assert!(unbound["properties"].get("device_id").is_some());

        toolbox
            .call(
                "set_brightness",
                r#"{"level": 40, "device_id": "guess"}"#,
                Some("aa:bb"),
            )
            .await
            .unwrap();
        let calls = source.calls.lock().unwrap();
        assert_eq!(calls[0].1["device_id"], "aa:bb");
        assert_eq!(calls[0].1["level"], 40);
    }

    /// A source whose one tool answers `answer` (or fails with it).
    struct Fixed {
        answer: Result<String, ToolError>,
    }

    impl ToolSource for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn tools(&self) -> Vec<ToolSpec> {
            vec![ToolSpec {
                name: "dump".into(),
                description: String::new(),
                input_schema: json!({"type": "object"}),
            }]
        }
        fn call<'a>(
            &'a self,
            _tool: &'a str,
            _arguments: Map<String, Value>,
        ) -> BoxFuture<'a, Result<String, ToolError>> {
            let answer = self.answer.clone();
            async move { answer }.boxed()
        }
    }

    async fn answer_of(answer: Result<String, ToolError>) -> Result<String, ToolError> {
        let toolbox = Toolbox::new(
            vec![Arc::new(Fixed { answer })],
            Duration::from_secs(1),
            Metrics::new(false),
        );
        toolbox.call("dump", "{}", None).await
    }

    #[tokio::test]
    async fn a_tool_answer_over_64_kib_is_cut_with_a_note() {
        // Multi-byte characters, so the cut must find a character boundary.
        let huge = "语音".repeat(100_000);
        let cut = answer_of(Ok(huge.clone())).await.unwrap();
        assert!(cut.len() <= MAX_TOOL_RESULT_BYTES, "{}", cut.len());
        assert!(cut.len() > MAX_TOOL_RESULT_BYTES - 200);
        let (kept, note) = cut.rsplit_once('\n').unwrap();
        assert!(huge.starts_with(kept));
        assert_eq!(
            note,
            "[cut: the tool's answer was 600000 bytes; only the first part of it is shown]"
        );
        let Err(ToolError::Failed(failed)) = answer_of(Err(ToolError::Failed(huge.clone()))).await
        else {
            panic!("still a failure");
        };
        assert!(failed.len() <= MAX_TOOL_RESULT_BYTES && failed.ends_with("shown]"));
        let Err(ToolError::Unavailable(down)) = answer_of(Err(ToolError::Unavailable(huge))).await
        else {
            panic!("still unavailable");
        };
        assert!(down.len() <= MAX_TOOL_RESULT_BYTES);

        let exact = "x".repeat(MAX_TOOL_RESULT_BYTES);
        assert_eq!(answer_of(Ok(exact.clone())).await.unwrap(), exact);
    }

    #[tokio::test]
    async fn slow_tools_time_out_and_bad_arguments_are_reported() {
        let slow = Arc::new(Echo {
            name: "slow",
            tools: vec!["wait"],
            pause: Duration::from_secs(5),
            calls: Mutex::default(),
        });
        let toolbox = Toolbox::new(vec![slow], Duration::from_millis(50), Metrics::new(false));
        let started = std::time::Instant::now();
        assert_eq!(
            toolbox.call("wait", "{}", None).await,
            Err(ToolError::TimedOut(Duration::from_millis(50)))
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(
            toolbox.call("wait", "[1, 2]", None).await,
            Err(ToolError::BadArguments(_))
        ));
        assert!(matches!(
            toolbox.call("wait", "{not json", None).await,
            Err(ToolError::BadArguments(_))
        ));
    }
}

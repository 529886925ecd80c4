//! The OpenAI chat-completion parameters beyond the messages: the client's tools, which tool
//! the model must call, and the sampling settings, checked as OpenAI checks them.
//!
//! A value out of OpenAI's range is a 400 in OpenAI's shape naming the parameter (`param`),
//! never silently dropped or clamped: a client that asked for `temperature: 3` has a bug it
//! should hear about. What passes travels in the turn's options ([`ClientParams`]) to the tool
//! loop and the answering model call.

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use crate::llm::{Sampling, ToolChoice};

/// Most tools one request may offer (OpenAI's own limit).
pub const MAX_CLIENT_TOOLS: usize = 128;
/// Most stop sequences (OpenAI's own limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest tool name (OpenAI's `^[a-zA-Z0-9_-]{1,64}$`).
pub const MAX_TOOL_NAME_CHARS: usize = 64;

/// The parameters as the client sent them (absent and `null` alike are `None`).
#[derive(Debug, Default, Deserialize)]
pub struct WireParams {
    #[serde(default)]
    temperature: Option<Value>,
    #[serde(default)]
    top_p: Option<Value>,
    #[serde(default)]
    presence_penalty: Option<Value>,
    #[serde(default)]
    frequency_penalty: Option<Value>,
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    max_completion_tokens: Option<Value>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    seed: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
}

/// The checked parameters.
#[derive(Debug, Default, PartialEq)]
pub struct ClientParams {
    /// The client's tools, as OpenAI function definitions; empty with `tool_choice: "none"`
    /// (the model may not call them, so they are not offered).
    pub tools: Vec<Value>,
    pub tool_choice: Option<ToolChoice>,
    pub sampling: Sampling,
}

impl WireParams {
    pub fn check(self) -> Result<ClientParams, ApiError> {
        let max_tokens = match self.max_completion_tokens {
            Some(v) => Some(positive(v, "max_completion_tokens")?),
            None => self
                .max_tokens
                .map(|v| positive(v, "max_tokens"))
                .transpose()?,
        };
        let sampling = Sampling {
            temperature: in_range(self.temperature, "temperature", 0.0, 2.0)?,
            top_p: in_range(self.top_p, "top_p", 0.0, 1.0)?,
            presence_penalty: in_range(self.presence_penalty, "presence_penalty", -2.0, 2.0)?,
            frequency_penalty: in_range(self.frequency_penalty, "frequency_penalty", -2.0, 2.0)?,
            max_tokens,
            stop: self.stop.map(stop).transpose()?,
            seed: self
                .seed
                .map(|v| {
                    v.as_i64()
                        .ok_or_else(|| bad("seed", "seed must be an integer"))
                })
                .transpose()?,
            response_format: self.response_format.map(response_format).transpose()?,
            parallel_tool_calls: self
                .parallel_tool_calls
                .map(|v| {
                    v.as_bool().ok_or_else(|| {
                        bad(
                            "parallel_tool_calls",
                            "parallel_tool_calls must be a boolean",
                        )
                    })
                })
                .transpose()?,
        };
        let tools = self.tools.map(tools).transpose()?.unwrap_or_default();
        let (tools, tool_choice) = match self.tool_choice {
            None => (tools, None),
            Some(choice) => tool_choice(choice, tools)?,
        };
        Ok(ClientParams {
            tools,
            tool_choice,
            sampling,
        })
    }
}

/// Refuses client tools that take the name of one of the box's own: the box could not tell
/// whose call the model made.
pub fn check_no_clash(client_tools: &[Value], box_tools: &[String]) -> Result<(), ApiError> {
    for (i, tool) in client_tools.iter().enumerate() {
        let name = tool.pointer("/function/name").and_then(Value::as_str);
        if let Some(name) = name.filter(|n| box_tools.iter().any(|b| b == n)) {
            return Err(bad(
                &format!("tools[{i}].function.name"),
                &format!("tool name {name:?} is taken by one of the server's own tools; rename it"),
            ));
        }
    }
    Ok(())
}

fn bad(param: &str, message: &str) -> ApiError {
    ApiError::invalid(message).with_param(param)
}

fn in_range(
    value: Option<Value>,
    name: &str,
    low: f64,
    high: f64,
) -> Result<Option<f64>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    match value.as_f64() {
        Some(x) if (low..=high).contains(&x) => Ok(Some(x)),
        Some(x) => Err(bad(
            name,
            &format!("{name} is {x}; it must be between {low} and {high}"),
        )),
        None => Err(bad(name, &format!("{name} must be a number"))),
    }
}

fn positive(value: Value, name: &str) -> Result<u64, ApiError> {
    match value.as_u64() {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(bad(
            name,
            &format!("{name} is {value}; it must be an integer of at least 1"),
        )),
    }
}

fn stop(value: Value) -> Result<Vec<String>, ApiError> {
    let shape = "stop must be a string or a list of at most 4 strings";
    match value {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) if items.len() <= MAX_STOP_SEQUENCES => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(bad("stop", shape)),
            })
            .collect(),
        _ => Err(bad("stop", shape)),
    }
}

fn response_format(value: Value) -> Result<Value, ApiError> {
    let kind = value.get("type").and_then(Value::as_str);
    match kind {
        Some("text" | "json_object") => Ok(value),
        Some("json_schema") if value.get("json_schema").is_some_and(Value::is_object) => Ok(value),
        Some("json_schema") => Err(bad(
            "response_format.json_schema",
            "response_format of type json_schema needs a json_schema object",
        )),
        _ => Err(bad(
            "response_format.type",
            "response_format.type must be one of text, json_object, json_schema",
        )),
    }
}

fn tools(value: Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(tools) = value else {
        return Err(bad("tools", "tools must be a list"));
    };
    if tools.len() > MAX_CLIENT_TOOLS {
        return Err(bad(
            "tools",
            &format!(
                "{} tools offered; at most {MAX_CLIENT_TOOLS} are accepted",
                tools.len()
            ),
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = |field: &str| format!("tools[{i}]{field}");
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                &at(".type"),
                "only tools of type \"function\" are supported",
            ));
        }
        let Some(function) = tool.get("function").filter(|f| f.is_object()) else {
            return Err(bad(&at(".function"), "a tool needs a function object"));
        };
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        if !valid_tool_name(name) {
            return Err(bad(
                &at(".function.name"),
                &format!("tool name {name:?} must match ^[a-zA-Z0-9_-]{{1,64}}$"),
            ));
        }
        if names.iter().any(|n| n == name) {
            return Err(bad(
                &at(".function.name"),
                &format!("tool name {name:?} is offered twice"),
            ));
        }
        if function.get("description").is_some_and(|d| !d.is_string()) {
            return Err(bad(
                &at(".function.description"),
                "description must be a string",
            ));
        }
        if function.get("parameters").is_some_and(|p| !p.is_object()) {
            return Err(bad(
                &at(".function.parameters"),
                "parameters must be a JSON Schema object",
            ));
        }
        names.push(name.to_string());
    }
    Ok(tools)
}

fn valid_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The tools to offer and the choice to send, from `tool_choice` and the client's tools.
fn tool_choice(
    choice: Value,
    tools: Vec<Value>,
) -> Result<(Vec<Value>, Option<ToolChoice>), ApiError> {
    let shape = "tool_choice must be \"none\", \"auto\", \"required\" or \
                 {\"type\": \"function\", \"function\": {\"name\": ...}}";
    let choice = match &choice {
        Value::String(s) if s == "none" => return Ok((Vec::new(), None)),
        Value::String(s) if s == "auto" => return Ok((tools, None)),
        Value::String(s) if s == "required" => ToolChoice::Required,
        Value::Object(_) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.function.name", shape))?;
            let offered = tools
                .iter()
                .any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name));
            if !offered {
                return Err(bad(
                    "tool_choice.function.name",
                    &format!("tool_choice names {name:?}, which is not among the tools"),
                ));
            }
            ToolChoice::Function(name.to_string())
        }
        _ => return Err(bad("tool_choice", shape)),
    };
    if tools.is_empty() {
        return Err(bad(
            "tool_choice",
            "tool_choice \"required\" or a named function needs tools",
        ));
    }
    Ok((tools, Some(choice)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(params: Value) -> Result<ClientParams, ApiError> {
        serde_json::from_value::<WireParams>(params)
            .unwrap()
            .check()
    }

    fn refused_param(params: Value) -> String {
        check(params)
            .unwrap_err()
            .param
            .expect("the parameter is named")
    }

    fn tool(name: &str) -> Value {
        json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}})
    }

    #[test]
    fn takes_what_is_in_range() {
        let params = check(json!({
            "temperature": 0, "top_p": 1, "presence_penalty": -2, "frequency_penalty": 2.0,
            "max_tokens": 10, "max_completion_tokens": 20, "stop": "END", "seed": -3,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
            "parallel_tool_calls": false,
            "tools": [tool("light_on"), tool("set-volume")],
            "tool_choice": {"type": "function", "function": {"name": "light_on"}},
        }))
        .unwrap();
        assert_eq!(params.sampling.temperature, Some(0.0));
        assert_eq!(params.sampling.max_tokens, Some(20));
        assert_eq!(params.sampling.stop, Some(vec!["END".to_string()]));
        assert_eq!(params.sampling.seed, Some(-3));
        assert_eq!(params.tools.len(), 2);
        assert_eq!(
            params.tool_choice,
            Some(ToolChoice::Function("light_on".into()))
        );
        assert_eq!(check(json!({})).unwrap(), ClientParams::default());
    }

    #[test]
    fn refuses_what_is_out_of_range_naming_the_parameter() {
        for (params, param) in [
            (json!({"temperature": 2.1}), "temperature"),
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"top_p": -0.1}), "top_p"),
            (json!({"presence_penalty": 3}), "presence_penalty"),
            (json!({"frequency_penalty": -2.5}), "frequency_penalty"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (
                json!({"max_completion_tokens": -1}),
                "max_completion_tokens",
            ),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"stop": [1]}), "stop"),
            (json!({"seed": 1.5}), "seed"),
            (
                json!({"response_format": {"type": "yaml"}}),
                "response_format.type",
            ),
            (json!({"parallel_tool_calls": "yes"}), "parallel_tool_calls"),
            (
                json!({"tools": [tool("has space")]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": [tool(&"x".repeat(65))]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": [tool("a"), tool("a")]}),
                "tools[1].function.name",
            ),
            (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
            (json!({"tool_choice": "required"}), "tool_choice"),
            (
                json!({"tools": [tool("a")], "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (
                json!({"tools": [tool("a")], "tool_choice": {"type": "function", "function": {"name": "b"}}}),
                "tool_choice.function.name",
            ),
        ] {
            assert_eq!(refused_param(params.clone()), param, "{params}");
        }
        let many: Vec<Value> = (0..=MAX_CLIENT_TOOLS)
            .map(|i| tool(&format!("t{i}")))
            .collect();
        assert_eq!(refused_param(json!({"tools": many})), "tools");
    }

    #[test]
    fn none_withdraws_the_tools_and_clashes_are_refused() {
        let params = check(json!({"tools": [tool("a")], "tool_choice": "none"})).unwrap();
        assert!(params.tools.is_empty());
        let err =
            check_no_clash(&[tool("a"), tool("calculator")], &["calculator".into()]).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tools[1].function.name"));
        assert!(check_no_clash(&[tool("a")], &["calculator".into()]).is_ok());
    }
}

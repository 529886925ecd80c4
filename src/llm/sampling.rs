//! What the client asked of the answering model call besides the messages: sampling and
//! output settings (OpenAI's `temperature`, `top_p`, `max_tokens`, `stop`, `seed`, penalties,
//! `response_format`, `parallel_tool_calls`) and which tool the model must call
//! (`tool_choice`).
//!
//! They are checked at the API and travel with the turn; only the model call that answers the
//! client (the chat branch, the tool loop's calls) gets them. The router and the chatty filler
//! have their own jobs and are sent [`Sampling::NONE`]. A field the client did not send is not
//! sent upstream, so the upstream's defaults apply.

use serde_json::{Value, json};

/// Sampling and output settings for the answering model call; `None` fields are not sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// `max_tokens`, or the newer `max_completion_tokens` (sent upstream as `max_tokens`,
    /// which DashScope, vLLM, Ollama and llama.cpp all read).
    pub max_tokens: Option<u64>,
    /// Up to four stop sequences.
    pub stop: Option<Vec<String>>,
    pub seed: Option<i64>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`, as the client sent it.
    pub response_format: Option<Value>,
    /// Sent only with a request that offers tools.
    pub parallel_tool_calls: Option<bool>,
}

impl Sampling {
    /// No settings: the upstream's defaults.
    pub const NONE: Sampling = Sampling {
        temperature: None,
        top_p: None,
        presence_penalty: None,
        frequency_penalty: None,
        max_tokens: None,
        stop: None,
        seed: None,
        response_format: None,
        parallel_tool_calls: None,
    };
}

/// Which tool the model must call (`tool_choice`), when the client asked for more than `auto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// `"required"`: some tool.
    Required,
    /// `{"type": "function", "function": {"name": N}}`: this one.
    Function(String),
}

impl ToolChoice {
    /// The request body's `tool_choice` value.
    pub fn to_json(&self) -> Value {
        match self {
            ToolChoice::Required => json!("required"),
            ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
        }
    }
}

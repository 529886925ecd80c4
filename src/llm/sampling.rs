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

    /// Writes the settings that are set into a chat-completions request body.
    pub fn apply(&self, body: &mut Value, offers_tools: bool) {
        let numbers = [
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ];
        for (name, value) in numbers {
            if let Some(value) = value {
                body[name] = json!(value);
            }
        }
        if let Some(max) = self.max_tokens {
            body["max_tokens"] = json!(max);
        }
        if let Some(stop) = &self.stop {
            body["stop"] = json!(stop);
        }
        if let Some(seed) = self.seed {
            body["seed"] = json!(seed);
        }
        if let Some(format) = &self.response_format {
            body["response_format"] = format.clone();
        }
        if offers_tools && let Some(parallel) = self.parallel_tool_calls {
            body["parallel_tool_calls"] = json!(parallel);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_only_what_was_set_and_parallel_calls_only_with_tools() {
        let mut body = json!({"model": "m"});
        Sampling::NONE.apply(&mut body, true);
        assert_eq!(body, json!({"model": "m"}));
        let sampling = Sampling {
            temperature: Some(0.5),
            max_tokens: Some(7),
            stop: Some(vec!["END".into()]),
            parallel_tool_calls: Some(false),
            ..Sampling::default()
        };
        sampling.apply(&mut body, false);
        assert_eq!(
            body,
            json!({"model": "m", "temperature": 0.5, "max_tokens": 7, "stop": ["END"]})
        );
        sampling.apply(&mut body, true);
        assert_eq!(body["parallel_tool_calls"], false);
    }
}

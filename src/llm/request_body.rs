//! The body of an upstream chat-completions call, serialized once, straight from the
//! request's own data.
//!
//! A turn's history goes upstream on every model call (router and chat, each tool step), so
//! the body is written from borrowed fields: the messages are never copied into a JSON tree
//! first. The bytes are built once per call and reused by its retries.
//!
//! What a key means when two sources name it, from weakest to strongest: the profile's
//! `extra_body`, then the request's own fields (model, messages, stream, tools), then the
//! client's sampling settings, then the box's `response_format` for a structured decision,
//! then `tool_choice`. Each key is written once, by the strongest source that sets it.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::client::ChatRequest;
use super::sampling::{Sampling, ToolChoice};

/// `request` as JSON bytes; `stream` asks for SSE (with usage in the last chunk), `extra` is
/// merged in beneath everything else.
pub fn request_body(
    request: &ChatRequest<'_>,
    stream: bool,
    extra: &Map<String, Value>,
) -> Vec<u8> {
    let body = Body {
        request,
        stream,
        extra,
    };
    // Serializing borrowed strings, numbers and `Value`s into a Vec cannot fail.
    serde_json::to_vec(&body).expect("a request body always serializes")
}

struct Body<'a, 'r> {
    request: &'a ChatRequest<'r>,
    stream: bool,
    extra: &'a Map<String, Value>,
}

/// The `response_format` a structured decision asks for.
fn json_object() -> Value {
    serde_json::json!({"type": "json_object"})
}

impl Serialize for Body<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.request;
        let offers_tools = !r.tools.is_empty();
        let sampling = sampling_fields(r.sampling, offers_tools);
        let response_format = if r.json_object {
            Some(json_object())
        } else {
            r.sampling.response_format.clone()
        };
        let tool_choice = r
            .tool_choice
            .filter(|_| offers_tools)
            .map(ToolChoice::to_json);

        let mut written: Vec<&str> = vec!["model", "messages", "stream"];
        if self.stream {
            written.push("stream_options");
        }
        if offers_tools {
            written.push("tools");
        }
        written.extend(sampling.iter().map(|(k, _)| *k));
        if response_format.is_some() {
            written.push("response_format");
        }
        if tool_choice.is_some() {
            written.push("tool_choice");
        }

        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.extra {
            if !written.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("model", r.model)?;
        map.serialize_entry("messages", r.messages)?;
        map.serialize_entry("stream", &self.stream)?;
        if self.stream {
            map.serialize_entry(
                "stream_options",
                &StreamOptions {
                    include_usage: true,
                },
            )?;
        }
        if offers_tools {
            map.serialize_entry("tools", r.tools)?;
        }
        for (key, value) in &sampling {
            map.serialize_entry(key, value)?;
        }
        if let Some(format) = &response_format {
            map.serialize_entry("response_format", format)?;
        }
        if let Some(choice) = &tool_choice {
            map.serialize_entry("tool_choice", choice)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The sampling settings the client set, as body fields (`response_format` aside: the body
/// decides it); `parallel_tool_calls` only with tools.
fn sampling_fields(s: &Sampling, offers_tools: bool) -> Vec<(&'static str, Value)> {
    let mut fields = Vec::new();
    let numbers = [
        ("temperature", s.temperature),
        ("top_p", s.top_p),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    ];
    for (name, value) in numbers {
        if let Some(value) = value {
            fields.push((name, Value::from(value)));
        }
    }
    if let Some(max) = s.max_tokens {
        fields.push(("max_tokens", Value::from(max)));
    }
    if let Some(stop) = &s.stop {
        fields.push(("stop", Value::from(stop.clone())));
    }
    if let Some(seed) = s.seed {
        fields.push(("seed", Value::from(seed)));
    }
    if offers_tools && let Some(parallel) = s.parallel_tool_calls {
        fields.push(("parallel_tool_calls", Value::from(parallel)));
    }
    fields
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::llm::ChatMessage;

    fn body(request: &ChatRequest<'_>, stream: bool, extra: Value) -> Value {
        let Value::Object(extra) = extra else {
            panic!("extra is an object")
        };
        serde_json::from_slice(&request_body(request, stream, &extra)).unwrap()
    }

    fn request<'a>(messages: &'a [ChatMessage], sampling: &'a Sampling) -> ChatRequest<'a> {
        ChatRequest {
            model: "m",
            messages,
            tools: &[],
            json_object: false,
            sampling,
            tool_choice: None,
        }
    }

    #[test]
    fn a_plain_call_is_model_messages_and_stream_over_the_extra_body() {
        let messages = [ChatMessage::user("hi")];
        let plain = request(&messages, &Sampling::NONE);
        assert_eq!(
            body(
                &plain,
                true,
                json!({"enable_thinking": false, "model": "not this"})
            ),
            json!({"enable_thinking": false, "model": "m",
                   "messages": [{"role": "user", "content": "hi"}],
                   "stream": true, "stream_options": {"include_usage": true}})
        );
        assert_eq!(
            body(&plain, false, json!({})),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false})
        );
    }

    #[test]
    fn sampling_is_sent_only_as_set_and_parallel_calls_only_with_tools() {
        let messages = [ChatMessage::user("hi")];
        let sampling = Sampling {
            temperature: Some(0.5),
            max_tokens: Some(7),
            stop: Some(vec!["END".into()]),
            parallel_tool_calls: Some(false),
            response_format: Some(json!({"type": "text"})),
            ..Sampling::default()
        };
        let call = request(&messages, &sampling);
        let sent = body(&call, false, json!({"temperature": 1.0}));
        assert_eq!(
            (&sent["temperature"], &sent["max_tokens"], &sent["stop"]),
            (&json!(0.5), &json!(7), &json!(["END"]))
        );
        assert_eq!(sent["response_format"], json!({"type": "text"}));
        assert!(sent.get("parallel_tool_calls").is_none());
        assert!(sent.get("top_p").is_none());

        let tools = [json!({"type": "function", "function": {"name": "f"}})];
        let choice = ToolChoice::Required;
        let with_tools = ChatRequest {
            tools: &tools,
            tool_choice: Some(&choice),
            json_object: true,
            ..call
        };
        let sent = body(&with_tools, false, json!({}));
        assert_eq!(sent["parallel_tool_calls"], false);
        assert_eq!(sent["tool_choice"], "required");
        assert_eq!(sent["tools"], json!(tools));
        // The box's structured decision wins over the client's format.
        assert_eq!(sent["response_format"], json!({"type": "json_object"}));
    }

    #[test]
    fn every_key_is_written_once() {
        let messages = [ChatMessage::user("hi")];
        let sampling = Sampling {
            seed: Some(1),
            ..Sampling::default()
        };
        let call = request(&messages, &sampling);
        let extra = json!({"seed": 9, "stream": true, "x": 1});
        let Value::Object(extra) = extra else {
            unreachable!()
        };
        let text = String::from_utf8(request_body(&call, false, &extra)).unwrap();
        for key in ["\"seed\"", "\"stream\"", "\"x\""] {
            assert_eq!(text.matches(key).count(), 1, "{key} in {text}");
        }
    }
}

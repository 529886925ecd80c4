//! The `route` graph: a fast router model decides whether the chat model or the tool branch
//! answers the turn — the original's `router_call` → `chat_model_call` | `tool_model_call`.
//!
//! Splitting the two keeps each model's prompt short and focused. The router must not cost
//! small talk any latency, so the chat branch starts at the same moment as the router call.
//! Its text is held back until the router decides: on `chat` the held text goes out at once and
//! the rest streams through; on `tool` the chat call is dropped (which aborts its request) and
//! nothing it said reaches the client or the log. When the router answers before the chat
//! model's first token — the usual case, it is a small model asked for a few tokens — a
//! chat-routed turn starts speaking exactly as early as a plain chat answer would.
//!
//! The router answers `{"step":"chat"}` or `{"step":"tool"}` (asked for with the route prompt
//! and `response_format: json_object`). Anything else — unparseable output, an unknown step, a
//! failed router call — routes to `tool`: when unsure, use tools (the original's rule).
//! Turns carrying the client's own instructions skip the router and go to the chat branch.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::chat::ChatAgent;
use super::prompts::Prompts;
use super::{Agent, AgentEvent, AgentSink, TurnInput};
use crate::llm::{ChatRequest, LlmClient, LlmError, Usage};

/// Where the router sends a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Tool,
}

pub struct RouteGraph {
    llm: LlmClient,
    router_model: String,
    prompts: Prompts,
    chat: ChatAgent,
    tool_branch: Arc<dyn Agent>,
    /// The chat model's name, reported as the turn's model.
    model: String,
}

impl RouteGraph {
    pub fn new(
        llm: LlmClient,
        router_model: impl Into<String>,
        prompts: Prompts,
        chat: ChatAgent,
        chat_model: impl Into<String>,
        tool_branch: Arc<dyn Agent>,
    ) -> RouteGraph {
        RouteGraph {
            llm,
            router_model: router_model.into(),
            prompts,
            chat,
            tool_branch,
            model: chat_model.into(),
        }
    }

    /// Asks the router model where the turn goes.
    async fn route(&self, input: &TurnInput) -> (Route, Usage) {
        let messages = input.model_messages(&self.prompts.get("route"));
        let request = ChatRequest {
            model: &self.router_model,
            messages: &messages,
            tools: &[],
            json_object: true,
        };
        match self.llm.complete(&request).await {
            Ok(completion) => {
                let answer = &completion.message.content;
                let route = parse_route(answer).unwrap_or_else(|| {
                    tracing::info!(thread = %input.thread_id, "router answer {answer:?} not understood; using tools");
                    Route::Tool
                });
                tracing::debug!(thread = %input.thread_id, ?route, "routed");
                (route, completion.usage)
            }
            Err(e) => {
                tracing::warn!(thread = %input.thread_id, "router call failed, using tools: {e}");
                (Route::Tool, Usage::default())
            }
        }
    }

    async fn run(&self, input: &TurnInput, sink: AgentSink) -> Result<Usage, LlmError> {
        if input.instructions.is_some() {
            return self.chat.answer(input, sink).await;
        }
        let (chat_sink, mut chat_events) = AgentSink::channel();
        let chat = self.chat.answer(input, chat_sink);
        let route = self.route(input);
        tokio::pin!(route);
        let mut chat = chat.fuse();
        let mut held = Vec::new();
        let mut chat_result = None;
        let (decision, router_usage) = loop {
            tokio::select! {
                decided = &mut route => break decided,
                Some(event) = chat_events.recv() => held.push(event),
                result = &mut chat, if chat_result.is_none() => chat_result = Some(result),
            }
        };
        if decision == Route::Tool {
            // Dropping the chat call aborts its request; what it said was never passed on.
            drop(chat);
            drop(held);
            let mut usage = self.tool_branch.answer(input, sink).await?;
            usage += router_usage;
            return Ok(usage);
        }
        for event in held {
            pass_on(event, &sink);
        }
        let result = match chat_result {
            Some(result) => result,
            None => {
                let pass_through = async {
                    while let Some(event) = chat_events.recv().await {
                        pass_on(event, &sink);
                    }
                };
                let (result, ()) = tokio::join!(&mut chat, pass_through);
                result
            }
        };
        // The chat call has finished; whatever it emitted last is still queued.
        while let Ok(event) = chat_events.try_recv() {
            pass_on(event, &sink);
        }
        let mut usage = result?;
        usage += router_usage;
        Ok(usage)
    }
}

fn pass_on(event: AgentEvent, sink: &AgentSink) {
    match event {
        AgentEvent::Text(text) => sink.text(&text),
        AgentEvent::Message(message) => sink.message(message),
    }
}

/// The route in a router answer: a JSON object with `step` `chat` or `tool`, possibly wrapped
/// in a code fence or a sentence. `None` when there is no such object.
pub fn parse_route(answer: &str) -> Option<Route> {
    let start = answer.find('{')?;
    let end = answer.rfind('}')?;
    let object: Value = serde_json::from_str(answer.get(start..=end)?).ok()?;
    let step = object.get("step")?.as_str()?.trim().to_ascii_lowercase();
    match step.as_str() {
        "chat" => Some(Route::Chat),
        "tool" | "tools" => Some(Route::Tool),
        _ => None,
    }
}

impl Agent for RouteGraph {
    fn answer<'a>(
        &'a self,
        input: &'a TurnInput,
        sink: AgentSink,
    ) -> BoxFuture<'a, Result<Usage, LlmError>> {
        self.run(input, sink).boxed()
    }

    fn model_name(&self) -> &str {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_decision_and_treats_everything_else_as_unsure() {
        assert_eq!(parse_route(r#"{"step":"chat"}"#), Some(Route::Chat));
        assert_eq!(parse_route(r#"{"step": "tool"}"#), Some(Route::Tool));
        assert_eq!(
            parse_route("```json\n{\"step\": \" Chat \"}\n```"),
            Some(Route::Chat)
        );
        assert_eq!(
            parse_route(r#"Sure: {"step":"tool"} is my answer"#),
            Some(Route::Tool)
        );
        for unsure in [
            "chat",
            "",
            "{}",
            r#"{"step":"maybe"}"#,
            r#"{"step": 1}"#,
            "{not json}",
            "} {",
        ] {
            assert_eq!(parse_route(unsure), None, "{unsure:?}");
        }
    }
}

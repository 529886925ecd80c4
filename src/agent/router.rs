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
//! Client-tool turns (the client offered tools, or brings the results of its tools) skip it
//! too and go to the tool branch: the OpenAI tool loop is the tool loop's job.
//!
//! A router that does not decide within `--router-timeout-ms` (or whose call times out) must
//! not hold back a chat answer that is already on its way: the turn goes on as chat. So a
//! silent upstream fails a turn after one read timeout (the chat branch's own), not after the
//! router's and then the tool branch's.
//!
//! A chat model that answers only with tool calls (it was offered none) evidently wants tools:
//! the turn is handed to the tool branch, as if the router had said so.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::chat::{ChatAgent, ChatAnswer};
use super::prompts::{PromptName, Prompts};
use super::{Agent, AgentOutcome, AgentSink, TurnInput};
use crate::llm::{ChatRequest, LlmClient, LlmError, Sampling, Usage};
use crate::metrics::{Metrics, RouteReason};

/// `--router-llm-name`'s default: the fast model that routes turns (and speaks chatty filler).
pub const DEFAULT_ROUTER_MODEL: &str = "qwen-flash";

/// `--router-timeout-ms`' default: a router is a small model asked for a few tokens; 2.5 s is
/// far beyond a healthy one, and short enough that a stalled one costs a chat turn little.
pub const DEFAULT_ROUTER_TIMEOUT_MS: u64 = 2500;

/// Where the router sends a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Tool,
}

/// The model that routes turns: its client, its name, and how long it may take to decide.
pub struct RouterModel {
    pub llm: LlmClient,
    pub model: String,
    pub timeout: Duration,
}

pub struct RouteGraph {
    router: RouterModel,
    prompts: Prompts,
    chat: ChatAgent,
    tool_branch: Arc<dyn Agent>,
    /// The chat model's name, reported as the turn's model.
    model: String,
    /// Where each decision is counted.
    metrics: Arc<Metrics>,
}

impl RouteGraph {
    pub fn new(
        router: RouterModel,
        prompts: Prompts,
        chat: ChatAgent,
        chat_model: impl Into<String>,
        tool_branch: Arc<dyn Agent>,
        metrics: Arc<Metrics>,
    ) -> RouteGraph {
        RouteGraph {
            router,
            prompts,
            chat,
            tool_branch,
            model: chat_model.into(),
            metrics,
        }
    }

    /// Asks the router model where the turn goes.
    async fn route(&self, input: &TurnInput) -> (Route, Usage, RouteReason) {
        let messages = input.own_prompt_messages(&self.prompts.get(PromptName::Route));
        let request = ChatRequest {
            model: &self.router.model,
            messages: &messages,
            tools: &[],
            json_object: true,
            // The client's sampling is for the answer, not for the decision.
            sampling: &Sampling::NONE,
            tool_choice: None,
        };
        let thread = &input.thread_id;
        let decided =
            tokio::time::timeout(self.router.timeout, self.router.llm.complete(&request)).await;
        match decided {
            Err(_) => {
                tracing::info!(%thread, "router gave no decision within {:?}; answering as chat", self.router.timeout);
                (Route::Chat, Usage::default(), RouteReason::Timeout)
            }
            Ok(Err(LlmError::Timeout)) => {
                tracing::info!(%thread, "router call timed out; answering as chat");
                (Route::Chat, Usage::default(), RouteReason::Timeout)
            }
            Ok(Ok(completion)) => {
                let answer = &completion.message.content;
                let (route, reason) = match parse_route(answer) {
                    Some(route) => (route, RouteReason::Router),
                    None => {
                        tracing::info!(%thread, "router answer {answer:?} not understood; using tools");
                        (Route::Tool, RouteReason::NotUnderstood)
                    }
                };
                tracing::debug!(%thread, ?route, "routed");
                (route, completion.usage, reason)
            }
            Ok(Err(e)) => {
                tracing::warn!(%thread, "router call failed, using tools: {e}");
                (Route::Tool, Usage::default(), RouteReason::RouterFailed)
            }
        }
    }

    async fn run(&self, input: &TurnInput, sink: AgentSink) -> Result<AgentOutcome, LlmError> {
        if input.is_client_tool_turn() {
            self.metrics.routed(true, RouteReason::ClientTools);
            return self.tool_branch(input, sink, Usage::default()).await;
        }
        if input.options.instructions.is_some() {
            self.metrics.routed(false, RouteReason::ClientInstructions);
            return self.chat.answer(input, sink).await;
        }
        let (chat_sink, mut chat_events) = AgentSink::channel();
        // The chat call owns its sink: the events channel closes when the call is done.
        let chat = async move { self.chat.speak(input, &chat_sink).await }.boxed();
        let route = self.route(input);
        tokio::pin!(route);
        let mut chat = chat.fuse();
        let mut held = Vec::new();
        let mut chat_result = None;
        let (decision, router_usage, reason) = loop {
            tokio::select! {
                decided = &mut route => break decided,
                Some(event) = chat_events.recv() => held.push(event),
                result = &mut chat, if chat_result.is_none() => chat_result = Some(result),
            }
        };
        self.metrics.routed(decision == Route::Tool, reason);
        if decision == Route::Tool {
            // Dropping the chat call aborts its request; what it said was never passed on.
            drop(chat);
            drop(held);
            return self.tool_branch(input, sink, router_usage).await;
        }
        for event in held {
            sink.forward(event);
        }
        let result = match chat_result {
            Some(result) => result,
            None => {
                let pass_through = async {
                    while let Some(event) = chat_events.recv().await {
                        sink.forward(event);
                    }
                };
                let (result, ()) = tokio::join!(&mut chat, pass_through);
                result
            }
        };
        // The chat call has finished; whatever it emitted last is still queued.
        while let Ok(event) = chat_events.try_recv() {
            sink.forward(event);
        }
        match result? {
            ChatAnswer::Spoke(mut outcome) => {
                outcome.usage += router_usage;
                Ok(outcome)
            }
            // It emitted nothing: the tool branch answers the turn from the start.
            ChatAnswer::WantsTools(chat_usage) => {
                self.metrics.routed(true, RouteReason::ChatCalledTools);
                tracing::info!(thread = %input.thread_id, "the chat model called tools; handing the turn to the tool branch");
                let mut usage = router_usage;
                usage += chat_usage;
                self.tool_branch(input, sink, usage).await
            }
        }
    }

    async fn tool_branch(
        &self,
        input: &TurnInput,
        sink: AgentSink,
        spent: Usage,
    ) -> Result<AgentOutcome, LlmError> {
        let mut outcome = self.tool_branch.answer(input, sink).await?;
        outcome.usage += spent;
        Ok(outcome)
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
    ) -> BoxFuture<'a, Result<AgentOutcome, LlmError>> {
        self.run(input, sink).boxed()
    }

    fn model_name(&self) -> &str {
        &self.model
    }

    fn box_tool_names(&self) -> Vec<String> {
        self.tool_branch.box_tool_names()
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

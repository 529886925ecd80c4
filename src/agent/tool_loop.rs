//! The tool loop: model → tool calls → results → model, until the model answers in words.
//!
//! This is the route graph's tool branch (tool prompt, `--tool-llm-name`) and, with the chat
//! prompt and every tool, the whole `react` graph. Each step's messages go to the sink as they
//! complete — the AI message that asked for tools, then one `tool` message per result — so the
//! runner logs and remembers every step, and the next step's model call sees them too.
//!
//! Tools never fail a turn: an unknown tool, bad arguments, a tool error, a timeout or a server
//! that went away all become a result text the model reads and can explain. Several calls in
//! one step run in parallel. After `--max-tool-steps` rounds of calls, or once the turn has made
//! [`MAX_TOOL_CALLS_PER_TURN`] calls, one last call is made without tools, so the model must
//! answer with what it has.
//!
//! The client's own tools (OpenAI `tools`) are offered beside the box's. The box cannot run
//! them: a step that calls one ends the turn with finish reason `tool_calls`, and the client's
//! next request brings the results and continues the loop. Box calls of that same step still
//! run in the box first; their message and results are logged before the message holding the
//! client's calls, so every call in memory is answered before the next assistant message.
//!
//! An answer cut at `--max-answer-bytes` ends the turn with its text: its tool calls may be
//! incomplete and are never run. A model that answers only with tool calls where none were
//! offered has nothing to say: that is an upstream error, not an empty answer.

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::prompts::{PromptName, Prompts};
use super::{
    Agent, AgentOutcome, AgentSink, FinishReason, TurnInput, cut_before_text,
    tool_calls_without_tools,
};
use crate::llm::{ChatMessage, ChatRequest, LlmClient, LlmError, Role, ToolCall, Usage};
use crate::tools::Toolbox;

/// `--max-tool-steps`' default: rounds of tool calls in one turn before the model must answer.
pub const DEFAULT_MAX_TOOL_STEPS: usize = 6;

/// Tool calls one turn may make, over all its steps. A model that keeps calling tools (a
/// loop, or dozens of calls per step) would otherwise fill the log with thousands of tool rows
/// per turn; past this the model is offered no tools and must answer.
pub const MAX_TOOL_CALLS_PER_TURN: usize = 64;

pub struct ToolAgent {
    llm: LlmClient,
    model: String,
    prompts: Prompts,
    /// Which prompt is the system prompt: `Tool` for the route graph's branch, `Chat` for react.
    prompt: PromptName,
    toolbox: Arc<Toolbox>,
    max_steps: usize,
}

impl ToolAgent {
    pub fn new(
        llm: LlmClient,
        model: impl Into<String>,
        prompts: Prompts,
        prompt: PromptName,
        toolbox: Arc<Toolbox>,
        max_steps: usize,
    ) -> ToolAgent {
        ToolAgent {
            llm,
            model: model.into(),
            prompts,
            prompt,
            toolbox,
            max_steps,
        }
    }

    async fn run(&self, input: &TurnInput, sink: &AgentSink) -> Result<AgentOutcome, LlmError> {
        let options = &input.options;
        // A client that sent its own instructions (Xiaozhi's intent and memory helpers) asked
        // for a specific job in a specific shape: that is answered as asked, without the box's
        // tools, unless the client offered tools itself (the OpenAI tool loop).
        let mut tools = match &options.instructions {
            Some(_) if options.client_tools.is_empty() => Vec::new(),
            _ => self.toolbox.definitions(options.device_id.is_some()),
        };
        tools.extend(options.client_tools.iter().cloned());
        let mut messages = input.model_messages(&self.prompts.get(self.prompt));
        let mut usage = Usage::default();
        let mut calls_made = 0;
        for step in 0..=self.max_steps {
            let may_call = step < self.max_steps && calls_made < MAX_TOOL_CALLS_PER_TURN;
            let offered: &[serde_json::Value] = if may_call { &tools } else { &[] };
            let request = ChatRequest {
                model: &self.model,
                messages: &messages,
                tools: offered,
                json_object: false,
                sampling: &options.sampling,
                // The client's choice binds the first call; the box's own rounds after it are
                // free to answer (a forced call in every round would never end).
                tool_choice: options.tool_choice.as_ref().filter(|_| step == 0),
            };
            let mut on_text = |piece: &str| sink.text(piece);
            let completion = self.llm.stream(&request, &mut on_text).await?;
            usage += completion.usage;
            let finish = FinishReason::of(&completion);
            let mut reply = completion.message;
            if reply.content.is_empty() {
                if offered.is_empty() && !reply.tool_calls.is_empty() {
                    return Err(tool_calls_without_tools());
                }
                if finish == FinishReason::Length {
                    return Err(cut_before_text());
                }
            }
            if offered.is_empty() || finish == FinishReason::Length {
                // Calls to tools that were not offered cannot be run, and the calls of a cut
                // answer may be incomplete: the text is the answer.
                reply.tool_calls.clear();
            }
            if reply.tool_calls.is_empty() {
                sink.message(reply);
                return Ok(AgentOutcome {
                    usage,
                    finish,
                    client_calls: Vec::new(),
                });
            }
            let budget = MAX_TOOL_CALLS_PER_TURN - calls_made;
            if reply.tool_calls.len() > budget {
                tracing::warn!(
                    thread = %input.thread_id,
                    asked = reply.tool_calls.len(),
                    budget,
                    "tool calls past the per-turn limit of {MAX_TOOL_CALLS_PER_TURN} dropped"
                );
                reply.tool_calls.truncate(budget);
            }
            calls_made += reply.tool_calls.len();
            for (i, call) in reply.tool_calls.iter_mut().enumerate() {
                if call.id.is_empty() {
                    call.id = format!("call_{step}_{i}");
                }
            }
            let (client_calls, box_calls): (Vec<_>, Vec<_>) = reply
                .tool_calls
                .drain(..)
                .partition(|call| options.client_tool_names().any(|n| n == call.function.name));
            if !box_calls.is_empty() {
                let mut asked = reply.clone();
                asked.tool_calls = box_calls;
                self.run_box_calls(input, asked, sink, &mut messages).await;
                // The text belongs to the first message; the client's calls follow the box's
                // results in a message of their own (see `client_tool_turn`).
                reply.content.clear();
            }
            if !client_calls.is_empty() {
                reply.tool_calls = client_calls;
                return Ok(client_tool_turn(reply, usage, sink));
            }
        }
        unreachable!("the last step offers no tools, so it answers")
    }

    /// Logs the model's message asking for the box's tools, runs them in parallel and logs
    /// each result; the model's next call sees them all.
    async fn run_box_calls(
        &self,
        input: &TurnInput,
        asked: ChatMessage,
        sink: &AgentSink,
        messages: &mut Vec<ChatMessage>,
    ) {
        sink.message(asked.clone());
        let device = input.options.device_id.as_deref();
        let results = futures::future::join_all(
            asked
                .tool_calls
                .iter()
                .map(|call| self.run_tool(&input.thread_id, call, device)),
        )
        .await;
        let calls = asked.tool_calls.clone();
        messages.push(asked);
        for (call, content) in calls.iter().zip(results) {
            let mut result = ChatMessage::new(Role::Tool, content);
            result.tool_call_id = Some(call.id.clone());
            result.name = Some(call.function.name.clone());
            sink.message(result.clone());
            messages.push(result);
        }
    }

    /// One tool call's result text: the tool's answer, or why there is none.
    async fn run_tool(&self, thread: &str, call: &ToolCall, device: Option<&str>) -> String {
        let started = Instant::now();
        let name = &call.function.name;
        let result = self
            .toolbox
            .call(name, &call.function.arguments, device)
            .await;
        let ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(text) => {
                tracing::info!(thread, tool = %name, ms, "tool answered");
                text
            }
            Err(e) => {
                tracing::warn!(thread, tool = %name, ms, "tool failed: {e}");
                format!("Error: {e}")
            }
        }
    }
}

/// Ends a turn whose model step called the client's tools: the message holding exactly those
/// calls is logged (after any box calls of the same step and their results, so memory stays a
/// valid OpenAI history in which every call is answered before the next message), and the
/// calls go to the client, whose next request brings their results.
fn client_tool_turn(asked: ChatMessage, usage: Usage, sink: &AgentSink) -> AgentOutcome {
    let client_calls = asked.tool_calls.clone();
    sink.message(asked);
    AgentOutcome {
        usage,
        finish: FinishReason::ToolCalls,
        client_calls,
    }
}

impl Agent for ToolAgent {
    fn answer<'a>(
        &'a self,
        input: &'a TurnInput,
        sink: AgentSink,
    ) -> BoxFuture<'a, Result<AgentOutcome, LlmError>> {
        async move { self.run(input, &sink).await }.boxed()
    }

    fn model_name(&self) -> &str {
        &self.model
    }

    fn box_tool_names(&self) -> Vec<String> {
        self.toolbox.names()
    }
}

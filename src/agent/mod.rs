//! The agent: what answers a turn, and the runner that gives each turn its memory.
//!
//! An [`Agent`] gets the conversation so far and emits [`AgentEvent`]s: answer text as soon as
//! it exists (for the client) and complete messages (for memory and the log). It knows nothing
//! of HTTP or SQLite; the [`turns`] runner does the rest: per-thread ordering, storing the user
//! turn before the model is called, keeping interrupted answers. New graphs (a router, a tool
//! loop) are new `Agent` implementations and plug in without touching `api/`.

pub mod chat;
pub mod chatty;
pub mod client_prompt;
pub mod graph;
mod memory;
pub mod profile;
pub mod prompts;
pub mod router;
pub mod tool_loop;
pub mod turns;

pub use self::client_prompt::{ClientPromptMode, ClientSystem};

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::llm::{
    ChatMessage, Completion, FINISH_LENGTH, LlmError, Role, Sampling, ToolCall, ToolChoice, Usage,
};

/// What a client asks of a turn besides its messages: where it comes from and how it wants
/// the answer. The request ([`turns::TurnRequest`]) and the agent's input ([`TurnInput`]) both
/// carry it whole, so a new field of a turn is added here once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnOptions {
    /// The device the turn comes from, when the session id names one.
    pub device_id: Option<String>,
    /// System instructions the client carried on a stateless call (Xiaozhi's intent and memory
    /// helpers send whole prompts). When present they replace the agent's own chat prompt.
    pub instructions: Option<String>,
    /// The client's system text on a remembered thread (Xiaozhi's persona, the time, its
    /// `<memory>` block), as `--client-prompt` joins it to the box's prompt. Fresh every turn,
    /// never stored.
    pub client_system: Option<ClientSystem>,
    /// The client hears text as it is produced (not collected into one reply). Collected
    /// answers must not contain filler, so chatty mode speaks only when this is set.
    pub streaming: bool,
    /// The client's own tools (OpenAI function definitions, checked): offered to the model
    /// beside the box's tools; the client runs them, so a step that calls one ends the turn
    /// with `finish_reason: "tool_calls"` (see [`tool_loop`]).
    pub client_tools: Vec<serde_json::Value>,
    /// The tool the model must call first, if the client asked for one.
    pub tool_choice: Option<ToolChoice>,
    /// The client's sampling settings, for the model calls that answer (never the router's).
    pub sampling: Sampling,
}

impl TurnOptions {
    /// The names of the client's tools.
    pub fn client_tool_names(&self) -> impl Iterator<Item = &str> {
        self.client_tools
            .iter()
            .filter_map(|tool| tool.pointer("/function/name")?.as_str())
    }
}

/// What the agent is given for one turn.
#[derive(Debug, Clone)]
pub struct TurnInput {
    pub thread_id: String,
    /// The conversation the model should see, oldest first, ending with the new user turn.
    /// Never holds system messages.
    pub history: Vec<ChatMessage>,
    /// The client's options, as the turn was requested.
    pub options: TurnOptions,
}

impl TurnInput {
    /// The turn is the standard OpenAI tool loop's: the client offered tools (or asked for a
    /// tool), or it brought the results of tools it ran. Such a turn goes to the tool loop,
    /// without router, chat branch or filler.
    pub fn is_client_tool_turn(&self) -> bool {
        !self.options.client_tools.is_empty()
            || self.history.last().is_some_and(|m| m.role == Role::Tool)
    }

    /// What an answering model call (chat, tools) is sent: one system message, then the
    /// conversation. The system text is the client's own instructions when it carried some on
    /// a stateless call; else the agent's `prompt`, joined with the client's system text of a
    /// remembered thread as `--client-prompt` says.
    pub fn model_messages(&self, prompt: &str) -> Vec<ChatMessage> {
        let system = match (&self.options.instructions, &self.options.client_system) {
            (Some(instructions), _) => instructions.clone(),
            (None, Some(client)) => client.join(prompt),
            (None, None) => prompt.to_string(),
        };
        self.messages_under(system)
    }

    /// What a helper call of the box's own (the router, chatty filler) is sent: its own
    /// `prompt` alone, then the conversation. The client's persona is not the router's business.
    pub fn own_prompt_messages(&self, prompt: &str) -> Vec<ChatMessage> {
        match &self.options.instructions {
            Some(instructions) => self.messages_under(instructions.clone()),
            None => self.messages_under(prompt.to_string()),
        }
    }

    fn messages_under(&self, system: String) -> Vec<ChatMessage> {
        let mut messages = Vec::with_capacity(self.history.len() + 4);
        messages.push(ChatMessage::system(system));
        messages.extend(self.history.iter().cloned());
        messages
    }
}

/// What an agent emits while it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// Answer text for the client, in order.
    Text(String),
    /// A complete message for memory and the log: the final answer, an AI message that called
    /// tools, a tool result. Text already emitted belongs to the next `Message` of role
    /// assistant. Boxed: a channel's slots are the size of its largest event, and every turn
    /// opens a few of these channels (at 1,000 streams, unboxed, 5 MiB more).
    Message(Box<ChatMessage>),
}

/// Where an agent sends its events. Sending never blocks; a closed sink (the turn was
/// interrupted) drops events, and the agent's future is dropped soon after.
#[derive(Clone)]
pub struct AgentSink(mpsc::UnboundedSender<AgentEvent>);

impl AgentSink {
    pub fn channel() -> (AgentSink, mpsc::UnboundedReceiver<AgentEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (AgentSink(tx), rx)
    }
    pub fn text(&self, piece: &str) {
        let _ = self.0.send(AgentEvent::Text(piece.to_string()));
    }
    pub fn message(&self, message: ChatMessage) {
        let _ = self.0.send(AgentEvent::Message(Box::new(message)));
    }
    /// Passes on an event another agent emitted, as it is.
    pub fn forward(&self, event: AgentEvent) {
        let _ = self.0.send(event);
    }
}

/// Why an answer ended, as the client is told (`finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FinishReason {
    /// The model finished.
    #[default]
    Stop,
    /// The answer was cut at `--max-answer-bytes` (or the model's own token limit).
    Length,
    /// The model called the client's tools: the client runs them and sends the results.
    ToolCalls,
}

impl FinishReason {
    /// Why a model call ended.
    pub fn of(completion: &Completion) -> FinishReason {
        match completion.finish_reason.as_deref() {
            Some(FINISH_LENGTH) => FinishReason::Length,
            _ => FinishReason::Stop,
        }
    }

    /// The protocols' word for it (OpenAI's and DashScope's are the same).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => FINISH_LENGTH,
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// How a turn's answer ended: the tokens all its model calls used, why it finished, and the
/// client's tools the model called (finish `ToolCalls`), which the client is given to run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentOutcome {
    pub usage: Usage,
    pub finish: FinishReason,
    pub client_calls: Vec<ToolCall>,
}

/// The error of a model that answered only with tool calls where none were offered: there is
/// nothing to say to the user, and an empty answer must not pass for one.
pub fn tool_calls_without_tools() -> LlmError {
    LlmError::Invalid("the model answered with tool calls but no tools were offered".into())
}

/// The error of an answer cut at the size limit before it said anything (all of it went into
/// tool calls, or the model's token limit came first): there is nothing to give the client.
pub fn cut_before_text() -> LlmError {
    LlmError::Invalid("the model's answer reached its length limit before any text".into())
}

/// A turn answerer.
pub trait Agent: Send + Sync + 'static {
    /// Answers one turn, emitting into `sink`; returns the tokens used by all model calls and
    /// why the answer ended.
    fn answer<'a>(
        &'a self,
        input: &'a TurnInput,
        sink: AgentSink,
    ) -> BoxFuture<'a, Result<AgentOutcome, LlmError>>;

    /// The model named in logs and usage reports.
    fn model_name(&self) -> &str;

    /// The names under which the box's own tools are offered to the model; a client's tool
    /// may not take one of them.
    fn box_tool_names(&self) -> Vec<String> {
        Vec::new()
    }
}

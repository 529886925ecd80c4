//! The upstream model: message types, the OpenAI-compatible client the agent calls, and the
//! bounded path from an SSE body to a finished answer.

mod assemble;
mod client;
mod message;
mod request_body;
mod sampling;

pub use assemble::{
    AnswerLimits, DEFAULT_MAX_ANSWER_BYTES, FINISH_LENGTH, MAX_TOOL_CALLS_PER_STEP, assemble_sse,
};
pub use client::{
    ChatRequest, DEFAULT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT_SECS, DEFAULT_READ_TIMEOUT_SECS,
    LlmClient, LlmConfig, LlmError, Thinking,
};
pub use message::{ChatMessage, Completion, FunctionCall, Role, ToolCall, Usage};
pub use sampling::{Sampling, ToolChoice};

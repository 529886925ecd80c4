//! The upstream model: message types and the OpenAI-compatible client the agent calls.

mod client;
mod message;

pub use client::{ChatRequest, LlmClient, LlmError};
pub use message::{ChatMessage, Completion, FunctionCall, Role, ToolCall, Usage};

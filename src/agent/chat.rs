//! The chat agent: one model call with the chat prompt, the thread's memory and the new turn.
//!
//! It is the route graph's chat branch, and answers turns that carry the client's own
//! instructions. It offers the model no tools. A model that answers with tool calls anyway and
//! no text wants tools: the route graph then hands the turn to its tool branch
//! ([`ChatAgent::speak`] says so); where there is no tool branch, it is an upstream error
//! ([`super::tool_calls_without_tools`]), never an empty answer.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::prompts::{PromptName, Prompts};
use super::{
    Agent, AgentOutcome, AgentSink, FinishReason, TurnInput, cut_before_text,
    tool_calls_without_tools,
};
use crate::llm::{ChatRequest, LlmClient, LlmError, Usage};

pub struct ChatAgent {
    llm: LlmClient,
    model: String,
    prompts: Prompts,
}

/// What the chat model did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatAnswer {
    /// It answered in words (logged, and spoken through the sink).
    Spoke(AgentOutcome),
    /// It said nothing and called tools: nothing was emitted, the turn is for a tool branch.
    WantsTools(Usage),
}

impl ChatAgent {
    pub fn new(llm: LlmClient, model: impl Into<String>, prompts: Prompts) -> ChatAgent {
        ChatAgent {
            llm,
            model: model.into(),
            prompts,
        }
    }

    /// One chat model call into `sink`.
    pub async fn speak(&self, input: &TurnInput, sink: &AgentSink) -> Result<ChatAnswer, LlmError> {
        let messages = input.model_messages(&self.prompts.get(PromptName::Chat));
        let request = ChatRequest {
            model: &self.model,
            messages: &messages,
            tools: &[],
            json_object: false,
            sampling: &input.options.sampling,
            tool_choice: None,
        };
        let mut on_text = |piece: &str| sink.text(piece);
        let completion = self.llm.stream(&request, &mut on_text).await?;
        let finish = FinishReason::of(&completion);
        let mut answer = completion.message;
        if answer.content.is_empty() {
            if !answer.tool_calls.is_empty() {
                return Ok(ChatAnswer::WantsTools(completion.usage));
            }
            if finish == FinishReason::Length {
                return Err(cut_before_text());
            }
        }
        // The model said something: that is the answer; calls to tools it was not offered
        // cannot be run.
        answer.tool_calls.clear();
        sink.message(answer);
        Ok(ChatAnswer::Spoke(AgentOutcome {
            usage: completion.usage,
            finish,
            client_calls: Vec::new(),
        }))
    }
}

impl Agent for ChatAgent {
    fn answer<'a>(
        &'a self,
        input: &'a TurnInput,
        sink: AgentSink,
    ) -> BoxFuture<'a, Result<AgentOutcome, LlmError>> {
        async move {
            match self.speak(input, &sink).await? {
                ChatAnswer::Spoke(outcome) => Ok(outcome),
                ChatAnswer::WantsTools(_) => Err(tool_calls_without_tools()),
            }
        }
        .boxed()
    }

    fn model_name(&self) -> &str {
        &self.model
    }
}

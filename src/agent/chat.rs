//! The chat agent: one model call with the chat prompt, the thread's memory and the new turn.
//!
//! This is the whole agent for plain conversation and, later, the chat branch of the router
//! graph.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::prompts::Prompts;
use super::{Agent, AgentSink, TurnInput};
use crate::llm::{ChatRequest, LlmClient, LlmError, Usage};

pub struct ChatAgent {
    llm: LlmClient,
    model: String,
    prompts: Prompts,
}

impl ChatAgent {
    pub fn new(llm: LlmClient, model: impl Into<String>, prompts: Prompts) -> ChatAgent {
        ChatAgent {
            llm,
            model: model.into(),
            prompts,
        }
    }
}

impl Agent for ChatAgent {
    fn answer<'a>(
        &'a self,
        input: &'a TurnInput,
        sink: AgentSink,
    ) -> BoxFuture<'a, Result<Usage, LlmError>> {
        async move {
            let messages = input.model_messages(&self.prompts.get("chat"));
            let request = ChatRequest {
                model: &self.model,
                messages: &messages,
                tools: &[],
                json_object: false,
            };
            let mut on_text = |piece: &str| sink.text(piece);
            let completion = self.llm.stream(&request, &mut on_text).await?;
            let mut answer = completion.message;
            // A chat call has no tools, so any tool call is noise; what is spoken is the text.
            answer.tool_calls.clear();
            sink.message(answer);
            Ok(completion.usage)
        }
        .boxed()
    }

    fn model_name(&self) -> &str {
        &self.model
    }
}

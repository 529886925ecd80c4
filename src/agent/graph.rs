//! Which agent answers turns: the graph chosen by `--graph` and `--tool-node`.
//!
//! - `route` (default): the router picks the chat branch (`chat_prompt.txt`, `--llm-name`) or
//!   the tool branch (`tool_prompt.txt`, `--tool-llm-name`, every tool), see [`super::router`];
//!   with `--tool-node chatty` the tool branch speaks filler while it works
//!   ([`super::chatty`]).
//! - `react`: one tool loop with the chat prompt, `--llm-name` and every tool.

use std::sync::Arc;

use super::Agent;
use super::chat::ChatAgent;
use super::chatty::ChattyToolAgent;
use super::prompts::Prompts;
use super::router::RouteGraph;
use super::tool_loop::ToolAgent;
use crate::cli::{GraphKind, ToolNode};
use crate::config::AgentConfig;
use crate::llm::LlmClient;
use crate::tools::Toolbox;

/// Builds the configured graph. `chat_model` is `--llm-name`.
pub fn build(
    config: &AgentConfig,
    llm: LlmClient,
    chat_model: &str,
    prompts: Prompts,
    toolbox: Arc<Toolbox>,
) -> Arc<dyn Agent> {
    match config.graph {
        GraphKind::React => Arc::new(ToolAgent::new(
            llm,
            chat_model,
            prompts,
            "chat",
            toolbox,
            config.max_tool_steps,
        )),
        GraphKind::Route => {
            let tools: Arc<dyn Agent> = Arc::new(ToolAgent::new(
                llm.clone(),
                config.tool_model.clone(),
                prompts.clone(),
                "tool",
                toolbox,
                config.max_tool_steps,
            ));
            let tool_branch = match config.tool_node {
                ToolNode::Tool => tools,
                ToolNode::Chatty => Arc::new(ChattyToolAgent::new(
                    tools,
                    llm.clone(),
                    config.router_model.clone(),
                    prompts.clone(),
                )),
            };
            let chat = ChatAgent::new(llm.clone(), chat_model, prompts.clone());
            Arc::new(RouteGraph::new(
                llm,
                config.router_model.clone(),
                prompts,
                chat,
                chat_model,
                tool_branch,
                config.router_timeout,
            ))
        }
    }
}

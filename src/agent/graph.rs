//! Which agent answers turns: the graph chosen by `--graph` and `--tool-node`.
//!
//! - `route` (default): the router picks the chat branch (`chat_prompt.txt`, `--llm-name`) or
//!   the tool branch (`tool_prompt.txt`, `--tool-llm-name`, every tool), see [`super::router`];
//!   with `--tool-node chatty` the tool branch speaks filler while it works
//!   ([`super::chatty`]).
//! - `react`: one tool loop with the chat prompt, `--llm-name` and every tool.
//!
//! The choices ([`GraphKind`], [`ToolNode`]) and their settings ([`AgentConfig`]) live here, with
//! the graph they shape; `config.rs` fills them from flags and `agent.json`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Agent;
use super::chat::ChatAgent;
use super::chatty::ChattyToolAgent;
use super::prompts::{PromptName, Prompts};
use super::router::{RouteGraph, RouterModel};
use super::tool_loop::ToolAgent;
use crate::llm::LlmClient;
use crate::metrics::{Metrics, UpstreamRole};
use crate::tools::Toolbox;

/// The agent graph (`--graph`, or `graph` in `agent.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphKind {
    #[default]
    Route,
    React,
}

/// The route graph's tool branch (`--tool-node`, or `tool_node` in `agent.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolNode {
    #[default]
    Tool,
    Chatty,
}

/// How turns are answered: the graph, its models, its tools' limit and where the MCP servers
/// are configured. Set by flags, or by `<config-dir>/agent.json`; see `config.rs`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub graph: GraphKind,
    pub router_model: String,
    /// `--router-timeout-ms`: how long the route graph waits for the router's decision.
    pub router_timeout: Duration,
    pub tool_model: String,
    pub tool_node: ToolNode,
    pub max_tool_steps: usize,
    pub tool_timeout: Duration,
    /// The MCP servers file (`--mcp-config`); `serve` reads it when it starts the tools.
    pub mcp_config: PathBuf,
    /// What each model role's calls carry in their body beside the box's own (a profile's
    /// `extra_body`), sent as is.
    pub extra_body: RoleExtraBody,
}

/// `extra_body` per model role: the chat model, the router (and chatty filler, which runs on
/// the router's model), the tool model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleExtraBody {
    pub chat: serde_json::Map<String, serde_json::Value>,
    pub router: serde_json::Map<String, serde_json::Value>,
    pub tool: serde_json::Map<String, serde_json::Value>,
}

/// Builds the configured graph. `chat_model` is `--llm-name`. Each model call is counted in
/// `metrics` under the job it does, and the router's decisions too.
pub fn build(
    config: &AgentConfig,
    llm: LlmClient,
    chat_model: &str,
    prompts: Prompts,
    toolbox: Arc<Toolbox>,
    metrics: &Arc<Metrics>,
) -> Arc<dyn Agent> {
    match config.graph {
        GraphKind::React => Arc::new(ToolAgent::new(
            llm.observed(metrics, UpstreamRole::Chat)
                .with_extra_body(&config.extra_body.chat),
            chat_model,
            prompts,
            PromptName::Chat,
            toolbox,
            config.max_tool_steps,
        )),
        GraphKind::Route => {
            let tools: Arc<dyn Agent> = Arc::new(ToolAgent::new(
                llm.observed(metrics, UpstreamRole::Tools)
                    .with_extra_body(&config.extra_body.tool),
                config.tool_model.clone(),
                prompts.clone(),
                PromptName::Tool,
                toolbox,
                config.max_tool_steps,
            ));
            let tool_branch = match config.tool_node {
                ToolNode::Tool => tools,
                ToolNode::Chatty => Arc::new(ChattyToolAgent::new(
                    tools,
                    llm.observed(metrics, UpstreamRole::Filler)
                        .with_extra_body(&config.extra_body.router),
                    config.router_model.clone(),
                    prompts.clone(),
                )),
            };
            let chat = ChatAgent::new(
                llm.observed(metrics, UpstreamRole::Chat)
                    .with_extra_body(&config.extra_body.chat),
                chat_model,
                prompts.clone(),
            );
            let router = RouterModel {
                llm: llm
                    .observed(metrics, UpstreamRole::Router)
                    .with_extra_body(&config.extra_body.router),
                model: config.router_model.clone(),
                timeout: config.router_timeout,
            };
            Arc::new(RouteGraph::new(
                router,
                prompts,
                chat,
                chat_model,
                tool_branch,
                Arc::clone(metrics),
            ))
        }
    }
}

impl AgentConfig {
    /// Every model the graph calls, by the job it does, for the ready line: `chat_model` is
    /// `--llm-name`. An operator reads here which names the upstream must know.
    pub fn models_in_use(&self, chat_model: &str) -> String {
        match (self.graph, self.tool_node) {
            (GraphKind::React, _) => format!("chat+tools={chat_model}"),
            (GraphKind::Route, ToolNode::Tool) => format!(
                "chat={chat_model} router={} tools={}",
                self.router_model, self.tool_model
            ),
            (GraphKind::Route, ToolNode::Chatty) => format!(
                "chat={chat_model} router+filler={} tools={}",
                self.router_model, self.tool_model
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(graph: GraphKind, tool_node: ToolNode) -> AgentConfig {
        AgentConfig {
            graph,
            router_model: "fast".into(),
            router_timeout: Duration::from_millis(1),
            tool_model: "big".into(),
            tool_node,
            max_tool_steps: 1,
            tool_timeout: Duration::from_secs(1),
            mcp_config: PathBuf::new(),
            extra_body: RoleExtraBody::default(),
        }
    }

    #[test]
    fn the_ready_line_names_every_model_the_graph_calls() {
        assert_eq!(
            config(GraphKind::Route, ToolNode::Tool).models_in_use("chat"),
            "chat=chat router=fast tools=big"
        );
        assert_eq!(
            config(GraphKind::Route, ToolNode::Chatty).models_in_use("chat"),
            "chat=chat router+filler=fast tools=big"
        );
        assert_eq!(
            config(GraphKind::React, ToolNode::Chatty).models_in_use("chat"),
            "chat+tools=chat"
        );
    }
}

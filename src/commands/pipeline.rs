//! The turn pipeline, built once from the configuration: prompts, the upstream client, the
//! tools (local and MCP), the graph and the [`TurnRunner`] over a store.
//!
//! `serve` answers the APIs with it; `chat` and `eval` run turns through the very same one
//! in-process, so what they show and grade is what the box does, not a copy of it.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::graph;
use crate::agent::prompts::Prompts;
use crate::agent::turns::TurnRunner;
use crate::config::{Config, ServeConfig};
use crate::llm::{LlmClient, LlmError};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tools::local::LocalTools;
use crate::tools::mcp::{self, HttpClientError, McpConfigError};
use crate::tools::{ToolSource, Toolbox};

/// How long MCP servers that are up get to connect before the pipeline is handed out.
const MCP_FIRST_WAIT: Duration = Duration::from_secs(5);

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    McpConfig(#[from] McpConfigError),
    #[error("cannot read the prompts: {0}")]
    Prompts(std::io::Error),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    McpClient(#[from] HttpClientError),
}

/// The running pipeline and the prompts it reads (which SIGHUP reloads in place).
pub struct Pipeline {
    pub turns: Arc<TurnRunner>,
    pub prompts: Prompts,
}

impl Pipeline {
    /// Builds the pipeline on `store`. MCP servers that are up connect first (a few seconds at
    /// most); the others join in the background when they come up.
    pub async fn build(
        config: &Config,
        serve: &ServeConfig,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<Pipeline, PipelineError> {
        let mcp_servers = mcp::config::load(&serve.agent.mcp_config)?;
        let prompts = Prompts::load(&config.config_dir).map_err(PipelineError::Prompts)?;
        let llm = LlmClient::new(&config.llm)?;
        let toolbox = Arc::new(start_tools(serve, mcp_servers, &metrics).await?);
        let agent = graph::build(
            &serve.agent,
            llm,
            &config.llm.model,
            prompts.clone(),
            toolbox,
            &metrics,
        );
        let turns = TurnRunner::new(
            store,
            agent,
            serve.on_busy,
            serve.history_max_messages,
            serve.turn_limits,
            metrics,
        );
        Ok(Pipeline { turns, prompts })
    }
}

/// The local tools and the configured MCP servers.
async fn start_tools(
    serve: &ServeConfig,
    mcp_servers: Vec<mcp::McpServerConfig>,
    metrics: &Arc<Metrics>,
) -> Result<Toolbox, HttpClientError> {
    let agent = &serve.agent;
    let mut sources: Vec<Arc<dyn ToolSource>> = vec![Arc::new(LocalTools::builtin())];
    if !mcp_servers.is_empty() {
        tracing::info!(
            config = %agent.mcp_config.display(),
            servers = mcp_servers.len(),
            "connecting to MCP servers"
        );
    }
    let servers = mcp::start_all(mcp_servers, MCP_FIRST_WAIT).await?;
    sources.extend(servers.into_iter().map(|s| s as Arc<dyn ToolSource>));
    Ok(Toolbox::new(
        sources,
        agent.tool_timeout,
        Arc::clone(metrics),
    ))
}

//! The turn pipeline, built from the configuration: the box's tools (local and MCP), and per
//! profile its prompts, upstream client, toolbox and graph; the [`TurnRunner`] over a store.
//!
//! `serve` answers the APIs with it (and rebuilds the profiles on a live reload,
//! `commands/live.rs`); `chat` and `eval` run turns through the very same one in-process, so
//! what they show and grade is what the box does, not a copy of it.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::graph;
use crate::agent::profile::{Profile, Profiles};
use crate::agent::prompts::Prompts;
use crate::agent::turns::TurnRunner;
use crate::config::profiles::{self, ProfileSettings};
use crate::config::{Config, ConfigError, ServeConfig};
use crate::llm::{LlmClient, LlmError};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tools::local::LocalTools;
use crate::tools::mcp::{self, HttpClientError, McpConfigError, McpServer, McpServerConfig};
use crate::tools::{ToolSource, Toolbox};

/// How long MCP servers that are up get to connect before the pipeline is handed out.
pub const MCP_FIRST_WAIT: Duration = Duration::from_secs(5);

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
    #[error(transparent)]
    Profiles(#[from] ConfigError),
}

/// The running pipeline: the turn runner, and the tools its profiles draw from.
pub struct Pipeline {
    pub turns: Arc<TurnRunner>,
    pub tools: Arc<BoxTools>,
    /// The profiles' settings as last read (the box page shows them).
    pub profiles: Vec<ProfileSettings>,
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
        let BoxConfig {
            servers: mcp_servers,
            profiles: settings,
            prompts,
        } = BoxConfig::read(config, serve)?;
        let tools = Arc::new(BoxTools::new(Arc::clone(&metrics))?);
        if !mcp_servers.is_empty() {
            tracing::info!(
                config = %serve.agent.mcp_config.display(),
                servers = mcp_servers.len(),
                "connecting to MCP servers"
            );
        }
        tools.sync_mcp(mcp_servers, MCP_FIRST_WAIT).await;
        let profiles = tools.build_profiles(&settings, prompts)?;
        let turns = TurnRunner::new(store, profiles, serve.turn_limits, metrics);
        Ok(Pipeline {
            turns,
            tools,
            profiles: settings,
        })
    }
}

/// Everything the box is built from, read from its files and checked; nothing has started
/// yet. `serve` reads it at start and on every live reload, so a bad file fails here, before
/// anything running changes.
pub struct BoxConfig {
    pub servers: Vec<McpServerConfig>,
    pub profiles: Vec<ProfileSettings>,
    /// Each profile's prompts, in `profiles`' order.
    pub prompts: Vec<Prompts>,
}

impl BoxConfig {
    pub fn read(config: &Config, serve: &ServeConfig) -> Result<BoxConfig, PipelineError> {
        let servers = mcp::config::load(&serve.agent.mcp_config)?;
        let profiles = profiles::resolve(&config.config_dir, &config.llm, serve)?;
        check_tool_names(&profiles, &servers)?;
        let prompts = profiles
            .iter()
            .map(|s| Prompts::from_dir(&s.prompts_dir).map_err(PipelineError::Prompts))
            .collect::<Result<_, _>>()?;
        Ok(BoxConfig {
            servers,
            profiles,
            prompts,
        })
    }
}

/// The box's tools: the local ones and the configured MCP servers, each server connected
/// once however many profiles use it.
pub struct BoxTools {
    /// The MCP servers in `mcp_config.json`'s order (the order the model sees their tools in).
    mcp: std::sync::Mutex<Vec<Arc<McpServer>>>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl BoxTools {
    pub fn new(metrics: Arc<Metrics>) -> Result<BoxTools, HttpClientError> {
        Ok(BoxTools {
            mcp: std::sync::Mutex::default(),
            http: mcp::http_client()?,
            metrics,
        })
    }

    /// The MCP servers running now.
    pub fn mcp_servers(&self) -> Vec<Arc<McpServer>> {
        self.mcp.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes the running servers those of `configs`: a server whose entry is unchanged keeps
    /// its connection, a new or changed one is started, a removed or changed one is stopped.
    /// Waits up to `first_wait` for the new ones' first connection attempts.
    pub async fn sync_mcp(&self, configs: Vec<McpServerConfig>, first_wait: Duration) {
        let mut started = Vec::new();
        {
            let mut running = self.mcp.lock().unwrap_or_else(|e| e.into_inner());
            let mut next = Vec::with_capacity(configs.len());
            for config in configs {
                match running.iter().position(|s| *s.config() == config) {
                    Some(i) => next.push(running.swap_remove(i)),
                    None => {
                        tracing::info!(server = %config.name, "MCP server added or changed; connecting");
                        let (server, tried) = McpServer::start(config, self.http.clone());
                        started.push(tried);
                        next.push(server);
                    }
                }
            }
            for gone in running.drain(..) {
                tracing::info!(server = %gone.config().name, "MCP server removed or changed; disconnecting");
                gone.stop();
            }
            *running = next;
        }
        mcp::wait_first_attempts(started, first_wait).await;
    }

    /// Builds every profile of `settings`, with its `prompts` (same order), over these tools.
    pub fn build_profiles(
        &self,
        settings: &[ProfileSettings],
        prompts: Vec<Prompts>,
    ) -> Result<Profiles, PipelineError> {
        let mut built = Vec::with_capacity(settings.len());
        for (s, prompts) in settings.iter().zip(prompts) {
            let llm = LlmClient::new(&s.llm)?;
            let toolbox = Arc::new(self.toolbox_for(s));
            let agent = graph::build(
                &s.agent,
                llm,
                &s.llm.model,
                prompts.clone(),
                toolbox,
                &self.metrics,
            );
            built.push(Profile {
                name: s.name.clone(),
                is_default: s.is_default,
                app_ids: s.app_ids.clone(),
                agent,
                prompts,
                memory_scope: s.memory_scope,
                client_prompt: s.client_prompt,
                on_busy: s.on_busy,
                history_max_messages: s.history_max_messages,
            });
        }
        Ok(Profiles::new(built))
    }

    /// The tools profile `s` may use: all, or the MCP servers and local tools its `tools`
    /// names ([`check_tool_names`] has made sure each name is one of them).
    fn toolbox_for(&self, s: &ProfileSettings) -> Toolbox {
        let local = match &s.tools {
            None => LocalTools::builtin(),
            Some(allowed) => LocalTools::only(allowed),
        };
        let mut sources: Vec<Arc<dyn ToolSource>> = vec![Arc::new(local)];
        sources.extend(
            self.mcp_servers()
                .into_iter()
                .filter(|m| allowed(s, &m.config().name))
                .map(|m| m as Arc<dyn ToolSource>),
        );
        Toolbox::new(sources, s.agent.tool_timeout, Arc::clone(&self.metrics))
    }
}

/// Every name in a profile's `tools` is a local tool or a server of `servers`: a misspelt
/// one is a configuration error, not a tool silently missing.
fn check_tool_names(
    settings: &[ProfileSettings],
    servers: &[McpServerConfig],
) -> Result<(), ConfigError> {
    let local = LocalTools::builtin().names();
    for s in settings {
        let unknown = s
            .tools
            .iter()
            .flatten()
            .find(|name| !local.contains(name) && !servers.iter().any(|m| m.name == **name));
        if let Some(unknown) = unknown {
            return Err(ConfigError::new(format!(
                "profile {}: \"tools\" names {unknown:?}, which is neither a local tool ({}) \
                 nor an MCP server of the servers file",
                s.name,
                local.join(", ")
            )));
        }
    }
    Ok(())
}

/// Whether profile `s` may use the tool or server `name`.
pub fn allowed(s: &ProfileSettings, name: &str) -> bool {
    s.tools
        .as_ref()
        .is_none_or(|tools| tools.iter().any(|t| t == name))
}

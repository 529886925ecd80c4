//! The one configuration struct, built from the command line, the environment and `.env`.
//!
//! Everything the server needs to know is resolved and validated here, before anything
//! starts, so that a bad setting stops the start with a one-line reason instead of failing
//! on the first request. Secrets are wrapped in [`Secret`] so they cannot reach a log line by
//! way of `Debug`.
//!
//! Config sits with the commands at the top of the module graph: it reads `cli.rs` and fills
//! the domains' own settings types (`AgentConfig`, `LlmConfig`, `TurnLimits`, `HttpLimits`),
//! taking their defaults from the domains' constants. It does not reach into what it
//! configures: the export target and the MCP servers file are kept as given (plain values)
//! and turned into export's and the tools' own types by `commands/serve.rs`, with the
//! domains' own checks, before anything starts.

pub mod profiles;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::agent::ClientPromptMode;
use crate::agent::graph::{AgentConfig, GraphKind, RoleExtraBody, ToolNode};
use crate::agent::router::DEFAULT_ROUTER_MODEL;
use crate::agent::tool_loop::DEFAULT_MAX_TOOL_STEPS;
use crate::agent::turns::{BusyPolicy, MemoryScope, TurnLimits};
use crate::cli::{GlobalArgs, HttpArgs, ServeArgs};
use crate::http::HttpLimits;
use crate::llm::{
    DEFAULT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT_SECS, DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_READ_TIMEOUT_SECS, LlmConfig,
};
use crate::redact::{Secret, redact_url};
use crate::tools::DEFAULT_TOOL_TIMEOUT_SECS;
use crate::tools::mcp::MCP_CONFIG_FILE;

/// DashScope's OpenAI-compatible endpoint: the original system's default upstream.
pub const DEFAULT_BASE_URL: &str = "https://dashscope.aliyuncs.com/compatible-mode/v1";

/// The smallest `--max-answer-bytes`: room for a sentence and a tool call's arguments.
const MIN_MAX_ANSWER_BYTES: usize = 1024;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub api_addr: SocketAddr,
    pub viewer_addr: Option<SocketAddr>,
    pub fake_stream: bool,
    pub memory_scope: MemoryScope,
    pub client_prompt: ClientPromptMode,
    /// `--retain-days`: conversations untouched this long are pruned.
    pub retain: Option<Duration>,
    pub on_busy: BusyPolicy,
    pub history_max_messages: usize,
    pub keepalive: Duration,
    pub max_body_bytes: usize,
    /// `FAST_AUTH_KEYS` as given; empty means "use or generate the data-dir key".
    pub auth_keys: Vec<Secret>,
    pub no_auth: bool,
    /// `--demo`: the upstream is the built-in canned model (`base_url` points at it).
    pub demo: bool,
    /// `--export-to`: copy the log to PostgreSQL while serving
    /// (`crate::export::spawn_follower`).
    pub export: Option<ExportSettings>,
    /// `--viewer-open`: the viewer without login (trusted LAN only).
    pub viewer_open: bool,
    /// `--metrics-open`: `GET /metrics` without a key (trusted LAN only).
    pub metrics_open: bool,
    pub agent: AgentConfig,
    /// `--turn-timeout-secs` and `--client-stall-secs`.
    pub turn_limits: TurnLimits,
    /// Timeouts and the connection cap of each port.
    pub http: HttpLimits,
}

/// `--export-to` and its companions as given. `serve` checks them into export's
/// `FollowOptions` (the URL and the box id, each with export's own rules) before it starts
/// anything, so a bad one still stops the start with one line.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// The PostgreSQL URL; it usually holds a password.
    pub url: Secret,
    /// `--export-box-id`.
    pub box_id: Option<String>,
    /// `--export-interval-secs` (at least a second).
    pub interval: Duration,
}

/// `agent.json`: the agent settings an operator keeps in the config directory (same names as
/// the flags, with `_`; comments allowed); flags win over it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    graph: Option<GraphKind>,
    router_llm_name: Option<String>,
    tool_llm_name: Option<String>,
    tool_node: Option<ToolNode>,
    max_tool_steps: Option<usize>,
    tool_timeout_secs: Option<u64>,
    /// Relative to the config directory.
    mcp_config: Option<PathBuf>,
}

impl AgentFile {
    fn load(config_dir: &std::path::Path) -> Result<AgentFile, ConfigError> {
        let path = config_dir.join("agent.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AgentFile::default()),
            Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
        };
        jsonc_parser::parse_to_serde_value(&text, &Default::default())
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }
}

/// The router's model when none is named: DashScope's fast model there, elsewhere the one
/// model the operator named (a local server has no `qwen-flash`).
fn default_router_model(llm: &LlmConfig) -> &str {
    if llm.is_dashscope() {
        DEFAULT_ROUTER_MODEL
    } else {
        &llm.model
    }
}

/// The agent's settings: flags first, then `agent.json`, then the defaults; checked.
fn resolve_agent(args: &ServeArgs, config: &Config) -> Result<AgentConfig, ConfigError> {
    let file = AgentFile::load(&config.config_dir)?;
    let name = |flag: &Option<String>, from_file: Option<String>, default: &str, what: &str| {
        let value = flag
            .clone()
            .or(from_file)
            .unwrap_or_else(|| default.to_string());
        if value.trim().is_empty() {
            Err(ConfigError(format!("--{what} must not be empty")))
        } else {
            Ok(value)
        }
    };
    let max_tool_steps = args
        .max_tool_steps
        .or(file.max_tool_steps)
        .unwrap_or(DEFAULT_MAX_TOOL_STEPS);
    if max_tool_steps == 0 {
        return Err(ConfigError("--max-tool-steps must be at least 1".into()));
    }
    let tool_timeout_secs = args
        .tool_timeout_secs
        .or(file.tool_timeout_secs)
        .unwrap_or(DEFAULT_TOOL_TIMEOUT_SECS);
    if tool_timeout_secs == 0 {
        return Err(ConfigError("--tool-timeout-secs must be at least 1".into()));
    }
    if args.router_timeout_ms == 0 {
        return Err(ConfigError("--router-timeout-ms must be at least 1".into()));
    }
    if let Some(path) = &args.mcp_config
        && !path.exists()
    {
        return Err(ConfigError(format!(
            "--mcp-config {}: no such file",
            path.display()
        )));
    }
    let mcp_config = args
        .mcp_config
        .clone()
        .or_else(|| file.mcp_config.map(|p| config.config_dir.join(p)))
        .unwrap_or_else(|| config.config_dir.join(MCP_CONFIG_FILE));
    Ok(AgentConfig {
        graph: args.graph.or(file.graph).unwrap_or_default(),
        router_model: name(
            &args.router_llm_name,
            file.router_llm_name,
            default_router_model(&config.llm),
            "router-llm-name",
        )?,
        router_timeout: Duration::from_millis(args.router_timeout_ms),
        tool_model: name(
            &args.tool_llm_name,
            file.tool_llm_name,
            &config.llm.model,
            "tool-llm-name",
        )?,
        tool_node: args.tool_node.or(file.tool_node).unwrap_or_default(),
        max_tool_steps,
        tool_timeout: Duration::from_secs(tool_timeout_secs),
        mcp_config,
        extra_body: RoleExtraBody::default(),
    })
}

/// The whole configuration of one process.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub config_dir: PathBuf,
    pub llm: LlmConfig,
}

/// A configuration problem, reported as one line before exiting non-zero.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError(message.into())
    }
}

impl Config {
    /// Global settings shared by every subcommand.
    pub fn from_global(global: &GlobalArgs) -> Result<Config, ConfigError> {
        let base_url = global
            .base_url
            .clone()
            .or_else(|| env_nonempty("ALI_BASE_URL"))
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let base_url = check_base_url(&base_url)?;
        if global.llm_name.trim().is_empty() {
            return Err(ConfigError("--llm-name must not be empty".into()));
        }
        Ok(Config {
            data_dir: global.data_dir.clone(),
            config_dir: global.config_dir.clone(),
            llm: LlmConfig {
                base_url,
                api_key: env_nonempty("ALI_API_KEY").map(Secret::new),
                model: global.llm_name.clone(),
                connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
                read_timeout: Duration::from_secs(DEFAULT_READ_TIMEOUT_SECS),
                attempts: DEFAULT_ATTEMPTS,
                max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
                thinking: global.thinking,
            },
        })
    }

    /// The same configuration with `base_url` as its upstream and no upstream key
    /// (`serve --demo`'s built-in model needs none, and the user's key must not go to it).
    pub fn with_upstream(mut self, base_url: &str) -> Config {
        self.llm.base_url = base_url.trim_end_matches('/').to_string();
        self.llm.api_key = None;
        self
    }

    /// Adds the `serve` settings, checking what only a server needs.
    pub fn for_serve(mut self, args: &ServeArgs) -> Result<(Config, ServeConfig), ConfigError> {
        if self.llm.api_key.is_none() && self.llm.base_url == DEFAULT_BASE_URL {
            return Err(ConfigError(
                "ALI_API_KEY is not set (environment or .env); DashScope needs it. \
                 Set it, or point --base-url at a local model server"
                    .into(),
            ));
        }
        if args.llm_attempts == 0 {
            return Err(ConfigError("--llm-attempts must be at least 1".into()));
        }
        if args.history_max_messages == 0 {
            return Err(ConfigError(
                "--history-max-messages must be at least 1".into(),
            ));
        }
        if args.keepalive_secs == 0 {
            return Err(ConfigError("--keepalive-secs must be at least 1".into()));
        }
        if args.turn_timeout_secs == 0 {
            return Err(ConfigError("--turn-timeout-secs must be at least 1".into()));
        }
        if args.client_stall_secs == 0 {
            return Err(ConfigError("--client-stall-secs must be at least 1".into()));
        }
        self.llm.connect_timeout = Duration::from_secs(args.llm_connect_timeout_secs.max(1));
        self.llm.read_timeout = Duration::from_secs(args.llm_read_timeout_secs.max(1));
        self.llm.attempts = args.llm_attempts;
        if args.max_answer_bytes < MIN_MAX_ANSWER_BYTES {
            return Err(ConfigError(format!(
                "--max-answer-bytes must be at least {MIN_MAX_ANSWER_BYTES}"
            )));
        }
        self.llm.max_answer_bytes = args.max_answer_bytes;

        let api_addr = socket_addr(&args.host, args.port)?;
        let viewer_addr = match args.viewer_port {
            0 => None,
            port if port == args.port => {
                return Err(ConfigError(format!(
                    "--viewer-port {port} is the API port too; pick another or 0 to turn it off"
                )));
            }
            port => Some(socket_addr(&args.host, port)?),
        };
        let export = args.export_to.as_ref().map(|url| ExportSettings {
            url: Secret::new(url.clone()),
            box_id: args.export_box_id.clone(),
            interval: Duration::from_secs(args.export_interval_secs.max(1)),
        });
        let auth_keys = auth_keys_from_env();
        let agent = resolve_agent(args, &self)?;
        let http = http_limits(&args.http)?;
        let serve = ServeConfig {
            agent,
            api_addr,
            viewer_addr,
            fake_stream: args.fake_stream,
            memory_scope: args.memory_scope,
            client_prompt: args.client_prompt,
            retain: args
                .retain_days
                .map(|days| Duration::from_secs(u64::from(days) * 24 * 3600)),
            on_busy: args.on_busy,
            history_max_messages: args.history_max_messages,
            keepalive: Duration::from_secs(args.keepalive_secs),
            max_body_bytes: args.max_body_bytes,
            auth_keys,
            no_auth: args.no_auth,
            demo: args.demo,
            export,
            viewer_open: args.viewer_open,
            metrics_open: args.metrics_open,
            turn_limits: TurnLimits {
                turn_timeout: Duration::from_secs(args.turn_timeout_secs),
                client_stall: Duration::from_secs(args.client_stall_secs),
            },
            http,
        };
        Ok((self, serve))
    }

    /// The SQLite file inside the data directory.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("lang-agent.sqlite3")
    }
}

/// An upstream base URL, checked (http or https) and without its trailing `/`.
fn check_base_url(base_url: &str) -> Result<String, ConfigError> {
    let base_url = base_url.trim_end_matches('/').to_string();
    let parsed = reqwest::Url::parse(&base_url).map_err(|e| {
        let shown = redact_url(&base_url);
        ConfigError(format!("upstream base URL {shown:?} is not a URL: {e}"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError(format!(
            "upstream base URL {:?} must start with http:// or https://",
            redact_url(&base_url)
        )));
    }
    Ok(base_url)
}

/// `FAST_AUTH_KEYS` (a comma list) as given; empty means "use or generate the data-dir key".
/// Shared by `serve` and the standalone viewer, which log in with the same keys.
pub fn auth_keys_from_env() -> Vec<Secret> {
    env_nonempty("FAST_AUTH_KEYS")
        .map(|keys| {
            keys.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(Secret::new)
                .collect()
        })
        .unwrap_or_default()
}

/// The connection limits of a port (`serve`'s two, or `lang-agent viewer`'s), checked.
pub fn http_limits(args: &HttpArgs) -> Result<HttpLimits, ConfigError> {
    let secs = |value: u64, flag: &str| {
        if value == 0 {
            Err(ConfigError(format!("--{flag} must be at least 1")))
        } else {
            Ok(Duration::from_secs(value))
        }
    };
    // The cap is counted in a semaphore's permits; a million is beyond any box's descriptors.
    if !(1..=1_000_000).contains(&args.max_connections) {
        return Err(ConfigError(
            "--max-connections must be between 1 and 1000000".into(),
        ));
    }
    Ok(HttpLimits {
        header_timeout: secs(args.http_header_timeout_secs, "http-header-timeout-secs")?,
        body_timeout: secs(args.http_body_timeout_secs, "http-body-timeout-secs")?,
        idle_timeout: secs(args.http_idle_timeout_secs, "http-idle-timeout-secs")?,
        max_connections: args.max_connections,
    })
}

pub fn socket_addr(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| ConfigError(format!("--host {host:?} is not an IP address")))?;
    Ok(SocketAddr::new(ip, port))
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests;

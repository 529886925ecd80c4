//! One MCP server, kept connected through rmcp, offering its tools as a [`ToolSource`].
//!
//! Each server has a supervisor task until [`McpServer::stop`] (a live reload that removed or
//! changed it) or the end of the process. It connects (streamable
//! HTTP, legacy SSE or a child process), lists the tools, and then waits: for
//! `notifications/tools/list_changed`, which makes it list them again, or for the connection to
//! end. A server that is down — at start or later — offers no tools and is retried in the
//! background with a growing pause (0.5 s doubling to 10 s), so the box starts and keeps
//! answering without it, and its tools appear the moment it is back.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, ClientConfig, Implementation, ListToolsResult, PaginatedRequestParams,
};
use rmcp::service::{ClientInitializeError, NotificationContext, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceExt};
use serde_json::{Map, Value};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::config::{McpServerConfig, McpTransport};
use super::{child_env, legacy_sse};
use crate::tools::{ToolError, ToolSource, ToolSpec};

/// Why a server could not be connected. Logged, never fatal: the server is retried in the
/// background.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Boxed: rmcp's initialize error is large, and this travels in every `Result` here.
    #[error("{0}")]
    Initialize(Box<ClientInitializeError>),
    #[error("{0}")]
    LegacySse(#[from] legacy_sse::LegacySseError),
    #[error("cannot start {command:?}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    ListTools(#[from] ServiceError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl From<ClientInitializeError> for ConnectError {
    fn from(error: ClientInitializeError) -> Self {
        ConnectError::Initialize(Box::new(error))
    }
}

/// Longest wait for a server to connect and answer `initialize` and `tools/list`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Most tools one server offers: a server listing more offers its first ones. Every tool's
/// definition goes into each tool-model request, so a server must not be able to flood them.
pub const MAX_TOOLS_PER_SERVER: usize = 128;
/// Most `tools/list` pages read: a server answering with endless (or empty) pages cannot keep
/// the listing going.
const MAX_TOOL_PAGES: usize = 32;
const LONGEST_RETRY: Duration = Duration::from_secs(10);

/// A configured MCP server and, while connected, its tools.
pub struct McpServer {
    config: McpServerConfig,
    live: RwLock<Option<Live>>,
    /// Whether "too many tools" was logged (once is enough).
    told_too_many: AtomicBool,
    /// Where the supervisor stands, for the box page.
    state: RwLock<McpState>,
    /// Stops the supervisor and closes the connection (a child process is killed).
    stop: CancellationToken,
}

/// What an MCP server's supervisor is doing, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpState {
    pub phase: McpPhase,
    pub since: chrono::DateTime<chrono::Utc>,
    /// The last reason a connection failed or ended, kept after it reconnects.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpPhase {
    Connecting,
    Connected,
    Retrying,
    Stopped,
}

impl McpPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            McpPhase::Connecting => "connecting",
            McpPhase::Connected => "connected",
            McpPhase::Retrying => "retrying",
            McpPhase::Stopped => "stopped",
        }
    }
}

/// The state of a connected server.
struct Live {
    peer: Peer<RoleClient>,
    tools: Vec<ToolSpec>,
}

/// Passes `tools/list_changed` notifications to the supervisor.
struct ListChangeHandler {
    changed: mpsc::UnboundedSender<()>,
}

impl ClientHandler for ListChangeHandler {
    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        let _ = self.changed.send(());
        std::future::ready(())
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            Default::default(),
            Implementation::new("lang-agent", env!("CARGO_PKG_VERSION")),
        )
    }
}

impl McpServer {
    /// Starts the server's supervisor. The returned receiver turns `true` once the first
    /// connection attempt is over, whether it succeeded or not.
    pub fn start(
        config: McpServerConfig,
        http: reqwest::Client,
    ) -> (Arc<McpServer>, watch::Receiver<bool>) {
        let server = Arc::new(McpServer::new(config));
        let (tried, tried_rx) = watch::channel(false);
        let stop = server.stop.clone();
        let supervisor = Arc::clone(&server);
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = supervisor.clone().supervise(http, tried) => {}
            }
            supervisor.set_live(None);
            supervisor.set_phase(McpPhase::Stopped, None);
        });
        (server, tried_rx)
    }

    fn new(config: McpServerConfig) -> McpServer {
        McpServer {
            config,
            live: RwLock::new(None),
            told_too_many: AtomicBool::new(false),
            state: RwLock::new(McpState {
                phase: McpPhase::Connecting,
                since: chrono::Utc::now(),
                last_error: None,
            }),
            stop: CancellationToken::new(),
        }
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &McpServerConfig {
        &self.config
    }

    /// Where its supervisor stands.
    pub fn state(&self) -> McpState {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Disconnects for good: the supervisor ends, a child process is killed, its tools go.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Records a new phase; `error` replaces the last error when given.
    fn set_phase(&self, phase: McpPhase, error: Option<String>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.phase != phase {
            state.phase = phase;
            state.since = chrono::Utc::now();
        }
        if error.is_some() {
            state.last_error = error;
        }
    }

    async fn supervise(self: Arc<Self>, http: reqwest::Client, tried: watch::Sender<bool>) {
        let name = self.config.name.clone();
        let mut pause = FIRST_RETRY;
        let mut failures = 0u32;
        loop {
            let (changed_tx, mut changed) = mpsc::unbounded_channel();
            let handler = ListChangeHandler {
                changed: changed_tx,
            };
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let running = connect(&self.config.transport, &http, handler).await?;
                let tools = self.list_tools(running.peer()).await?;
                Ok::<_, ConnectError>((running, tools))
            })
            .await
            .unwrap_or(Err(ConnectError::Timeout(CONNECT_TIMEOUT)));
            tried.send_replace(true);
            match connected {
                Ok((running, tools)) => {
                    pause = FIRST_RETRY;
                    failures = 0;
                    tracing::info!(
                        server = %name,
                        tools = %tool_names(&tools),
                        "MCP server connected"
                    );
                    self.set_live(Some(Live {
                        peer: running.peer().clone(),
                        tools,
                    }));
                    self.set_phase(McpPhase::Connected, None);
                    self.serve_until_closed(running, &mut changed).await;
                    self.set_live(None);
                    self.set_phase(McpPhase::Retrying, Some("the connection closed".into()));
                    tracing::warn!(server = %name, "MCP server disconnected; reconnecting");
                }
                Err(e) => {
                    self.set_phase(McpPhase::Retrying, Some(e.to_string()));
                    failures += 1;
                    // Say it once loudly; a server that stays down is retried quietly.
                    if failures == 1 {
                        tracing::warn!(server = %name, "MCP server not reachable, retrying in the background: {e}");
                    } else {
                        tracing::debug!(server = %name, "MCP server still not reachable: {e}");
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_RETRY);
        }
    }

    /// Keeps the tool list fresh until the connection ends.
    async fn serve_until_closed(
        &self,
        running: RunningService<RoleClient, ListChangeHandler>,
        changed: &mut mpsc::UnboundedReceiver<()>,
    ) {
        let peer = running.peer().clone();
        let closed = running.waiting();
        tokio::pin!(closed);
        loop {
            tokio::select! {
                _ = &mut closed => return,
                Some(()) = changed.recv() => {
                    match self.list_tools(&peer).await {
                        Ok(tools) => {
                            tracing::info!(server = %self.config.name, tools = %tool_names(&tools), "MCP tools changed");
                            if let Some(live) = self.live.write().unwrap_or_else(|e| e.into_inner()).as_mut() {
                                live.tools = tools;
                            }
                        }
                        Err(e) => tracing::warn!(server = %self.config.name, "MCP tools not re-listed: {e}"),
                    }
                }
            }
        }
    }

    /// The server's tools, at most [`MAX_TOOLS_PER_SERVER`] of them.
    async fn list_tools(&self, peer: &Peer<RoleClient>) -> Result<Vec<ToolSpec>, ServiceError> {
        let listed = first_tools(|cursor| {
            peer.list_tools(Some(PaginatedRequestParams::default().with_cursor(cursor)))
        })
        .await?;
        if listed.more && !self.told_too_many.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                server = %self.config.name,
                "MCP server lists more than {MAX_TOOLS_PER_SERVER} tools; offering the first {MAX_TOOLS_PER_SERVER}"
            );
        }
        Ok(listed.tools)
    }

    /// Connects once, lists the tools and disconnects: `lang-agent doctor`'s check of a
    /// configured server, without a supervisor or retries.
    pub async fn probe(
        config: McpServerConfig,
        http: &reqwest::Client,
    ) -> Result<Vec<ToolSpec>, ConnectError> {
        let server = McpServer::new(config);
        let (changed, _) = mpsc::unbounded_channel();
        tokio::time::timeout(CONNECT_TIMEOUT, async {
            let running = connect(
                &server.config.transport,
                http,
                ListChangeHandler { changed },
            )
            .await?;
            let tools = server.list_tools(running.peer()).await;
            let _ = running.cancel().await;
            Ok(tools?)
        })
        .await
        .unwrap_or(Err(ConnectError::Timeout(CONNECT_TIMEOUT)))
    }

    fn set_live(&self, live: Option<Live>) {
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
    }

    fn peer(&self) -> Option<Peer<RoleClient>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|l| l.peer.clone())
    }
}

impl ToolSource for McpServer {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn tools(&self) -> Vec<ToolSpec> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|l| l.tools.clone())
            .unwrap_or_default()
    }

    fn timeout(&self) -> Option<Duration> {
        self.config.timeout
    }

    fn call<'a>(
        &'a self,
        tool: &'a str,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ToolError>> {
        async move {
            let peer = self.peer().ok_or_else(|| {
                ToolError::Unavailable(format!("MCP server {:?} is down", self.config.name))
            })?;
            let mut params = CallToolRequestParams::new(tool.to_string());
            params.arguments = Some(arguments);
            let result = peer.call_tool(params).await.map_err(|e| {
                ToolError::Unavailable(format!("MCP server {:?}: {e}", self.config.name))
            })?;
            let mut texts: Vec<String> = result
                .content
                .iter()
                .filter_map(|block| block.as_text().map(|t| t.text.clone()))
                .collect();
            if texts.is_empty()
                && let Some(structured) = &result.structured_content
            {
                texts.push(structured.to_string());
            }
            let text = texts.join("\n");
            if result.is_error == Some(true) {
                Err(ToolError::Failed(text))
            } else {
                Ok(text)
            }
        }
        .boxed()
    }
}

/// Opens an rmcp session over the configured transport.
async fn connect(
    transport: &McpTransport,
    http: &reqwest::Client,
    handler: ListChangeHandler,
) -> Result<RunningService<RoleClient, ListChangeHandler>, ConnectError> {
    match transport {
        McpTransport::StreamableHttp { url, headers } => {
            let custom = headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                .custom_headers(custom)
                // Parallel tool calls on one server must not queue behind each other.
                .max_concurrent_requests(8);
            let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
            Ok(handler.serve(transport).await?)
        }
        McpTransport::Sse { url, headers } => {
            let (sink, stream) = legacy_sse::connect(http, url, headers).await?;
            Ok(handler.serve((sink, stream)).await?)
        }
        McpTransport::Stdio { command, args, env } => {
            let mut cmd = tokio::process::Command::new(command);
            // Our secrets stay ours: see child_env.
            cmd.args(args)
                .env_clear()
                .envs(child_env::child_environment(env));
            let (child, stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|source| ConnectError::Spawn {
                    command: command.clone(),
                    source,
                })?;
            if let Some(stderr) = stderr {
                // A server's own log lines go to ours, at debug level, instead of our stderr.
                let command = command.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(%command, "MCP server stderr: {line}");
                    }
                });
            }
            Ok(handler.serve(child).await?)
        }
    }
}

/// The first tools a server lists, and whether it had more.
#[derive(Debug)]
struct FirstTools {
    tools: Vec<ToolSpec>,
    more: bool,
}

/// Reads `tools/list` pages through `page` until the list ends, [`MAX_TOOLS_PER_SERVER`] are
/// read, or [`MAX_TOOL_PAGES`] pages were read.
async fn first_tools<F, Fut>(mut page: F) -> Result<FirstTools, ServiceError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<ListToolsResult, ServiceError>>,
{
    let mut tools = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_TOOL_PAGES {
        let listed = page(cursor.take()).await?;
        tools.extend(listed.tools.into_iter().map(|tool| ToolSpec {
            name: tool.name.to_string(),
            description: tool.description.as_deref().unwrap_or_default().to_string(),
            input_schema: Value::Object((*tool.input_schema).clone()),
        }));
        if tools.len() > MAX_TOOLS_PER_SERVER {
            break;
        }
        cursor = listed.next_cursor;
        if cursor.is_none() {
            return Ok(FirstTools { tools, more: false });
        }
    }
    let more = cursor.is_some() || tools.len() > MAX_TOOLS_PER_SERVER;
    tools.truncate(MAX_TOOLS_PER_SERVER);
    Ok(FirstTools { tools, more })
}

fn tool_names(tools: &[ToolSpec]) -> String {
    tools
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rmcp::model::Tool;

    use super::*;

    fn tool(i: usize) -> Tool {
        Tool::new(
            format!("t{i}"),
            "a tool",
            Arc::new(serde_json::Map::from_iter([(
                "type".into(),
                "object".into(),
            )])),
        )
    }

    /// One `tools/list` answer, ready at once.
    type Page = std::future::Ready<Result<ListToolsResult, ServiceError>>;

    /// Pages of `per_page` tools, `total` in all (`None`: endless), the way a server lists them.
    fn pages(
        per_page: usize,
        total: Option<usize>,
    ) -> (Arc<Mutex<usize>>, impl FnMut(Option<String>) -> Page) {
        let calls = Arc::new(Mutex::new(0));
        let counter = Arc::clone(&calls);
        let page = move |cursor: Option<String>| {
            *counter.lock().unwrap() += 1;
            let start: usize = cursor.map_or(0, |c| c.parse().unwrap());
            let end = total.map_or(start + per_page, |t| (start + per_page).min(t));
            let mut result = ListToolsResult::with_all_items((start..end).map(tool).collect());
            if total.is_none_or(|t| end < t) {
                result.next_cursor = Some(end.to_string());
            }
            std::future::ready(Ok(result))
        };
        (calls, page)
    }

    #[tokio::test]
    async fn a_server_offers_at_most_128_tools_and_endless_pages_end() {
        let (_, page) = pages(50, Some(120));
        let listed = first_tools(page).await.unwrap();
        assert_eq!((listed.tools.len(), listed.more), (120, false));

        let (_, page) = pages(1000, Some(1000));
        let listed = first_tools(page).await.unwrap();
        assert_eq!(
            (listed.tools.len(), listed.more),
            (MAX_TOOLS_PER_SERVER, true)
        );
        assert_eq!(listed.tools[127].name, "t127");

        let (calls, page) = pages(7, None);
        let listed = first_tools(page).await.unwrap();
        assert_eq!(
            (listed.tools.len(), listed.more),
            (MAX_TOOLS_PER_SERVER, true)
        );
        assert_eq!(*calls.lock().unwrap(), 19, "stopped once past the cap");

        // Empty pages forever: the page limit ends the listing.
        let (calls, page) = pages(0, None);
        let listed = first_tools(page).await.unwrap();
        assert_eq!((listed.tools.len(), listed.more), (0, true));
        assert_eq!(*calls.lock().unwrap(), MAX_TOOL_PAGES);
    }
}

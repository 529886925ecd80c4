//! `lang-agent serve`: opens the store, builds the agent, and serves the API and the viewer
//! until a signal.
//!
//! Start-up order matters for the operator: everything that can fail on bad configuration
//! (store, keys, prompts, ports) is done before the "ready" line and systemd's READY=1, so a
//! box that says it is up really is. SIGHUP re-reads the prompts; SIGTERM and Ctrl-C stop
//! accepting connections and give running answers a grace period to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::graph;
use crate::agent::prompts::Prompts;
use crate::agent::turns::TurnRunner;
use crate::api::{self, ApiSettings, AppState};
use crate::auth::ApiKeys;
use crate::config::{Config, ServeConfig, redact_url};
use crate::http;
use crate::llm::LlmClient;
use crate::export;
use crate::store::Store;
use crate::tools::local::LocalTools;
use crate::tools::{ToolSource, Toolbox, mcp};
use crate::viewer;

/// How long running answers (and open viewer streams) get after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn serve(config: Config, serve: ServeConfig) -> Result<(), String> {
    let ports = if serve.viewer_addr.is_some() { 2 } else { 1 };
    http::raise_open_files_limit(ports * serve.http.max_connections);
    let db_path = config.sqlite_path();
    let store = Store::open_for_serve(&db_path)
        .map_err(|e| format!("cannot open the store {}: {e}", db_path.display()))?;
    let (keys, key_source) = ApiKeys::resolve(&serve.auth_keys, serve.no_auth, &config.data_dir)
        .map_err(|e| {
            format!(
                "cannot set up API keys in {}: {e}",
                config.data_dir.display()
            )
        })?;
    let prompts =
        Prompts::load(&config.config_dir).map_err(|e| format!("cannot read prompts: {e}"))?;
    let llm = LlmClient::new(&config.llm).map_err(|e| e.to_string())?;
    let toolbox = Arc::new(tool_box(&serve).await?);
    let agent = graph::build(
        &serve.agent,
        llm,
        &config.llm.model,
        prompts.clone(),
        toolbox,
    );
    let turns = TurnRunner::new(
        store.clone(),
        agent,
        serve.on_busy,
        serve.history_max_messages,
        serve.turn_limits,
    );
    let state = AppState {
        turns,
        keys: keys.clone(),
        settings: Arc::new(ApiSettings {
            memory_scope: serve.memory_scope,
            fake_stream: serve.fake_stream,
            keepalive: serve.keepalive,
            max_body_bytes: serve.max_body_bytes,
        }),
    };
    let (api_listener, api_addr) = bind(serve.api_addr).await?;
    let viewer = match serve.viewer_addr {
        Some(addr) => {
            let (listener, bound) = bind(addr).await?;
            let access = viewer::access_for_serve(&keys, serve.viewer_open);
            let app = viewer::router(viewer::Source::from_store(store.clone()), access);
            Some((listener, bound, app))
        }
        None => None,
    };

    key_source.announce(&keys, &config.data_dir);
    tracing::info!(
        data = %db_path.display(),
        model = %config.llm.model,
        graph = ?serve.agent.graph,
        upstream = %redact_url(&config.llm.base_url),
        api = %api_addr,
        viewer = %viewer.as_ref().map_or("off".to_string(), |v| v.1.to_string()),
        "lang-agent ready"
    );
    // Not running under systemd is the normal case for a developer; nothing to report.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tokio::spawn(reload_prompts_on_sighup(prompts));

    let shutdown = stop_on_signal();
    store.spawn_search_indexer(shutdown.clone());
    let follower = serve.export.map(|options| {
        tracing::info!(to = %options.target, "exporting the log to PostgreSQL as it grows");
        export::spawn_follower(store.clone(), options, shutdown.clone())
    });
    let api_server = http::serve(api_listener, api::router(state), serve.http, &shutdown);
    let viewer_server = async {
        match viewer {
            Some((listener, _, app)) => http::serve(listener, app, serve.http, &shutdown).await,
            None => Ok(()),
        }
    };
    let servers = async {
        let (api, viewer) = tokio::join!(api_server, viewer_server);
        api.and(viewer)
    };
    let result = run_with_grace(servers, &shutdown).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(follower) = follower {
        // The follower finishes its batch (one transaction) and stops.
        let _ = follower.await;
    }
    tracing::info!("lang-agent stopped");
    result
}

/// Binds `addr`, saying which address could not be had.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, bound))
}

/// The local tools and the configured MCP servers. Servers that are up connect before the box
/// says it is ready (a few seconds at most); the others join in the background when they come up.
async fn tool_box(serve: &ServeConfig) -> Result<Toolbox, String> {
    let agent = &serve.agent;
    let mut sources: Vec<Arc<dyn ToolSource>> = vec![Arc::new(LocalTools::builtin())];
    if !agent.mcp_servers.is_empty() {
        tracing::info!(
            config = %agent.mcp_config.display(),
            servers = agent.mcp_servers.len(),
            "connecting to MCP servers"
        );
    }
    let servers = mcp::start_all(agent.mcp_servers.clone(), Duration::from_secs(5)).await?;
    sources.extend(servers.into_iter().map(|s| s as Arc<dyn ToolSource>));
    Ok(Toolbox::new(sources, agent.tool_timeout))
}

/// Answers are many small writes (one SSE frame per piece of text); Nagle's algorithm would
/// hold each back until the previous one is acknowledged, adding ~40 ms per turn.
pub fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY not set: {e}");
    }
}

/// A token cancelled by the first SIGTERM or Ctrl-C.
pub fn stop_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = terminate => {},
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

/// Runs `servers` until they finish, or until [`SHUTDOWN_GRACE`] after `shutdown`: live
/// streams (a viewer left open) never end by themselves and must not hold the process.
pub async fn run_with_grace(
    servers: impl Future<Output = Result<(), String>>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    tokio::select! {
        result = servers => result,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("streams still open after {SHUTDOWN_GRACE:?}; closing them");
            Ok(())
        }
    }
}

async fn reload_prompts_on_sighup(prompts: Prompts) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; prompts reload only on restart");
        return;
    };
    while hangups.recv().await.is_some() {
        match prompts.reload() {
            Ok(()) => tracing::info!("prompts reloaded"),
            Err(e) => tracing::error!("prompts not reloaded, keeping the old ones: {e}"),
        }
    }
}

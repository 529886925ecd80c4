//! `lang-agent serve`: opens the store, builds the agent, and serves the API until a signal.
//!
//! Start-up order matters for the operator: everything that can fail on bad configuration
//! (store, keys, prompts, ports) is done before the "ready" line and systemd's READY=1, so a
//! box that says it is up really is. SIGHUP re-reads the prompts; SIGTERM and Ctrl-C stop
//! accepting connections and let running answers finish.

use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::agent::graph;
use crate::agent::prompts::Prompts;
use crate::agent::turns::TurnRunner;
use crate::api::auth::{ApiKeys, KeySource};
use crate::api::{self, ApiSettings, AppState};
use crate::config::{Config, ServeConfig, redact_url};
use crate::llm::LlmClient;
use crate::store::{Store, export};
use crate::tools::local::LocalTools;
use crate::tools::{ToolSource, Toolbox, mcp};
use tokio_util::sync::CancellationToken;

pub async fn serve(config: Config, serve: ServeConfig) -> Result<(), String> {
    let db_path = config.sqlite_path();
    let store = Store::open(&db_path)
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
    let listener = TcpListener::bind(serve.api_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", serve.api_addr))?;
    let api_addr = listener.local_addr().map_err(|e| e.to_string())?;

    announce_keys(&keys, &key_source, &config);
    tracing::info!(
        data = %db_path.display(),
        model = %config.llm.model,
        graph = ?serve.agent.graph,
        upstream = %redact_url(&config.llm.base_url),
        api = %api_addr,
        viewer = %serve.viewer_addr.map_or("off".to_string(), |a| a.to_string()),
        "lang-agent ready"
    );
    // Not running under systemd is the normal case for a developer; nothing to report.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tokio::spawn(reload_prompts_on_sighup(prompts));

    let shutdown = CancellationToken::new();
    let follower = serve.export.map(|options| {
        tracing::info!(to = %options.target, "exporting the log to PostgreSQL as it grows");
        export::spawn_follower(store.clone(), options, shutdown.clone())
    });
    let stopping = shutdown.clone();
    axum::serve(listener.tap_io(no_delay), api::router(state))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            stopping.cancel();
        })
        .await
        .map_err(|e| format!("server stopped: {e}"))?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(follower) = follower {
        // The follower finishes its batch (one transaction) and stops.
        let _ = follower.await;
    }
    tracing::info!("lang-agent stopped");
    Ok(())
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

fn announce_keys(keys: &ApiKeys, source: &KeySource, config: &Config) {
    match source {
        KeySource::Environment(n) => tracing::info!("API keys: {n} from FAST_AUTH_KEYS"),
        KeySource::StoredFile => tracing::info!(
            "API key: the one in {} (set FAST_AUTH_KEYS to use your own)",
            config.data_dir.join("api_key").display()
        ),
        KeySource::Generated => {
            // Printed once, on the terminal rather than the log, the only time it is shown.
            if let Some(key) = keys.first() {
                println!(
                    "\nNo FAST_AUTH_KEYS set: generated an API key and kept it in {}\n\n    {}\n\n\
                     Give it to Xiaozhi as the AliBL api_key (and to OpenAI clients). It is not shown again.\n",
                    config.data_dir.join("api_key").display(),
                    key.expose()
                );
            }
        }
        KeySource::Open => tracing::warn!(
            "!!! --no-auth: the API is OPEN to anyone who can reach this port, and spends your \
             model key. Only use this on a closed network. !!!"
        ),
    }
}

/// Answers are many small writes (one SSE frame per piece of text); Nagle's algorithm would
/// hold each back until the previous one is acknowledged, adding ~40 ms per turn.
pub fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY not set: {e}");
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

async fn shutdown_signal() {
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
}

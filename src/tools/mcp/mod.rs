//! MCP servers as tool sources, through rmcp (the official Rust SDK).
//!
//! [`config`] reads `mcp_config.json`; [`client`] keeps each server connected and its tool
//! list fresh (at most [`client::MAX_TOOLS_PER_SERVER`] tools per server); `child_env` is the
//! environment stdio servers start with (none of our secrets); [`legacy_sse`] adapts the legacy HTTP+SSE transport Xiaozhi's tool server speaks
//! to rmcp's Sink/Stream transport.

mod child_env;
pub mod client;
pub mod config;
pub mod legacy_sse;

use std::time::Duration;

use tokio::sync::watch;

pub use client::{ConnectError, McpPhase, McpServer, McpState};
pub use config::{MCP_CONFIG_FILE, McpConfigError, McpServerConfig, McpTransport};

/// The HTTP client MCP servers share could not be built (the TLS set-up failed).
#[derive(Debug, thiserror::Error)]
#[error("MCP HTTP client: {0}")]
pub struct HttpClientError(#[from] reqwest::Error);

/// The HTTP client the MCP servers share. No read timeout: SSE streams stay open and quiet
/// for as long as the server lives; calls are bounded by the toolbox's per-tool timeout.
pub fn http_client() -> Result<reqwest::Client, HttpClientError> {
    crate::http::install_tls_provider();
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?)
}

/// Waits up to `first_wait` for just-started servers' first connection attempts, so that
/// servers already up have their tools from the first turn. A server still down (or slow)
/// after that is not waited for: it joins when it comes up.
pub async fn wait_first_attempts(started: Vec<watch::Receiver<bool>>, first_wait: Duration) {
    let attempts = started.into_iter().map(|mut tried| async move {
        let _ = tried.wait_for(|done| *done).await;
    });
    let _ = tokio::time::timeout(first_wait, futures::future::join_all(attempts)).await;
}

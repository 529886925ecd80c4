//! Stopping on a signal: the first SIGTERM or Ctrl-C cancels a token every server and
//! background task watches, and [`run_with_grace`] bounds how long running answers (and open
//! viewer streams, which never end by themselves) may take afterwards.
//!
//! Shared by every command that serves or follows: `serve`, `lang-agent viewer` and
//! `export --follow`.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long running answers (and open viewer streams) get after a stop signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
pub async fn run_with_grace(servers: impl Future<Output = ()>, shutdown: &CancellationToken) {
    tokio::select! {
        () = servers => {}
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("streams still open after {SHUTDOWN_GRACE:?}; closing them");
        }
    }
}

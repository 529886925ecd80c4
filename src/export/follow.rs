//! `export --follow` and serve's in-process exporter: copy new messages as they are stored,
//! for as long as the process runs.
//!
//! PostgreSQL may restart, a network may drop, an administrator may kill the session, the
//! server may stop answering while keeping the socket open: each time the follower drops the
//! connection (a stall is one that takes longer than `ExportOptions::stall_timeout` to connect
//! or to take a batch), reconnects with growing pauses and resumes from the progress stored in
//! PostgreSQL, so nothing is lost or copied twice. Problems a retry cannot fix (the URL, the
//! login, rights, the table's shape) end `export --follow` with the reason; inside `serve`
//! they are logged and retried slowly, since the box must keep serving while someone fixes the
//! database.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{ExportError, ExportOptions, Exporter, PgTarget, Progress};
use crate::metrics::ExportPosition;
use crate::store::Store;

/// Seconds between looks for new messages once caught up (`export --interval-secs`,
/// `serve --export-interval-secs`).
pub const DEFAULT_FOLLOW_INTERVAL_SECS: u64 = 2;

/// First pause after a failure; doubled on each failure in a row up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where and how often to follow.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    pub target: PgTarget,
    pub export: ExportOptions,
    /// Pause between looks for new messages once caught up.
    pub interval: Duration,
}

impl FollowOptions {
    /// Options from command-line values, checked.
    pub fn new(
        url: &str,
        box_id: Option<&str>,
        interval_secs: u64,
        batch_size: usize,
    ) -> Result<FollowOptions, ExportError> {
        Ok(FollowOptions {
            target: PgTarget::parse(url)?,
            export: ExportOptions::new(box_id, batch_size)?,
            interval: Duration::from_secs(interval_secs.max(1)),
        })
    }
}

/// Follows until `shutdown`; returns how many rows were copied, or the first error that a
/// retry cannot fix.
pub async fn follow(
    store: Store,
    options: FollowOptions,
    shutdown: CancellationToken,
) -> Result<u64, ExportError> {
    let position = ExportPosition::default();
    follow_loop(&store, &options, &shutdown, true, &position).await
}

/// Runs the follower as a task until `shutdown` (for `serve`). It never gives up: every error
/// is logged and retried. It tells `position` how far PostgreSQL has the log (the metrics'
/// export lag).
pub fn spawn_follower(
    store: Store,
    options: FollowOptions,
    shutdown: CancellationToken,
    position: ExportPosition,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Only fatal errors return, and this loop has none.
        let _ = follow_loop(&store, &options, &shutdown, false, &position).await;
    })
}

async fn follow_loop(
    store: &Store,
    options: &FollowOptions,
    shutdown: &CancellationToken,
    stop_on_permanent: bool,
    position: &ExportPosition,
) -> Result<u64, ExportError> {
    let shown = options.target.redacted();
    tracing::info!(
        "export: following the conversation log into {shown} every {}s",
        options.interval.as_secs()
    );
    let mut total = 0u64;
    let mut backoff = BACKOFF_START;
    // Every connection after the first is a recovery worth a log line.
    let mut reconnecting = false;
    loop {
        // Connecting and copying go round this inner block until an error sends us back.
        let failure = 'session: {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return Ok(total),
                r = Exporter::connect(store, &options.target, &options.export) => r,
            };
            let mut exporter = match connected {
                Ok(exporter) => exporter,
                Err(e) => break 'session e,
            };
            position.exported_up_to(exporter.last_id());
            if reconnecting {
                tracing::info!(
                    "export: connected to {shown} again; resuming after id {}",
                    exporter.last_id()
                );
            }
            loop {
                let mut progress = Progress::hidden();
                let copied = tokio::select! {
                    // Dropping a batch mid-way rolls its transaction back: nothing half-written.
                    _ = shutdown.cancelled() => return Ok(total),
                    r = exporter.copy_new(&mut progress) => r,
                };
                match copied {
                    Ok(summary) => {
                        position.exported_up_to(exporter.last_id());
                        backoff = BACKOFF_START;
                        total += summary.rows;
                        if summary.rows > 0 {
                            tracing::info!(
                                "export: {} new messages into {shown} (up to id {})",
                                summary.rows,
                                summary.last_id
                            );
                        }
                    }
                    Err(e) => break 'session e,
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(total),
                    _ = tokio::time::sleep(options.interval) => {}
                }
            }
        };
        if !failure.is_transient() {
            if stop_on_permanent {
                return Err(failure);
            }
            // Someone has to fix this; meanwhile look again now and then, not in a tight loop.
            backoff = BACKOFF_MAX;
            tracing::error!("export: {failure}; trying again in {}s", backoff.as_secs());
        } else {
            tracing::warn!("export: {failure}; reconnecting in {}s", backoff.as_secs());
        }
        reconnecting = true;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(total),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

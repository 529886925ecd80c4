//! `lang-agent serve`: opens the store, builds the agent, and serves the API and the viewer
//! until a signal.
//!
//! Start-up order matters for the operator: everything that can fail on bad configuration
//! (export target, MCP servers file, store, keys, prompts, ports) is done before the "ready"
//! line and systemd's READY=1, so a box that says it is up really is. SIGHUP, or a change to
//! a config file, re-reads the configuration (`live.rs`); SIGTERM and Ctrl-C stop accepting connections and give running answers a grace
//! period to finish.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::box_control::ServeBox;
use super::live::{LiveBox, Reread};
use super::pipeline::{Pipeline, PipelineError};
use crate::api::{self, ApiSettings, AppState};
use crate::auth::{ApiKeys, KeyStoreError};
use crate::config::{Config, ExportSettings, ServeConfig};
use crate::export::{self, BadBoxId, BoxId, ExportOptions, FollowOptions};
use crate::http::{self, BindError, bind, run_with_grace, stop_on_signal};
use crate::metrics::{ExportPosition, Metrics, Readings};
use crate::mock_llm::{self, Defaults, MockLlmError, MockOptions};
use crate::pg::{PgTarget, PgUrlError};
use crate::redact::redact_url;
use crate::store::backup::{BackupError, ServingLock};
use crate::store::{Store, StoreError};
use crate::viewer;

/// Why `serve` could not start; one line, printed as `lang-agent: …`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--export-to: {0}")]
    ExportTo(PgUrlError),
    #[error("--export-box-id {0}")]
    ExportBoxId(BadBoxId),
    #[error("cannot open the store {}: {source}", path.display())]
    Store { path: PathBuf, source: StoreError },
    #[error(
        "{} is in use by another `lang-agent serve` (or a restore); one server per data directory",
        .0.display()
    )]
    DataDirBusy(PathBuf),
    #[error("cannot lock the data directory: {0}")]
    Lock(BackupError),
    #[error("cannot set up API keys: {0}")]
    Keys(#[from] KeyStoreError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Starts `serve --demo`'s upstream in this process: the fake upstream with its demo script,
/// paced like a quick model. Returns its base URL.
pub async fn start_demo_upstream() -> Result<String, MockLlmError> {
    mock_llm::start_in_process(MockOptions {
        host: "127.0.0.1".into(),
        port: 0,
        delay: Duration::from_millis(150),
        chunk_delay: Duration::from_millis(20),
        api_key: None,
        thinking_delay: Duration::ZERO,
        defaults: Defaults {
            demo: true,
            ..Defaults::default()
        },
    })
    .await
}

/// Runs `lang-agent serve` until a stop signal.
/// Runs `lang-agent serve` until a stop signal; `reread` reads the settings again on a live
/// reload.
pub async fn run(config: Config, serve: ServeConfig, reread: Reread) -> Result<(), ServeError> {
    let follow = serve.export.as_ref().map(follow_options).transpose()?;
    let ports = if serve.viewer_addr.is_some() { 2 } else { 1 };
    http::raise_open_files_limit(ports * serve.http.max_connections);
    let db_path = config.sqlite_path();
    // Before the store opens: a second server would close the first one's running turns.
    let _serving = ServingLock::take(&db_path).map_err(|e| match e {
        BackupError::Serving(dir) => ServeError::DataDirBusy(dir),
        other => ServeError::Lock(other),
    })?;
    let store = Store::open_for_serve(&db_path).map_err(|source| ServeError::Store {
        path: db_path.clone(),
        source,
    })?;
    let (keys, key_source) = ApiKeys::resolve(&serve.auth_keys, serve.no_auth, &config.data_dir)?;
    // At once: a key made now is shown even if the start fails after this (a busy port).
    key_source.announce(&config.data_dir);
    let metrics = Metrics::new(follow.is_some());
    store.time_writes(metrics.clone());
    let export_position = metrics.export_position();
    metrics.set_scrape_source(scrape_source(
        store.clone(),
        follow.is_some().then(|| export_position.clone()),
    ));
    let Pipeline {
        turns,
        tools,
        profiles,
    } = Pipeline::build(&config, &serve, store.clone(), metrics.clone()).await?;
    let profile_count = profiles.len();
    let live = LiveBox::new(
        config.clone(),
        reread,
        Arc::clone(&turns),
        tools,
        profiles,
        serve.agent.mcp_config.clone(),
    );
    let state = AppState {
        turns,
        keys: keys.clone(),
        settings: Arc::new(ApiSettings {
            fake_stream: serve.fake_stream,
            keepalive: serve.keepalive,
            max_body_bytes: serve.max_body_bytes,
            metrics_open: serve.metrics_open,
        }),
    };
    let (api_listener, api_addr) = bind(serve.api_addr).await?;
    let viewer = match serve.viewer_addr {
        Some(addr) => {
            let (listener, bound) = bind(addr).await?;
            let access = viewer::access_for_serve(&keys, serve.viewer_open);
            let control: Arc<dyn viewer::BoxControl> = Arc::new(ServeBox(Arc::clone(&live)));
            let source = viewer::Source::from_store(store.clone());
            let app = viewer::router(source, access, Some(control));
            Some((listener, bound, app))
        }
        None => None,
    };

    // Before the ready line: a reload asked for right after it must find its handler.
    live.spawn_reloader();
    tracing::info!(
        data = %db_path.display(),
        models = %serve.agent.models_in_use(&config.llm.model),
        profiles = profile_count,
        graph = ?serve.agent.graph,
        upstream = %redact_url(&config.llm.base_url),
        api = %api_addr,
        viewer = %viewer.as_ref().map_or("off".to_string(), |v| v.1.to_string()),
        mode = if serve.demo { "demo (canned answers, no LLM key)" } else { "live" },
        "lang-agent ready"
    );
    // Not running under systemd is the normal case for a developer; nothing to report.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(timeout) = sd_notify::watchdog_enabled() {
        tokio::spawn(ping_watchdog(timeout));
    }

    let shutdown = stop_on_signal();
    store.spawn_search_indexer(shutdown.clone());
    let caches = store.clone();
    crate::heap::spawn_trimmer(
        metrics,
        crate::heap::IDLE_CHECK,
        shutdown.clone(),
        move || {
            let store = caches.clone();
            async move {
                if let Err(e) = store.release_caches().await {
                    tracing::debug!("the store's caches were not released: {e}");
                }
            }
        },
        crate::heap::give_back_free_memory,
    );
    if let Some(retain) = serve.retain {
        tracing::info!("retention: conversations untouched for {retain:?} are deleted");
        store.spawn_pruner(retain, shutdown.clone());
    }
    let follower = follow.map(|options| {
        tracing::info!(to = %options.target, "exporting the log to PostgreSQL as it grows");
        export::spawn_follower(store.clone(), options, shutdown.clone(), export_position)
    });
    let api_server = http::serve(api_listener, api::router(state), serve.http, &shutdown);
    let viewer_server = async {
        if let Some((listener, _, app)) = viewer {
            http::serve(listener, app, serve.http, &shutdown).await;
        }
    };
    let servers = async {
        tokio::join!(api_server, viewer_server);
    };
    run_with_grace(servers, &shutdown).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(follower) = follower {
        // The follower finishes its batch (one transaction) and stops.
        let _ = follower.await;
    }
    tracing::info!("lang-agent stopped");
    Ok(())
}

/// `--export-to` and `--export-box-id` checked by export's own rules, with serve's flag
/// names in the message; batches as `lang-agent export`'s defaults.
fn follow_options(settings: &ExportSettings) -> Result<FollowOptions, ServeError> {
    let target = PgTarget::parse(settings.url.expose()).map_err(ServeError::ExportTo)?;
    let box_id = settings
        .box_id
        .as_deref()
        .map(BoxId::parse)
        .transpose()
        .map_err(ServeError::ExportBoxId)?;
    Ok(FollowOptions {
        target,
        export: ExportOptions {
            box_id,
            ..ExportOptions::default()
        },
        interval: settings.interval,
    })
}

/// What a scrape of `/metrics` reads from the running box: the database's size, the writer's
/// queue and, when the export follower runs (`position`), the messages it has yet to copy.
fn scrape_source(store: Store, position: Option<ExportPosition>) -> crate::metrics::ScrapeSource {
    Box::new(move || {
        let (store, position) = (store.clone(), position.clone());
        Box::pin(async move {
            let exported = position.as_ref().and_then(ExportPosition::get);
            let export_lag_rows = match exported {
                Some(id) => export::rows_after(&store, id).await.ok(),
                None => None,
            };
            Readings {
                store_size_bytes: Some(store.size_bytes()),
                store_writer_queue: Some(store.writer_queue() as u64),
                store_wal_pages: Some(store.wal_pages()),
                export_lag_rows,
            }
        })
    })
}

/// Tells systemd the process is alive (`WatchdogSec` in the unit) at twice the rate it asks.
/// The ping runs on the async runtime that serves every request: if the runtime wedges, the
/// pings stop and systemd restarts the box.
async fn ping_watchdog(timeout: std::time::Duration) {
    tracing::info!("systemd watchdog: pinging every {:?}", timeout / 2);
    let mut every = tokio::time::interval(timeout / 2);
    loop {
        every.tick().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::redact::Secret;

    fn settings(url: &str, box_id: Option<&str>) -> ExportSettings {
        ExportSettings {
            url: Secret::new(url),
            box_id: box_id.map(str::to_string),
            interval: Duration::from_secs(7),
        }
    }

    #[test]
    fn the_export_settings_are_checked_with_serves_flag_names() {
        let options =
            follow_options(&settings("postgresql://u:pw@127.0.0.1/db", Some("porch"))).unwrap();
        assert_eq!(options.interval, Duration::from_secs(7));
        assert_eq!(
            options.export.box_id.as_ref().map(|b| b.as_str()),
            Some("porch")
        );
        assert_eq!(options.export.batch_size, export::DEFAULT_BATCH_SIZE);
        assert_eq!(options.target.redacted(), "postgresql://u:***@127.0.0.1/db");

        let err = follow_options(&settings("postgresql://u:pw@127.0.0.1/db", Some("a b")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--export-box-id \"a b\": use 1 to 64"),
            "{err}"
        );
        let err = follow_options(&settings("mysql://u:pw@h/db", None))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--export-to: not a PostgreSQL URL") && !err.contains("pw@"),
            "{err}"
        );
    }
}

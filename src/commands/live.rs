//! Live configuration: SIGHUP, or any change to a file in the config directory (or to the MCP
//! servers file wherever it is), re-reads `agent.json`, the profiles, their prompts and
//! `mcp_config.json`, and puts the result in force without a restart.
//!
//! Invariants:
//! - All or nothing: everything is read and checked before anything changes; a bad file keeps
//!   the whole previous configuration, logs one line saying what is wrong, and is kept for the
//!   box page ([`LiveBox::status`]) until a reload succeeds.
//! - MCP servers whose entry did not change keep their connection; added ones connect, removed
//!   ones disconnect (a stdio child is stopped), changed ones reconnect.
//! - Running turns finish on the profile they started with (they hold it); new turns get the
//!   new one.
//! - One reload at a time; a burst of file events (an editor's save is several) is one reload.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use super::pipeline::{BoxConfig, BoxTools, MCP_FIRST_WAIT};
use crate::agent::turns::TurnRunner;
use crate::config::profiles::ProfileSettings;
use crate::config::{Config, ConfigError, ServeConfig};

/// File events that arrive within this window are one reload (an editor writes, renames and
/// changes modes in quick succession).
const SETTLE: Duration = Duration::from_millis(250);

/// Reads the `serve` settings again (flags as given, `agent.json` as it is now).
pub type Reread = Box<dyn Fn() -> Result<ServeConfig, ConfigError> + Send + Sync>;

/// The configuration in force, and how the last reload went.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub profiles: Vec<ProfileSettings>,
    pub mcp_config: PathBuf,
    /// When the configuration in force was read.
    pub at: chrono::DateTime<chrono::Utc>,
    /// What the last reload could not use (empty once one succeeds).
    pub errors: Vec<String>,
}

/// The running box's configuration, reloadable.
pub struct LiveBox {
    config: Config,
    reread: Reread,
    pub turns: Arc<TurnRunner>,
    pub tools: Arc<BoxTools>,
    loaded: RwLock<Loaded>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl LiveBox {
    pub fn new(
        config: Config,
        reread: Reread,
        turns: Arc<TurnRunner>,
        tools: Arc<BoxTools>,
        profiles: Vec<ProfileSettings>,
        mcp_config: PathBuf,
    ) -> Arc<LiveBox> {
        Arc::new(LiveBox {
            config,
            reread,
            turns,
            tools,
            loaded: RwLock::new(Loaded {
                profiles,
                mcp_config,
                at: chrono::Utc::now(),
                errors: Vec::new(),
            }),
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// The configuration in force and the last reload's errors.
    pub fn status(&self) -> Loaded {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The config directory (prompts and profiles live under it).
    pub fn config_dir(&self) -> &std::path::Path {
        &self.config.config_dir
    }

    /// Re-reads everything and puts it in force; on any error keeps the previous
    /// configuration and records why.
    pub async fn reload(&self) {
        let _one = self.one_at_a_time.lock().await;
        match self.try_reload().await {
            Ok(loaded) => {
                tracing::info!(
                    profiles = loaded.profiles.len(),
                    mcp_servers = self.tools.mcp_servers().len(),
                    "configuration reloaded"
                );
                *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = loaded;
            }
            Err(e) => {
                tracing::error!("configuration not reloaded, the previous one stays: {e}");
                let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
                loaded.errors = vec![e];
            }
        }
    }

    async fn try_reload(&self) -> Result<Loaded, String> {
        // Everything is read and checked first: nothing changes unless all of it is good.
        let serve = (self.reread)().map_err(|e| e.to_string())?;
        let BoxConfig {
            servers,
            profiles: settings,
            prompts,
        } = BoxConfig::read(&self.config, &serve).map_err(|e| e.to_string())?;
        self.tools.sync_mcp(servers, MCP_FIRST_WAIT).await;
        let profiles = self
            .tools
            .build_profiles(&settings, prompts)
            .map_err(|e| e.to_string())?;
        self.turns.set_profiles(profiles);
        Ok(Loaded {
            profiles: settings,
            mcp_config: serve.agent.mcp_config,
            at: chrono::Utc::now(),
            errors: Vec::new(),
        })
    }

    /// Reloads on SIGHUP and on changes under the config directory and to the MCP servers
    /// file, for the life of the process.
    pub fn spawn_reloader(self: &Arc<Self>) {
        let wake = Arc::new(Notify::new());
        let watcher = self.watch(Arc::clone(&wake));
        // Registered now, not in the task: a SIGHUP that comes before the task runs would
        // otherwise find no handler and stop the box.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangups) => {
                tokio::spawn(notify_on_sighup(hangups, Arc::clone(&wake)));
            }
            Err(e) => tracing::warn!(
                "cannot listen for SIGHUP ({e}); the configuration reloads on file changes only"
            ),
        }
        let live = Arc::clone(self);
        tokio::spawn(async move {
            // Kept alive here: dropping the watcher stops the kernel watch.
            let _watcher = watcher;
            loop {
                wake.notified().await;
                tokio::time::sleep(SETTLE).await;
                live.reload().await;
            }
        });
    }

    /// Asks the kernel to report changes under the config directory and to the servers file;
    /// each wakes `wake`. Without a watch (no such directory, no inotify) SIGHUP still works.
    fn watch(&self, wake: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
        let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or(p.to_path_buf());
        let config_dir = absolute(&self.config.config_dir);
        let servers_file = absolute(&self.status().mcp_config);
        let (dir, file) = (config_dir.clone(), servers_file.clone());
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            // Reads, `.bak` copies and the servers file's neighbours change nothing we use.
            let relevant = !matches!(event.kind, notify::EventKind::Access(_))
                && event.paths.iter().any(|p| {
                    (p.starts_with(&dir) || *p == file) && p.extension().is_none_or(|e| e != "bak")
                });
            if relevant {
                wake.notify_one();
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("config files are not watched (SIGHUP still reloads): {e}");
                return None;
            }
        };
        if let Err(e) = watcher.watch(&config_dir, RecursiveMode::Recursive) {
            tracing::warn!(
                dir = %config_dir.display(),
                "config directory not watched (SIGHUP still reloads): {e}"
            );
        }
        if !servers_file.starts_with(&config_dir)
            && let Some(parent) = servers_file.parent()
            && let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %parent.display(), "MCP servers file not watched: {e}");
        }
        Some(watcher)
    }
}

async fn notify_on_sighup(mut hangups: tokio::signal::unix::Signal, wake: Arc<Notify>) {
    while hangups.recv().await.is_some() {
        wake.notify_one();
    }
}

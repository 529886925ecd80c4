//! Live updates from a SQLite file that another process writes (`lang-agent viewer --db
//! file` next to a running `serve`).
//!
//! Another process's writes never reach this process's broadcast channel, and polling the
//! database on a timer is what this design avoids. In WAL mode every committed write lands in
//! the `-wal` file first, so the watcher asks the kernel (inotify, through `notify`) to report
//! changes to the database's directory, keeps only those touching the database or its `-wal`,
//! and then reads what changed: conversations updated since the last look, plus a full id
//! check only when the number of conversations says something was deleted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{Notify, broadcast};

use super::ViewerError;
use super::changes::{Coverage, KnownCounts};
use super::model::{parse_timestamp, timestamp_text};
use super::sqlite_source as sqlite;
use crate::store::{Store, StoreEvent};

/// Writes that arrive within this window are read together (one turn logs several messages).
const SETTLE: Duration = Duration::from_millis(40);
/// How far before the newest seen update to look again: `updated_at` is taken before a
/// transaction commits, so a slower writer can commit an older timestamp after a newer one.
const LOOKBACK: chrono::Duration = chrono::Duration::seconds(10);

/// Keeps the kernel watch alive; dropping it stops the watcher.
pub struct WalWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching the database file at `db_path`; changes are sent on `events`.
pub async fn spawn(
    store: Store,
    db_path: &Path,
    events: broadcast::Sender<StoreEvent>,
    known: Arc<Mutex<KnownCounts>>,
) -> Result<WalWatch, ViewerError> {
    let db_path = std::path::absolute(db_path).map_err(ViewerError::Path)?;
    let dir = db_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = db_path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let wal_name = format!("{name}-wal");

    let changed = Arc::new(Notify::new());
    let wake = changed.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let touches_db = event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|f| f.to_str().is_some_and(|f| f == name || f == wal_name))
        });
        if touches_db {
            wake.notify_one();
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;

    // Everything that exists now is known, not new.
    let mut newest = {
        let rows = store.run(|conn| sqlite::counts_since(conn, None)).await?;
        let newest = rows.iter().map(|(_, _, t)| t.clone()).max();
        known.lock().expect("known counts").apply(
            rows.into_iter().map(|(id, n, _)| (id, n)),
            Coverage::Everything,
        );
        newest
    };

    tokio::spawn(async move {
        loop {
            changed.notified().await;
            tokio::time::sleep(SETTLE).await;
            match look(&store, &known, newest.as_deref()).await {
                Ok((found, newer)) => {
                    newest = newer.or(newest);
                    for event in found {
                        let _ = events.send(event);
                    }
                }
                Err(e) => tracing::warn!("viewer: reading changes from the database: {e}"),
            }
        }
    });
    Ok(WalWatch { _watcher: watcher })
}

/// Reads what changed since `newest`; returns the events and the new newest update.
async fn look(
    store: &Store,
    known: &Arc<Mutex<KnownCounts>>,
    newest: Option<&str>,
) -> Result<(Vec<StoreEvent>, Option<String>), ViewerError> {
    let since = newest.map(|t| timestamp_text(parse_timestamp(t) - LOOKBACK));
    let (recent, total) = store
        .run(move |conn| {
            let recent = sqlite::counts_since(conn, since.as_deref())?;
            Ok((recent, sqlite::conversation_count(conn)?))
        })
        .await?;
    let newer = recent.iter().map(|(_, _, t)| t.clone()).max();
    let mut events = known.lock().expect("known counts").apply(
        recent.into_iter().map(|(id, n, _)| (id, n)),
        Coverage::Recent,
    );
    let missing = known.lock().expect("known counts").len() != total;
    if missing {
        let all = store.run(|conn| sqlite::counts_since(conn, None)).await?;
        events.extend(known.lock().expect("known counts").apply(
            all.into_iter().map(|(id, n, _)| (id, n)),
            Coverage::Everything,
        ));
    }
    Ok((events, newer))
}

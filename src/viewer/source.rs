//! Where the viewer reads from: this box's SQLite store (in-process or a file another process
//! writes) or a fleet's PostgreSQL, behind one small read/delete interface with a live feed.
//!
//! The in-process source is built from the server's [`Store`] so live updates come straight
//! from [`Store::subscribe`]; the other two have a watcher of their own (see `watch.rs` and
//! `pg_source.rs`) that feeds a broadcast channel of the same events.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::ViewerError;
use super::changes::KnownCounts;
use super::model::{ListFilter, ListPage, Message};
use super::pg_source::{self, PgSource};
use super::sqlite_source as sqlite;
use super::watch;
use crate::pg::PgTarget;
use crate::store::{Store, StoreEvent};

/// The conversation log the viewer shows; cheap to clone.
#[derive(Clone)]
pub struct Source {
    backend: Backend,
    live: Live,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Store),
    Postgres(PgSource),
}

#[derive(Clone)]
enum Live {
    /// Changes made by this process, announced by the store itself.
    Store(Store),
    /// Changes found by a watcher; the watch handle lives as long as any clone.
    Watched(
        broadcast::Sender<StoreEvent>,
        #[allow(dead_code)] Option<Arc<watch::WalWatch>>,
    ),
}

impl Source {
    /// The server's own store: what `serve` shows.
    pub fn from_store(store: Store) -> Source {
        Source {
            backend: Backend::Sqlite(store.clone()),
            live: Live::Store(store),
        }
    }

    /// A SQLite file that another process (a running `serve`) may be writing. The file must
    /// exist: a mistyped path should not silently show an empty new database.
    pub async fn open_sqlite_file(path: &Path) -> Result<Source, ViewerError> {
        if !path.is_file() {
            return Err(ViewerError::NoSuchFile(path.to_path_buf()));
        }
        let store = Store::open(path)?;
        let (events, _) = broadcast::channel(1024);
        let known = Arc::new(Mutex::new(KnownCounts::default()));
        let watch = watch::spawn(store.clone(), path, events.clone(), known).await?;
        Ok(Source {
            backend: Backend::Sqlite(store),
            live: Live::Watched(events, Some(Arc::new(watch))),
        })
    }

    /// Keeps a SQLite log's search index caught up until `shutdown` (the documented
    /// PostgreSQL table has no index of ours to keep).
    pub fn keep_search_index(&self, shutdown: tokio_util::sync::CancellationToken) {
        if let Backend::Sqlite(store) = &self.backend {
            store.spawn_search_indexer(shutdown);
        }
    }

    /// A PostgreSQL database in the documented schema (`postgres://` or `postgresql://` URL).
    pub async fn connect_postgres(url: &str) -> Result<Source, ViewerError> {
        let target = PgTarget::parse(url)?;
        let pg = PgSource::connect(&target).await?;
        let (events, _) = broadcast::channel(1024);
        pg_source::spawn_listener(target, pg.clone(), events.clone());
        Ok(Source {
            backend: Backend::Postgres(pg),
            live: Live::Watched(events, None),
        })
    }

    /// Live changes to the log.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        match &self.live {
            Live::Store(store) => store.subscribe(),
            Live::Watched(events, _) => events.subscribe(),
        }
    }

    pub async fn ping(&self) -> Result<(), ViewerError> {
        match &self.backend {
            Backend::Sqlite(store) => Ok(store.ping().await?),
            Backend::Postgres(pg) => pg.ping().await,
        }
    }

    /// One page of the conversation list, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<ListPage, ViewerError> {
        match &self.backend {
            Backend::Sqlite(store) => {
                let filter = filter.clone();
                Ok(store.run(move |conn| sqlite::list(conn, &filter)).await?)
            }
            Backend::Postgres(pg) => pg.list(filter).await,
        }
    }

    /// A conversation's messages after sequence number `after` (0 for all), in order.
    pub async fn messages(
        &self,
        conversation_id: &str,
        after: i64,
    ) -> Result<Vec<Message>, ViewerError> {
        match &self.backend {
            Backend::Sqlite(store) => {
                let id = conversation_id.to_string();
                Ok(store
                    .run(move |conn| sqlite::messages(conn, &id, after))
                    .await?)
            }
            Backend::Postgres(pg) => pg.messages(conversation_id, after).await,
        }
    }

    /// Deletes a conversation; returns whether it existed. The live feed announces it.
    pub async fn delete(&self, conversation_id: &str) -> Result<bool, ViewerError> {
        match &self.backend {
            Backend::Sqlite(store) => Ok(store.delete_conversation(conversation_id).await?),
            Backend::Postgres(pg) => pg.delete(conversation_id).await,
        }
    }

    /// Devices that have conversations, for the filter.
    pub async fn devices(&self) -> Result<Vec<String>, ViewerError> {
        match &self.backend {
            Backend::Sqlite(store) => Ok(store.run(|conn| sqlite::devices(conn)).await?),
            Backend::Postgres(pg) => pg.devices().await,
        }
    }

    /// Fleet boxes (PostgreSQL only; a box's own store has none).
    pub async fn boxes(&self) -> Result<Vec<String>, ViewerError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(pg) => pg.boxes().await,
        }
    }
}

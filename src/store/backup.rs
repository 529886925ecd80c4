//! Copies of the store for safe keeping: an online backup while the box serves, a restore
//! only while it does not, and the lock that tells the two apart.
//!
//! The backup is `VACUUM INTO` on a reading connection: in WAL mode a reader sees one
//! consistent snapshot and never blocks the writer, so answers do not pause while it runs, and
//! the copy is a compact, self-contained database file (no `-wal` beside it). It is written
//! under a temporary name, checked with `PRAGMA integrity_check`, and only then renamed into
//! place, so a backup that was cut short never looks like a good one.
//!
//! `serve` holds an exclusive lock on `<data-dir>/lang-agent.lock` for its whole life
//! ([`ServingLock`]); `restore` refuses while anyone holds it, because replacing the file
//! under a running writer would lose what it writes next. The lock is the kernel's (`flock`),
//! so a killed server releases it.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::StoreError;
use super::files::sqlite_files;

/// The lock file `serve` holds, beside the database.
pub const LOCK_FILE: &str = "lang-agent.lock";

/// Why a backup or a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists; choose a new file name (a backup never overwrites)")]
    TargetExists(PathBuf),
    #[error("no database at {0}")]
    NoDatabase(PathBuf),
    #[error(
        "a lang-agent server is running on {0}; stop it first (systemctl stop lang-agent), \
         then restore"
    )]
    Serving(PathBuf),
    #[error("{path} is not a usable lang-agent database: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for BackupError {
    fn from(e: rusqlite::Error) -> Self {
        BackupError::Store(StoreError::Sqlite(e))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The lock a serving process holds on its data directory; released when dropped (or when
/// the process dies).
#[derive(Debug)]
pub struct ServingLock(#[allow(dead_code)] File);

impl ServingLock {
    /// Takes the lock of the data directory holding `db`, or says who has it.
    pub fn take(db: &Path) -> Result<ServingLock, BackupError> {
        let path = lock_path(db);
        super::files::create_private_dir(&data_dir(db)).map_err(io(&path))?;
        let file = File::create(&path).map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(ServingLock(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(BackupError::Serving(data_dir(db))),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }
}

fn data_dir(db: &Path) -> PathBuf {
    db.parent().unwrap_or(Path::new(".")).to_path_buf()
}

fn lock_path(db: &Path) -> PathBuf {
    data_dir(db).join(LOCK_FILE)
}

/// What a finished backup or restore reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub bytes: u64,
    pub conversations: i64,
    pub messages: i64,
}

/// Writes a consistent copy of the database at `db` to `target` while it may be serving.
pub fn backup(db: &Path, target: &Path) -> Result<CopyReport, BackupError> {
    if !db.exists() {
        return Err(BackupError::NoDatabase(db.to_path_buf()));
    }
    if target.exists() {
        return Err(BackupError::TargetExists(target.to_path_buf()));
    }
    let partial = with_suffix(target, ".partial");
    let _ = std::fs::remove_file(&partial);
    let source = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(std::time::Duration::from_secs(10))?;
    let copied = source.execute("VACUUM INTO ?1", [partial.to_string_lossy()]);
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e.into());
    }
    let report = check_store(&partial);
    match report {
        Ok(report) => {
            std::fs::rename(&partial, target).map_err(io(target))?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Replaces the database at `db` by the backup `from`, unless a server holds the data
/// directory. The replaced database is kept beside it as `<db>.before-restore`.
pub fn restore(from: &Path, db: &Path) -> Result<CopyReport, BackupError> {
    if !from.exists() {
        return Err(BackupError::NoDatabase(from.to_path_buf()));
    }
    let report = check_store(from)?;
    // Held until the new file is in place: a server starting meanwhile waits for nothing; it
    // fails to take the lock and says so.
    let _lock = ServingLock::take(db)?;
    let incoming = with_suffix(db, ".restoring");
    std::fs::copy(from, &incoming).map_err(io(&incoming))?;
    File::open(&incoming)
        .and_then(|f| f.sync_all())
        .map_err(io(&incoming))?;
    if db.exists() {
        // Fold the old WAL into the old file so the kept copy is whole.
        let old = rusqlite::Connection::open(db)?;
        old.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        drop(old);
        let kept = with_suffix(db, ".before-restore");
        std::fs::rename(db, &kept).map_err(io(&kept))?;
    }
    for stale in sqlite_files(db).iter().skip(1) {
        let _ = std::fs::remove_file(stale);
    }
    std::fs::rename(&incoming, db).map_err(io(db))?;
    Ok(report)
}

/// Checks that `path` is a whole lang-agent database, and counts what it holds.
fn check_store(path: &Path) -> Result<CopyReport, BackupError> {
    let not_a_store = |reason: String| BackupError::NotAStore {
        path: path.to_path_buf(),
        reason,
    };
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| not_a_store(e.to_string()))?;
    if integrity != "ok" {
        return Err(not_a_store(format!("integrity_check says {integrity}")));
    }
    let count = |table: &str| -> Result<i64, BackupError> {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| not_a_store(format!("no {table} table ({e})")))
    };
    let conversations = count("conversations")?;
    let messages = count("messages")?;
    let bytes = std::fs::metadata(path).map_err(io(path))?.len();
    Ok(CopyReport {
        bytes,
        conversations,
        messages,
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MessageKind, NewMessage, Store};

    async fn store_with(dir: &Path, texts: &[&str]) -> (Store, PathBuf) {
        let db = dir.join("lang-agent.sqlite3");
        let store = Store::open(&db).unwrap();
        for text in texts {
            store
                .append(
                    text,
                    None,
                    None,
                    vec![NewMessage::new(MessageKind::Human, *text)],
                )
                .await
                .unwrap();
        }
        (store, db)
    }

    #[tokio::test]
    async fn a_backup_is_whole_never_overwrites_and_restores_over_a_stopped_box() {
        let dir = tempfile::tempdir().unwrap();
        let (store, db) = store_with(dir.path(), &["one", "two"]).await;
        let copy = dir.path().join("copy.sqlite3");
        let report = backup(&db, &copy).unwrap();
        assert_eq!((report.conversations, report.messages), (2, 2));
        assert!(matches!(
            backup(&db, &copy),
            Err(BackupError::TargetExists(_))
        ));
        store
            .append(
                "three",
                None,
                None,
                vec![NewMessage::new(MessageKind::Human, "3")],
            )
            .await
            .unwrap();

        // While a server holds the lock, nothing is replaced.
        let serving = ServingLock::take(&db).unwrap();
        assert!(matches!(restore(&copy, &db), Err(BackupError::Serving(_))));
        assert!(matches!(
            ServingLock::take(&db),
            Err(BackupError::Serving(_))
        ));
        drop(serving);
        drop(store);

        let restored = restore(&copy, &db).unwrap();
        assert_eq!(restored.conversations, 2);
        let store = Store::open(&db).unwrap();
        let count: i64 = store
            .run(|c| Ok(c.query_row("SELECT count(*) FROM conversations", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(count, 2, "the backup's contents, not the newer ones");
        let kept = with_suffix(&db, ".before-restore");
        assert_eq!(
            check_store(&kept).unwrap().conversations,
            3,
            "the replaced store is kept"
        );
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not sqlite at all, not at all, not at all").unwrap();
        let db = dir.path().join("lang-agent.sqlite3");
        assert!(matches!(
            restore(&junk, &db),
            Err(BackupError::NotAStore { .. })
        ));
        assert!(!db.exists());
    }
}

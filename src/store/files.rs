//! Who may read the store: the data directory is the owner's alone (0700), and so are the
//! SQLite files in it (0600).
//!
//! The log holds every conversation of the household, so no other local user may read it.
//! The process umask (077, set in `main`) makes everything created from now on private; this
//! makes a data directory created here 0700 whatever the umask, and tightens a directory or
//! database left readable by an older version or by hand, saying so in the log.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) as 0700 when it does not exist.
pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Takes group and other permissions off `path` if it has any; a missing file is fine, and a
/// failure is logged, not fatal (the box still works, only less privately).
pub(super) fn make_private(path: &Path) {
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(_) => return,
    };
    if mode & 0o077 == 0 {
        return;
    }
    let private = mode & 0o700;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)) {
        Ok(()) => tracing::warn!(
            "{} was readable by other users ({mode:04o}); tightened to {private:04o}",
            path.display()
        ),
        Err(e) => tracing::warn!(
            "{} is readable by other users ({mode:04o}) and could not be tightened: {e}",
            path.display()
        ),
    }
}

/// The database file and the files SQLite keeps beside it.
pub(super) fn sqlite_files(db: &Path) -> [std::path::PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_are_private_and_readable_files_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!((mode(&root.path().join("a")), mode(&dir)), (0o700, 0o700));

        let file = dir.join("db");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        make_private(&file);
        assert_eq!(mode(&file), 0o600);
        make_private(&dir.join("missing"));
        assert_eq!(
            sqlite_files(&file)[1],
            dir.join("db-wal"),
            "the WAL sits beside the database"
        );
    }
}

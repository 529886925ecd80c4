//! `lang-agent backup FILE` and `lang-agent restore FILE`: the store's copies for safe keeping
//! (`store::backup` does the work; this says what happened in one line).

use crate::cli::{BackupArgs, RestoreArgs};
use crate::config::Config;
use crate::store::StoreError;
use crate::store::backup::{self, BackupError, CopyReport};

fn summary(report: &CopyReport) -> String {
    format!(
        "{} conversations, {} messages, {:.1} MiB, integrity ok",
        report.conversations,
        report.messages,
        report.bytes as f64 / (1024.0 * 1024.0)
    )
}

/// Runs a blocking store copy off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackupError::Store(StoreError::Task(e.to_string())))?
}

/// Copies the data directory's store to the file given, while it may be serving.
pub async fn run_backup(config: &Config, args: &BackupArgs) -> Result<(), BackupError> {
    let db = config.sqlite_path();
    let target = args.file.clone();
    let report = blocking(move || backup::backup(&db, &target)).await?;
    println!("backup: {} ({})", args.file.display(), summary(&report));
    Ok(())
}

/// Puts a backup in place of the data directory's store, if no server holds it.
pub async fn run_restore(config: &Config, args: &RestoreArgs) -> Result<(), BackupError> {
    let db = config.sqlite_path();
    let from = args.file.clone();
    let into = db.clone();
    let report = blocking(move || backup::restore(&from, &into)).await?;
    println!(
        "restore: {} is now {} ({})",
        db.display(),
        args.file.display(),
        summary(&report)
    );
    Ok(())
}

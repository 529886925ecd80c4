//! `lang-agent export`: turns the command line into one of the three ways to run an export
//! (once, `--follow`, `--sql`) and reports the outcome.
//!
//! The store is opened as `serve` opens it (same `--data-dir`, WAL), so export can run while
//! the server is running. A missing store is an error rather than a fresh empty database:
//! exporting a mistyped `--data-dir` must not quietly succeed with nothing.

use crate::cli::{ExportArgs, ExportDestination};
use crate::config::Config;
use crate::export::{
    ExportError, ExportOptions, FollowOptions, export_once, follow, write_sql_file,
};
use crate::http::stop_on_signal;
use crate::pg::PgTarget;
use crate::store::Store;

/// Runs `lang-agent export` to completion (or, with `--follow`, until Ctrl-C / SIGTERM).
pub async fn run(config: &Config, args: &ExportArgs) -> Result<(), ExportError> {
    let mut options = ExportOptions::new(args.box_id.as_deref(), args.batch_size)?;
    options.stall_timeout = std::time::Duration::from_secs(args.stall_timeout_secs.max(1));
    // Check the destination before touching the store, so a typo fails fast.
    let conn_str = std::env::var("CONN_STR").ok();
    let destination = args
        .destination(conn_str.as_deref())
        .map_err(ExportError::Destination)?;
    let target = match &destination {
        ExportDestination::Postgres(url) => Some(PgTarget::parse(url)?),
        ExportDestination::SqlFile(_) => None,
    };
    let path = config.sqlite_path();
    if !path.exists() {
        return Err(ExportError::NoStore(path.display().to_string()));
    }
    let store = Store::open(&path)?;

    if let ExportDestination::SqlFile(file) = &destination {
        let summary = write_sql_file(&store, file, &options, true).await?;
        println!(
            "wrote {} messages to {} in {:.1}s; load it with: psql -f {} <database URL>",
            summary.rows,
            file.display(),
            summary.elapsed.as_secs_f64(),
            file.display()
        );
        return Ok(());
    }
    let target = target.expect("checked above");
    if args.follow {
        let follow_options = FollowOptions {
            target,
            export: options,
            interval: std::time::Duration::from_secs(args.interval_secs.max(1)),
        };
        let shutdown = stop_on_signal();
        let rows = follow(store, follow_options, shutdown).await?;
        println!("exported {rows} messages; stopped");
        return Ok(());
    }
    let summary = export_once(&store, &target, &options, true).await?;
    println!(
        "exported {} messages to {} in {:.1}s ({:.0} rows/s); up to id {}",
        summary.rows,
        target.redacted(),
        summary.elapsed.as_secs_f64(),
        summary.rows_per_sec(),
        summary.last_id
    );
    Ok(())
}

//! Export speed: rows/s copying a 1,000,000-message SQLite log into a fresh PostgreSQL
//! database, at a few batch sizes, and writing the same log as a `--sql` file.
//!
//! Run with `cargo bench --bench export` (PostgreSQL on 127.0.0.1, as for the tests;
//! `LANG_AGENT_TEST_PG` overrides the server, `LANG_AGENT_BENCH_ROWS` the size). It prints
//! figures and asserts only that every row arrived: timings vary with the machine.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::export::{TestDb, TestStore, count};
use lang_agent::export::{DEFAULT_BATCH_SIZE, ExportOptions, export_once, write_sql_file};
use lang_agent::pg::PgTarget;

/// Messages per conversation in the generated log: a long voice session.
const PER_CONVERSATION: usize = 100;

fn main() {
    let rows: usize = std::env::var("LANG_AGENT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let seeded = Instant::now();
        let src = TestStore::new();
        src.bulk("conv-", rows.div_ceil(PER_CONVERSATION), PER_CONVERSATION);
        let rows = rows.div_ceil(PER_CONVERSATION) * PER_CONVERSATION;
        println!(
            "export bench: {rows} messages in SQLite (made in {:.1}s)",
            seeded.elapsed().as_secs_f64()
        );

        for batch_size in [1_000, DEFAULT_BATCH_SIZE, 50_000] {
            let db = TestDb::create().await;
            let target = PgTarget::parse(&db.url).expect("url");
            let options = ExportOptions::new(Some("bench"), batch_size).expect("options");
            let summary = export_once(&src.store, &target, &options, false)
                .await
                .expect("export");
            let in_pg = count(&db.client().await, "SELECT COUNT(*) FROM messages").await;
            assert_eq!(in_pg as usize, rows, "every row arrived");
            println!(
                "  to PostgreSQL, batch {batch_size:>6}: {:>9.0} rows/s ({rows} rows in {:.2}s){}",
                summary.rows_per_sec(),
                summary.elapsed.as_secs_f64(),
                if batch_size == DEFAULT_BATCH_SIZE {
                    "  <- default"
                } else {
                    ""
                }
            );
        }

        let file = src.data_dir().join("bench.sql");
        let options = ExportOptions::new(Some("bench"), DEFAULT_BATCH_SIZE).expect("options");
        let summary = write_sql_file(&src.store, &file, &options, false)
            .await
            .expect("sql file");
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        println!(
            "  to a --sql file:          {:>9.0} rows/s ({:.0} MB in {:.2}s)",
            summary.rows_per_sec(),
            size as f64 / 1e6,
            summary.elapsed.as_secs_f64()
        );
    });
}

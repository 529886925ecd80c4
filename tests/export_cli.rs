//! `lang-agent export` as a person runs it: the real binary, killed with SIGKILL mid-way and
//! resumed, following until stopped, and failing with one clear line.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::export::*;

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("lang-agent runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The highest SQLite id PostgreSQL has, or 0 before the exporter made its table.
async fn exported_up_to(client: &tokio_postgres::Client) -> i64 {
    if count(
        client,
        "SELECT COUNT(*) FROM pg_class WHERE relname = 'lang_agent_export_state'",
    )
    .await
        == 0
    {
        return 0;
    }
    count(
        client,
        "SELECT COALESCE(MAX(last_id), 0) FROM lang_agent_export_state",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_sigkill_mid_way_then_resumed_gives_exactly_one_copy_of_each_row() {
    let db = TestDb::create().await;
    let src = TestStore::new();
    const TOTAL: i64 = 300_000;
    src.bulk("conv-", 3_000, 100);
    let client = db.client().await;

    let mut child = lang_agent(src.data_dir())
        .args(["export", "--to", &db.url, "--batch-size", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the first committed batches",
        || async { exported_up_to(&client).await >= 5_000 },
    )
    .await;
    child.kill().unwrap(); // SIGKILL: no chance to tidy up
    child.wait().unwrap();

    let done = exported_up_to(&client).await;
    eprintln!("killed after {done} of {TOTAL} rows");
    let rows = count(&client, "SELECT COUNT(*) FROM messages").await;
    assert!(
        done < TOTAL,
        "killed mid-way (at {done} of {TOTAL}); make the store bigger"
    );
    // Progress and rows committed together: SQLite ids run 1..=TOTAL without gaps here.
    assert_eq!(rows, done);

    let out =
        run(lang_agent(src.data_dir()).args(["export", "--to", &db.url, "--batch-size", "1000"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with(&format!("exported {} messages to ", TOTAL - done)),
        "{said}"
    );
    assert_eq!(
        pg_rows(&client, "").await,
        sqlite_rows(&src.sqlite_path(), "")
    );
    assert_eq!(duplicates(&client).await, 0);

    // And once more: nothing left to do.
    let out = run(lang_agent(src.data_dir()).args(["export", "--to", &db.url]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("exported 0 messages"));
    assert_eq!(count(&client, "SELECT COUNT(*) FROM messages").await, TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_exports_as_messages_arrive_until_sigterm() {
    let db = TestDb::create().await;
    let src = TestStore::new();
    src.talk("first", 1).await;
    let child = lang_agent(src.data_dir())
        .env("CONN_STR", &db.url)
        .args([
            "export",
            "--follow",
            "--interval-secs",
            "1",
            "--box-id",
            "hall",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = db.client().await;
    let exported = |n: i64| {
        let client = &client;
        async move { exported_up_to(client).await == n }
    };
    eventually(Duration::from_secs(20), "the first messages", || {
        exported(3)
    })
    .await;
    // Written by another process while the exporter runs, as `serve` would.
    src.talk("second", 2).await;
    eventually(Duration::from_secs(20), "the new messages", || exported(9)).await;
    assert_eq!(
        pg_rows(&client, "hall/").await,
        sqlite_rows(&src.sqlite_path(), "hall/")
    );

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "exported 9 messages; stopped\n"
    );
}

#[tokio::test]
async fn the_sql_option_works_even_with_conn_str_set() {
    let src = TestStore::new();
    src.talk("c", 1).await;
    let file = src.data_dir().join("out.sql");
    let out = run(lang_agent(src.data_dir())
        .env("CONN_STR", "postgres://u:secret@127.0.0.1:1/db")
        .args(["export", "--sql"])
        .arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    let script = std::fs::read_to_string(&file).unwrap();
    assert!(script.contains("COPY lang_agent_import FROM stdin;\n"));
    assert!(!script.contains("secret"));
}

#[test]
fn errors_are_one_clear_line_without_the_password_and_exit_non_zero() {
    let src = TestStore::new();
    let cases = [
        (
            "http://u:secret@127.0.0.1/db",
            "lang-agent: not a PostgreSQL URL: http://u:***@127.0.0.1/db",
        ),
        (
            "postgres://u:secret@127.0.0.1:1/db",
            "lang-agent: cannot connect to postgres://u:***@127.0.0.1:1/db: connection refused",
        ),
        (
            "postgres://postgres:secret@127.0.0.1:5432/la_export_no_such_database",
            "lang-agent: cannot connect to postgres://postgres:***@127.0.0.1:5432/la_export_no_such_database: \
             database \"la_export_no_such_database\" does not exist",
        ),
    ];
    for (url, expected) in cases {
        let out = run(lang_agent(src.data_dir()).args(["export", "--to", url]));
        assert!(!out.status.success(), "{url}");
        let err = stderr(&out);
        assert!(err.starts_with(expected), "{url}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    let empty = tempfile::tempdir().unwrap();
    let out = run(lang_agent(empty.path()).args(["export", "--to", "postgres://127.0.0.1/x"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no conversation log at"),
        "{}",
        stderr(&out)
    );
    assert!(
        !empty.path().join("lang-agent.sqlite3").exists(),
        "no store is made by export"
    );

    let out = run(lang_agent(src.data_dir()).args([
        "export",
        "--to",
        "postgres://127.0.0.1/x",
        "--box-id",
        "a/b",
    ]));
    assert!(stderr(&out).starts_with("lang-agent: --box-id \"a/b\": use 1 to 64 characters"));
}

#[tokio::test]
async fn follow_stops_on_a_problem_that_retrying_cannot_fix() {
    let db = TestDb::create().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE messages (id BIGSERIAL PRIMARY KEY, conversation_id INTEGER)")
        .await
        .unwrap();
    let src = TestStore::new();
    let out = run(lang_agent(src.data_dir()).args(["export", "--follow", "--to", &db.url]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "lang-agent: table messages: column conversation_id is integer, expected text"
        ),
        "{}",
        stderr(&out)
    );
}

//! Backups while the box serves, restores only while it does not, one server per data
//! directory, and `--retain-days` pruning only what is old.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use serde_json::json;

fn lang_agent(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_is_whole_and_restore_waits_for_the_server_to_stop() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Arc::new(Server::start(&data, &mock.base_url, &[]));

    // Turns keep coming while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let load = {
        let (server, stop, answered) = (server.clone(), stop.clone(), answered.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = json!({"thread_id": format!("load-{}", n % 7),
                    "messages": [{"role": "user", "content": format!("turn {n}")}]});
                let answer = openai_call(&server, body).await;
                assert_eq!(answer.status(), 200);
                answered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while answered.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let copy = dir.path().join("box.backup");
    let out = lang_agent(&data, &["backup", copy.to_str().unwrap()]);
    let during = answered.load(Ordering::Relaxed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("integrity ok"), "{said}");
    // Answers went on.
    while answered.load(Ordering::Relaxed) < during + 10 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let backup = rusqlite::Connection::open(&copy).unwrap();
    let integrity: String = backup
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let backed_up: i64 = backup
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert!(backed_up >= 40, "20 turns or more: {backed_up}");

    // The running box's store is not replaced, and a second server is refused.
    let refused = lang_agent(&data, &["restore", copy.to_str().unwrap()]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("stop it first"), "{why}");
    let second = Server::command(&data, Some(&mock.base_url), &[], &[("FAST_AUTH_KEYS", KEY)])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let why = String::from_utf8_lossy(&second.stderr);
    assert!(why.contains("one server per data directory"), "{why}");

    let live: i64 = server
        .db()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert!(live > backed_up);
    drop(Arc::into_inner(server).expect("the load task is done"));
    let restored = lang_agent(&data, &["restore", copy.to_str().unwrap()]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let server = Server::start(&data, &mock.base_url, &[]);
    let now: i64 = server
        .db()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(now, backed_up, "the backup's contents are served");
}

#[tokio::test]
async fn retain_days_prunes_only_conversations_untouched_for_that_long() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let server = Server::start(&data, &mock.base_url, &[]);
        for thread in ["old-kitchen", "old-porch", "recent"] {
            let body = json!({"thread_id": thread,
                "messages": [{"role": "user", "content": "hello"}]});
            assert_eq!(openai_call(&server, body).await.status(), 200);
        }
        server
            .db()
            .execute(
                "UPDATE conversations SET updated_at = '2025-01-01T00:00:00.000Z'
                 WHERE conversation_id LIKE 'old-%'",
                [],
            )
            .unwrap();
    }
    let server = Server::start(&data, &mock.base_url, &["--retain-days", "30"]);
    server
        .proc
        .wait_for_line("retention: deleted 2 conversations");
    let left: Vec<String> = server
        .db()
        .prepare("SELECT conversation_id FROM conversations")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, ["recent"]);
    let orphans: i64 = server
        .db()
        .query_row(
            "SELECT count(*) FROM messages WHERE conversation_id LIKE 'old-%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    // The box still answers on the pruned thread, as a fresh one.
    let body =
        json!({"thread_id": "old-kitchen", "messages": [{"role": "user", "content": "again"}]});
    let answer: serde_json::Value = openai_call(&server, body).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "You said: again. I remember: again."
    );
}

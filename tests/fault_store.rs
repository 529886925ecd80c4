//! Faults around the turn runner and the store, through the real binary: a turn past its
//! deadline, a client that stops reading, kill -9 under load, a full disk, and who may read
//! the data directory. Each test checks what the client sees and what the store holds after.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

/// Waits until the newest turn of `conversation` is no longer `running`; returns its status.
async fn settled_status(server: &Server, conversation: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let status = turn_rows(&server.db(), conversation)
            .pop()
            .map(|(status, _)| status);
        match status {
            Some(status) if status != "running" => return status,
            _ if Instant::now() > deadline => {
                panic!("turn of {conversation} still {status:?} after {within:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn integrity(db: &rusqlite::Connection) -> String {
    db.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_turn_past_its_deadline_times_out_keeps_its_partial_answer_and_frees_its_thread() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--turn-timeout-secs", "2", "--on-busy", "wait"],
    );
    let started = Instant::now();
    // Three pieces, then the upstream goes silent (well inside its 60 s read timeout).
    let stalled = async {
        let response = http()
            .post(format!("{}/api/apps/app1/completion", server.url))
            .bearer_auth(KEY)
            .header("X-DashScope-SSE", "enable")
            .json(&json!({"input": {"session_id": "deadline",
                "messages": [{"role": "user", "content": "tell me [[mock:hang_after=3]]"}]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let sse = response.text().await.unwrap();
        (sse, started.elapsed())
    };
    // The same thread, queued behind the stalled turn (--on-busy wait).
    let queued = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let call = dashscope_call(
            &server,
            json!({"input": {"session_id": "deadline",
                "messages": [{"role": "user", "content": "and then"}]}}),
        );
        let (status, body) = call.await;
        (status, body, started.elapsed())
    };
    let ((sse, stalled_after), (status, body, queued_after)) =
        tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(stalled, queued)
        })
        .await
        .expect("the stalled turn held its thread");

    assert!(sse.contains("data:"), "some answer was streamed: {sse}");
    assert!(
        sse.contains("event:error\n:HTTP_STATUS/504\nstatus:504\n")
            && sse.contains(r#""code":"RequestTimeOut""#),
        "{sse}"
    );
    assert!(stalled_after < Duration::from_secs(12), "{stalled_after:?}");
    assert_eq!(status, 200, "{body}");
    assert!(
        body["output"]["text"]
            .as_str()
            .unwrap()
            .starts_with("You said: and then. I remember: tell me"),
        "{body}"
    );
    assert!(queued_after < Duration::from_secs(15), "{queued_after:?}");

    let db = server.db();
    let turns = turn_rows(&db, "deadline");
    assert_eq!(turns[0].0, "failed");
    assert!(
        turns[0].1.as_deref().unwrap_or("").contains("timed out"),
        "{turns:?}"
    );
    assert_eq!(turns[1].0, "done");
    let rows = log_rows(&db, "deadline");
    // Three 8-character pieces, kept and marked interrupted.
    assert_eq!(
        rows[1],
        (
            "ai".to_string(),
            "You said: tell me [[mock".to_string(),
            true
        )
    );

    // A client that does not stream gets the status itself, in its protocol's shape.
    let response = openai_call(
        &server,
        json!({"thread_id": "deadline-openai",
            "messages": [{"role": "user", "content": "hm [[mock:hang_after=0]]"}]}),
    )
    .await;
    assert_eq!(response.status(), 504);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        (&error["error"]["type"], &error["error"]["code"]),
        (&json!("timeout_error"), &json!("timeout")),
        "{error}"
    );
    assert_eq!(turn_rows(&db, "deadline-openai")[0].0, "failed");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_its_turn_ends_interrupted() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--client-stall-secs", "2", "--max-answer-bytes", "32000000"],
    );
    // An answer far larger than the socket buffers between the box and the client (the default
    // --max-answer-bytes would cut it to fit them, so this server allows more).
    let body = json!({"stream": true, "thread_id": "stall",
        "messages": [{"role": "user", "content": "everything [[mock:size=16000000]]"}]})
    .to_string();
    let addr = server.url.trim_start_matches("http://");
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    write!(
        client,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // ... and never reads a byte.

    let status = settled_status(&server, "stall", Duration::from_secs(40)).await;
    assert_eq!(status, "interrupted");
    let rows = log_rows(&server.db(), "stall");
    assert_eq!(
        rows.len(),
        2,
        "{:?}",
        rows.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    assert!(
        rows[1].2 && rows[1].1.starts_with("You said: everything"),
        "the answer produced is kept, marked interrupted"
    );

    // The box still serves.
    let (status, body) = dashscope_call(
        &server,
        json!({"input": {"messages": [{"role": "user", "content": "still there?"}]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    drop(client);
}

/// A streaming DashScope turn; `Some(text)` only when the final frame (`finish_reason: stop`)
/// was received.
async fn confirmed_answer(url: String, session: String, text: String) -> Option<String> {
    let response = http()
        .post(format!("{url}/api/apps/app1/completion"))
        .bearer_auth(KEY)
        .header("X-DashScope-SSE", "enable")
        .json(&json!({"input": {"session_id": session,
            "messages": [{"role": "user", "content": text}]}}))
        .send()
        .await
        .ok()?;
    let mut sse = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        sse.extend_from_slice(&chunk.ok()?);
    }
    let sse = String::from_utf8(sse).ok()?;
    let last = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()?;
    let frame: Value = serde_json::from_str(last).ok()?;
    (frame["output"]["finish_reason"] == "stop").then(|| frame["output"]["text"].to_string())
}

#[tokio::test]
async fn kill_9_under_load_loses_no_confirmed_answer_and_leaves_no_turn_running() {
    let mock = Mock::start(0, 10);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &mock.base_url, &[]);
    let confirmed = Arc::new(AtomicUsize::new(0));
    // Answers from 2 to 314 pieces, 10 ms apart: some end at once, some run for seconds.
    let clients: Vec<_> = (0..40)
        .map(|i| {
            let (url, confirmed) = (server.url.clone(), confirmed.clone());
            let session = format!("load-{i}");
            let text = format!("turn {i} [[mock:reply={}]]", "w".repeat(16 + 64 * i));
            tokio::spawn(async move {
                let answer = confirmed_answer(url, session.clone(), text.clone()).await;
                if answer.is_some() {
                    confirmed.fetch_add(1, Ordering::SeqCst);
                }
                (session, text, answer)
            })
        })
        .collect();
    let waited = Instant::now();
    while confirmed.load(Ordering::SeqCst) < 5 {
        assert!(waited.elapsed() < Duration::from_secs(30), "no answers");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.proc.kill();
    let mut results = Vec::new();
    for client in clients {
        results.push(client.await.unwrap());
    }
    let done = results.iter().filter(|r| r.2.is_some()).count();
    assert!((5..40).contains(&done), "{done} of 40 answers confirmed");

    let server = Server::start(&data, &mock.base_url, &[]);
    server.proc.wait_for_line("turns left running");
    let db = server.db();
    let running: i64 = db
        .query_row(
            "SELECT count(*) FROM turns WHERE status = 'running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0, "turns left running after the restart");
    let swept: i64 = db
        .query_row(
            "SELECT count(*) FROM turns WHERE status = 'interrupted' AND finished_at IS NOT NULL
             AND error LIKE '%stopped before the turn ended%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(swept >= 1, "the killed turns are closed as interrupted");
    for (session, text, answer) in &results {
        let Some(answer) = answer else { continue };
        let answer: String = serde_json::from_str(answer).unwrap();
        assert_eq!(
            log_rows(&db, session),
            [
                ("human".to_string(), text.clone(), false),
                ("ai".to_string(), answer, false)
            ],
            "{session}"
        );
        assert_eq!(turn_rows(&db, session), [("done".to_string(), None)]);
    }
    assert_eq!(integrity(&db), "ok");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes `path` until the disk refuses more.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0x5a_u8; 1 << 20];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}

async fn health(server: &Server) -> (u16, Value) {
    let response = http()
        .get(format!("{}/health", server.url))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_refuses_new_turns_at_once_and_the_box_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _tmpfs = match Tmpfs::mount(&disk, "96m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: cannot mount a small tmpfs here ({reason})");
            return;
        }
    };
    let mock = Mock::start(0, 0);
    let data = disk.join("data");
    let server = Server::start(&data, &mock.base_url, &[]);
    let turn = |text: &str| {
        json!({"input": {"session_id": "disk",
        "messages": [{"role": "user", "content": text}]}})
    };
    let (status, _) = dashscope_call(&server, turn("hello")).await;
    assert_eq!(status, 200);
    let (status, report) = health(&server).await;
    assert_eq!((status, &report["status"]), (200, &json!("ok")), "{report}");

    fill(&disk.join("filler"));
    let (status, report) = health(&server).await;
    assert_eq!(
        (status, &report["status"]),
        (503, &json!("error")),
        "{report}"
    );
    assert!(
        report["disk_free_bytes"].as_u64().unwrap() < 64 << 20,
        "{report}"
    );

    let asked = Instant::now();
    let (status, error) = dashscope_call(&server, turn("are you full")).await;
    assert_eq!(
        (status, &error["code"]),
        (503, &json!("ServiceUnavailable")),
        "{error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("disk is full"),
        "{error}"
    );
    assert!(asked.elapsed() < Duration::from_secs(5), "refused at once");
    let sse = http()
        .post(format!("{}/api/apps/app1/completion", server.url))
        .bearer_auth(KEY)
        .header("X-DashScope-SSE", "enable")
        .json(&turn("streaming"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sse.status(),
        503,
        "a stream that cannot be stored is refused"
    );
    let response = openai_call(
        &server,
        json!({"messages": [{"role": "user", "content": "openai"}]}),
    )
    .await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "service_unavailable", "{error}");

    std::fs::remove_file(disk.join("filler")).unwrap();
    let (status, report) = health(&server).await;
    assert_eq!(status, 200, "recovered without a restart: {report}");
    let (status, body) = dashscope_call(&server, turn("again")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["output"]["text"],
        "You said: again. I remember: hello | again."
    );
    drop(server);
    let db = rusqlite::Connection::open(data.join("lang-agent.sqlite3")).unwrap();
    assert_eq!(integrity(&db), "ok");
    assert_eq!(log_rows(&db, "disk").len(), 4);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_data_directory_and_database_files_are_private_to_their_owner() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh");
    let server = Server::start(&fresh, &mock.base_url, &[]);
    dashscope_stream(&server, Some("modes"), "hi").await;
    assert_eq!(mode(&fresh), 0o700);
    let db = fresh.join("lang-agent.sqlite3");
    for file in [db.clone(), fresh.join("lang-agent.sqlite3-wal")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(server);

    // A data directory made readable to everyone (say, by an older version) is tightened.
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(&fresh, &mock.base_url, &[]);
    assert_eq!((mode(&fresh), mode(&db)), (0o700, 0o600));
    server.proc.wait_for_line("tightened");
    drop(server);

    // Whatever the box writes elsewhere is private too (umask 077): an export file.
    let sql = dir.path().join("export.sql");
    let status = std::process::Command::new(bin())
        .arg("--data-dir")
        .arg(&fresh)
        .args(["export", "--sql"])
        .arg(&sql)
        .env_remove("CONN_STR")
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert_eq!(mode(&sql), 0o600);
}

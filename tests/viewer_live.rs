//! Live updates over `/api/events`: from the in-process store (what `serve` shows), and from
//! a SQLite file that another process writes (the standalone viewer's `-wal` watcher).

mod common;

use std::time::Duration;

use common::viewer::*;
use futures::StreamExt;
use lang_agent::store::{MessageKind, NewMessage, Store};

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("log.sqlite3")).unwrap();
    (dir, store)
}

/// Reads SSE frames until one names `event`; returns its data.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    event: &str,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if frame.contains(&format!("event: {event}\n")) {
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or("");
                return data.to_string();
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {event} event within 10 s"))
            .expect("stream ended")
            .expect("stream error");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn live_events_follow_the_in_process_store() {
    let (_dir, store) = temp_store();
    let base = serve_router(&store, false).await;
    let r = http()
        .get(format!("{base}/api/events"))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream();
    let mut buffer = String::new();
    store
        .append(
            "fresh_dev9",
            Some("dev9"),
            None,
            vec![NewMessage::new(MessageKind::Human, "hello")],
        )
        .await
        .unwrap();
    let data = next_event(&mut stream, &mut buffer, "conversation_new").await;
    assert_eq!(data, r#"{"conversation_id":"fresh_dev9"}"#);
    store
        .append(
            "fresh_dev9",
            Some("dev9"),
            None,
            vec![NewMessage::new(MessageKind::Ai, "hi")],
        )
        .await
        .unwrap();
    let data = next_event(&mut stream, &mut buffer, "conversation_updated").await;
    assert_eq!(data, r#"{"conversation_id":"fresh_dev9"}"#);
    store.delete_conversation("fresh_dev9").await.unwrap();
    let data = next_event(&mut stream, &mut buffer, "conversation_deleted").await;
    assert_eq!(data, r#"{"conversation_id":"fresh_dev9"}"#);
}

#[tokio::test]
async fn standalone_viewer_sees_another_processs_writes_to_the_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("box.sqlite3");
    let writer = Store::open(&db).unwrap();
    seed(&writer).await;
    let viewer = start_viewer_binary(&db, dir.path());
    let client = http();
    let r = client
        .get(format!("{}/api/events", viewer.base))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut buffer = String::new();
    // Let the watcher settle on the current state before writing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    writer
        .append(
            "kitchen-morning_dev1",
            Some("dev1"),
            None,
            vec![NewMessage::new(MessageKind::Human, "one more")],
        )
        .await
        .unwrap();
    let data = next_event(&mut stream, &mut buffer, "conversation_updated").await;
    assert_eq!(data, r#"{"conversation_id":"kitchen-morning_dev1"}"#);
    writer
        .append(
            "garage_dev7",
            Some("dev7"),
            None,
            vec![NewMessage::new(MessageKind::Human, "open the door")],
        )
        .await
        .unwrap();
    let data = next_event(&mut stream, &mut buffer, "conversation_new").await;
    assert_eq!(data, r#"{"conversation_id":"garage_dev7"}"#);
    writer.delete_conversation("garage_dev7").await.unwrap();
    let data = next_event(&mut stream, &mut buffer, "conversation_deleted").await;
    assert_eq!(data, r#"{"conversation_id":"garage_dev7"}"#);
    // And the pages read the other process's rows.
    let list = get_json(&client, &format!("{}/api/conversations", viewer.base)).await;
    assert_eq!(list[0]["conversation_id"], "kitchen-morning_dev1");
    assert_eq!(list[0]["message_count"], 8);
}

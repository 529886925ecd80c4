//! The viewer over a fleet's PostgreSQL in the documented `messages` schema: the JSON API's
//! shapes, box badges and filter, devices by the `<conversation>_<device>` rule, search,
//! delete, and live updates by `LISTEN lang_agent_messages`. Each test makes a fresh
//! database on the local server (postgres://postgres@127.0.0.1:5432) and drops it.

mod common;

use std::time::Duration;

use common::viewer::*;
use futures::StreamExt;
use lang_agent::viewer::{Access, Source, router};
use tokio_postgres::NoTls;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of its own, dropped (with its connections) when the test ends.
struct TempDatabase {
    name: String,
    url: String,
}

impl TempDatabase {
    async fn create() -> TempDatabase {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("viewer_test_{}_{nanos}", std::process::id());
        let admin = admin().await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        TempDatabase {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with a runtime of its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = admin().await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join()
        .unwrap();
    }
}

async fn admin() -> tokio_postgres::Client {
    connect(ADMIN_URL).await
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {url} is needed for this test (is the local server running?): {e}"
            )
        });
    tokio::spawn(connection);
    client
}

const SCHEMA: &str = "
CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    message_type VARCHAR(10) NOT NULL,
    content TEXT NOT NULL,
    sequence_number INTEGER NOT NULL CHECK (sequence_number >= 0),
    created_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX idx_messages_conversation ON messages (conversation_id, sequence_number);
CREATE TABLE lang_agent_export_state (box_id TEXT PRIMARY KEY, last_id BIGINT NOT NULL DEFAULT 0);
INSERT INTO lang_agent_export_state (box_id) VALUES ('kitchen'), ('garage'), ('');
INSERT INTO messages (conversation_id, message_type, content, sequence_number, created_at) VALUES
 ('kitchen/morning_dev1', 'human', 'Is it raining in Hangzhou?', 1, '2024-05-01T08:00:00Z'),
 ('kitchen/morning_dev1', 'ai', '', 2, '2024-05-01T08:00:01Z'),
 ('kitchen/morning_dev1', 'tool', '{\"rain\":false}', 3, '2024-05-01T08:00:02Z'),
 ('kitchen/morning_dev1', 'ai', 'No rain today.', 4, '2024-05-01T08:00:03Z'),
 ('garage/evening_dev2', 'human', 'Close the door <now>', 1, '2024-05-02T19:00:00Z'),
 ('garage/evening_dev2', 'ai', 'Closing it.', 2, '2024-05-02T19:00:01Z'),
 ('legacy-thread', 'human', 'from the original system', 1, '2024-04-01T10:00:00Z');
";

async fn fleet() -> (TempDatabase, tokio_postgres::Client, String) {
    let db = TempDatabase::create().await;
    let client = connect(&db.url).await;
    client.batch_execute(SCHEMA).await.expect("schema");
    let source = Source::connect_postgres(&db.url)
        .await
        .expect("connect the viewer");
    let app = router(source, Access::open(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (db, client, base)
}

async fn get_text(base: &str, path: &str) -> String {
    let r = http().get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.unwrap()
}

fn rows(page: &str) -> Vec<String> {
    page.split("data-id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|s| s.replace("&#47;", "/"))
        .collect()
}

#[tokio::test]
async fn reads_the_documented_table_with_boxes_devices_and_search() {
    let (_db, _client, base) = fleet().await;
    let list: serde_json::Value =
        serde_json::from_str(&get_text(&base, "/api/conversations").await).unwrap();
    assert_eq!(
        list,
        serde_json::json!([
            // The documented table does not say how a conversation began: never stateless.
            {"conversation_id": "garage/evening_dev2", "message_count": 2, "last_updated": "2024-05-02T19:00:01.000Z",
             "stateless": false, "preview": "Closing it."},
            {"conversation_id": "kitchen/morning_dev1", "message_count": 4, "last_updated": "2024-05-01T08:00:03.000Z",
             "stateless": false, "preview": "No rain today."},
            {"conversation_id": "legacy-thread", "message_count": 1, "last_updated": "2024-04-01T10:00:00.000Z",
             "stateless": false, "preview": "from the original system"},
        ])
    );
    let messages: serde_json::Value = serde_json::from_str(
        &get_text(&base, "/api/conversations/kitchen%2Fmorning_dev1/messages").await,
    )
    .unwrap();
    assert_eq!(messages.as_array().unwrap().len(), 4);
    assert_eq!(
        messages[2],
        serde_json::json!({"message_type": "tool", "content": "{\"rain\":false}", "sequence_number": 3, "created_at": "2024-05-01T08:00:02.000Z"})
    );

    let page = get_text(&base, "/").await;
    assert_eq!(
        rows(&page),
        [
            "garage/evening_dev2",
            "kitchen/morning_dev1",
            "legacy-thread"
        ]
    );
    assert!(page.contains(
        r#"<span class="badge">kitchen</span><span class="conv-id">morning_dev1</span>"#
    ));
    assert!(
        page.contains(r#"<option value="garage">garage</option>"#),
        "boxes listed"
    );
    assert!(
        page.contains(r#"<option value="dev2">dev2</option>"#),
        "devices by the naming rule"
    );
    assert_eq!(
        rows(&get_text(&base, "/?box=kitchen").await),
        ["kitchen/morning_dev1"]
    );
    assert_eq!(
        rows(&get_text(&base, "/?device=dev2").await),
        ["garage/evening_dev2"]
    );
    assert_eq!(
        rows(&get_text(&base, "/?q=hangzhou").await),
        ["kitchen/morning_dev1"]
    );
    assert_eq!(
        rows(&get_text(&base, "/?q=50%25").await),
        Vec::<String>::new()
    );
    assert_eq!(
        rows(&get_text(&base, "/?from=2024-05-02&tz=0").await),
        ["garage/evening_dev2"]
    );

    let page = get_text(&base, "/c/garage%2Fevening_dev2").await;
    assert!(page.contains("Close the door &#60;now&#62;"), "escaped");
    assert_eq!(page.matches("<article class=\"msg").count(), 2);
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
) -> (String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let event = frame.lines().find_map(|l| l.strip_prefix("event: "));
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(event), Some(data)) = (event, data) {
                return (event.to_string(), data.to_string());
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .expect("stream ok");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn live_updates_come_from_listen_notify_and_delete_works() {
    let (_db, client, base) = fleet().await;
    let r = http()
        .get(format!("{base}/api/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut buffer = String::new();
    // The listener compares everything once after LISTEN; let it finish first.
    tokio::time::sleep(Duration::from_millis(500)).await;

    client
        .batch_execute(
            "INSERT INTO messages (conversation_id, message_type, content, sequence_number)
               VALUES ('kitchen/morning_dev1', 'human', 'Thanks', 5);
             SELECT pg_notify('lang_agent_messages', '{\"conversations\":[\"kitchen/morning_dev1\"]}');",
        )
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        (
            "conversation_updated".into(),
            r#"{"conversation_id":"kitchen/morning_dev1"}"#.into()
        )
    );
    // "Something changed" finds the new conversation by itself.
    client
        .batch_execute(
            "INSERT INTO messages (conversation_id, message_type, content, sequence_number)
               VALUES ('garage/night_dev3', 'human', 'Lock up', 1);
             SELECT pg_notify('lang_agent_messages', '{\"conversations\":null}');",
        )
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        (
            "conversation_new".into(),
            r#"{"conversation_id":"garage/night_dev3"}"#.into()
        )
    );

    // Delete through the page (open access still needs the page's CSRF token).
    let page = get_text(&base, "/c/garage%2Fnight_dev3/delete").await;
    let token = csrf_in(&page);
    let r = http()
        .post(format!("{base}/c/garage%2Fnight_dev3/delete"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http()
        .post(format!("{base}/c/garage%2Fnight_dev3/delete"))
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        (
            "conversation_deleted".into(),
            r#"{"conversation_id":"garage/night_dev3"}"#.into()
        )
    );
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM messages WHERE conversation_id = 'garage/night_dev3'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

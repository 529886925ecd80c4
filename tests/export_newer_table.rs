//! Export into the original system's newer `messages` table (a `pipeline_id TEXT` column and
//! `UNIQUE (conversation_id, sequence_number)`), against the machine's real PostgreSQL: it stays
//! exactly-once, `pipeline_id` carries the profile, a clash never wedges the follower, and tool
//! steps arrive readable, so the PostgreSQL viewer labels them like the SQLite one.

mod common;

use std::time::Duration;

use common::export::*;
use lang_agent::export::{ExportOptions, FollowOptions, export_once, spawn_follower};
use lang_agent::metrics::ExportPosition;
use lang_agent::pg::PgTarget;
use lang_agent::store::{MessageKind, NewMessage};
use lang_agent::viewer::{Access, Source, router};
use tokio_util::sync::CancellationToken;

/// The original system's newer table.
const NEWER_DDL: &str = "
CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    message_type VARCHAR(10) NOT NULL CHECK (message_type IN ('human', 'ai', 'tool')),
    content TEXT NOT NULL,
    sequence_number INTEGER NOT NULL CHECK (sequence_number >= 0),
    created_at TIMESTAMPTZ DEFAULT NOW(),
    pipeline_id TEXT,
    UNIQUE (conversation_id, sequence_number)
);
CREATE INDEX idx_messages_conversation ON messages (conversation_id, sequence_number);
";

const CALLS: &str = r#"[{"id":"c1","type":"function","function":{"name":"calculator","arguments":"{\"expression\":\"37 * 49\"}"}}]"#;

fn options() -> ExportOptions {
    ExportOptions::new(None, 4).unwrap()
}

/// A tool turn as the box logs it: the question, the call, the tool's answer, the answer.
async fn tool_turn(src: &TestStore, conversation: &str) {
    let call = NewMessage {
        tool_calls: Some(CALLS.into()),
        ..NewMessage::new(MessageKind::Ai, "")
    };
    let result = NewMessage {
        tool_call_id: Some("c1".into()),
        tool_name: Some("calculator".into()),
        ..NewMessage::new(MessageKind::Tool, "1813")
    };
    src.store
        .append(
            conversation,
            None,
            None,
            vec![
                NewMessage::new(MessageKind::Human, "what is 37 times 49"),
                call,
                result,
                NewMessage::new(MessageKind::Ai, "It is 1813."),
            ],
        )
        .await
        .unwrap();
}

/// Gives `conversation` to `profile` in the SQLite log (as a profile's turn would).
async fn set_profile(src: &TestStore, conversation: &'static str, profile: &'static str) {
    src.store
        .run(move |conn| {
            Ok(conn.execute(
                "UPDATE conversations SET profile = ?2 WHERE conversation_id = ?1",
                [conversation, profile],
            )?)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn export_into_the_newer_table_twice_adds_nothing_and_fills_pipeline_id() {
    let db = TestDb::create().await;
    let client = db.client().await;
    client.batch_execute(NEWER_DDL).await.unwrap();
    let src = TestStore::new();
    src.talk("home", 3).await;
    tool_turn(&src, "shop-1").await;
    set_profile(&src, "shop-1", "shop").await;
    let target = PgTarget::parse(&db.url).unwrap();

    let first = export_once(&src.store, &target, &options(), false)
        .await
        .unwrap();
    assert_eq!(first.rows, 13);
    let pipelines = client
        .query(
            "SELECT conversation_id, pipeline_id, count(*) FROM messages GROUP BY 1, 2 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect::<Vec<(String, String, i64)>>();
    assert_eq!(
        pipelines,
        [
            ("home".into(), "default".into(), 9),
            ("shop-1".into(), "shop".into(), 4)
        ]
    );

    // Twice: the cursor lost (a restored box, a reset state table) and everything sent again.
    client
        .batch_execute("DELETE FROM lang_agent_export_state")
        .await
        .unwrap();
    let second = export_once(&src.store, &target, &options(), false)
        .await
        .unwrap();
    assert_eq!(second.rows, 0, "every row was already there");
    assert_eq!(count(&client, "SELECT count(*) FROM messages").await, 13);
    assert_eq!(duplicates(&client).await, 0);

    // Tool steps arrive readable: the calls as JSON, the tool's answer naming its tool.
    let contents: Vec<(String, String)> = client
        .query(
            "SELECT message_type::text, content FROM messages WHERE conversation_id = 'shop-1'
             ORDER BY sequence_number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(contents[1], ("ai".into(), CALLS.into()));
    assert_eq!(
        contents[2],
        (
            "tool".into(),
            r#"{"tool":"calculator","content":"1813"}"#.into()
        )
    );

    // The PostgreSQL viewer shows them as the SQLite one does.
    let source = Source::connect_postgres(&db.url).await.unwrap();
    let app = router(source, Access::open(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let page = common::http()
        .get(format!("{base}/c/shop-1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Calls calculator"), "{page}");
    assert!(page.contains("Tool · calculator"), "{page}");
    assert!(
        !page.contains("&quot;tool&quot;:&quot;calculator&quot;"),
        "the wrapper is not shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clash_with_a_row_already_there_never_wedges_the_follower() {
    let db = TestDb::create().await;
    let client = db.client().await;
    client.batch_execute(NEWER_DDL).await.unwrap();
    // Someone else already wrote sequence 2 of this conversation.
    client
        .batch_execute(
            "INSERT INTO messages (conversation_id, message_type, content, sequence_number)
             VALUES ('live', 'ai', 'written elsewhere', 2)",
        )
        .await
        .unwrap();
    let src = TestStore::new();
    src.talk("live", 1).await;
    let shutdown = CancellationToken::new();
    let follower = spawn_follower(
        src.store.clone(),
        FollowOptions::new(&db.url, None, 1, 100).unwrap(),
        shutdown.clone(),
        ExportPosition::default(),
    );
    let rows = |n: i64| {
        let client = &client;
        async move { count(client, "SELECT count(*) FROM messages").await == n }
    };
    // Sequences 1 and 3 join the row that was there; 2 is skipped, not retried for ever.
    eventually(Duration::from_secs(20), "the first turn", || rows(3)).await;
    src.talk("live", 1).await;
    eventually(Duration::from_secs(20), "the turn after the clash", || {
        rows(6)
    })
    .await;
    let kept: String = client
        .query_one(
            "SELECT content FROM messages WHERE conversation_id = 'live' AND sequence_number = 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, "written elsewhere");
    assert_eq!(duplicates(&client).await, 0);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follower stops")
        .unwrap();
}

//! Export against the machine's real PostgreSQL: every row arrives once and exactly, whatever
//! happens between runs, and problems are reported without touching the data.

mod common;

use std::time::Duration;

use common::export::*;
use lang_agent::export::{
    ExportOptions, FollowOptions, MESSAGES_DDL, export_once, rows_after, spawn_follower,
    write_sql_file,
};
use lang_agent::metrics::ExportPosition;
use lang_agent::pg::PgTarget;
use tokio_util::sync::CancellationToken;

fn options(box_id: Option<&str>, batch_size: usize) -> ExportOptions {
    ExportOptions::new(box_id, batch_size).unwrap()
}

#[tokio::test]
async fn every_row_arrives_exactly_and_a_rerun_adds_nothing() {
    let db = TestDb::create().await;
    let src = TestStore::new();
    src.talk("alpha", 4).await;
    src.talk("beta", 3).await;
    src.bulk("bulk-", 20, 15);
    let target = PgTarget::parse(&db.url).unwrap();
    // Small batches, so the run spans many transactions.
    let first = export_once(&src.store, &target, &options(None, 7), false)
        .await
        .unwrap();
    let expected = sqlite_rows(&src.sqlite_path(), "");
    assert_eq!(first.rows as usize, expected.len());
    let client = db.client().await;
    assert_eq!(pg_rows(&client, "").await, expected);

    let again = export_once(&src.store, &target, &options(None, 7), false)
        .await
        .unwrap();
    assert_eq!(again.rows, 0);
    assert_eq!(pg_rows(&client, "").await, expected);

    // New messages, and a conversation deleted on the box: only the new rows are added, and
    // PostgreSQL keeps what it already has.
    src.talk("alpha", 1).await;
    src.store
        .run(|conn| {
            Ok(conn.execute(
                "DELETE FROM conversations WHERE conversation_id = 'beta'",
                [],
            )?)
        })
        .await
        .unwrap();
    let third = export_once(&src.store, &target, &options(None, 7), false)
        .await
        .unwrap();
    assert_eq!(third.rows, 3);
    let after = pg_rows(&client, "").await;
    assert_eq!(after.len(), expected.len() + 3);
    assert_eq!(after[..expected.len()], expected[..]);
    assert_eq!(duplicates(&client).await, 0);
    let last_id: i64 = client
        .query_one(
            "SELECT last_id FROM lang_agent_export_state WHERE box_id = ''",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(last_id, third.last_id);
}

#[tokio::test]
async fn the_created_table_has_the_documented_shape() {
    let db = TestDb::create().await;
    let src = TestStore::new();
    src.talk("c", 1).await;
    export_once(
        &src.store,
        &PgTarget::parse(&db.url).unwrap(),
        &options(None, 100),
        false,
    )
    .await
    .unwrap();
    let client = db.client().await;
    let columns: Vec<(String, String, bool, Option<String>)> = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull,
                    pg_get_expr(adbin, adrelid)
             FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum
             WHERE attrelid = 'messages'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let shape: Vec<_> = columns
        .iter()
        .map(|(n, t, nn, _)| (n.as_str(), t.as_str(), *nn))
        .collect();
    assert_eq!(
        shape,
        [
            ("id", "bigint", true),
            ("conversation_id", "text", true),
            ("message_type", "character varying(10)", true),
            ("content", "text", true),
            ("sequence_number", "integer", true),
            ("created_at", "timestamp with time zone", false),
        ]
    );
    assert!(columns[0].3.as_deref().unwrap().starts_with("nextval("));
    assert_eq!(columns[5].3.as_deref(), Some("now()"));
    let index: String = client
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_messages_conversation'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        index.ends_with("ON public.messages USING btree (conversation_id, sequence_number)"),
        "{index}"
    );
    // The CHECKs hold: a row the original system could not have written is refused.
    let bad = client
        .execute(
            "INSERT INTO messages (conversation_id, message_type, content, sequence_number)
             VALUES ('x', 'system', '', 1)",
            &[],
        )
        .await;
    assert!(bad.is_err());
}

#[tokio::test]
async fn a_table_made_beforehand_with_the_documented_sql_is_used_as_is() {
    let db = TestDb::create().await;
    let client = db.client().await;
    // The original system's own script, as its README describes it, with a row already in.
    client
        .batch_execute(
            "CREATE TABLE messages (
                 id BIGSERIAL PRIMARY KEY,
                 conversation_id TEXT NOT NULL,
                 message_type VARCHAR(10) NOT NULL CHECK (message_type IN ('human', 'ai', 'tool')),
                 content TEXT NOT NULL,
                 sequence_number INTEGER NOT NULL CHECK (sequence_number >= 0),
                 created_at TIMESTAMPTZ DEFAULT NOW()
             );
             CREATE INDEX idx_messages_conversation ON messages (conversation_id, sequence_number);
             INSERT INTO messages (conversation_id, message_type, content, sequence_number)
             VALUES ('from-python', 'human', 'old row', 1);",
        )
        .await
        .unwrap();
    let catalog = "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
                   FROM pg_attribute WHERE attrelid = 'messages'::regclass AND attnum > 0";
    let before: String = client.query_one(catalog, &[]).await.unwrap().get(0);
    let src = TestStore::new();
    src.talk("new", 2).await;
    export_once(
        &src.store,
        &PgTarget::parse(&db.url).unwrap(),
        &options(None, 100),
        false,
    )
    .await
    .unwrap();
    let after: String = client.query_one(catalog, &[]).await.unwrap().get(0);
    assert_eq!(before, after);
    assert_eq!(
        pg_rows(&client, "new").await,
        sqlite_rows(&src.sqlite_path(), "")
    );
    assert_eq!(
        count(
            &client,
            "SELECT COUNT(*) FROM messages WHERE conversation_id = 'from-python'"
        )
        .await,
        1
    );
    // The exporter's own DDL is the same script: running it on this table changes nothing.
    client.batch_execute(MESSAGES_DDL).await.unwrap();
}

#[tokio::test]
async fn a_table_of_another_shape_is_named_and_left_untouched() {
    let db = TestDb::create().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE messages (
                 id BIGSERIAL PRIMARY KEY,
                 conversation_id TEXT NOT NULL,
                 message_type VARCHAR(10) NOT NULL,
                 content JSONB NOT NULL,
                 sequence_number INTEGER NOT NULL,
                 created_at TIMESTAMPTZ DEFAULT NOW()
             );
             INSERT INTO messages (conversation_id, message_type, content, sequence_number)
             VALUES ('keep', 'ai', '{}', 1);",
        )
        .await
        .unwrap();
    let src = TestStore::new();
    src.talk("c", 1).await;
    let err = export_once(
        &src.store,
        &PgTarget::parse(&db.url).unwrap(),
        &options(None, 100),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "table messages: column content is jsonb, expected text; the data was left untouched"
    );
    assert!(!err.is_transient());
    assert_eq!(count(&client, "SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(
        count(&client, "SELECT COUNT(*) FROM pg_class WHERE relname IN ('lang_agent_export_state', 'idx_messages_conversation')").await,
        0
    );

    client
        .batch_execute(
            "ALTER TABLE messages ALTER COLUMN content TYPE text, DROP COLUMN sequence_number",
        )
        .await
        .unwrap();
    let err = export_once(
        &src.store,
        &PgTarget::parse(&db.url).unwrap(),
        &options(None, 100),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("table messages: missing column sequence_number"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_rights_say_which_statement_and_table() {
    let db = TestDb::create().await;
    let role = random_name("la_export_role");
    let admin = db.client().await;
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
        .await
        .unwrap();
    let src = TestStore::new();
    src.talk("c", 1).await;
    let as_role = PgTarget::parse(&db.url_as(&role)).unwrap();

    // No right to create in schema public (PostgreSQL 15's default for non-owners).
    let err = export_once(&src.store, &as_role, &options(None, 100), false)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "permission denied: CREATE TABLE messages: permission denied for schema public; \
         grant the role that right, or run it as the table owner"
    );

    // Tables made by the owner, the role may read but not write.
    export_once(
        &src.store,
        &PgTarget::parse(&db.url).unwrap(),
        &options(Some("owner"), 100),
        false,
    )
    .await
    .unwrap();
    admin
        .batch_execute(&format!(
            "GRANT SELECT ON messages, lang_agent_export_state TO {role}"
        ))
        .await
        .unwrap();
    let err = export_once(&src.store, &as_role, &options(None, 100), false)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("permission denied: INSERT INTO lang_agent_export_state:"),
        "{text}"
    );
    assert!(
        text.contains("permission denied for table lang_agent_export_state"),
        "{text}"
    );

    admin
        .batch_execute(&format!(
            "GRANT INSERT, UPDATE ON lang_agent_export_state TO {role}"
        ))
        .await
        .unwrap();
    let err = export_once(&src.store, &as_role, &options(None, 100), false)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "permission denied: COPY into messages: permission denied for table messages"
        ),
        "{text}"
    );
    // Nothing half-done: the owner's rows only, and the role's progress still at 0.
    assert_eq!(count(&admin, "SELECT COUNT(*) FROM messages").await, 3);
    assert_eq!(
        count(
            &admin,
            "SELECT MAX(last_id) FROM lang_agent_export_state WHERE box_id = ''"
        )
        .await,
        0
    );

    drop(db);
    connect(&admin_url())
        .await
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_sql_file_loads_with_psql_and_obeys_the_same_watermark() {
    let db = TestDb::create().await;
    let src = TestStore::new();
    src.talk("filed", 3).await;
    src.bulk("bulk-", 5, 4);
    let file = src.data_dir().join("export.sql");
    let opts = options(Some("offline-box"), 4);
    let written = write_sql_file(&src.store, &file, &opts, false)
        .await
        .unwrap();
    assert_eq!(written.rows, 29);
    let psql = |file: &std::path::Path| {
        let out = std::process::Command::new("psql")
            .arg("-X")
            .arg("-q")
            .arg("-f")
            .arg(file)
            .arg(&db.url)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&file);
    let client = db.client().await;
    let expected = sqlite_rows(&src.sqlite_path(), "offline-box/");
    assert_eq!(pg_rows(&client, "offline-box/").await, expected);

    // Loading again adds nothing; neither does a direct export of the same box afterwards.
    psql(&file);
    let direct = export_once(&src.store, &PgTarget::parse(&db.url).unwrap(), &opts, false)
        .await
        .unwrap();
    assert_eq!(direct.rows, 0);
    assert_eq!(pg_rows(&client, "offline-box/").await, expected);

    // A later file brings just the new messages.
    src.talk("filed", 1).await;
    write_sql_file(&src.store, &file, &opts, false)
        .await
        .unwrap();
    psql(&file);
    assert_eq!(
        pg_rows(&client, "offline-box/").await,
        sqlite_rows(&src.sqlite_path(), "offline-box/")
    );
    assert_eq!(duplicates(&client).await, 0);
}

#[tokio::test]
async fn two_boxes_share_one_table_and_stay_apart() {
    let db = TestDb::create().await;
    let target = PgTarget::parse(&db.url).unwrap();
    let kitchen = TestStore::new();
    let bedroom = TestStore::new();
    // The same conversation id on both boxes.
    kitchen.talk("session-1", 2).await;
    bedroom.talk("session-1", 3).await;
    export_once(&kitchen.store, &target, &options(Some("kitchen"), 5), false)
        .await
        .unwrap();
    export_once(&bedroom.store, &target, &options(Some("bedroom"), 5), false)
        .await
        .unwrap();
    let client = db.client().await;
    assert_eq!(
        pg_rows(&client, "kitchen/").await,
        sqlite_rows(&kitchen.sqlite_path(), "kitchen/")
    );
    assert_eq!(
        pg_rows(&client, "bedroom/").await,
        sqlite_rows(&bedroom.sqlite_path(), "bedroom/")
    );
    assert_eq!(count(&client, "SELECT COUNT(*) FROM messages").await, 15);
    let boxes: Vec<String> = client
        .query(
            "SELECT DISTINCT box_id FROM lang_agent_export_state ORDER BY box_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(boxes, ["bedroom", "kitchen"]);
    assert!(ExportOptions::new(Some("kitchen/2"), 5).is_err());
}

#[tokio::test]
async fn each_batch_is_announced_to_listeners() {
    use futures::StreamExt;
    let db = TestDb::create().await;
    let (listener, mut connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (sender, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = sender.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener
        .batch_execute("LISTEN lang_agent_messages")
        .await
        .unwrap();
    let src = TestStore::new();
    src.talk("b", 1).await;
    src.talk("a", 1).await;
    export_once(
        &src.store,
        &PgTarget::parse(&db.url).unwrap(),
        &options(Some("box1"), 100),
        false,
    )
    .await
    .unwrap();
    let (channel, payload) = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(channel, "lang_agent_messages");
    assert_eq!(payload, r#"{"conversations":["box1/a","box1/b"]}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_picks_up_new_messages_and_survives_a_killed_connection() {
    let db = TestDb::create().await;
    let src = TestStore::new();
    src.talk("live", 2).await;
    let shutdown = CancellationToken::new();
    let position = ExportPosition::default();
    let follower = spawn_follower(
        src.store.clone(),
        FollowOptions::new(&db.url, Some("box"), 1, 100).unwrap(),
        shutdown.clone(),
        position.clone(),
    );
    let client = db.client().await;
    let rows_in_pg = |n: usize| {
        let client = &client;
        async move {
            // The follower creates the table on its first connection.
            count(
                client,
                "SELECT COUNT(*) FROM pg_class WHERE relname = 'messages'",
            )
            .await
                == 1
                && pg_rows(client, "box/").await.len() == n
        }
    };
    eventually(Duration::from_secs(20), "the first 6 rows", || {
        rows_in_pg(6)
    })
    .await;

    let backend = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
                   AND application_name = 'lang-agent export'";
    let first_pid: i32 = client.query_one(backend, &[]).await.unwrap().get(0);
    let killed: bool = client
        .query_one("SELECT pg_terminate_backend($1)", &[&first_pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    src.talk("live", 2).await;
    src.talk("later", 1).await;
    eventually(
        Duration::from_secs(30),
        "the rows stored after the kill",
        || rows_in_pg(15),
    )
    .await;
    let second_pid: i32 = client.query_one(backend, &[]).await.unwrap().get(0);
    assert_ne!(first_pid, second_pid, "the follower reconnected");
    assert_eq!(
        pg_rows(&client, "box/").await,
        sqlite_rows(&src.sqlite_path(), "box/")
    );
    // The position the metrics count the export lag from has caught up too.
    eventually(Duration::from_secs(10), "no export lag", || async {
        match position.get() {
            Some(id) => rows_after(&src.store, id).await.unwrap() == 0,
            None => false,
        }
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follower stops on shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_exporters_of_one_store_at_once_still_copy_each_row_once() {
    let db = TestDb::create().await;
    let src = TestStore::new();
    src.bulk("c", 200, 50);
    let target = PgTarget::parse(&db.url).unwrap();
    // Tables first, so both runs race on the rows rather than on CREATE.
    export_once(&TestStore::new().store, &target, &options(None, 10), false)
        .await
        .unwrap();
    let opts = options(None, 100);
    let (a, b) = tokio::join!(
        export_once(&src.store, &target, &opts, false),
        export_once(&src.store, &target, &opts, false),
    );
    assert_eq!(a.unwrap().rows + b.unwrap().rows, 10_000);
    let client = db.client().await;
    assert_eq!(
        pg_rows(&client, "c").await,
        sqlite_rows(&src.sqlite_path(), "")
    );
    assert_eq!(duplicates(&client).await, 0);
}

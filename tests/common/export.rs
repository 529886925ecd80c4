//! Shared by the export tests: a throw-away PostgreSQL database per test, SQLite stores filled
//! fast, and both sides read back in one comparable form.
//!
//! Every test gets its own database `la_export_<random>` on the machine's PostgreSQL (trust
//! auth, superuser), dropped when the test ends, so tests run in parallel without clashing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lang_agent::store::{MessageKind, NewMessage, Store};
use tokio_postgres::{Client, NoTls};

/// The server every test database lives on; `LANG_AGENT_TEST_PG` overrides it.
pub fn admin_url() -> String {
    std::env::var("LANG_AGENT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn random_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// URL of database `name` on the test server.
fn url_for(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = random_name("la_export");
        connect(&admin_url())
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb {
            url: url_for(&name),
            name,
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// The URL for another role on this database.
    pub fn url_as(&self, role: &str) -> String {
        self.url.replacen("postgres@", &format!("{role}@"), 1)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&admin_url(), NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A data directory with a migrated store in it.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("lang-agent.sqlite3")).unwrap();
        TestStore { dir, store }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("lang-agent.sqlite3")
    }

    /// Logs a conversation through the store's own API, with content that COPY and SQL
    /// quoting could get wrong.
    pub async fn talk(&self, conversation: &str, turns: usize) {
        for i in 0..turns {
            self.store
                .append(
                    conversation,
                    Some("dev"),
                    None,
                    vec![
                        NewMessage::new(
                            MessageKind::Human,
                            format!("question {i}: it's \"quoted\"\tand\\slashed"),
                        ),
                        NewMessage::new(
                            MessageKind::Ai,
                            format!("answer {i}\nline two\r\n你好 🎉 \\. \\N"),
                        ),
                        NewMessage::new(
                            MessageKind::Tool,
                            format!("{{\"result\": {i}, \"ok\": true}}"),
                        ),
                    ],
                )
                .await
                .unwrap();
        }
    }

    /// Writes `conversations × per_conversation` messages straight into SQLite in one
    /// transaction: fast enough for stores of hundreds of thousands of rows.
    pub fn bulk(&self, prefix: &str, conversations: usize, per_conversation: usize) {
        let mut conn = rusqlite::Connection::open(self.sqlite_path()).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut conversation = tx
                .prepare(
                    "INSERT INTO conversations (conversation_id, message_count, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?3)",
                )
                .unwrap();
            let mut message = tx
                .prepare(
                    "INSERT INTO messages (conversation_id, message_type, content, sequence_number, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .unwrap();
            let kinds = ["human", "ai", "tool"];
            for c in 0..conversations {
                let id = format!("{prefix}{c}");
                let at = format!(
                    "2025-06-01T{:02}:{:02}:{:02}.{:03}Z",
                    c / 3600 % 24,
                    c / 60 % 60,
                    c % 60,
                    c % 1000
                );
                conversation
                    .execute(rusqlite::params![id, per_conversation as i64, at])
                    .unwrap();
                for s in 1..=per_conversation {
                    let content =
                        format!("message {s} of {id}: some words of a typical voice turn, 你好");
                    message
                        .execute(rusqlite::params![id, kinds[s % 3], content, s as i64, at])
                        .unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }
}

/// A message as both sides can show it: conversation, type, content, sequence, created_at.
pub type Row = (String, String, String, i32, String);

/// SQLite's messages in id order, with `prefix` put before conversation ids as export does.
pub fn sqlite_rows(path: &Path, prefix: &str) -> Vec<Row> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT conversation_id, message_type, content, sequence_number, created_at
             FROM messages ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            format!("{prefix}{}", r.get::<_, String>(0)?),
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// PostgreSQL's messages whose conversation id starts with `prefix`, in id order.
pub async fn pg_rows(client: &Client, prefix: &str) -> Vec<Row> {
    client
        .query(
            "SELECT conversation_id, message_type::text, content, sequence_number, created_at
             FROM messages WHERE starts_with(conversation_id, $1) ORDER BY id",
            &[&prefix],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let at: chrono::DateTime<chrono::Utc> = r.get(4);
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            )
        })
        .collect()
}

pub async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Rows that appear more than once (same conversation and sequence number).
pub async fn duplicates(client: &Client) -> i64 {
    count(
        client,
        "SELECT COUNT(*) FROM (SELECT 1 FROM messages GROUP BY conversation_id, sequence_number
         HAVING COUNT(*) > 1) d",
    )
    .await
}

/// Waits up to `limit` for `check` to hold, polling.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The exporter binary, with a data dir.
pub fn lang_agent(data_dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lang-agent"));
    // Run from the data dir so a developer's `.env` (loaded from the working directory) with
    // its CONN_STR cannot leak into the test.
    cmd.current_dir(data_dir)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("CONN_STR")
        .env("LANG_AGENT_LOG", "warn");
    cmd
}

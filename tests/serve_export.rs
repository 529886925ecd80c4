//! `serve --export-to`: the export follower running inside the server copies each turn to
//! PostgreSQL as it is stored, under the box's prefix.

mod common;

use std::time::Duration;

use common::export::{TestDb, pg_rows};
use common::*;

#[tokio::test]
async fn serve_exports_turns_to_postgres_as_they_happen() {
    let db = TestDb::create().await;
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &[
            "--export-to",
            &db.url,
            "--export-box-id",
            "shop-1",
            "--export-interval-secs",
            "1",
        ],
    );
    let sse = dashscope_stream(&server, Some("exported"), "hello export").await;
    assert_eq!(
        final_text(&sse),
        "You said: hello export. I remember: hello export."
    );

    let client = db.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let rows = loop {
        // The follower creates the table on its first round, which may come after the turn.
        let table: Option<String> = client
            .query_one("SELECT to_regclass('messages')::text", &[])
            .await
            .unwrap()
            .get(0);
        let rows = match table {
            Some(_) => pg_rows(&client, "shop-1/").await,
            None => Vec::new(),
        };
        if rows.len() >= 2 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let got: Vec<(&str, &str, &str, i32)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str(), r.3))
        .collect();
    assert_eq!(
        got,
        [
            ("shop-1/exported", "human", "hello export", 1),
            (
                "shop-1/exported",
                "ai",
                "You said: hello export. I remember: hello export.",
                2
            ),
        ]
    );
}

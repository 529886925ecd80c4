//! Turns end to end through the real binary: memory across restarts, barge-in, waiting,
//! clients that go away, devices changing conversation, app-scoped memory, keep-alives, and
//! upstream failures that must not lose the user's turn.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn memory_survives_a_restart() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &mock.base_url, &[]);
    let first = dashscope_stream(&server, Some("restart-s"), "my name is Ada").await;
    assert_eq!(
        final_text(&first),
        "You said: my name is Ada. I remember: my name is Ada."
    );
    drop(server);

    let server = Server::start(&data, &mock.base_url, &[]);
    let second = dashscope_stream(&server, Some("restart-s"), "who am I").await;
    assert_eq!(
        final_text(&second),
        "You said: who am I. I remember: my name is Ada | who am I."
    );
    let rows = log_rows(&server.db(), "restart-s");
    let kinds: Vec<_> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(kinds, ["human", "ai", "human", "ai"]);
}

/// Reads a DashScope stream until its first data frame, then returns the open response.
async fn open_stream(server: &Server, session: &str, text: &str) -> reqwest::Response {
    let response = http()
        .post(format!("{}/api/apps/app1/completion", server.url))
        .bearer_auth(KEY)
        .header("X-DashScope-SSE", "enable")
        .json(&json!({"input": {"messages": [{"role": "user", "content": text}], "session_id": session}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

async fn read_until(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    needle: &str,
) -> String {
    let mut seen = String::new();
    while let Some(chunk) = stream.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if seen.contains(needle) {
            break;
        }
    }
    seen
}

#[tokio::test]
async fn a_new_turn_interrupts_the_running_one_and_keeps_its_partial_answer() {
    // 40 ms between 8-character pieces: a long answer takes seconds.
    let mock = Mock::start(0, 40);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let long = format!("tell a story [[mock:reply={}]]", "la ".repeat(200));
    let first = open_stream(&server, "barge", &long).await;
    let mut first = first.bytes_stream();
    read_until(&mut first, "data:").await;

    let second = dashscope_stream(&server, Some("barge"), "stop, what time is it").await;
    assert!(final_text(&second).starts_with("You said: stop, what time is it."));
    // The interrupted stream ends like a finished answer: Xiaozhi logs no error for a barge-in.
    let rest = read_until(&mut first, r#""finish_reason":"stop""#).await;
    assert!(!rest.contains("event:error"), "{rest}");
    assert_eq!(
        first.next().await.map(|c| c.is_ok()),
        None,
        "the stream ended"
    );

    let rows = log_rows(&server.db(), "barge");
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[0].0, "human");
    let (kind, partial, interrupted) = &rows[1];
    assert_eq!(kind, "ai");
    assert!(*interrupted);
    assert!(
        partial.starts_with("la la") && partial.len() < 600,
        "{partial}"
    );
    assert_eq!((rows[2].0.as_str(), rows[3].2), ("human", false));
    // The interrupted answer stays in memory, so the model knows what it had said.
    let upstream = mock.requests().await;
    let last = upstream.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(last.len(), 4, "system, human, partial ai, human: {last:?}");
}

#[tokio::test]
async fn with_wait_a_new_turn_queues_behind_the_running_one() {
    let mock = Mock::start(0, 5);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--on-busy", "wait"],
    );
    let (a, b) = tokio::join!(dashscope_stream(&server, Some("queue"), "first"), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        dashscope_stream(&server, Some("queue"), "second").await
    });
    assert_eq!(final_text(&a), "You said: first. I remember: first.");
    assert_eq!(
        final_text(&b),
        "You said: second. I remember: first | second."
    );
    let rows = log_rows(&server.db(), "queue");
    assert!(rows.iter().all(|r| !r.2), "nothing interrupted: {rows:?}");
    assert_eq!(rows.len(), 4);
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_model_and_keeps_what_was_said() {
    let mock = Mock::start(0, 50);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let long = format!("go on [[mock:reply={}]]", "word ".repeat(300));
    let response = open_stream(&server, "gone", &long).await;
    let mut stream = response.bytes_stream();
    read_until(&mut stream, "data:").await;
    drop(stream);

    let db = server.db();
    let mut status = String::new();
    for _ in 0..100 {
        status = db
            .query_row(
                "SELECT status FROM turns WHERE conversation_id = 'gone'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if status != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "interrupted");
    let rows = log_rows(&db, "gone");
    assert_eq!(rows.len(), 2);
    assert!(rows[1].2 && rows[1].1.starts_with("word"), "{rows:?}");
    // The full answer would take 300 * 5 / 8 * 50 ms ≈ 9 s; it was stopped long before.
    let total: i64 = db
        .query_row(
            "SELECT total_ms FROM turns WHERE conversation_id = 'gone'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(total < 5_000, "turn ran {total} ms after the client left");
}

#[tokio::test]
async fn a_device_starting_a_new_conversation_leaves_the_old_one_out_of_memory() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    dashscope_stream(&server, Some("c1_dev-7"), "old topic").await;
    dashscope_stream(&server, Some("c2_dev-7"), "new topic").await;
    let back = dashscope_stream(&server, Some("c1_dev-7"), "back again").await;
    assert_eq!(
        final_text(&back),
        "You said: back again. I remember: back again."
    );
    // The log keeps everything.
    assert_eq!(log_rows(&server.db(), "c1_dev-7").len(), 4);
    let device: String = server
        .db()
        .query_row(
            "SELECT device_id FROM conversations WHERE conversation_id = 'c1_dev-7'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(device, "dev-7");
}

#[tokio::test]
async fn app_scoped_memory_survives_new_session_ids() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--memory-scope", "app"],
    );
    let a = dashscope_stream(&server, Some("uuid-connection-1"), "remember blue").await;
    assert_eq!(
        final_text(&a),
        "You said: remember blue. I remember: remember blue."
    );
    let b = dashscope_stream(&server, Some("uuid-connection-2"), "which colour").await;
    assert_eq!(
        final_text(&b),
        "You said: which colour. I remember: remember blue | which colour."
    );
    // The client still gets its own session id back.
    assert!(b.contains(r#""session_id":"uuid-connection-2""#));
    assert_eq!(log_rows(&server.db(), "app1").len(), 4);
}

#[tokio::test]
async fn app_scoped_threads_of_different_apps_and_devices_never_share_memory() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--memory-scope", "app"],
    );
    let call = |app: &str, session: &str, text: &str| {
        let request = http()
            .post(format!("{}/api/apps/{app}/completion", server.url))
            .bearer_auth(KEY)
            .json(
                &json!({"input": {"messages": [{"role": "user", "content": text}],
                                    "session_id": session}}),
            );
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    // App `kitchen` on device `speaker`, then app `kitchen_speaker` with no device.
    let (status, a) = call("kitchen", "c_speaker", "the oven is hot").await;
    assert_eq!(status, 200, "{a}");
    let (status, b) = call("kitchen_speaker", "3f2b-uuid", "play jazz").await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        b["output"]["text"],
        "You said: play jazz. I remember: play jazz."
    );
    let (_, a2) = call("kitchen", "c2_speaker", "is it hot").await;
    assert_eq!(
        a2["output"]["text"],
        "You said: is it hot. I remember: the oven is hot | is it hot."
    );
    let db = server.db();
    assert_eq!(log_rows(&db, "kitchen/speaker").len(), 4);
    assert_eq!(log_rows(&db, "kitchen_speaker").len(), 2);
    assert!(a["output"]["text"].as_str().unwrap().contains("oven"));

    // An app id that holds the separator (axum decodes %2F) is refused, and nothing is stored.
    let (status, error) = call("kitchen%2Fspeaker", "x_dev", "hello").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], "InvalidParameter");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("kitchen/speaker")
    );
    assert!(error["request_id"].is_string());
    let conversations: i64 = db
        .query_row("SELECT count(*) FROM conversations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(conversations, 2);
}

#[tokio::test]
async fn keep_alive_comments_flow_while_the_model_is_silent() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--keepalive-secs", "1"],
    );
    let sse = dashscope_stream(&server, Some("slow"), "think hard [[mock:delay=2600]]").await;
    let first_data = sse.find("data:").unwrap();
    assert!(sse[..first_data].contains(": keep-alive\n\n"), "{sse}");
    assert!(final_text(&sse).starts_with("You said: think hard"));
}

#[tokio::test]
async fn upstream_failures_are_clear_errors_and_keep_the_users_turn() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--llm-attempts", "2"],
    );

    let body = |text: &str| json!({"input": {"messages": [{"role": "user", "content": text}], "session_id": "fail"}});
    let (status, error) = dashscope_call(&server, body("one [[mock:status=500]]")).await;
    assert_eq!(status, 502);
    assert_eq!(error["code"], "InternalError");
    assert!(
        error["message"].as_str().unwrap().contains("500"),
        "{error}"
    );

    let (status, error) = dashscope_call(&server, body("two [[mock:status=429]]")).await;
    assert_eq!((status, error["code"].as_str()), (429, Some("Throttling")));

    // Cut mid-stream: the stream already began, so the failure is an error event.
    let sse = dashscope_stream(&server, Some("fail"), "three [[mock:cut]]").await;
    assert!(
        sse.contains("event:error\n:HTTP_STATUS/502\nstatus:502\n"),
        "{sse}"
    );

    // A retried failure before the first token is invisible to the client.
    let (status, ok) = dashscope_call(&server, body("four [[mock:fail_first=1]]")).await;
    assert_eq!(status, 200, "{ok}");
    let remembered = ok["output"]["text"].as_str().unwrap();
    for turn in ["one", "two", "three", "four"] {
        assert!(remembered.contains(turn), "{turn} lost: {remembered}");
    }
    let statuses: Vec<String> = server
        .db()
        .prepare("SELECT status FROM turns WHERE conversation_id = 'fail' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(statuses, ["failed", "failed", "failed", "done"]);

    // Upstream down: a server pointed at a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = Server::start(
        &dir.path().join("down"),
        &format!("http://{closed}/v1"),
        &["--llm-attempts", "2"],
    );
    let (status, error) = dashscope_call(&down, body("anyone there")).await;
    assert_eq!(status, 502);
    assert!(
        error["message"].as_str().unwrap().contains("unreachable"),
        "{error}"
    );
    assert_eq!(log_rows(&down.db(), "fail")[0].1, "anyone there");
    // And the server still serves.
    let health = http()
        .get(format!("{}/health", down.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

//! The operator's log: one line per finished turn at info (thread, status, route, tools,
//! timings), readable text or JSON (`--log-format json`), and no library chatter by default.

mod common;

use common::*;
use serde_json::{Value, json};

const CALC: &str = r#"[[mock:call=calculator {"expression": "37 * 49"}]]"#;

#[tokio::test]
async fn every_finished_turn_is_one_json_line_saying_what_happened() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--log-format", "json"],
    );
    let chat = json!({"thread_id": "log-chat", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(openai_call(&server, chat).await.status(), 200);
    let tool = format!("what is 37 times 49 [[mock:route=tool]] {CALC}");
    let sse = dashscope_stream(&server, Some("log-tool"), &tool).await;
    assert!(sse.contains("Tool said: 1813."), "{sse}");

    server.proc.wait_for_line("\"thread\":\"log-tool\"");
    let lines: Vec<Value> = server
        .proc
        .log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "lang-agent ready"),
        "every line is JSON, the ready line too"
    );
    let turn = |thread: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "turn" && l["thread"] == thread)
            .unwrap_or_else(|| panic!("no turn line for {thread}"))
            .clone()
    };
    let chat = turn("log-chat");
    assert_eq!(
        (
            &chat["status"],
            &chat["route"],
            &chat["finish"],
            &chat["level"]
        ),
        (
            &json!("done"),
            &json!("chat"),
            &json!("stop"),
            &json!("INFO")
        )
    );
    assert!(chat["total_ms"].as_u64().is_some(), "{chat}");
    let tool = turn("log-tool");
    assert_eq!(
        (&tool["route"], &tool["tools"]),
        (&json!("tool"), &json!("calculator"))
    );
}

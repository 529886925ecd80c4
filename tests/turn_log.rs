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

    // Other lines of the tool turn carry its thread too; wait for the turn line itself.
    server
        .proc
        .wait_for_line_with(&["\"message\":\"turn\"", "\"thread\":\"log-tool\""]);
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

/// The JSON log lines `server` wrote so far.
fn json_lines(server: &Server) -> Vec<Value> {
    server
        .proc
        .log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The `request` span's id on a JSON log line, if it was logged inside one.
fn request_id_of(line: &Value) -> Option<&str> {
    line["span"]["request_id"].as_str()
}

#[tokio::test]
async fn the_client_gets_the_request_id_that_every_line_of_its_turn_carries() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &mock.base_url,
        &["--log-format", "json"],
        &[
            ("FAST_AUTH_KEYS", KEY),
            ("LANG_AGENT_LOG", "lang_agent=debug"),
        ],
    );

    // DashScope: the id is the body's `request_id` and the `x-request-id` header.
    let tool = format!("what is 37 times 49 [[mock:route=tool]] {CALC}");
    let response = http()
        .post(format!("{}/api/v1/apps/app1/completion", server.url))
        .bearer_auth(KEY)
        .json(&json!({"input": {"session_id": "rid-tool", "prompt": tool}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], json!(header));

    // OpenAI: a caller's own plain id is kept and given back.
    let response = http()
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(KEY)
        .header("x-request-id", "proxy-42")
        .json(&json!({"thread_id": "rid-chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "proxy-42");

    // A refused key: the error body and the header carry the same id.
    let refused = http()
        .post(format!("{}/api/v1/apps/app1/completion", server.url))
        .bearer_auth("wrong")
        .json(&json!({"input": {"prompt": "hi"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let refused_body: Value = refused.json().await.unwrap();
    assert_eq!(refused_body["request_id"], json!(refused_id));

    // Debug lines carry the thread too; wait for both turns' own lines.
    for thread in ["\"thread\":\"rid-tool\"", "\"thread\":\"rid-chat\""] {
        server
            .proc
            .wait_for_line_with(&["\"message\":\"turn\"", thread]);
    }
    let lines = json_lines(&server);
    let of_request = |id: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| request_id_of(l) == Some(id))
            .cloned()
            .collect()
    };
    let messages = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l["message"].as_str().unwrap_or_default().to_string())
            .collect()
    };

    // The tool turn: opened (debug), routed (debug), tool answered, tool step stored (debug),
    // and the turn line at info, all under the id the client got.
    let tool_lines = of_request(&header);
    let said = messages(&tool_lines);
    for expected in [
        "turn opened: the user's turn is stored",
        "routed",
        "tool answered",
        "tool step stored",
        "turn",
    ] {
        assert!(
            said.iter().any(|m| m == expected),
            "no {expected:?} line under request {header}: {said:?}"
        );
    }
    let turn = tool_lines.iter().find(|l| l["message"] == "turn").unwrap();
    assert_eq!(
        (&turn["thread"], &turn["span"]["protocol"], &turn["level"]),
        (&json!("rid-tool"), &json!("dashscope"), &json!("INFO"))
    );

    let chat_turn = of_request("proxy-42")
        .into_iter()
        .find(|l| l["message"] == "turn")
        .expect("the OpenAI turn line carries the caller's id");
    assert_eq!(
        (&chat_turn["thread"], &chat_turn["span"]["protocol"]),
        (&json!("rid-chat"), &json!("openai"))
    );

    // The refusal is logged at warn under its id, with the path and never the key.
    let refusal = of_request(&refused_id);
    assert!(
        refusal
            .iter()
            .any(|l| l["level"] == "WARN" && l["path"] == "/api/v1/apps/app1/completion"),
        "{refusal:?}"
    );
    assert!(!server.proc.log().contains("Bearer wrong"));
}

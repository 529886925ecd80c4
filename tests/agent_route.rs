//! The agent graphs end to end through the real binary and the DashScope streaming API, with
//! the local calculator as the tool: routing (and its fallbacks), the dropped chat branch, the
//! tool loop's steps in memory and log, parallel calls, the step limit, the `react` graph, and
//! chatty mode. MCP servers are in `agent_mcp.rs`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const CALC: &str = r#"[[mock:call=calculator {"expression": "37 * 49"}]]"#;

fn kinds(rows: &[(String, String, Option<String>, Option<String>)]) -> Vec<&str> {
    rows.iter().map(|r| r.0.as_str()).collect()
}

#[tokio::test]
async fn small_talk_goes_to_the_chat_model_and_the_router_is_asked_for_json() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--router-llm-name", "fast-router"],
    );
    let sse = dashscope_stream(&server, Some("small-talk"), "hello there").await;
    assert_eq!(
        final_text(&sse),
        "You said: hello there. I remember: hello there."
    );
    let calls = requests_about(&mock, "hello there").await;
    assert_eq!(
        calls.len(),
        2,
        "one router call and one chat call: {calls:#?}"
    );
    let router = calls
        .iter()
        .find(|c| c["response_format"]["type"] == "json_object")
        .expect("a router call");
    assert_eq!(router["model"], "fast-router");
    assert!(router.get("tools").is_none());
    let route_prompt = router["messages"][0]["content"].as_str().unwrap();
    assert!(
        route_prompt.contains(r#"{"step": "chat"}"#),
        "{route_prompt}"
    );
    let chat = calls
        .iter()
        .find(|c| c.get("response_format").is_none())
        .unwrap();
    assert_eq!(chat["model"], "qwen-plus");
    assert!(chat.get("tools").is_none());
    assert_eq!(
        kinds(&tool_rows(&server.db(), "small-talk")),
        ["human", "ai"]
    );
}

#[tokio::test]
async fn a_tool_turn_drops_the_faster_chat_branch_and_logs_every_step() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    // The chat branch answers at once; the router decides 400 ms later. Nothing the chat
    // branch said may reach the client or the log.
    let turn = format!("what is 37 times 49 [[mock:route=tool]] [[mock:route_delay=400]] {CALC}");
    let sse = dashscope_stream(&server, Some("calc-1"), &turn).await;
    assert!(!sse.contains("You said"), "{sse}");
    assert_eq!(final_text(&sse), "Tool said: 1813.");

    let rows = tool_rows(&server.db(), "calc-1");
    assert_eq!(kinds(&rows), ["human", "ai", "tool", "ai"], "{rows:#?}");
    let calls: Value = serde_json::from_str(rows[1].2.as_deref().unwrap()).unwrap();
    assert_eq!(calls[0]["function"]["name"], "calculator");
    assert_eq!(
        (rows[2].1.as_str(), rows[2].3.as_deref()),
        ("1813", Some("calculator"))
    );
    assert_eq!(rows[3].1, "Tool said: 1813.");
    assert!(!rows.iter().any(|r| r.1.contains("You said")));

    // The tool model got the tool prompt and the tools; it is --tool-llm-name (default
    // --llm-name).
    let requests = requests_about(&mock, "37 times 49").await;
    let tool_calls: Vec<_> = requests
        .iter()
        .filter(|r| r.get("tools").is_some())
        .collect();
    assert_eq!(tool_calls.len(), 2, "call, then answer with the result");
    assert_eq!(tool_calls[0]["model"], "qwen-plus");
    assert!(
        tool_calls[0]["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("Use the tools you are given")
    );

    // Next turn, the memory holds the whole exchange, paired as the model needs it.
    let sse = dashscope_stream(&server, Some("calc-1"), "thanks").await;
    assert!(final_text(&sse).starts_with("You said: thanks."));
    let next = requests_about(&mock, "thanks").await;
    let chat = next
        .iter()
        .find(|r| r.get("response_format").is_none())
        .unwrap();
    let roles: Vec<_> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
    assert_eq!(
        chat["messages"][3]["tool_call_id"],
        chat["messages"][2]["tool_calls"][0]["id"]
    );
}

#[tokio::test]
async fn router_garbage_or_failure_means_tools() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    for (session, route) in [("garbage", "garbage"), ("router-down", "fail")] {
        let turn = format!("compute it [[mock:route={route}]] {CALC}");
        let sse = dashscope_stream(&server, Some(session), &turn).await;
        assert_eq!(final_text(&sse), "Tool said: 1813.", "{route}: {sse}");
    }
}

#[tokio::test]
async fn chat_text_held_for_a_slow_router_is_sent_when_it_says_chat() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let started = Instant::now();
    let sse = dashscope_stream(
        &server,
        Some("slow-router"),
        "tell me [[mock:route_delay=300]]",
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        final_text(&sse),
        "You said: tell me [[mock:route_delay=300]]. I remember: tell me [[mock:route_delay=300]]."
    );
    assert_eq!(
        kinds(&tool_rows(&server.db(), "slow-router")),
        ["human", "ai"]
    );
}

#[tokio::test]
async fn several_calls_run_in_one_step_and_the_step_limit_forces_an_answer() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--max-tool-steps", "2"],
    );
    let two = r#"[[mock:route=tool]] [[mock:call=calculator {"expression": "1 + 2"}]] [[mock:call=calculator {"expression": "7 / 2"}]]"#;
    let sse = dashscope_stream(&server, Some("two-calls"), two).await;
    assert_eq!(final_text(&sse), "Tool said: 3 | 3.5.");
    let rows = tool_rows(&server.db(), "two-calls");
    assert_eq!(kinds(&rows), ["human", "ai", "tool", "tool", "ai"]);

    // A model that never stops calling tools gets two rounds, then must answer without tools.
    let endless = format!("loop [[mock:route=tool]] [[mock:repeat_calls]] {CALC}");
    let sse = dashscope_stream(&server, Some("endless"), &endless).await;
    assert_eq!(final_text(&sse), "Tool said: 1813 | 1813.");
    let rows = tool_rows(&server.db(), "endless");
    assert_eq!(kinds(&rows), ["human", "ai", "tool", "ai", "tool", "ai"]);
    let answers: Vec<_> = requests_about(&mock, "loop [[mock")
        .await
        .into_iter()
        .filter(|r| {
            r.get("response_format").is_none()
                && r["messages"][0]["content"]
                    .as_str()
                    .unwrap()
                    .contains("tools you are given")
        })
        .collect();
    assert_eq!(answers.len(), 3);
    assert!(
        answers[2].get("tools").is_none(),
        "the last call offers no tools"
    );
}

#[tokio::test]
async fn a_bad_tool_call_is_explained_to_the_model_not_a_failed_turn() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let turn = r#"[[mock:route=tool]] [[mock:call=no_such_tool {}]] [[mock:call=calculator {"expression": "open(1)"}]]"#;
    let sse = dashscope_stream(&server, Some("bad-calls"), turn).await;
    let text = final_text(&sse);
    assert!(
        text.starts_with(r#"Tool said: Error: there is no tool named "no_such_tool" | Error: the tool failed: cannot evaluate"#),
        "{text}"
    );
}

#[tokio::test]
async fn the_react_graph_is_one_model_with_every_tool() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--graph", "react"],
    );
    let sse = dashscope_stream(&server, Some("react-1"), &format!("multiply {CALC}")).await;
    assert_eq!(final_text(&sse), "Tool said: 1813.");
    let sse = dashscope_stream(&server, Some("react-2"), "just chatting").await;
    assert_eq!(
        final_text(&sse),
        "You said: just chatting. I remember: just chatting."
    );
    let requests = mock.requests().await;
    assert!(
        requests.iter().all(|r| r.get("response_format").is_none()),
        "no router"
    );
    let first = &requests[0];
    assert_eq!(first["model"], "qwen-plus");
    assert!(
        first["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("voice assistant")
    );
    let names: Vec<_> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["calculator"]);
}

#[tokio::test]
async fn chatty_mode_speaks_filler_then_the_answer_and_logs_both() {
    // Every call takes 700 ms: the filler's first sentence is out long before the answer.
    let mock = Mock::start(700, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--tool-node", "chatty"],
    );
    let turn = format!("how much is it [[mock:route=tool]] {CALC}");
    let sse = dashscope_stream(&server, Some("chatty-1"), &turn).await;
    let text = final_text(&sse);
    let answer = "Tool said: 1813.";
    let filler = text
        .strip_suffix(answer)
        .unwrap_or_else(|| panic!("{text}"));
    // Whole sentences of the filler, stopped at a sentence end.
    assert!(
        filler.starts_with("Let me look into that for you. "),
        "{text}"
    );
    assert!(
        mock_filler().starts_with(filler) && filler.ends_with(". "),
        "{text}"
    );
    assert!(
        filler.len() < mock_filler().len(),
        "stopped before the end: {text}"
    );

    let rows = tool_rows(&server.db(), "chatty-1");
    assert_eq!(
        kinds(&rows),
        ["human", "ai", "ai", "tool", "ai"],
        "{rows:#?}"
    );
    assert_eq!(rows[1].1, filler);
    assert!(rows[2].2.is_some(), "the tool-calling message");
    assert_eq!(rows[4].1, answer);

    // A non-streaming client gets the answer alone.
    let (status, body) = dashscope_call(
        &server,
        json!({"input": {"prompt": turn, "session_id": "chatty-2"}, "parameters": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"]["text"], answer);
    assert_eq!(
        kinds(&tool_rows(&server.db(), "chatty-2")),
        ["human", "ai", "tool", "ai"]
    );
}

fn mock_filler() -> &'static str {
    "Let me look into that for you. One moment please. Still working on it, almost there. \
     Thanks for waiting so patiently."
}

#[tokio::test]
async fn sighup_reloads_the_route_prompt_without_a_restart() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("configs/route_sys_prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    let configs = dir.path().join("configs");
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--config-dir", configs.to_str().unwrap()],
    );
    std::fs::write(prompts.join("route_prompt.txt"), "Route like a pirate.\n").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.proc.wait_for_line("configuration reloaded");
    dashscope_stream(&server, Some("pirate"), "ahoy").await;
    let router = requests_about(&mock, "ahoy")
        .await
        .into_iter()
        .find(|r| r["response_format"]["type"] == "json_object")
        .unwrap();
    assert_eq!(router["messages"][0]["content"], "Route like a pirate.");
}

#[tokio::test]
async fn a_turn_with_the_clients_own_instructions_skips_router_and_tools() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    // Xiaozhi's intent helper: a stateless call carrying its own system prompt.
    let (status, body) = dashscope_call(
        &server,
        json!({"input": {"messages": [
            {"role": "system", "content": "Classify the intent as JSON."},
            {"role": "user", "content": "intent of: louder please"}]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let calls = requests_about(&mock, "intent of: louder please").await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(
        calls[0]["messages"][0]["content"],
        "Classify the intent as JSON."
    );
    assert!(calls[0].get("tools").is_none() && calls[0].get("response_format").is_none());
}

//! Upstream faults end to end (issue 8 items 1, 2, 4, 18), through the real binary and the
//! mock's fault directives: endless answers cut at `--max-answer-bytes`, a tool-call index far
//! past any bound, a router whose body never ends, garbage SSE, a silent upstream, a stalled
//! router, a chat model that calls tools anyway, and a model that never stops calling tools.
//! Each test checks what the client sees and what the store holds afterwards. Upstream 500,
//! 429 and a stream cut mid-answer are in `serve_turns.rs`.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// `--max-answer-bytes`' default.
const DEFAULT_MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Far above what a server cutting answers needs, far below what buffering an endless one
/// takes within seconds (gigabytes): a sanity bound, not a performance figure.
const RSS_LIMIT_MIB: u64 = 200;
const CALC: &str = r#"[[mock:call=calculator {"expression": "37 * 49"}]]"#;

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Runs `work` while watching the server's memory; fails the test (and so kills the server)
/// as soon as its RSS passes [`RSS_LIMIT_MIB`], so an unbounded read cannot take the machine.
async fn within_memory<T>(server: &Server, work: impl Future<Output = T>) -> T {
    let pid = server.proc.pid();
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            done = &mut work => {
                let rss = rss_mib(pid);
                assert!(rss < RSS_LIMIT_MIB, "server RSS {rss} MiB");
                return done;
            }
            _ = tick.tick() => {
                let rss = rss_mib(pid);
                assert!(rss < RSS_LIMIT_MIB, "server RSS {rss} MiB while the turn ran");
            }
        }
    }
}

fn dashscope_body(session: &str, text: &str) -> Value {
    json!({"input": {"messages": [{"role": "user", "content": text}], "session_id": session}})
}

fn kinds(rows: &[(String, String, bool)]) -> Vec<&str> {
    rows.iter().map(|r| r.0.as_str()).collect()
}

/// The `data:` payloads of an OpenAI stream.
fn openai_events(sse: &str) -> Vec<String> {
    sse.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_limit_for_a_collecting_client() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let (status, body) = within_memory(
        &server,
        dashscope_call(&server, dashscope_body("endless-1", "go [[mock:endless]]")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"]["finish_reason"], "length");
    let text = body["output"]["text"].as_str().unwrap();
    assert_eq!(text.len(), DEFAULT_MAX_ANSWER_BYTES);
    assert!(text.starts_with("la la la"));

    let rows = log_rows(&server.db(), "endless-1");
    assert_eq!(kinds(&rows), ["human", "ai"]);
    assert_eq!(rows[1].1, text, "the stored answer is what the client got");
    assert!(!rows[1].2, "a cut answer is complete, not interrupted");
    assert_eq!(
        turn_rows(&server.db(), "endless-1"),
        [("done".into(), None)]
    );

    // An OpenAI client that collects the answer is told the same.
    let openai = async {
        openai_call(
            &server,
            json!({"thread_id": "endless-2",
                          "messages": [{"role": "user", "content": "go [[mock:endless]]"}]}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()
    };
    let answer = within_memory(&server, openai).await;
    assert_eq!(answer["choices"][0]["finish_reason"], "length", "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content.len(), DEFAULT_MAX_ANSWER_BYTES);
    assert_eq!(log_rows(&server.db(), "endless-2")[1].1, content);
    // The server is fine afterwards.
    let (status, _) = dashscope_call(&server, dashscope_body("endless-1", "and now?")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_limit_for_streaming_clients() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--max-answer-bytes", "100000"],
    );
    let openai = async {
        openai_call(
            &server,
            json!({"model": "m", "stream": true, "thread_id": "endless-oa",
                   "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "go [[mock:endless]]"}]}),
        )
        .await
        .text()
        .await
        .unwrap()
    };
    let sse = within_memory(&server, openai).await;
    let events = openai_events(&sse);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text.len(), 100_000);
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["length"]);
    let rows = log_rows(&server.db(), "endless-oa");
    assert_eq!((rows[1].1.as_str(), rows[1].2), (text.as_str(), false));

    // DashScope, incremental: the pieces add up to the cut answer, the last frame says why.
    let dashscope = async {
        http()
            .post(format!("{}/api/apps/app1/completion", server.url))
            .bearer_auth(KEY)
            .header("X-DashScope-SSE", "enable")
            .json(
                &json!({"input": {"messages": [{"role": "user", "content": "go [[mock:endless]]"}],
                                    "session_id": "endless-ds"},
                          "parameters": {"incremental_output": true}}),
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let sse = within_memory(&server, dashscope).await;
    let frames: Vec<Value> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = frames
        .iter()
        .filter_map(|f| f["output"]["text"].as_str())
        .collect();
    assert_eq!(text.len(), 100_000);
    assert_eq!(frames.last().unwrap()["output"]["finish_reason"], "length");
    assert_eq!(log_rows(&server.db(), "endless-ds")[1].1, text);
}

#[tokio::test]
async fn a_huge_tool_call_index_is_a_clear_error_and_the_next_turn_works() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let far = "call [[mock:tool_index=100000000000]]";
    let (status, error) = within_memory(
        &server,
        dashscope_call(&server, dashscope_body("far-index", far)),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (502, Some("InternalError"))
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("tool call index 100000000000") && message.contains("32"),
        "{message}"
    );
    assert!(error["request_id"].is_string());

    // The tool branch meets the same bound.
    let far_tool = "call [[mock:route=tool]] [[mock:tool_index=32]]";
    let (status, error) = dashscope_call(&server, dashscope_body("far-index", far_tool)).await;
    assert_eq!(status, 502, "{error}");
    assert!(error["message"].as_str().unwrap().contains("index 32"));

    let (status, ok) = dashscope_call(&server, dashscope_body("far-index", "still there?")).await;
    assert_eq!(status, 200, "{ok}");
    let rows = log_rows(&server.db(), "far-index");
    assert_eq!(kinds(&rows), ["human", "human", "human", "ai"]);
    let statuses: Vec<String> = turn_rows(&server.db(), "far-index")
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(statuses, ["failed", "failed", "done"]);
}

#[tokio::test]
async fn a_router_body_that_never_ends_is_read_with_a_bound() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    // A failed router call means tools, so the tool branch's answer shows the bounded read
    // failed the call; the router deadline would have meant chat ("You said: ...").
    let turn = format!("compute [[mock:huge_body]] {CALC}");
    let sse = within_memory(
        &server,
        dashscope_stream(&server, Some("huge-router"), &turn),
    )
    .await;
    assert_eq!(final_text(&sse), "Tool said: 1813.", "{sse}");
    let router_log = server.proc.wait_for_line("router call failed");
    assert!(router_log.contains("exceeded"), "{router_log}");
    let rows = log_rows(&server.db(), "huge-router");
    assert_eq!(kinds(&rows), ["human", "ai", "tool", "ai"]);
}

#[tokio::test]
async fn an_error_answer_whose_body_never_ends_is_read_with_a_bound() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--llm-attempts", "2"],
    );
    let turn = "hi [[mock:status=503]] [[mock:huge_body]]";
    let (status, error) = within_memory(
        &server,
        dashscope_call(&server, dashscope_body("huge-error", turn)),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (502, Some("InternalError"))
    );
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("503") && message.len() < 400, "{message}");
    assert_eq!(kinds(&log_rows(&server.db(), "huge-error")), ["human"]);
    assert_eq!(turn_rows(&server.db(), "huge-error")[0].0, "failed");
}

#[tokio::test]
async fn garbage_sse_is_a_clear_error_in_both_shapes() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let (status, error) =
        dashscope_call(&server, dashscope_body("garbage", "hi [[mock:garbage]]")).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (502, Some("InternalError"))
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{error}"
    );

    let response = openai_call(
        &server,
        json!({"stream": true, "thread_id": "garbage",
                      "messages": [{"role": "user", "content": "again [[mock:garbage]]"}]}),
    )
    .await;
    assert_eq!(response.status(), 502);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert!(error["error"]["message"].is_string());

    let rows = log_rows(&server.db(), "garbage");
    assert_eq!(kinds(&rows), ["human", "human"], "no empty answer stored");
    let statuses: Vec<String> = turn_rows(&server.db(), "garbage")
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(statuses, ["failed", "failed"]);
}

/// One DashScope call that must fail with 504 within 3.5 s (the read timeout is 2 s).
async fn times_out_once(server: &Server, session: &str, text: &str) {
    let started = Instant::now();
    let (status, error) = dashscope_call(server, dashscope_body(session, text)).await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{session}: {error}");
    assert!(
        error["message"].as_str().unwrap().contains("timed out") && error["request_id"].is_string(),
        "{error}"
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3500),
        "{session}: failed after {took:?}, the read timeout is 2 s"
    );
    assert_eq!(kinds(&log_rows(&server.db(), session)), ["human"]);
    let turns = turn_rows(&server.db(), session);
    assert_eq!(turns[0].0, "failed");
    assert!(turns[0].1.as_deref().unwrap().contains("timed out"));
}

#[tokio::test]
async fn a_silent_upstream_fails_after_one_read_timeout_not_two() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let timeout = ["--llm-read-timeout-secs", "2"];
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &timeout);
    // Router and chat model both silent: the router's wait must not come on top of the chat's.
    times_out_once(&server, "silent-route", "hello? [[mock:delay=10000]]").await;
    // The router answers at once (tool); the tool model is silent.
    let tool = "hello? [[mock:route=tool]] [[mock:route_delay=0]] [[mock:delay=10000]]";
    times_out_once(&server, "silent-tool", tool).await;

    let react = Server::start(
        &dir.path().join("react"),
        &mock.base_url,
        &[&timeout[..], &["--graph", "react"]].concat(),
    );
    times_out_once(&react, "silent-react", "hello? [[mock:delay=10000]]").await;
}

#[tokio::test]
async fn a_read_timeout_inside_the_stream_is_reported_as_a_timeout() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--llm-read-timeout-secs", "2"],
    );
    // One piece at once, the next after 3 s: the body read times out after 2 s of silence.
    let started = Instant::now();
    let sse = dashscope_stream(&server, Some("drip"), "hello [[mock:drip=3000]]").await;
    assert!(started.elapsed() < Duration::from_millis(3500));
    assert!(sse.contains(r#""text":"drip ""#), "{sse}");
    assert!(
        sse.contains("event:error\n:HTTP_STATUS/504\nstatus:504\n"),
        "{sse}"
    );
    let rows = log_rows(&server.db(), "drip");
    assert_eq!(rows[1], ("ai".into(), "drip ".into(), true), "partial kept");
    assert_eq!(turn_rows(&server.db(), "drip")[0].0, "failed");
}

#[tokio::test]
async fn a_stalled_router_does_not_hold_a_ready_chat_answer() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let started = Instant::now();
    let sse = dashscope_stream(&server, Some("stalled"), "hi [[mock:route_delay=10000]]").await;
    let took = started.elapsed();
    assert!(
        final_text(&sse).starts_with("You said: hi"),
        "the chat branch answers: {sse}"
    );
    // The default router deadline is 2.5 s; the router itself would take 10 s.
    assert!(
        took >= Duration::from_millis(2400) && took < Duration::from_secs(6),
        "answered after {took:?}"
    );
    assert_eq!(kinds(&log_rows(&server.db(), "stalled")), ["human", "ai"]);
    assert_eq!(turn_rows(&server.db(), "stalled"), [("done".into(), None)]);
}

#[tokio::test]
async fn a_chat_model_that_calls_tools_hands_the_turn_to_the_tool_branch() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    // The router says chat; the chat model (offered no tools) answers only with a tool call.
    let turn = format!("what is 37 times 49 [[mock:chat_tool_calls]] {CALC}");
    let sse = dashscope_stream(&server, Some("chat-calls"), &turn).await;
    assert_eq!(final_text(&sse), "Tool said: 1813.", "{sse}");
    let rows = tool_rows(&server.db(), "chat-calls");
    let row_kinds: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(row_kinds, ["human", "ai", "tool", "ai"], "{rows:#?}");
    assert_eq!(rows[2].1, "1813");

    // Where no tool branch exists (the client's own instructions go straight to chat), it is
    // an upstream error, never an empty answer.
    let response = openai_call(&server, json!({"messages": [
            {"role": "system", "content": "Classify the intent."},
            {"role": "user", "content": format!("turn the light on [[mock:chat_tool_calls]] {CALC}")}]}))
        .await;
    assert_eq!(response.status(), 502);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tool calls but no tools were offered"),
        "{error}"
    );
    let db = server.db();
    let empty_answers: i64 = db
        .query_row(
            "SELECT count(*) FROM messages WHERE message_type = 'ai' AND content = ''
             AND tool_calls IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(empty_answers, 0);
    let failed: String = db
        .query_row(
            "SELECT error FROM turns ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(failed.contains("no tools were offered"), "{failed}");
}

#[tokio::test]
async fn tool_calls_per_turn_are_capped() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--max-tool-steps", "40"],
    );
    // Ten calls a round, every round: without a cap, 400 tool rows.
    let calls = r#"[[mock:call=calculator {"expression": "1 + 1"}]] "#.repeat(10);
    let turn = format!("loop [[mock:route=tool]] [[mock:repeat_calls]] {calls}");
    let sse = dashscope_stream(&server, Some("many-calls"), &turn).await;
    assert!(final_text(&sse).starts_with("Tool said: 2 | 2"), "{sse}");
    let rows = tool_rows(&server.db(), "many-calls");
    let tools = rows.iter().filter(|r| r.0 == "tool").count();
    assert_eq!(tools, 64, "the per-turn cap");
    let last = rows.last().unwrap();
    assert_eq!((last.0.as_str(), last.2.as_deref()), ("ai", None));
    assert_eq!(turn_rows(&server.db(), "many-calls")[0].0, "done");
    // Once the cap was reached, the model was offered no tools.
    let last_request = requests_about(&mock, "loop [[mock").await.pop().unwrap();
    assert!(last_request.get("tools").is_none());
}

//! MCP tools end to end: the real binary against real MCP servers started here — the Python
//! `mcp` package's FastMCP over streamable HTTP and over legacy SSE, and
//! `@modelcontextprotocol/server-everything` over stdio (all installed by tests/mcp/setup.sh) —
//! through the DashScope streaming API, with the scripted mock as the model.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Starts a box whose `mcp_config.json` is `config`.
fn start_box(dir: &std::path::Path, mock: &Mock, config: &Value, extra: &[&str]) -> Server {
    let configs = config_dir_with_mcp(dir, config);
    let mut args = vec!["--config-dir", configs.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&dir.join("data"), &mock.base_url, &args)
}

/// The tool names the tool model was offered on the turn whose user text contains `needle`.
async fn offered_tools(mock: &Mock, needle: &str) -> Vec<Value> {
    requests_about(mock, needle)
        .await
        .into_iter()
        .find_map(|r| r.get("tools").and_then(Value::as_array).cloned())
        .expect("a request with tools")
}

fn names(tools: &[Value]) -> Vec<&str> {
    tools
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_tool_turn_calls_a_streamable_http_tool_and_answers_with_its_result() {
    let fast = FastMcp::start(FastMcpTransport::StreamableHttp);
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = start_box(
        dir.path(),
        &mock,
        &json!({"fast": fast.config_entry()}),
        &[],
    );
    let turn = r#"add them [[mock:route=tool]] [[mock:call=add {"a": 37, "b": 49}]]"#;
    let sse = dashscope_stream(&server, Some("http-1"), turn).await;
    assert_eq!(final_text(&sse), "Tool said: 86.");
    let rows = tool_rows(&server.db(), "http-1");
    assert_eq!(rows[2].1, "86");
    assert_eq!(rows[2].3.as_deref(), Some("add"));
    let tools = offered_tools(&mock, "add them").await;
    assert_eq!(
        names(&tools),
        [
            "calculator",
            "add",
            "slow_echo",
            "set_brightness",
            "crash",
            "unlock_bonus"
        ]
    );
}

#[tokio::test]
async fn legacy_sse_tools_get_the_device_id_injected_and_same_names_are_prefixed() {
    let legacy = FastMcp::start(FastMcpTransport::Sse);
    let fast = FastMcp::start(FastMcpTransport::StreamableHttp);
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"xiaozhi": legacy.config_entry(), "fast": fast.config_entry()});
    let server = start_box(dir.path(), &mock, &config, &[]);

    // The session id names device aa-bb-cc; the model never mentions it.
    let turn =
        r#"dim the screen [[mock:route=tool]] [[mock:call=xiaozhi_set_brightness {"level": 30}]]"#;
    let sse = dashscope_stream(&server, Some("conv7_aa-bb-cc"), turn).await;
    assert_eq!(
        final_text(&sse),
        "Tool said: device aa-bb-cc brightness 30."
    );

    let tools = offered_tools(&mock, "dim the screen").await;
    let offered = names(&tools);
    for name in [
        "xiaozhi_add",
        "fast_add",
        "xiaozhi_set_brightness",
        "fast_set_brightness",
    ] {
        assert!(offered.contains(&name), "{offered:?}");
    }
    assert!(offered.contains(&"calculator"));
    let brightness = tools
        .iter()
        .find(|t| t["function"]["name"] == "xiaozhi_set_brightness")
        .unwrap();
    let parameters = &brightness["function"]["parameters"];
    assert!(
        parameters["properties"].get("device_id").is_none(),
        "{parameters}"
    );
    assert!(parameters["properties"].get("level").is_some());

    // Over SSE too, a plain call with the prefixed name reaches that server.
    let turn = r#"sum [[mock:route=tool]] [[mock:call=xiaozhi_add {"a": 1, "b": 2}]]"#;
    let sse = dashscope_stream(&server, Some("sse-add"), turn).await;
    assert_eq!(final_text(&sse), "Tool said: 3.");
}

#[tokio::test]
async fn a_stdio_server_everything_tool_answers_with_the_configured_environment() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut everything = everything_stdio_entry();
    everything["env"] = json!({"LANG_AGENT_TEST_MARK": "set-by-mcp-config"});
    let config = json!({"mcpServers": {"everything": everything}});
    let server = start_box(dir.path(), &mock, &config, &[]);
    let turn = r#"echo please [[mock:route=tool]] [[mock:call=echo {"message": "hi from the box"}]] [[mock:call=get-env {}]]"#;
    let sse = dashscope_stream(&server, Some("stdio-1"), turn).await;
    let text = final_text(&sse);
    assert!(
        text.starts_with("Tool said: Echo: hi from the box | {"),
        "{text}"
    );
    assert!(
        text.contains(r#""LANG_AGENT_TEST_MARK": "set-by-mcp-config""#),
        "{text}"
    );
    let tools = offered_tools(&mock, "echo please").await;
    let offered = names(&tools);
    assert!(
        offered.contains(&"get-sum") && offered.contains(&"echo"),
        "{offered:?}"
    );
}

#[tokio::test]
async fn a_server_killed_mid_call_gives_an_explained_answer_not_a_hang() {
    for transport in [FastMcpTransport::StreamableHttp, FastMcpTransport::Sse] {
        let fast = FastMcp::start(transport);
        let mock = Mock::start(0, 0);
        let dir = tempfile::tempdir().unwrap();
        let server = start_box(
            dir.path(),
            &mock,
            &json!({"victim": fast.config_entry()}),
            &[],
        );
        let started = Instant::now();
        let sse = dashscope_stream(
            &server,
            Some("crash"),
            "[[mock:route=tool]] [[mock:call=crash {}]]",
        )
        .await;
        let text = final_text(&sse);
        assert!(
            text.starts_with("Tool said: Error: the tool's server is not reachable"),
            "{text}"
        );
        // Well inside the 20 s tool timeout: the broken connection itself ends the call.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let rows = tool_rows(&server.db(), "crash");
        assert_eq!(rows.last().unwrap().1, text);
    }
}

#[tokio::test]
async fn slow_tools_run_in_parallel_and_time_out_into_an_error_result() {
    let fast = FastMcp::start(FastMcpTransport::StreamableHttp);
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = start_box(
        dir.path(),
        &mock,
        &json!({"fast": fast.config_entry()}),
        &["--tool-timeout-secs", "2"],
    );
    let two = r#"[[mock:route=tool]] [[mock:call=slow_echo {"text": "one", "seconds": 1.2}]] [[mock:call=slow_echo {"text": "two", "seconds": 1.2}]]"#;
    let started = Instant::now();
    let sse = dashscope_stream(&server, Some("parallel"), two).await;
    assert_eq!(final_text(&sse), "Tool said: one | two.");
    assert!(
        started.elapsed() < Duration::from_millis(2200),
        "{:?}",
        started.elapsed()
    );

    let slow = r#"[[mock:route=tool]] [[mock:call=slow_echo {"text": "late", "seconds": 5}]]"#;
    let started = Instant::now();
    let sse = dashscope_stream(&server, Some("too-slow"), slow).await;
    assert_eq!(
        final_text(&sse),
        "Tool said: Error: the tool did not answer within 2 seconds."
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_box_started_with_its_mcp_server_down_gains_the_tools_when_it_comes_up() {
    let port = free_port();
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"late": {"url": format!("http://127.0.0.1:{port}/mcp"), "transport": "streamable_http"}});
    let server = start_box(dir.path(), &mock, &config, &[]);
    server.proc.wait_for_line("MCP server not reachable");
    let turn = r#"[[mock:route=tool]] [[mock:call=add {"a": 2, "b": 2}]]"#;
    let sse = dashscope_stream(&server, Some("late-1"), turn).await;
    assert_eq!(
        final_text(&sse),
        r#"Tool said: Error: there is no tool named "add"."#
    );

    // Retried in the background meanwhile, but said once: the log tells state changes only.
    std::thread::sleep(Duration::from_millis(1500));
    let _fast = FastMcp::start_on(FastMcpTransport::StreamableHttp, port);
    server.proc.wait_for_line("MCP server connected");
    let log = server.proc.log();
    assert_eq!(log.matches("MCP server not reachable").count(), 1, "{log}");
    let sse = dashscope_stream(&server, Some("late-2"), turn).await;
    assert_eq!(final_text(&sse), "Tool said: 4.");
}

#[tokio::test]
async fn a_tool_list_change_is_picked_up() {
    let legacy = FastMcp::start(FastMcpTransport::Sse);
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = start_box(
        dir.path(),
        &mock,
        &json!({"xz": legacy.config_entry()}),
        &[],
    );
    let sse = dashscope_stream(
        &server,
        Some("bonus-1"),
        "[[mock:route=tool]] [[mock:call=unlock_bonus {}]]",
    )
    .await;
    assert_eq!(final_text(&sse), "Tool said: unlocked.");
    server.proc.wait_for_line("MCP tools changed");
    let sse = dashscope_stream(
        &server,
        Some("bonus-2"),
        "[[mock:route=tool]] [[mock:call=bonus {}]]",
    )
    .await;
    assert_eq!(final_text(&sse), "Tool said: bonus!.");
}

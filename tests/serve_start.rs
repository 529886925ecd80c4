//! Starting the server: the generated key, bad configuration, and secrets kept out of logs.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn with_no_keys_configured_a_private_key_is_generated_printed_once_and_required() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_env(&data, &mock.base_url, &[], &[]);
    let banner = server.proc.wait_for_line("    la-");
    let key = banner.trim().to_string();
    // Kept only as a hash, in a private file.
    let key_file = data.join("api_keys.json");
    let stored = std::fs::read_to_string(&key_file).unwrap();
    assert!(!stored.contains(&key), "{stored}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let client = http();
    let url = format!("{}/v1/chat/completions", server.url);
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let refused = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let refused: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "invalid_api_key");
    let ok = client
        .post(&url)
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    drop(server);

    let again = Server::start_with_env(&data, &mock.base_url, &[], &[]);
    assert!(
        !again.proc.log().contains(&key),
        "later starts never print the key"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), stored);
}

#[tokio::test]
async fn no_auth_opens_the_api_with_a_warning() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(&dir.path().join("d"), &mock.base_url, &["--no-auth"], &[]);
    assert!(server.proc.log().contains("OPEN"));
    let ok = http()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

fn start_fails(extra: &[&str], env: &[(&str, &str)], base_url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Proc::spawn(Server::command(
        &dir.path().join("d"),
        Some(base_url),
        extra,
        env,
    ));
    let code = proc.wait_exit();
    assert_ne!(code, Some(0), "start should fail: {}", proc.log());
    let log = proc.log();
    let reason: Vec<_> = log
        .lines()
        .filter(|l| l.starts_with("lang-agent: "))
        .collect();
    assert_eq!(reason.len(), 1, "one line of reason: {log}");
    reason[0].to_string()
}

#[test]
fn bad_configuration_stops_the_start_with_one_line() {
    let up = "http://127.0.0.1:9/v1";
    assert!(start_fails(&["--host", "not-an-ip"], &[], up).contains("--host"));
    assert!(start_fails(&[], &[], "ftp://x").contains("http"));
    assert!(start_fails(&["--llm-attempts", "0"], &[], up).contains("--llm-attempts"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    assert!(start_fails(&["--port", &port], &[], up).contains("cannot listen"));
    // The default upstream is DashScope, which needs a key.
    let dir = tempfile::tempdir().unwrap();
    let mut no_key = Server::command(&dir.path().join("d"), None, &[], &[]);
    no_key.env_remove("ALI_API_KEY");
    let mut proc = Proc::spawn(no_key);
    // EX_CONFIG: the unit's RestartPreventExitStatus=78 leaves it failed, not looping.
    assert_eq!(proc.wait_exit(), Some(78), "{}", proc.log());
    assert!(
        proc.log().contains("ALI_API_KEY is not set"),
        "{}",
        proc.log()
    );
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("d"),
        &mock.base_url,
        &[],
        &[("FAST_AUTH_KEYS", KEY), ("LANG_AGENT_LOG", "debug")],
    );
    let client = http();
    for key in [KEY, "wrong-key-attempt"] {
        let _ = client
            .post(format!("{}/api/apps/a/completion", server.url))
            .bearer_auth(key)
            .json(&json!({"input": {"prompt": "hello [[mock:status=500]]"}}))
            .send()
            .await
            .unwrap();
    }
    let log = server.proc.log();
    for secret in [KEY, UPSTREAM_KEY, "wrong-key-attempt"] {
        assert!(!log.contains(secret), "{secret} leaked into:\n{log}");
    }
}

#[test]
fn bad_agent_or_mcp_configuration_stops_the_start_with_one_line() {
    let up = "http://127.0.0.1:9/v1";
    let dir = tempfile::tempdir().unwrap();
    let mcp = dir.path().join("mcp.json");
    std::fs::write(
        &mcp,
        r#"{"x": {"url": "http://127.0.0.1:1/a", "transport": "carrier-pigeon"}}"#,
    )
    .unwrap();
    let line = start_fails(&["--mcp-config", mcp.to_str().unwrap()], &[], up);
    assert!(
        line.contains("mcp.json") && line.contains("unknown transport"),
        "{line}"
    );

    let configs = dir.path().join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(
        configs.join("agent.json"),
        r#"{"graph": "route", "max_tool_step": 3}"#,
    )
    .unwrap();
    let line = start_fails(&["--config-dir", configs.to_str().unwrap()], &[], up);
    assert!(
        line.contains("agent.json") && line.contains("max_tool_step"),
        "{line}"
    );

    std::fs::write(configs.join("agent.json"), r#"{"graph": "star"}"#).unwrap();
    let line = start_fails(&["--config-dir", configs.to_str().unwrap()], &[], up);
    assert!(
        line.contains("agent.json") && line.contains("star"),
        "{line}"
    );
    assert!(start_fails(&["--max-tool-steps", "0"], &[], up).contains("--max-tool-steps"));
}

#[tokio::test]
async fn a_local_upstream_serves_every_model_under_the_llm_name_and_the_ready_line_says_so() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    // The mock stands at 127.0.0.1, as Ollama would: not DashScope.
    let server = Server::start(
        &dir.path().join("d"),
        &mock.base_url,
        &["--llm-name", "qwen2.5:7b"],
    );
    let ready = server.proc.wait_for_line("lang-agent ready");
    assert!(
        ready.contains("chat=qwen2.5:7b router=qwen2.5:7b tools=qwen2.5:7b"),
        "{ready}"
    );
    let answer = openai_call(
        &server,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let requests = mock.requests().await;
    let models: Vec<&str> = requests
        .iter()
        .filter_map(|r| r["model"].as_str())
        .collect();
    assert!(
        models.len() >= 2,
        "a router call and a chat call: {requests:?}"
    );
    assert!(models.iter().all(|m| *m == "qwen2.5:7b"), "{models:?}");
}

//! Attacks on the box, as a hostile user or a hostile tool server would make them, through the
//! real binary: secrets in start lines and `--help`, redirects after the viewer's login,
//! brute-forcing keys on both ports, and what a stdio MCP server may read of our environment.

mod common;

use std::process::Command;

use common::viewer::{ViewerProcess, get_as, login_cookie, start_viewer_binary};
use common::*;

/// A secret that must never be printed.
const QUERY_SECRET: &str = "sk-query-secret-4242";

#[test]
fn a_secret_in_the_upstream_url_query_is_not_in_the_start_line() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9: the start line comes before any upstream call.
    let upstream = format!("http://127.0.0.1:9/v1?api_key={QUERY_SECRET}&region=cn&token=t0k3n");
    let server = Server::start(&dir.path().join("d"), &upstream, &[]);
    let ready = server.proc.wait_for_line("lang-agent ready");
    assert!(ready.contains("upstream=http://127.0.0.1:9/v1?"), "{ready}");
    let log = server.proc.log();
    for secret in [QUERY_SECRET, "t0k3n"] {
        assert!(!log.contains(secret), "{secret} leaked into:\n{log}");
    }
}

#[test]
fn viewer_help_does_not_print_the_conn_str_password() {
    let output = Command::new(bin())
        .args(["viewer", "--help"])
        .env(
            "CONN_STR",
            "postgresql://reader:hunter2-pg-secret@127.0.0.1/ai",
        )
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--db"), "{help}");
    assert!(!help.contains("hunter2-pg-secret"), "{help}");
}

/// Values of `next` that must not lead a browser off this site (or break the answer).
const HOSTILE_NEXT: &[&str] = &[
    "/%09/evil.example/",
    "/\t/evil.example/",
    "//evil.example/",
    "/%2F/evil.example/",
    "/\\evil.example/",
    "/%5Cevil.example/",
    "https://evil.example/",
    "/c/x\r\nSet-Cookie: stolen=1",
    "/c/x%0d%0aSet-Cookie: stolen=1",
    "/ /evil.example",
    "/c/\u{7f}x",
    "/c/你好",
];

#[tokio::test]
async fn after_login_only_same_site_paths_are_followed() {
    let (_dir, viewer) = viewer_binary().await;
    let viewer = &viewer.base;
    let client = common::viewer::http();
    for next in HOSTILE_NEXT {
        let response = client
            .post(format!("{viewer}/login"))
            .form(&[("key", KEY), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "next={next:?}");
        assert_eq!(response.headers()["location"], "/", "next={next:?}");
        assert!(response.headers().contains_key("set-cookie"), "{next:?}");
        // The login form carries `next` along; it must not carry the hostile one either.
        let query = serde_urlencoded::to_string([("next", next)]).unwrap();
        let form = client
            .get(format!("{viewer}/login?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), 200, "next={next:?}");
        let page = form.text().await.unwrap();
        assert!(
            page.contains(r#"name="next" value="/""#),
            "{next:?}: {page}"
        );
    }
    // A path on this site is followed, and the session it got works.
    let response = client
        .post(format!("{viewer}/login"))
        .form(&[("key", KEY), ("next", "/c/%E4%BD%A0-1?q=1")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/c/%E4%BD%A0-1?q=1");
    let cookie = login_cookie(&client, viewer).await;
    assert_eq!(
        get_as(&client, &format!("{viewer}/"), &cookie)
            .await
            .status(),
        200
    );
}

/// `lang-agent viewer` over a fresh store, logging at info (the brake's lines are warnings).
async fn viewer_binary() -> (tempfile::TempDir, ViewerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lang-agent.sqlite3");
    lang_agent::store::Store::open(&db).unwrap();
    let viewer = start_viewer_binary(&db, dir.path());
    (dir, viewer)
}

#[tokio::test]
async fn a_stdio_mcp_server_sees_only_a_safe_environment_and_its_configured_env() {
    const CONN_STR_SECRET: &str = "postgresql://u:pg-secret-77@127.0.0.1/ai";
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut everything = everything_stdio_entry();
    everything["env"] = serde_json::json!({"LANG_AGENT_TEST_MARK": "set-by-mcp-config"});
    let configs = config_dir_with_mcp(
        dir.path(),
        &serde_json::json!({"mcpServers": {"everything": everything}}),
    );
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &mock.base_url,
        &["--config-dir", configs.to_str().unwrap()],
        &[
            ("FAST_AUTH_KEYS", KEY),
            ("CONN_STR", CONN_STR_SECRET),
            ("LANG_AGENT_UNRELATED", "inherited-by-accident"),
        ],
    );
    let turn = "show the env [[mock:route=tool]] [[mock:call=get-env {}]]";
    let sse = dashscope_stream(&server, Some("env-1"), turn).await;
    let answer = final_text(&sse);
    let rows = tool_rows(&server.db(), "env-1");
    let env_row = rows
        .iter()
        .find(|r| r.3.as_deref() == Some("get-env"))
        .unwrap_or_else(|| panic!("no get-env row in {rows:?}; answer {answer}"));
    let dumped: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&env_row.1).expect("get-env prints the environment as JSON");
    assert_eq!(dumped["LANG_AGENT_TEST_MARK"], "set-by-mcp-config");
    assert!(dumped.contains_key("PATH"), "{dumped:?}");
    for secret in [UPSTREAM_KEY, KEY, CONN_STR_SECRET, "inherited-by-accident"] {
        assert!(
            !env_row.1.contains(secret),
            "{secret} reached the tool server"
        );
        assert!(!answer.contains(secret), "{secret} reached the answer");
    }
    for name in [
        "ALI_API_KEY",
        "FAST_AUTH_KEYS",
        "CONN_STR",
        "LANG_AGENT_LOG",
    ] {
        assert!(!dumped.contains_key(name), "{name} reached the tool server");
    }
}

/// A wrong key that must never be logged.
const WRONG_KEY: &str = "guess-0001-never-log-me";

/// The `Retry-After` seconds of a 429, checked to be within the one-minute window.
fn retry_after(response: &reqwest::Response) -> u64 {
    let secs: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    secs
}

/// Log lines of the brake about `client`.
fn brake_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains("authentication"))
        .collect()
}

/// The refusals are logged with the address and the path, never a key tried, and rate-limited:
/// a dozen refusals in a few seconds make one line, maybe two, not one each.
fn assert_refusals_logged(log: &str, other_guess: &str, path: &str) {
    assert!(
        !log.contains(WRONG_KEY) && !log.contains(other_guess),
        "{log}"
    );
    let lines = brake_lines(log);
    assert!(!lines.is_empty(), "{log}");
    assert!(
        lines[0].contains("127.0.0.1") && lines[0].contains(path),
        "{lines:?}"
    );
    assert!(lines.len() <= 3, "{lines:#?}");
}

#[tokio::test]
async fn ten_wrong_api_keys_brake_the_address_but_never_a_good_key() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d"), &mock.base_url, &[]);
    let client = http();
    let dashscope = format!("{}/api/apps/app1/completion", server.url);
    let openai = format!("{}/v1/chat/completions", server.url);
    let ds_body = serde_json::json!({"input": {"prompt": "hi"}});
    let oa_body = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
    for attempt in 1..=10 {
        let refused = client
            .post(&dashscope)
            .bearer_auth(WRONG_KEY)
            .json(&ds_body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "attempt {attempt}");
    }
    let braked = client
        .post(&dashscope)
        .bearer_auth(WRONG_KEY)
        .json(&ds_body)
        .send()
        .await
        .unwrap();
    assert_eq!(braked.status(), 429);
    retry_after(&braked);
    let body: serde_json::Value = braked.json().await.unwrap();
    assert_eq!(body["code"], "Throttling", "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    // The other protocol, same address: braked too, in its own shape.
    let braked = client
        .post(&openai)
        .bearer_auth("another-guess")
        .json(&oa_body)
        .send()
        .await
        .unwrap();
    assert_eq!(braked.status(), 429);
    retry_after(&braked);
    let body: serde_json::Value = braked.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");

    // A good key from the braked address is served as ever.
    let (status, answer) = dashscope_call(
        &server,
        serde_json::json!({"input": {"prompt": "hello"}, "parameters": {}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let ok = client
        .post(&openai)
        .bearer_auth(KEY)
        .json(&oa_body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    assert_refusals_logged(
        &server.proc.log(),
        "another-guess",
        "/api/apps/app1/completion",
    );
}

#[tokio::test]
async fn ten_wrong_viewer_logins_brake_the_address_but_never_a_good_key() {
    let (_dir, viewer) = viewer_binary().await;
    let base = &viewer.base;
    let client = common::viewer::http();
    for attempt in 1..=10 {
        let refused = client
            .post(format!("{base}/login"))
            .form(&[("key", WRONG_KEY), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "attempt {attempt}");
    }
    let braked = client
        .post(format!("{base}/login"))
        .form(&[("key", WRONG_KEY), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(braked.status(), 429);
    retry_after(&braked);
    let page = braked.text().await.unwrap();
    assert!(
        page.contains(r#"id="login-error""#) && page.contains("Too many failed attempts"),
        "{page}"
    );
    // The viewer's key-based API access is braked on the same count.
    let braked = client
        .get(format!("{base}/api/conversations"))
        .bearer_auth("yet-another-guess")
        .send()
        .await
        .unwrap();
    assert_eq!(braked.status(), 429);
    retry_after(&braked);
    let body: serde_json::Value = braked.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("try again"),
        "{body}"
    );

    // The right key still logs in, and still opens the API.
    let cookie = login_cookie(&client, base).await;
    assert_eq!(
        get_as(&client, &format!("{base}/"), &cookie).await.status(),
        200
    );
    let api = client
        .get(format!("{base}/api/conversations"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);

    assert_refusals_logged(&viewer.proc.log(), "yet-another-guess", "/login");
}

//! Profiles end to end: the real binary, its config directory written here, the scripted mock
//! as the upstream (what it received is what is checked) and real MCP servers (FastMCP).
//! App ids and OpenAI `model` select profiles; each has its own prompts, models, `extra_body`
//! and tools, and its own threads; and the configuration reloads while serving.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A config directory: the box's chat prompt, and the profile files and files under it.
fn config_dir(parent: &Path, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = parent.join("configs");
    write(
        &dir.join("route_sys_prompts/chat_prompt.txt"),
        "You are the default box.",
    );
    for (name, text) in files {
        write(&dir.join(name), text);
    }
    dir
}

fn start(parent: &Path, mock: &Mock, configs: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--config-dir", configs.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&parent.join("data"), &mock.base_url, &args)
}

/// A DashScope call to `app` on `session`; the answer's text.
async fn ask_app(server: &Server, app: &str, session: &str, text: &str) -> Value {
    let response = http()
        .post(format!("{}/api/v1/apps/{app}/completion", server.url))
        .bearer_auth(KEY)
        .json(&json!({"input": {"session_id": session, "prompt": text}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The chat (answering) request the mock got for the turn whose user text has `needle`:
/// the one without a JSON-object response format (that is the router's).
async fn answering_request(mock: &Mock, needle: &str) -> Value {
    requests_about(mock, needle)
        .await
        .into_iter()
        .rfind(|r| r.get("response_format").is_none())
        .unwrap_or_else(|| panic!("no answering request about {needle:?}"))
}

fn system_text(request: &Value) -> String {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn tool_names(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

const STORY: &str = r#"{
    // the children's storyteller
    "app_ids": ["story-app"],
    "prompts": "prompts/story",
    "llm_name": "story-model"
}"#;
const SHOP: &str = r#"{
    "app_ids": ["shop-app"],
    "prompts": "prompts/shop",
    "llm_name": "shop-model",
    "extra_body": {"chat": {"enable_thinking": false, "x_shop": 1}}
}"#;

#[tokio::test]
async fn two_app_ids_reach_two_profiles_with_their_own_prompts_models_and_threads() {
    let mock = Mock::start(0, 0);
    // The shop's own upstream, which wants the shop's own key.
    let shop_upstream = Mock::start_with(0, 0, &["--api-key", "shop-secret"]);
    let shop = SHOP.replace(
        "\"extra_body\"",
        &format!(
            "\"upstream\": {{\"base_url\": \"{}\", \"api_key_env\": \"SHOP_KEY\"}},\n    \"extra_body\"",
            shop_upstream.base_url
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let configs = config_dir(
        dir.path(),
        &[
            ("profiles/story.json", STORY),
            ("profiles/shop.json", &shop),
            ("prompts/story/chat_prompt.txt", "You are the storyteller."),
            (
                "prompts/shop/chat_prompt.txt",
                "You are the shop assistant.",
            ),
        ],
    );
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &mock.base_url,
        &[
            "--config-dir",
            configs.to_str().unwrap(),
            "--llm-name",
            "box-model",
        ],
        &[("FAST_AUTH_KEYS", KEY), ("SHOP_KEY", "shop-secret")],
    );

    // The same session id on both apps, and on an app no profile names.
    ask_app(&server, "story-app", "s1", "tell a story").await;
    ask_app(&server, "shop-app", "s1", "what does milk cost").await;
    ask_app(&server, "other-app", "s1", "hello box").await;

    let story = answering_request(&mock, "tell a story").await;
    assert_eq!(story["model"], "story-model");
    assert!(system_text(&story).contains("You are the storyteller."));
    assert!(story.get("x_shop").is_none(), "{story}");
    assert!(
        requests_about(&mock, "what does milk cost")
            .await
            .is_empty(),
        "the shop's calls go to its own upstream only"
    );
    let shop = answering_request(&shop_upstream, "what does milk cost").await;
    assert_eq!(shop["model"], "shop-model");
    assert!(system_text(&shop).contains("You are the shop assistant."));
    assert_eq!(
        (&shop["x_shop"], &shop["enable_thinking"]),
        (&json!(1), &json!(false))
    );
    let default = answering_request(&mock, "hello box").await;
    assert_eq!(default["model"], "box-model");
    assert!(system_text(&default).contains("You are the default box."));
    assert!(!system_text(&default).contains("storyteller"));
    assert!(
        !server.proc.log().contains("shop-secret"),
        "keys are never logged"
    );

    // Three threads for one session id, each logged under its profile.
    let db = server.db();
    let mut rows: Vec<(String, String, String)> = db
        .prepare("SELECT conversation_id, profile, origin FROM conversations ORDER BY profile")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("s1".into(), "default".into(), "api".into()),
            ("shop·s1".into(), "shop".into(), "api".into()),
            ("story·s1".into(), "story".into(), "api".into()),
        ]
    );
    // The client hears its own session id back, not the name the box keeps it under.
    let answer = ask_app(&server, "shop-app", "s1", "and bread").await;
    assert_eq!(answer["output"]["session_id"], "s1");
    assert_eq!(
        log_rows(&db, "shop·s1").len(),
        4,
        "the shop thread remembers"
    );
}

#[tokio::test]
async fn the_openai_model_field_selects_a_profile_and_models_lists_them() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let configs = config_dir(
        dir.path(),
        &[
            ("profiles/shop.json", SHOP),
            (
                "prompts/shop/chat_prompt.txt",
                "You are the shop assistant.",
            ),
        ],
    );
    let server = start(dir.path(), &mock, &configs, &["--llm-name", "box-model"]);

    let models: Value = http()
        .get(format!("{}/v1/models", server.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", "shop"]);

    let call = |model: &str, text: &str| json!({"model": model, "thread_id": "t1", "messages": [{"role": "user", "content": text}]});
    let answer: Value = openai_call(&server, call("shop", "milk please"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["model"], "shop",
        "the client gets its model name back"
    );
    assert_eq!(answer["thread_id"], "t1", "and its own thread id");
    let shop = answering_request(&mock, "milk please").await;
    assert_eq!(shop["model"], "shop-model");
    assert!(system_text(&shop).contains("You are the shop assistant."));

    // Any other name is the default profile's.
    openai_call(&server, call("gpt-4o", "hello there")).await;
    let default = answering_request(&mock, "hello there").await;
    assert_eq!(default["model"], "box-model");
    assert!(system_text(&default).contains("You are the default box."));
    // A thread id holding the profile separator is refused, in OpenAI's shape.
    let refused = openai_call(&server, call("shop", "x")).await;
    assert_eq!(refused.status(), 200);
    let bad = json!({"thread_id": "shop·t1", "messages": [{"role": "user", "content": "x"}]});
    let refused = openai_call(&server, bad).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
}

#[tokio::test]
async fn a_profile_restricted_to_one_mcp_server_never_sees_the_others_tools() {
    let fast = FastMcp::start(FastMcpTransport::StreamableHttp);
    let legacy = FastMcp::start(FastMcpTransport::Sse);
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let servers = json!({"fast": fast.config_entry(), "legacy": legacy.config_entry()});
    let configs = config_dir(
        dir.path(),
        &[
            ("mcp_config.json", &servers.to_string()),
            (
                "profiles/lamp.json",
                r#"{"app_ids": ["lamp-app"], "tools": ["legacy"]}"#,
            ),
        ],
    );
    let server = start(dir.path(), &mock, &configs, &[]);

    ask_app(&server, "lamp-app", "l1", "lamp turn [[mock:route=tool]]").await;
    ask_app(&server, "app1", "d1", "box turn [[mock:route=tool]]").await;
    let lamp = tool_names(&answering_request(&mock, "lamp turn").await);
    let all = tool_names(&answering_request(&mock, "box turn").await);
    assert!(lamp.contains(&"set_brightness".to_string()), "{lamp:?}");
    assert!(
        !lamp
            .iter()
            .any(|t| t == "calculator" || t.starts_with("fast")),
        "the lamp profile sees only the legacy server: {lamp:?}"
    );
    // Both servers offer the same names, so the box's profile sees them prefixed.
    for name in ["calculator", "fast_add", "legacy_add"] {
        assert!(all.iter().any(|t| t == name), "{name} not in {all:?}");
    }

    // The restricted profile cannot call the other server's tool either.
    let turn = r#"sneak [[mock:route=tool]] [[mock:call=fast_add {"a": 1, "b": 2}]]"#;
    ask_app(&server, "lamp-app", "l2", turn).await;
    let rows = tool_rows(&server.db(), "lamp·l2");
    let tool_row = rows.iter().find(|r| r.0 == "tool").expect("a tool row");
    assert!(!tool_row.1.contains('3'), "fast_add must not run: {rows:?}");
}

/// How many times the box logged `needle` so far.
fn count(server: &Server, needle: &str) -> usize {
    server.proc.log().matches(needle).count()
}

/// Waits until the box has logged `needle` more than `before` times.
fn wait_for_more(server: &Server, needle: &str, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(server, needle) <= before {
        assert!(
            Instant::now() < deadline,
            "no new {needle:?}; log:\n{}",
            server.proc.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const RELOADED: &str = "configuration reloaded";
const NOT_RELOADED: &str = "configuration not reloaded";

#[tokio::test]
async fn edits_while_serving_change_the_next_turn_and_a_broken_file_keeps_the_old_config() {
    let fast = FastMcp::start(FastMcpTransport::StreamableHttp);
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let configs = config_dir(dir.path(), &[]);
    let server = start(dir.path(), &mock, &configs, &[]);
    let prompt = configs.join("route_sys_prompts/chat_prompt.txt");

    // A prompt edit: the next turn has it, no restart.
    ask_app(&server, "app1", "p", "first turn").await;
    assert!(system_text(&answering_request(&mock, "first turn").await).contains("default box"));
    let before = count(&server, RELOADED);
    write(&prompt, "You are the edited box.");
    wait_for_more(&server, RELOADED, before);
    ask_app(&server, "app1", "p", "second turn").await;
    assert!(system_text(&answering_request(&mock, "second turn").await).contains("edited box"));

    // A broken profile file: one line saying what is wrong, the old config stays.
    let before = count(&server, NOT_RELOADED);
    write(&configs.join("profiles/bad.json"), r#"{"app_ids": ["#);
    wait_for_more(&server, NOT_RELOADED, before);
    let line = server
        .proc
        .log()
        .lines()
        .rfind(|l| l.contains(NOT_RELOADED))
        .unwrap()
        .to_string();
    assert!(line.contains("bad.json"), "{line}");
    ask_app(&server, "app1", "p", "third turn").await;
    assert!(system_text(&answering_request(&mock, "third turn").await).contains("edited box"));
    std::fs::remove_file(configs.join("profiles/bad.json")).unwrap();

    // mcp_config.json: a server added while serving offers its tools on the next turn.
    let before = count(&server, RELOADED);
    write(
        &configs.join("mcp_config.json"),
        &json!({"fast": fast.config_entry()}).to_string(),
    );
    wait_for_more(&server, RELOADED, before);
    server.proc.wait_for_line("MCP server connected");
    ask_app(&server, "app1", "m", "tools now [[mock:route=tool]]").await;
    let offered = tool_names(&answering_request(&mock, "tools now").await);
    assert!(offered.contains(&"add".to_string()), "{offered:?}");
    // A broken servers file keeps the server; removing it disconnects it.
    let before = count(&server, NOT_RELOADED);
    write(&configs.join("mcp_config.json"), "{ not json");
    wait_for_more(&server, NOT_RELOADED, before);
    ask_app(&server, "app1", "m", "still tools [[mock:route=tool]]").await;
    let offered = tool_names(&answering_request(&mock, "still tools").await);
    assert!(offered.contains(&"add".to_string()), "{offered:?}");
    let before = count(&server, RELOADED);
    write(&configs.join("mcp_config.json"), "{}");
    wait_for_more(&server, RELOADED, before);
    server
        .proc
        .wait_for_line("MCP server removed or changed; disconnecting");
    ask_app(&server, "app1", "m", "no tools [[mock:route=tool]]").await;
    let offered = tool_names(&answering_request(&mock, "no tools").await);
    assert_eq!(offered, ["calculator"]);

    // SIGHUP reloads too.
    let before = count(&server, RELOADED);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_more(&server, RELOADED, before);
}

#[test]
fn an_explicit_mcp_config_that_does_not_exist_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let mut proc = Proc::spawn(Server::command(
        &dir.path().join("data"),
        Some("http://127.0.0.1:9/v1"),
        &["--mcp-config", missing.to_str().unwrap()],
        &[("FAST_AUTH_KEYS", KEY)],
    ));
    assert_eq!(proc.wait_exit(), Some(78));
    assert!(
        proc.log().contains("nope.json: no such file"),
        "{}",
        proc.log()
    );
}

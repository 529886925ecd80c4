//! The box page over HTTP, against a `BoxControl` of the test's own whose try-it turns run
//! through the real turn runner and store (its agent is scripted): the page shows the status
//! and no credential, prompts save only with the CSRF token (the file replaced, the old one
//! kept as `.bak`), refusals come back in the form, and try-it turns stream as they are said.
//! (In chromium with the real `serve`: `viewer_browser.rs`.)

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use lang_agent::agent::profile::{Profile, Profiles};
use lang_agent::agent::prompts::{self, PromptName, Prompts};
use lang_agent::agent::turns::{MemoryScope, TurnHandle, TurnLimits, TurnRequest, TurnRunner};
use lang_agent::agent::{
    Agent, AgentOutcome, AgentSink, ClientPromptMode, FinishReason, TurnInput,
};
use lang_agent::llm::{ChatMessage, FunctionCall, LlmError, Role, ToolCall, Usage};
use lang_agent::store::{Origin, Store};
use lang_agent::viewer::{BoxControl, BoxError, BoxStatus, McpServerView, ProfileView, PromptView};

use common::viewer::*;

/// The upstream key the box holds; no page may ever show it.
const UPSTREAM_SECRET: &str = "sk-box-page-secret-0123456789";

/// Calls the calculator, then says the answer in two pieces, the second only once the test
/// has seen the first arrive (so an answer that is buffered, not streamed, hangs the test).
struct CalculatorAgent {
    second_piece: Arc<tokio::sync::Notify>,
}

impl Agent for CalculatorAgent {
    fn answer<'a>(
        &'a self,
        _input: &'a TurnInput,
        sink: AgentSink,
    ) -> BoxFuture<'a, Result<AgentOutcome, LlmError>> {
        Box::pin(async move {
            let mut call = ChatMessage::assistant("");
            call.tool_calls = vec![ToolCall {
                id: "call_1".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "calculator".into(),
                    arguments: r#"{"expression":"2+2"}"#.into(),
                },
            }];
            sink.message(call);
            let mut result = ChatMessage::new(Role::Tool, "4");
            result.tool_call_id = Some("call_1".into());
            result.name = Some("calculator".into());
            sink.message(result);
            sink.text("Two plus two ");
            self.second_piece.notified().await;
            sink.text("is four.");
            sink.message(ChatMessage::assistant("Two plus two is four."));
            Ok(AgentOutcome {
                usage: Usage::default(),
                finish: FinishReason::Stop,
                client_calls: Vec::new(),
            })
        })
    }

    fn model_name(&self) -> &str {
        "scripted-calculator"
    }

    fn box_tool_names(&self) -> Vec<String> {
        vec!["calculator".into()]
    }
}

/// A box of two profiles, `default` and `shop`, each with its own prompts directory.
struct TestBox {
    runner: Arc<TurnRunner>,
    config_dir: PathBuf,
    /// (profile, prompt, text) of every save that reached the box.
    saves: Mutex<Vec<(String, String, String)>>,
    next_conversation: AtomicU64,
}

const PROFILES: [&str; 2] = ["default", "shop"];

impl TestBox {
    fn new(store: &Store, config_dir: PathBuf, second_piece: Arc<tokio::sync::Notify>) -> TestBox {
        let profiles = PROFILES.map(|name| {
            let mut profile = Profile::for_parsing(
                name,
                name == "default",
                MemoryScope::Session,
                ClientPromptMode::Append,
            );
            profile.agent = Arc::new(CalculatorAgent {
                second_piece: second_piece.clone(),
            });
            profile
        });
        let runner = TurnRunner::new(
            store.clone(),
            Profiles::new(profiles.into()),
            TurnLimits::default(),
            lang_agent::metrics::Metrics::new(false),
        );
        TestBox {
            runner,
            config_dir,
            saves: Mutex::default(),
            next_conversation: AtomicU64::new(1),
        }
    }

    fn prompts_dir(&self, profile: &str) -> Result<PathBuf, BoxError> {
        if PROFILES.contains(&profile) {
            Ok(self.config_dir.join(profile))
        } else {
            Err(BoxError::NoSuchProfile(profile.into()))
        }
    }
}

impl BoxControl for TestBox {
    fn status(&self) -> BoxStatus {
        let profiles = PROFILES
            .iter()
            .map(|&name| {
                let dir = self.config_dir.join(name);
                let texts = Prompts::from_dir(&dir).unwrap();
                ProfileView {
                    name: name.into(),
                    is_default: name == "default",
                    app_ids: vec![format!("app-{name}")],
                    graph: "route".into(),
                    tool_node: "chatty".into(),
                    models: vec![
                        ("chat".into(), "qwen-plus".into()),
                        ("router".into(), "qwen-turbo".into()),
                    ],
                    upstream: "https://dashscope.example/compatible-mode/v1".into(),
                    key_env: "ALI_API_KEY".into(),
                    key_set: name == "default",
                    tools: vec!["calculator".into(), "get_weather".into()],
                    memory_scope: "session".into(),
                    on_busy: "interrupt".into(),
                    history_max_messages: 20,
                    prompts: [PromptName::Chat, PromptName::Route]
                        .into_iter()
                        .map(|p| PromptView {
                            name: format!("{}_prompt", p.as_str()),
                            file: dir.join(p.file_name()).display().to_string(),
                            text: texts.get(p).to_string(),
                        })
                        .collect(),
                }
            })
            .collect();
        BoxStatus {
            loaded_at: "2026-12-03T07:00:00Z".into(),
            config_errors: vec!["profiles/broken.json: expected `,` at line 3".into()],
            profiles,
            mcp_servers: vec![McpServerView {
                name: "weather".into(),
                transport: "streamable_http".into(),
                state: "retrying".into(),
                since: "2026-12-03T06:59:00Z".into(),
                last_error: Some("connection refused <127.0.0.1:9>".into()),
                tools: vec!["get_weather".into()],
                used_by: vec!["default".into(), "shop".into()],
            }],
            local_tools: vec!["calculator".into()],
        }
    }

    fn save_prompt(&self, profile: &str, prompt: &str, text: &str) -> Result<(), BoxError> {
        let dir = self.prompts_dir(profile)?;
        let name = PromptName::parse(prompt).ok_or_else(|| BoxError::NoSuchPrompt {
            profile: profile.into(),
            prompt: prompt.into(),
        })?;
        self.saves
            .lock()
            .unwrap()
            .push((profile.into(), prompt.into(), text.into()));
        prompts::save(&dir, name, text).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => BoxError::Invalid(e.to_string()),
            _ => BoxError::Io(e),
        })
    }

    fn try_turn(
        &self,
        profile: &str,
        conversation: Option<String>,
        text: String,
    ) -> Result<TurnHandle, BoxError> {
        self.prompts_dir(profile)?;
        let profiles = self.runner.profiles();
        let chosen = profiles
            .all()
            .iter()
            .find(|p| p.name == profile)
            .cloned()
            .ok_or_else(|| BoxError::NoSuchProfile(profile.into()))?;
        let thread = conversation.unwrap_or_else(|| {
            let n = self.next_conversation.fetch_add(1, Ordering::Relaxed);
            chosen.thread_name(&format!("page-{n}"))
        });
        Ok(self
            .runner
            .start(TurnRequest::said(thread, text, chosen, Origin::Page)))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    control: Arc<TestBox>,
    second_piece: Arc<tokio::sync::Notify>,
    base: String,
    client: reqwest::Client,
    cookie: String,
}

impl Fixture {
    /// The page at `path`, as the logged-in reader.
    async fn get(&self, path: &str) -> String {
        get_as(&self.client, &format!("{}{path}", self.base), &self.cookie)
            .await
            .text()
            .await
            .unwrap()
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("log.sqlite3")).unwrap();
    let second_piece = Arc::new(tokio::sync::Notify::new());
    let control = Arc::new(TestBox::new(
        &store,
        dir.path().join("config"),
        second_piece.clone(),
    ));
    prompts::save(
        &control.config_dir.join("shop"),
        PromptName::Chat,
        "You sell <b>tea</b> & cakes.",
    )
    .unwrap();
    let base = serve_router_with_box(&store, false, Some(control.clone())).await;
    let client = http();
    let cookie = login_cookie(&client, &base).await;
    Fixture {
        _dir: dir,
        store,
        control,
        second_piece,
        base,
        client,
        cookie,
    }
}

#[tokio::test]
async fn the_box_page_shows_the_status_behind_the_login_and_never_a_credential() {
    let f = fixture().await;
    for (method, path) in [
        ("GET", "/box"),
        ("POST", "/box/prompts"),
        ("POST", "/box/try"),
    ] {
        let request = match method {
            "GET" => f.client.get(format!("{}{path}", f.base)),
            _ => f.client.post(format!("{}{path}", f.base)).form(&[
                ("csrf", "x"),
                ("profile", "default"),
                ("prompt", "chat_prompt"),
                ("text", "hi"),
            ]),
        };
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 303, "{method} {path}");
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/login?next=")
        );
    }
    assert!(f.control.saves.lock().unwrap().is_empty());

    let r = get_as(&f.client, &format!("{}/box", f.base), &f.cookie).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    for shown in [
        "app-default",
        "app-shop",
        "qwen-plus",
        "qwen-turbo",
        "https://dashscope.example/compatible-mode/v1",
        "ALI_API_KEY",
        "not set",
        "get_weather",
        "retrying",
        "2026-12-03T06:59:00Z",
        "connection refused &#60;127.0.0.1:9&#62;",
        "profiles/broken.json: expected `,` at line 3",
        "interrupt",
        "calculator",
        // The prompt's text, escaped, in its form.
        "You sell &#60;b&#62;tea&#60;/b&#62; &#38; cakes.",
        r#"name="prompt" value="route_prompt""#,
        r#"action="/box/prompts""#,
        r#"src="/assets/box.js""#,
    ] {
        assert!(page.contains(shown), "the page lacks {shown:?}: {page}");
    }
    assert!(
        !page.contains("<b>tea</b>"),
        "prompt text reached the page unescaped"
    );
    assert!(!page.contains(UPSTREAM_SECRET));
    assert!(page.contains(r#"id="config-errors""#));

    // The conversation list links the box page; a viewer without a box has neither.
    let index = f.get("/").await;
    assert!(index.contains(r#"href="/box""#));
    let boxless = serve_router(&f.store, true).await;
    let index = f.client.get(format!("{boxless}/")).send().await.unwrap();
    assert!(!index.text().await.unwrap().contains(r#"href="/box""#));
    let r = f.client.get(format!("{boxless}/box")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_prompt_saves_only_with_the_csrf_token_and_keeps_the_old_text_as_bak() {
    let f = fixture().await;
    let csrf = csrf_in(&f.get("/box").await);
    let url = format!("{}/box/prompts", f.base);
    let file = f.control.config_dir.join("shop/chat_prompt.txt");
    let form = |token: &'static str| {
        vec![
            ("csrf", token),
            ("profile", "shop"),
            ("prompt", "chat_prompt"),
            ("text", "You sell coffee.\r\nBe brief."),
        ]
    };

    for token in [
        "",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let r = post_form_as(&f.client, &url, &f.cookie, &form(token)).await;
        assert_eq!(r.status(), 403, "token {token:?}");
    }
    assert!(f.control.saves.lock().unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "You sell <b>tea</b> & cakes."
    );

    let mut saving = form("");
    saving[0].1 = &csrf;
    let r = post_form_as(&f.client, &url, &f.cookie, &saving).await;
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        "/box?saved_profile=shop&saved_prompt=chat_prompt#prompt-shop-chat_prompt"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "You sell coffee.\nBe brief."
    );
    assert_eq!(
        std::fs::read_to_string(file.with_extension("txt.bak")).unwrap(),
        "You sell <b>tea</b> & cakes."
    );
    let page = f.get(&location).await;
    assert!(page.contains("Saved chat_prompt of profile shop"), "{page}");
    let beside_the_form = r#"<span class="ok" role="status">Saved</span>"#;
    assert_eq!(page.matches(beside_the_form).count(), 1);
    assert!(!f.get("/box").await.contains(beside_the_form));
    assert!(page.contains("You sell coffee.\nBe brief."));

    // Refused: the page again, the reason beside the form and the text the reader sent.
    for (profile, prompt, text, reason) in [
        ("shop", "chat_prompt", "   ", "may not be empty"),
        ("shop", "chat_prompt", "a\0b", "NUL"),
        (
            "nobody",
            "chat_prompt",
            "Hi.",
            "no profile named &#34;nobody&#34;",
        ),
        (
            "shop",
            "mood_prompt",
            "Hi <there>.",
            "has no prompt &#34;mood_prompt&#34;",
        ),
    ] {
        let r = post_form_as(
            &f.client,
            &url,
            &f.cookie,
            &[
                ("csrf", &csrf),
                ("profile", profile),
                ("prompt", prompt),
                ("text", text),
            ],
        )
        .await;
        assert_eq!(r.status(), 400, "{profile}/{prompt}");
        let page = r.text().await.unwrap();
        assert!(page.contains(reason), "{reason:?} not in the page");
        assert!(page.contains(r#"role="alert""#));
    }
    let r = post_form_as(
        &f.client,
        &url,
        &f.cookie,
        &[
            ("csrf", &csrf),
            ("profile", "shop"),
            ("prompt", "chat_prompt"),
            ("text", " "),
        ],
    )
    .await;
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("<textarea name=\"text\" rows=\"8\" spellcheck=\"false\"> </textarea>")
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "You sell coffee.\nBe brief.",
        "a refused text left the file as it was"
    );
}

/// The events of a try-it answer, read as they arrive; `on_first_text` runs once the first
/// piece of text is in.
async fn read_events(
    mut response: reqwest::Response,
    on_first_text: impl FnOnce(),
) -> Vec<(String, serde_json::Value)> {
    let mut on_first_text = Some(on_first_text);
    let mut buffer = String::new();
    let mut events = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("the next piece of the stream in time (is the answer buffered?)")
            .unwrap();
        let Some(chunk) = chunk else { break };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("message")
                .to_string();
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data");
            events.push((name.clone(), serde_json::from_str(data).unwrap()));
            if name == "text"
                && let Some(f) = on_first_text.take()
            {
                f();
            }
        }
    }
    events
}

#[tokio::test]
async fn a_try_it_turn_streams_its_answer_and_is_logged_with_its_tool_steps() {
    let f = fixture().await;
    let csrf = csrf_in(&f.get("/box").await);
    let url = format!("{}/box/try", f.base);

    let r = post_form_as(
        &f.client,
        &url,
        &f.cookie,
        &[("profile", "shop"), ("text", "What is 2+2?")],
    )
    .await;
    assert_eq!(r.status(), 403);
    for (profile, text, reason) in [
        ("nobody", "What is 2+2?", "no profile named \"nobody\""),
        ("shop", "  ", "say something"),
    ] {
        let r = post_form_as(
            &f.client,
            &url,
            &f.cookie,
            &[("csrf", &csrf), ("profile", profile), ("text", text)],
        )
        .await;
        assert_eq!(r.status(), 400);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
    }

    let r = post_form_as(
        &f.client,
        &url,
        &f.cookie,
        &[
            ("csrf", &csrf),
            ("profile", "shop"),
            ("text", "What is 2+2?"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let release = f.second_piece.clone();
    let events = read_events(r, move || release.notify_one()).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["start", "text", "text", "done"], "{events:?}");
    let conversation = events[0].1["conversation"].as_str().unwrap().to_string();
    assert_eq!(conversation, "shop\u{b7}page-1");
    assert_eq!(events[1].1["text"], "Two plus two ");
    assert_eq!(events[2].1["text"], "is four.");
    let done = &events[3].1;
    assert_eq!(done["conversation"], conversation.as_str());
    assert_eq!(done["model"], "scripted-calculator");
    assert_eq!(done["finish"], "stop");
    assert_eq!(done["tools_called"], serde_json::json!(["calculator"]));

    // What the page loads next: the logged turn, tool step included, as the viewer shows it.
    let fragment = f.get("/fragments/messages/shop%C2%B7page-1").await;
    for shown in ["What is 2+2?", "Calls calculator", "Two plus two is four."] {
        assert!(fragment.contains(shown), "{shown:?} not in {fragment}");
    }

    // The same conversation goes on.
    let r = post_form_as(
        &f.client,
        &url,
        &f.cookie,
        &[
            ("csrf", &csrf),
            ("profile", "shop"),
            ("conversation", &conversation),
            ("text", "And 3+3?"),
        ],
    )
    .await;
    let release = f.second_piece.clone();
    let events = read_events(r, move || release.notify_one()).await;
    assert_eq!(events.last().unwrap().0, "done");
    assert_eq!(
        events.last().unwrap().1["conversation"],
        conversation.as_str()
    );
    let messages = f.store.conversation(&conversation).await.unwrap();
    assert!(messages.iter().any(|m| m.message.content == "And 3+3?"));
    assert!(messages.iter().any(|m| m.message.content == "What is 2+2?"));
}

//! Shared by the viewer's HTTP and browser tests: seeding a store, serving the in-process
//! router, starting the real binary, and an HTTP client that only talks to 127.0.0.1.

use std::path::Path;
use std::process::Command;

use super::{Proc, bin};
use std::time::Duration;

use lang_agent::auth::ApiKeys;
use lang_agent::redact::Secret;
use lang_agent::store::{MessageKind, NewMessage, Store};
use lang_agent::viewer::{Access, BoxControl, Source, router};

pub use super::KEY;

/// The message that must show as text, never run.
pub const SCRIPT_TEXT: &str = "<script>document.title='pwned'</script><b>bold?</b>";

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

fn msg(kind: MessageKind, text: &str) -> NewMessage {
    NewMessage::new(kind, text)
}

/// Two conversations: one with all three bubble kinds (and a long, collapsed tool output),
/// one with a message that looks like HTML.
pub async fn seed(store: &Store) {
    let mut ai_call = msg(MessageKind::Ai, "");
    ai_call.tool_calls = Some(
        r#"[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Hangzhou\"}"}}]"#
            .into(),
    );
    let mut tool = msg(
        MessageKind::Tool,
        r#"{"city":"Hangzhou","temp_c":21,"sky":"sunny","wind":"NE 2"}"#,
    );
    tool.tool_name = Some("get_weather".into());
    tool.tool_call_id = Some("call_1".into());
    let forecast: Vec<_> = (1..=14)
        .map(|d| serde_json::json!({"day": d, "high_c": 20 + d % 5, "low_c": 12 + d % 3}))
        .collect();
    let mut long_tool = msg(
        MessageKind::Tool,
        &serde_json::to_string(&forecast).unwrap(),
    );
    long_tool.tool_name = Some("get_forecast".into());
    store
        .append(
            "kitchen-morning_dev1",
            Some("dev1"),
            None,
            vec![
                msg(MessageKind::Human, "What's the weather in Hangzhou today?"),
                ai_call,
                tool,
                msg(
                    MessageKind::Ai,
                    "It's 21°C and sunny in Hangzhou, with a light north-east breeze.",
                ),
                msg(MessageKind::Human, "And the next two weeks?"),
                long_tool,
                msg(MessageKind::Ai, "Mild all fortnight: highs of 20 to 24°C."),
            ],
        )
        .await
        .expect("seed kitchen");
    store
        .append(
            "living-room_dev2",
            Some("dev2"),
            None,
            vec![
                msg(MessageKind::Human, SCRIPT_TEXT),
                msg(
                    MessageKind::Ai,
                    "That looks like code; I'll just read it as text.",
                ),
            ],
        )
        .await
        .expect("seed living room");
}

/// Serves the in-process router on a free 127.0.0.1 port; returns its base URL.
pub async fn serve_router(store: &Store, open: bool) -> String {
    serve_router_with_box(store, open, None).await
}

/// As [`serve_router`], with the box page when `box_control` is given.
pub async fn serve_router_with_box(
    store: &Store,
    open: bool,
    box_control: Option<std::sync::Arc<dyn BoxControl>>,
) -> String {
    let access = if open {
        Access::open()
    } else {
        Access::login(ApiKeys::from_keys(vec![Secret::new(KEY)]))
    };
    let app = router(Source::from_store(store.clone()), access, box_control);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // As the binary serves it: each request knows its client's address.
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}")
}

/// The real binary running `viewer --db <db> --port 0`; killed on drop.
pub struct ViewerProcess {
    pub proc: Proc,
    pub base: String,
}

pub fn start_viewer_binary(db: &Path, data_dir: &Path) -> ViewerProcess {
    let mut command = Command::new(bin());
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["viewer", "--host", "127.0.0.1", "--port", "0", "--db"])
        .arg(db)
        .env("FAST_AUTH_KEYS", KEY)
        .env_remove("CONN_STR")
        .env("LANG_AGENT_LOG", "warn");
    let proc = Proc::spawn(command);
    let line = proc.wait_for_line("viewer listening on ");
    let base = line
        .trim()
        .trim_start_matches("viewer listening on ")
        .to_string();
    ViewerProcess { proc, base }
}

/// GET `url` of the JSON API with the API key, and read its answer.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a JSON answer")
}

/// GET `url` as the session holding `cookie`.
pub async fn get_as(client: &reqwest::Client, url: &str, cookie: &str) -> reqwest::Response {
    client
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .expect("GET")
}

/// POST `form` to `url` as the session holding `cookie`.
pub async fn post_form_as(
    client: &reqwest::Client,
    url: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client
        .post(url)
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .expect("POST")
}

/// Logs in with the form; returns the session cookie (`name=value`).
pub async fn login_cookie(client: &reqwest::Client, base: &str) -> String {
    let response = client
        .post(format!("{base}/login"))
        .form(&[("key", KEY), ("next", "/")])
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 303, "login with the right key redirects");
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    set_cookie.split(';').next().unwrap().to_string()
}

/// The CSRF token in a page's forms.
pub fn csrf_in(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a csrf field") + marker.len();
    page[start..start + 64].to_string()
}

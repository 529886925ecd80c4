//! `--thinking`: with thinking off every model call (router and answer) carries
//! `"enable_thinking": false`; a local upstream under the default `auto` gets no such field.
//! (DashScope's own host gets it under `auto`: `config/tests.rs`, which cannot call it.)

mod common;

use common::*;
use serde_json::Value;

async fn thinking_fields(extra: &[&str]) -> Vec<Option<Value>> {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, extra);
    let sse = dashscope_stream(&server, Some("think"), "hello").await;
    assert!(final_text(&sse).starts_with("You said: hello."), "{sse}");
    let requests = mock.requests().await;
    assert!(requests.len() >= 2, "router and answer: {requests:?}");
    requests
        .iter()
        .map(|r| r.get("enable_thinking").cloned())
        .collect()
}

#[tokio::test]
async fn thinking_off_reaches_every_model_call() {
    let fields = thinking_fields(&["--thinking", "off"]).await;
    assert!(
        fields.iter().all(|f| f == &Some(Value::Bool(false))),
        "{fields:?}"
    );
}

#[tokio::test]
async fn a_local_upstream_decides_for_itself_by_default() {
    let fields = thinking_fields(&[]).await;
    assert!(fields.iter().all(Option::is_none), "{fields:?}");
}

//! The viewer over plain HTTP: refusal without login, login and logout, escaping, CSRF, the
//! JSON API's shapes, search, filters and paging. (Live events: `viewer_live.rs`;
//! PostgreSQL: `viewer_postgres.rs`.)

mod common;

use std::time::Duration;

use common::viewer::*;
use lang_agent::store::{MessageKind, NewMessage, Store, TurnOutcome, TurnStatus};

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("log.sqlite3")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn without_login_every_page_and_api_answer_is_refused() {
    let (_dir, store) = temp_store();
    seed(&store).await;
    let base = serve_router(&store, false).await;
    let client = http();
    let pages = [
        "/",
        "/?q=weather",
        "/c/kitchen-morning_dev1",
        "/c/kitchen-morning_dev1/delete",
        "/c/kitchen-morning_dev1/download",
        "/fragments/sidebar",
        "/fragments/messages/kitchen-morning_dev1",
    ];
    for path in pages {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 303, "GET {path}");
        let location = r.headers()["location"].to_str().unwrap();
        assert!(
            location.starts_with("/login?next="),
            "GET {path} → {location}"
        );
        let body = r.text().await.unwrap();
        assert!(!body.contains("Hangzhou"), "GET {path} leaked text");
    }
    for path in ["/c/kitchen-morning_dev1/delete", "/logout"] {
        let r = client
            .post(format!("{base}{path}"))
            .form(&[("csrf", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "POST {path}");
    }
    let api = [
        "/api/conversations",
        "/api/conversations/kitchen-morning_dev1/messages",
        "/api/events",
    ];
    for path in api {
        for auth in [None, Some("Bearer wrong-key"), Some("Basic dGVzdA==")] {
            let mut request = client.get(format!("{base}{path}"));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 401, "GET {path} with {auth:?}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().contains("login"),
                "{path}: {body}"
            );
        }
    }
    // A made-up session cookie is no login either.
    let r = get_as(&client, &format!("{base}/"), "lang_agent_viewer=00ff").await;
    assert_eq!(r.status(), 303);
    // Health answers without login and says nothing about conversations.
    let r = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"status":"ok"}"#);
    // Still all there: nothing above changed anything.
    assert_eq!(
        store
            .conversation("kitchen-morning_dev1")
            .await
            .unwrap()
            .len(),
        7
    );
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_logout_ends_the_session() {
    let (_dir, store) = temp_store();
    seed(&store).await;
    let base = serve_router(&store, false).await;
    let client = http();

    let r = client
        .post(format!("{base}/login"))
        .form(&[("key", "not-the-key"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("not one of this box"));

    let r = client
        .post(format!("{base}/login"))
        .form(&[("key", KEY), ("next", "/c/living-room_dev2")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/c/living-room_dev2");
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    // An off-site `next` is ignored.
    let r = client
        .post(format!("{base}/login"))
        .form(&[("key", KEY), ("next", "//evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/");

    let page = get_as(&client, &format!("{base}/"), &cookie).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("kitchen-morning_dev1"));
    let csrf = csrf_in(&page);

    // The cookie also opens the API.
    let r = get_as(&client, &format!("{base}/api/conversations"), &cookie).await;
    assert_eq!(r.status(), 200);

    // Logging out needs the token, then the cookie is dead.
    let r = post_form_as(
        &client,
        &format!("{base}/logout"),
        &cookie,
        &[("csrf", "wrong")],
    )
    .await;
    assert_eq!(r.status(), 403);
    let r = post_form_as(
        &client,
        &format!("{base}/logout"),
        &cookie,
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = get_as(&client, &format!("{base}/"), &cookie).await;
    assert_eq!(r.status(), 303, "the session ended");
}

#[tokio::test]
async fn message_text_is_escaped_and_pages_carry_a_content_security_policy() {
    let (_dir, store) = temp_store();
    seed(&store).await;
    let base = serve_router(&store, false).await;
    let client = http();
    let cookie = login_cookie(&client, &base).await;
    let r = get_as(&client, &format!("{base}/c/living-room_dev2"), &cookie).await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    assert!(
        !page.contains("<script>document.title"),
        "raw script tag in the page"
    );
    assert!(!page.contains("<b>bold?</b>"));
    assert!(
        page.contains("&#60;script&#62;document.title")
            || page.contains("&lt;script&gt;document.title")
    );
    // The only scripts are the embedded file.
    assert_eq!(page.matches("<script").count(), 1);
    assert!(page.contains(r#"<script src="/assets/viewer.js" defer></script>"#));
    // The fragment used for live updates is escaped the same way.
    let fragment = client
        .get(format!(
            "{base}/fragments/messages/living-room_dev2?after=0"
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!fragment.contains("<script"));
    assert!(fragment.contains("bold?"));
}

#[tokio::test]
async fn delete_needs_the_sessions_csrf_token() {
    let (_dir, store) = temp_store();
    seed(&store).await;
    let base = serve_router(&store, false).await;
    let client = http();
    let mine = login_cookie(&client, &base).await;
    let other = login_cookie(&client, &base).await;
    let confirm = get_as(
        &client,
        &format!("{base}/c/kitchen-morning_dev1/delete"),
        &mine,
    )
    .await;
    assert_eq!(confirm.status(), 200);
    let confirm = confirm.text().await.unwrap();
    assert!(confirm.contains("Delete this conversation?"));
    let my_token = csrf_in(&confirm);
    let others_page = get_as(&client, &format!("{base}/"), &other).await;
    let others_token = csrf_in(&others_page.text().await.unwrap());
    assert_ne!(my_token, others_token);

    let url = format!("{base}/c/kitchen-morning_dev1/delete");
    for (what, form) in [
        ("no token", vec![]),
        ("empty token", vec![("csrf", "")]),
        (
            "another session's token",
            vec![("csrf", others_token.as_str())],
        ),
    ] {
        let r = post_form_as(&client, &url, &mine, &form).await;
        assert_eq!(r.status(), 403, "{what}");
    }
    // A cross-site form post carries no cookie (SameSite=Strict) and so is not even logged in.
    let r = client
        .post(&url)
        .form(&[("csrf", my_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    assert_eq!(
        store
            .conversation("kitchen-morning_dev1")
            .await
            .unwrap()
            .len(),
        7
    );

    let mut events = store.subscribe();
    let r = post_form_as(&client, &url, &mine, &[("csrf", my_token.as_str())]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    assert!(
        store
            .conversation("kitchen-morning_dev1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        events.recv().await.unwrap(),
        lang_agent::store::StoreEvent::ConversationDeleted("kitchen-morning_dev1".into())
    );
    let r = get_as(&client, &format!("{base}/c/kitchen-morning_dev1"), &mine).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn json_api_keeps_the_original_shapes() {
    let (_dir, store) = temp_store();
    seed(&store).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .append(
            "newest",
            None,
            None,
            vec![NewMessage::new(MessageKind::Human, "latest")],
        )
        .await
        .unwrap();
    let base = serve_router(&store, false).await;
    let client = http();
    let bearer = format!("Bearer {KEY}");
    let list = get_json(&client, &format!("{base}/api/conversations")).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    let first = list[0].as_object().unwrap();
    let mut keys: Vec<_> = first.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "conversation_id",
            "last_updated",
            "message_count",
            "preview",
            "stateless"
        ]
    );
    assert_eq!(first["conversation_id"], "newest", "newest first");
    let kitchen = list
        .iter()
        .find(|c| c["conversation_id"] == "kitchen-morning_dev1")
        .unwrap();
    assert_eq!(kitchen["message_count"], 7);
    let updated = kitchen["last_updated"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(updated).is_ok(),
        "{updated}"
    );

    let messages: serde_json::Value = client
        .get(format!(
            "{base}/api/conversations/kitchen-morning_dev1/messages"
        ))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 7);
    let mut keys: Vec<_> = messages[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["content", "created_at", "message_type", "sequence_number"]
    );
    let kinds: Vec<_> = messages
        .iter()
        .map(|m| m["message_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["human", "ai", "tool", "ai", "human", "tool", "ai"]);
    let seqs: Vec<_> = messages
        .iter()
        .map(|m| m["sequence_number"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        messages[0]["content"],
        "What's the weather in Hangzhou today?"
    );

    // An unknown conversation is an empty list, as in the original.
    let none: serde_json::Value = client
        .get(format!("{base}/api/conversations/nope/messages"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none, serde_json::json!([]));

    // Download: the same message shape, as an attachment.
    let cookie = login_cookie(&client, &base).await;
    let r = get_as(
        &client,
        &format!("{base}/c/kitchen-morning_dev1/download"),
        &cookie,
    )
    .await;
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let file: serde_json::Value = r.json().await.unwrap();
    assert_eq!(file["conversation_id"], "kitchen-morning_dev1");
    assert_eq!(file["messages"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn search_filters_and_paging() {
    let (_dir, store) = temp_store();
    seed(&store).await;
    for i in 0..120 {
        store
            .append(
                &format!("bulk-{i:03}_dev{}", 3 + i % 2),
                Some(&format!("dev{}", 3 + i % 2)),
                None,
                vec![NewMessage::new(
                    MessageKind::Human,
                    format!("filler number {i}"),
                )],
            )
            .await
            .unwrap();
    }
    let base = serve_router(&store, true).await;
    let client = http();
    let get = |path: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let r = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.text().await.unwrap()
        }
    };
    let count_rows = |page: &str| page.matches("<li><a class=\"conv").count();

    // Trigram index (3+ characters), case-insensitive.
    let page = get("/?q=HANGZHOU".into()).await;
    assert_eq!(count_rows(&page), 1, "{page}");
    assert!(page.contains("kitchen-morning_dev1"));
    // Shorter than a trigram: falls back to LIKE.
    let page = get("/?q=%C2%B0C".into()).await; // "°C"
    assert_eq!(count_rows(&page), 1);
    assert!(page.contains("kitchen-morning_dev1"));
    // Query syntax is just text.
    let page = get("/?q=%22%20OR%20x".into()).await;
    assert_eq!(count_rows(&page), 0);
    // The open conversation marks the matching messages.
    let page = get("/c/kitchen-morning_dev1?q=sunny".into()).await;
    assert_eq!(page.matches("msg ai match").count(), 1);

    // Device filter.
    let page = get("/?device=dev2".into()).await;
    assert_eq!(count_rows(&page), 1);
    assert!(page.contains("living-room_dev2"));
    assert!(page.contains(r#"<option value="dev2" selected>"#));

    // Date filter: everything is from today (UTC).
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let page = get(format!("/?from={today}&to={today}&tz=0")).await;
    assert!(
        page.contains("1–50 of 122"),
        "{}",
        &page[..500.min(page.len())]
    );
    let page = get("/?to=2000-01-01".into()).await;
    assert_eq!(count_rows(&page), 0);
    assert!(page.contains("No conversation matches"));

    // Paging: 50 a page, newest first, with links both ways keeping the filter.
    let page = get("/?device=dev3".into()).await;
    assert_eq!(count_rows(&page), 50);
    assert!(page.contains("1–50 of 60"));
    assert!(
        page.contains(r#"href="/?device=dev3&#38;page=2""#),
        "{}",
        &page[page.find("pager").unwrap_or(0)..]
    );
    let page2 = get("/?device=dev3&page=2".into()).await;
    assert_eq!(count_rows(&page2), 10);
    assert!(page2.contains("51–60 of 60"));
    assert!(page2.contains(r#"href="/?device=dev3" rel="prev""#));
    assert!(page.find("bulk-118_dev3").unwrap() < page.find("bulk-116_dev3").unwrap());
}

/// A turn as a stateless call logs it: a conversation begun without a session id.
async fn stateless_turn(store: &Store, id: &str, user: &str, answer: &str) {
    let said = vec![NewMessage::new(MessageKind::Human, user)];
    let (turn, _) = store
        .open_turn(
            id,
            None,
            "m",
            said,
            0,
            &lang_agent::store::ConversationTags::stateless(true),
        )
        .await
        .unwrap();
    let outcome = TurnOutcome {
        status: TurnStatus::Done,
        error: None,
        input_tokens: 0,
        output_tokens: 0,
        ttft_ms: None,
        total_ms: 0,
    };
    let answered = NewMessage::new(MessageKind::Ai, answer);
    store
        .close_turn(
            id,
            None,
            turn,
            vec![answered.clone()],
            outcome,
            Some(answered),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn one_shot_stateless_conversations_are_hidden_until_asked_for_and_every_entry_previews() {
    let (_dir, store) = temp_store();
    seed(&store).await;
    for i in 0..55 {
        stateless_turn(&store, &format!("helper-{i:02}"), "classify: hi", "chat").await;
    }
    stateless_turn(&store, "stateless-chat", "one", "first answer").await;
    stateless_turn(&store, "stateless-chat", "two", "second answer").await;
    let long = format!("{SCRIPT_TEXT}\nsecond line {}", "x".repeat(100));
    stateless_turn(&store, "helper-html", "say html", &long).await;
    let base = serve_router(&store, true).await;
    let client = http();
    let get = |path: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.text().await.unwrap()
        }
    };

    // By default: the seeded conversations and the longer stateless one, no one-shots.
    let page = get("/").await;
    assert!(!page.contains("helper-"), "a one-shot is listed by default");
    assert!(
        page.contains("1–3 of 3"),
        "{}",
        &page[..600.min(page.len())]
    );
    assert!(page.contains("stateless-chat"));
    assert!(page.contains(r#"name="stateless" id="stateless" value="1">"#));
    // Each entry previews its newest message.
    assert!(page.contains(r#"<span class="conv-preview">second answer</span>"#));
    assert!(page.contains("Mild all fortnight: highs of 20 to 24°C."));
    assert!(page.contains(r#"<span class="badge stateless""#));

    // The filter shows them, ticked, and paging keeps it.
    let page = get("/?stateless=1").await;
    assert!(
        page.contains("1–50 of 59"),
        "{}",
        &page[..600.min(page.len())]
    );
    assert!(page.contains(r#"name="stateless" id="stateless" value="1" checked>"#));
    assert!(page.contains(r#"href="/?stateless=1&#38;page=2""#));
    let more = get("/fragments/sidebar?stateless=1&page=2").await;
    assert_eq!(more.matches("<li><a class=\"conv").count(), 9);
    // A preview is one escaped line, cut short. (helper-html's entry, wherever it is: it and
    // stateless-chat may have been written in the same millisecond, so their order is open.)
    let html = get("/?stateless=1").await;
    let preview = html
        .split(r#"<li><a class="conv"#)
        .find(|entry| entry.contains("helper-html"))
        .and_then(|entry| entry.split(r#"<span class="conv-preview">"#).nth(1))
        .and_then(|rest| rest.split("</span>").next())
        .unwrap();
    assert!(preview.starts_with("&#60;script&#62;"), "{preview}");
    assert!(
        !preview.contains('\n') && preview.ends_with('…'),
        "{preview}"
    );
    assert!(!html.contains("<script>document"));

    // The JSON API lists everything, as the original did, and says which is which.
    let list = get_json(&client, &format!("{base}/api/conversations")).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 59);
    let entry = |id: &str| list.iter().find(|c| c["conversation_id"] == id).unwrap();
    assert_eq!(entry("helper-00")["stateless"], true);
    assert_eq!(entry("helper-00")["preview"], "chat");
    assert_eq!(entry("living-room_dev2")["stateless"], false);
    assert_eq!(entry("stateless-chat")["message_count"], 4);
}

//! The viewer in a real browser: Debian's chromium, headless, driven over WebDriver
//! (`thirtyfour` + `/usr/bin/chromedriver`) against the real `lang-agent viewer` binary on a
//! seeded SQLite file. It logs in, reads a conversation with all three bubble kinds, watches a
//! message written by another process arrive live, searches, checks that a `<script>` message
//! is only text, deletes with confirmation, and saves screenshots (laptop and phone width,
//! light and dark) under `target/test-artifacts/viewer/`.
//!
//! Needs `chromium` and `chromium-driver` (`scripts/install-test-deps.sh`); without them the
//! test fails and says so rather than passing silently.

mod common;

use common::browser::*;
use common::viewer::*;
use lang_agent::store::{MessageKind, NewMessage, Store};
use thirtyfour::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_logs_in_reads_watches_live_searches_and_deletes() {
    let driver = start_chromedriver().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("box.sqlite3");
    let writer = Store::open(&db).unwrap();
    seed(&writer).await;
    let viewer = start_viewer_binary(&db, dir.path());
    let base = viewer.base.clone();
    let web = browser(&driver, &dir.path().join("profile")).await;
    let result = run(&web, &base, &writer).await;
    let _ = web.quit().await;
    result.expect("browser session");
}

async fn run(web: &WebDriver, base: &str, writer: &Store) -> WebDriverResult<()> {
    // Not logged in: the page asks for a key. A wrong one is refused.
    web.goto(format!("{base}/c/kitchen-morning_dev1")).await?;
    assert!(web.current_url().await?.path().starts_with("/login"));
    shot(web, "01-login").await;
    web.find(By::Id("key"))
        .await?
        .send_keys("wrong-key")
        .await?;
    web.find(By::Id("login-submit")).await?.click().await?;
    wait_for(web, "#login-error").await;
    web.find(By::Id("key")).await?.send_keys(KEY).await?;
    web.find(By::Id("login-submit")).await?.click().await?;

    // Back where we wanted to go: the conversation, with all three bubble kinds.
    let messages = wait_for(web, "#messages").await;
    assert_eq!(web.current_url().await?.path(), "/c/kitchen-morning_dev1");
    let humans = messages.find_all(By::Css(".msg.human")).await?;
    let ais = messages.find_all(By::Css(".msg.ai")).await?;
    let tools = messages.find_all(By::Css(".msg.tool")).await?;
    assert_eq!((humans.len(), ais.len(), tools.len()), (2, 3, 2));
    // Human on the right, AI and tool on the left.
    let human_x = humans[0].find(By::Css(".bubble")).await?.rect().await?.x;
    let ai_x = ais[0].find(By::Css(".bubble")).await?.rect().await?.x;
    let tool_x = tools[0].find(By::Css(".bubble")).await?.rect().await?.x;
    assert!(
        human_x > ai_x + 100.0 && (tool_x - ai_x).abs() < 2.0,
        "{human_x} {ai_x} {tool_x}"
    );
    // Blue, green, orange with a border.
    let human_bg = humans[0]
        .find(By::Css(".bubble"))
        .await?
        .css_value("background-color")
        .await?;
    let ai_bg = ais[0]
        .find(By::Css(".bubble"))
        .await?
        .css_value("background-color")
        .await?;
    let tool_bubble = tools[0].find(By::Css(".bubble")).await?;
    assert_eq!(human_bg, "rgba(37, 99, 235, 1)");
    assert_eq!(ai_bg, "rgba(220, 245, 227, 1)");
    assert_eq!(tool_bubble.css_value("border-top-style").await?, "solid");
    assert_eq!(
        tool_bubble.css_value("border-top-color").await?,
        "rgba(245, 158, 11, 1)"
    );
    // Tool JSON pretty-printed; the long one starts collapsed.
    let short = tools[0].find(By::Css("details")).await?;
    assert!(short.attr("open").await?.is_some());
    assert!(
        short
            .find(By::Css("pre"))
            .await?
            .text()
            .await?
            .contains("\"temp_c\": 21")
    );
    assert!(
        tools[1]
            .find(By::Css("details"))
            .await?
            .attr("open")
            .await?
            .is_none()
    );
    // Times are the reader's local times, not the server's UTC fallback.
    let time = messages.find(By::Css("time")).await?.text().await?;
    assert!(!time.contains("UTC"), "{time}");
    // The live indicator is on.
    wait_for(web, "#live[data-state='on']").await;
    shot(web, "02-conversation-laptop-light").await;

    // Another process logs a message: it appears without a reload.
    writer
        .append(
            "kitchen-morning_dev1",
            Some("dev1"),
            None,
            vec![NewMessage::new(MessageKind::Human, "Thanks! Arrived live?")],
        )
        .await
        .unwrap();
    let arrived = wait_for(web, "#m8.msg.human").await;
    assert_eq!(
        arrived.text().await?.lines().next(),
        Some("Thanks! Arrived live?")
    );
    assert_eq!(web.find(By::Id("message-count")).await?.text().await?, "8");
    // And a brand-new conversation shows up in the list.
    writer
        .append(
            "hallway_dev5",
            Some("dev5"),
            None,
            vec![NewMessage::new(MessageKind::Human, "Lights off")],
        )
        .await
        .unwrap();
    wait_for(web, "a.conv[data-id='hallway_dev5']").await;
    shot(web, "03-live-message-arrived").await;

    // A message that looks like HTML is shown as text and never runs.
    web.goto(format!("{base}/c/living-room_dev2")).await?;
    let bubble = wait_for(web, "#m1 .text").await;
    assert_eq!(bubble.text().await?, SCRIPT_TEXT);
    assert!(bubble.find_all(By::Css("script, b")).await?.is_empty());
    assert_ne!(web.title().await?, "pwned");

    // Search across message text.
    let search = web.find(By::Id("q")).await?;
    search.send_keys("breeze").await?;
    web.find(By::Id("search-submit")).await?.click().await?;
    wait_for_url(web, "q=breeze").await;
    wait_for(web, "a.conv[data-id='kitchen-morning_dev1']").await;
    let rows = web.find_all(By::Css("a.conv")).await?;
    assert_eq!(rows.len(), 1, "only the conversation mentioning a breeze");
    rows[0].click().await?;
    let hit = wait_for(web, ".msg.match").await;
    assert!(hit.text().await?.contains("breeze"));
    shot(web, "04-search").await;

    // Delete, with confirmation.
    web.goto(format!("{base}/c/living-room_dev2")).await?;
    wait_for(web, "#delete").await.click().await?;
    wait_for(web, "#confirm-delete").await;
    shot(web, "05-delete-confirm").await;
    web.find(By::Id("confirm-delete")).await?.click().await?;
    wait_for(web, ".welcome").await;
    wait_gone(web, "a.conv[data-id='living-room_dev2']").await;
    assert!(
        writer
            .conversation("living-room_dev2")
            .await
            .unwrap()
            .is_empty()
    );

    // Dark mode and a phone.
    color_scheme(web, true).await;
    web.goto(format!("{base}/c/kitchen-morning_dev1")).await?;
    wait_for(web, "#messages").await;
    shot(web, "06-conversation-laptop-dark").await;
    web.goto(format!("{base}/")).await?;
    shot(web, "07-list-laptop-dark").await;
    web.set_window_rect(0, 0, 390, 844).await?;
    shot(web, "08-list-phone-dark").await;
    web.goto(format!("{base}/c/kitchen-morning_dev1")).await?;
    wait_for(web, "#messages").await;
    // One pane at a time on a phone: the list is hidden behind a back arrow.
    assert!(!web.find(By::Css(".sidebar")).await?.is_displayed().await?);
    assert!(web.find(By::Css(".back")).await?.is_displayed().await?);
    shot(web, "09-conversation-phone-dark").await;
    color_scheme(web, false).await;
    shot(web, "10-conversation-phone-light").await;
    web.goto(format!("{base}/")).await?;
    shot(web, "11-list-phone-light").await;

    // Logging out ends it.
    web.find(By::Id("logout")).await?.click().await?;
    wait_for(web, "#key").await;
    web.goto(format!("{base}/")).await?;
    assert!(web.current_url().await?.path().starts_with("/login"));
    Ok(())
}

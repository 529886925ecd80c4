//! The box page in a real browser (headless chromium, [`common::browser`]) against the real
//! `lang-agent serve` on the `mock-llm` upstream: log in, read the box's configuration, edit a
//! prompt (the file replaced, the old text kept as `.bak`), and run a try-it turn that calls
//! the calculator, streamed into the chat and then shown with its tool step as in the
//! conversation view; the conversation is logged as from the page. Screenshots (laptop and
//! phone width, light and dark) go to `target/test-artifacts/viewer/box-*.png`.

mod common;

use std::path::Path;

use common::browser::*;
use common::viewer::*;
use common::{Mock, Server, free_port};
use thirtyfour::prelude::*;

/// A question the mock upstream answers with a calculator call on the tool branch.
const CALCULATOR_QUESTION: &str =
    r#"what is 37 times 49 [[mock:route=tool]] [[mock:call=calculator {"expression": "37 * 49"}]]"#;

const OLD_CHAT_PROMPT: &str = "You are the box's assistant. Answer briefly.";
const NEW_CHAT_PROMPT: &str = "You are a patient maths tutor.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_page_edits_a_prompt_and_runs_a_try_it_turn_with_the_calculator() {
    let driver = start_chromedriver().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config_dir = dir.path().join("config");
    let prompts_dir = config_dir.join("route_sys_prompts");
    std::fs::create_dir_all(&prompts_dir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(prompts_dir.join("chat_prompt.txt"), OLD_CHAT_PROMPT).unwrap();
    let mock = Mock::start(0, 30);
    let config_arg = config_dir.display().to_string();
    let viewer_port = free_port().to_string();
    let server = Server::start(
        &data_dir,
        &mock.base_url,
        &["--config-dir", &config_arg, "--viewer-port", &viewer_port],
    );
    let base = server.viewer_url().expect("serve runs the viewer");
    let web = browser(&driver, &dir.path().join("profile")).await;
    let result = run(&web, &base, &prompts_dir).await;
    let _ = web.quit().await;
    result.expect("browser session");

    // The try-it conversation is logged as from the page.
    let origins: Vec<String> = server
        .db()
        .prepare("SELECT origin FROM conversations")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        !origins.is_empty() && origins.iter().all(|o| o == "page"),
        "{origins:?}\n{}",
        server.proc.log()
    );
}

async fn run(web: &WebDriver, base: &str, prompts_dir: &Path) -> WebDriverResult<()> {
    // Behind the same login as the conversations.
    web.goto(format!("{base}/box")).await?;
    assert!(web.current_url().await?.path().starts_with("/login"));
    web.find(By::Id("key")).await?.send_keys(KEY).await?;
    web.find(By::Id("login-submit")).await?.click().await?;
    wait_for_url(web, "/box").await;
    wait_for(web, "#try-form").await;
    let page = web.source().await?;
    for shown in [
        "Profiles",
        "MCP servers",
        "Local tools",
        "calculator",
        "chat_prompt",
    ] {
        assert!(page.contains(shown), "the box page lacks {shown:?}");
    }
    assert!(
        !page.contains(common::UPSTREAM_KEY),
        "the upstream key leaked"
    );
    shot(web, "box-01-page").await;

    // Edit the chat prompt and save it with the plain form.
    let form = web.find(By::Css("form.prompt[id$='-chat_prompt']")).await?;
    let textarea = form.find(By::Css("textarea")).await?;
    assert_eq!(textarea.value().await?.as_deref(), Some(OLD_CHAT_PROMPT));
    textarea.clear().await?;
    textarea.send_keys(NEW_CHAT_PROMPT).await?;
    form.find(By::Css("button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_for_url(web, "saved_prompt=chat_prompt").await;
    let notice = wait_for(web, "#saved-notice").await;
    assert!(notice.text().await?.contains("Saved chat_prompt"));
    assert_eq!(
        std::fs::read_to_string(prompts_dir.join("chat_prompt.txt")).unwrap(),
        NEW_CHAT_PROMPT
    );
    assert_eq!(
        std::fs::read_to_string(prompts_dir.join("chat_prompt.txt.bak")).unwrap(),
        OLD_CHAT_PROMPT
    );
    shot(web, "box-02-prompt-saved").await;

    // A try-it turn: streamed into the chat, then shown as the conversation view shows it.
    web.find(By::Id("try-text"))
        .await?
        .send_keys(CALCULATOR_QUESTION)
        .await?;
    web.find(By::Id("try-send")).await?.click().await?;
    let step = wait_for(web, "#try-chat details.tool-calls summary").await;
    assert!(step.text().await?.contains("Calls calculator"));
    let tool = wait_for(web, "#try-chat .msg.tool").await;
    assert!(
        tool.text().await?.contains("1813"),
        "{}",
        tool.text().await?
    );
    let answer = wait_for(web, "#try-chat .msg.ai .text").await;
    assert_eq!(answer.text().await?, "Tool said: 1813.");
    let status = web.find(By::Id("try-status")).await?;
    assert!(
        status.text().await?.starts_with("Done"),
        "{}",
        status.text().await?
    );
    let link = web.find(By::Id("try-link")).await?;
    assert!(link.is_displayed().await?);
    let href = link.attr("href").await?.unwrap_or_default();
    assert!(href.starts_with("/c/"), "{href}");
    shot(web, "box-03-try-it").await;

    // Phone width, dark.
    color_scheme(web, true).await;
    web.set_window_rect(0, 0, 390, 844).await?;
    shot(web, "box-04-phone-dark").await;
    color_scheme(web, false).await;
    web.set_window_rect(0, 0, 1280, 860).await?;

    // The conversation in the viewer holds the same tool step.
    web.goto(format!("{base}{href}")).await?;
    let messages = wait_for(web, "#messages").await;
    assert!(
        messages
            .find(By::Css("details.tool-calls summary"))
            .await?
            .text()
            .await?
            .contains("Calls calculator")
    );
    Ok(())
}

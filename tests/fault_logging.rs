//! Logging never stops the box: with stdout and stderr piped into a reader that goes away
//! (`serve | tee log`, then Ctrl-C kills `tee`), turns (tool turns too) are still answered
//! and stored, and SIGTERM still stops the server cleanly; and a reader that stops reading
//! (a full pipe) costs log lines, never answers.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Kills the child if the test fails before it exits.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `serve` with stdout and stderr piped to the test, read up to the ready line; returns the
/// process, its API URL, and the two read ends (for the test to close or leave unread).
fn start_piped(
    data: &std::path::Path,
    mock: &Mock,
    log_level: &str,
) -> (KillOnDrop, String, ChildStdout, BufReader<ChildStderr>) {
    let env = [("FAST_AUTH_KEYS", KEY), ("LANG_AGENT_LOG", log_level)];
    let mut command = Server::command(data, Some(&mock.base_url), &[], &env);
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = KillOnDrop(command.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exited before ready"
        );
        if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("api=")) {
            let url = format!("http://{addr}");
            return (child, url, stdout, stderr);
        }
    }
}

/// A non-streaming OpenAI turn; returns the answer's text.
async fn chat(client: &reqwest::Client, url: &str, text: &str) -> String {
    let chat = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"messages": [{"role": "user", "content": text}]}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(chat.status(), 200, "{text}");
    let chat: serde_json::Value = chat.json().await.unwrap();
    chat["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_closed_log_pipe_never_stops_turns_or_shutdown() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url, stdout, stderr) = start_piped(&data, &mock, "info");
    // The reader goes away: every later write to either pipe fails with EPIPE.
    drop(stderr);
    drop(stdout);

    let client = http();
    for round in 0..2 {
        let text = chat(&client, &url, &format!("hello {round}")).await;
        assert!(
            text.starts_with(&format!("You said: hello {round}")),
            "{text}"
        );

        let session = format!("pipe-tool-{round}");
        let tool = client
            .post(format!("{url}/api/v1/apps/app1/completion"))
            .bearer_auth(KEY)
            .json(&json!({"input": {
                "session_id": session,
                "prompt": r#"add [[mock:route=tool]] [[mock:call=calculator {"expression":"1+1"}]]"#},
                "parameters": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(tool.status(), 200, "round {round}");
        let tool: serde_json::Value = tool.json().await.unwrap();
        assert_eq!(tool["output"]["text"], "Tool said: 2.", "{tool}");
        let db = rusqlite::Connection::open(data.join("lang-agent.sqlite3")).unwrap();
        let kinds: Vec<String> = tool_rows(&db, &session).into_iter().map(|r| r.0).collect();
        assert_eq!(kinds, ["human", "ai", "tool", "ai"]);
    }

    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "SIGTERM did not stop the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "a clean stop");
}

#[tokio::test]
async fn a_log_reader_that_stops_reading_never_blocks_answers() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    // Every turn logs about a kilobyte at this level: the 64 KiB pipe fills within a hundred.
    let (_child, url, _stdout, _stderr_unread) =
        start_piped(&dir.path().join("data"), &mock, "trace");
    let client = http();
    for round in 0..200 {
        let text = chat(&client, &url, &format!("turn {round}")).await;
        assert!(
            text.starts_with(&format!("You said: turn {round}")),
            "{text}"
        );
    }
}

//! `lang-agent chat` from a pipe: answers through the server's own pipeline, the tool steps
//! shown, `/new` starting another logged conversation, `/exit` leaving.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn chat(data: &std::path::Path, mock: &Mock, input: &str) -> (bool, String, String) {
    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(data)
        .args(["--base-url", &mock.base_url, "chat"])
        .env("ALI_API_KEY", UPSTREAM_KEY)
        .env_remove("LANG_AGENT_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_piped_chat_answers_shows_tool_steps_and_logs_each_conversation() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = "hello there\n\
                 what is 6 times 7 [[mock:route=tool]] [[mock:call=calculator {\"expression\": \"6*7\"}]]\n\
                 /new\n\
                 second thread\n\
                 /exit\n\
                 never asked\n";
    let (ok, stdout, stderr) = chat(&data, &mock, input);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "You said: hello there. I remember: hello there.",
            "  → calls calculator {\"expression\": \"6*7\"}",
            "  ← calculator: 42",
            "Tool said: 42.",
            lines[4],
            "You said: second thread. I remember: second thread.",
        ],
        "{stdout}"
    );
    assert!(lines[4].starts_with("New conversation chat-"), "{stdout}");
    // Quiet by default: no per-turn info lines between the answers.
    assert!(!stderr.contains(" turn "), "{stderr}");

    // Both conversations are in the box's log; /exit left before the last line.
    let db = rusqlite::Connection::open(data.join("lang-agent.sqlite3")).unwrap();
    let conversations: i64 = db
        .query_row(
            "SELECT COUNT(DISTINCT conversation_id) FROM messages",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(conversations, 2);
    let asked: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM messages WHERE content = 'never asked'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(asked, 0);
}

#[tokio::test]
async fn beside_a_running_server_the_chat_is_not_logged_and_says_so() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &mock.base_url, &[]);
    let (ok, stdout, stderr) = chat(&data, &mock, "just a question\n");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("You said: just a question."), "{stdout}");
    assert!(stderr.contains("not logged"), "{stderr}");
    let logged: i64 = server
        .db()
        .query_row(
            "SELECT COUNT(*) FROM messages WHERE content = 'just a question'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(logged, 0);
}

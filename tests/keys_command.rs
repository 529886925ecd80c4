//! `lang-agent keys`: keys made, listed and revoked from the command line reach a running
//! server without a restart; a key is shown only when made, the first start's too, even when
//! the start then fails.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// `lang-agent --data-dir DATA keys ARGS…`: (success, stdout, stderr).
fn keys(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(data)
        .arg("keys")
        .args(args)
        .env_remove("FAST_AUTH_KEYS")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The status a chat call with `key` gets.
async fn status_with(server: &Server, key: &str) -> u16 {
    http()
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(key)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (up to 10 s) until a call with `key` gets `status`: the server re-reads the key
/// file at most once a second.
async fn until_status(server: &Server, key: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status_with(server, key).await;
        if got == status {
            return;
        }
        assert!(Instant::now() < deadline, "still {got}, want {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn keys_added_and_revoked_work_on_a_running_server_without_restart() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_env(&data, &mock.base_url, &[], &[]);
    let first = server.proc.wait_for_line("    la-").trim().to_string();
    assert_eq!(status_with(&server, &first).await, 200);

    let (ok, added, said) = keys(&data, &["add", "kitchen-speaker"]);
    assert!(ok, "{said}");
    let kitchen = added.trim().to_string();
    assert!(kitchen.starts_with("la-") && kitchen != first, "{added}");
    until_status(&server, &kitchen, 200).await;

    let (ok, listed, _) = keys(&data, &["list"]);
    assert!(ok);
    assert!(
        listed.contains("first") && listed.contains("kitchen-speaker"),
        "{listed}"
    );
    assert!(
        !listed.contains(&kitchen) && !listed.contains(&first),
        "keys are never listed"
    );

    let (ok, _, said) = keys(&data, &["revoke", "kitchen-speaker"]);
    assert!(ok, "{said}");
    until_status(&server, &kitchen, 401).await;
    assert_eq!(
        status_with(&server, &first).await,
        200,
        "the others still work"
    );

    let (ok, _, said) = keys(&data, &["revoke", "kitchen-speaker"]);
    assert!(!ok && said.contains("kitchen-speaker"), "{said}");
    let (ok, _, said) = keys(&data, &["add", "no spaces"]);
    assert!(!ok && said.contains("no spaces"), "{said}");
    let (ok, path, _) = keys(&data, &["show-path"]);
    assert!(ok);
    assert_eq!(Path::new(path.trim()), data.join("api_keys.json"));
}

#[test]
fn the_first_key_is_printed_even_when_the_start_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut command = Server::command(&data, Some("http://127.0.0.1:9/v1"), &[], &[]);
    // Server::command asks for --port 0; the later --port wins.
    command.args(["--port", &port]);
    let mut proc = Proc::spawn(command);
    assert_ne!(proc.wait_exit(), Some(0));
    let log = proc.log();
    assert!(log.contains("cannot listen"), "{log}");
    let key = log
        .lines()
        .find(|l| l.trim_start().starts_with("la-"))
        .unwrap_or_else(|| panic!("the key was lost: {log}"))
        .trim()
        .to_string();

    // It is the key the next start accepts.
    let mock = Mock::start(0, 0);
    let server = Server::start_with_env(&data, &mock.base_url, &[], &[]);
    assert!(!server.proc.log().contains(&key), "shown only once");
    let status = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(status_with(&server, &key));
    assert_eq!(status, 200);
}

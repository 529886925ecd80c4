//! `lang-agent doctor`: one line per check, and a non-zero exit when the box cannot serve
//! (a wrong upstream key, a dead MCP server).

mod common;

use std::process::Command;

use common::*;

/// Runs doctor against `mock` with the upstream key `key` and the MCP servers `servers`;
/// returns (success, stdout).
fn doctor(mock: &Mock, key: &str, servers: serde_json::Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mcp = dir.path().join("mcp.json");
    std::fs::write(&mcp, serde_json::json!({"mcpServers": servers}).to_string()).unwrap();
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--base-url", &mock.base_url])
        .args(["doctor", "--router-llm-name", "fast", "--mcp-config"])
        .arg(&mcp)
        .env("ALI_API_KEY", key)
        .env_remove("ALI_BASE_URL")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.contains(&format!(" {check}:")))
        .unwrap_or_else(|| panic!("no {check} line in:\n{report}"))
}

#[test]
fn a_healthy_box_passes_every_check() {
    let mock = Mock::start_with(0, 0, &["--api-key", "right-key"]);
    let (ok, report) = doctor(
        &mock,
        "right-key",
        serde_json::json!({"everything": everything_stdio_entry()}),
    );
    assert!(ok, "{report}");
    for check in [
        "configuration",
        "data directory",
        "free space",
        "store",
        "model qwen-plus",
        "model fast",
        "MCP server everything",
        "open files",
        "clock",
    ] {
        assert!(line(&report, check).starts_with("ok "), "{report}");
    }
    assert!(!report.contains("FAIL"), "{report}");
}

#[test]
fn a_wrong_key_and_a_dead_mcp_server_fail_with_their_reasons() {
    let mock = Mock::start_with(0, 0, &["--api-key", "right-key"]);
    let (ok, report) = doctor(
        &mock,
        "wrong-key",
        serde_json::json!({
            "everything": everything_stdio_entry(),
            "dead": {"url": "http://127.0.0.1:9/mcp"},
        }),
    );
    assert!(!ok, "{report}");
    let model = line(&report, "model qwen-plus");
    assert!(
        model.starts_with("FAIL") && model.contains("refused the key"),
        "{report}"
    );
    assert!(
        line(&report, "MCP server dead").starts_with("FAIL"),
        "{report}"
    );
    assert!(
        line(&report, "MCP server everything").starts_with("ok "),
        "{report}"
    );
    assert!(
        !report.contains("wrong-key"),
        "the key never appears: {report}"
    );
}

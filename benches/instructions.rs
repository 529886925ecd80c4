//! Instructions per turn: the box's own CPU cost, counted by `valgrind --tool=callgrind`, which
//! is repeatable where wall-clock figures are not (and where `perf` is not allowed).
//!
//! `lang-agent serve` runs under callgrind against the fake upstream (no delay). After a
//! warm-up, the counters are zeroed, a fixed number of turns is sent one after another, and
//! the counters are dumped: the total divided by the turns is the instructions per turn, for a
//! streamed and a collected DashScope turn and a streamed OpenAI one, and Xiaozhi's call with a
//! voice answer's length (all chat route: router and chat calls). Figures only; nothing is
//! asserted.
//!
//! The count is the whole process's, background threads included. The search indexer's
//! passes fall into a row or not depending on timing, and their full-text index work (the
//! FTS5 inserts, and at their commit the new segment and now and then a merge of segments:
//! up to 40 million instructions) swamps a change, so each row also gives that work apart,
//! read from the dump's call graph, and the count without it: the figure to compare between
//! builds.
//!
//! `cargo bench --bench instructions` (valgrind must be installed; `BENCH_TURNS` sets the
//! turns per row, default 200; `LANG_AGENT_BIN=path` measures another build of the binary,
//! e.g. the one before a change).

mod common;

use std::path::Path;
use std::process::Command;

use common::{KEY, Mock, Proc, Server, http};
use serde_json::json;

#[derive(Clone, Copy)]
enum Turn {
    DashScopeStream,
    DashScopeJson,
    OpenAiStream,
    /// Xiaozhi's call (streamed, full text in every frame) answered with 294 characters of
    /// Chinese in 37 pieces: a voice answer's length, where the short rows' answers are echoes.
    XiaozhiAnswer,
}

impl Turn {
    fn label(self) -> &'static str {
        match self {
            Turn::DashScopeStream => "dashscope stream",
            Turn::DashScopeJson => "dashscope json",
            Turn::OpenAiStream => "openai stream",
            Turn::XiaozhiAnswer => "xiaozhi 294 chars",
        }
    }
}

async fn one(client: &reqwest::Client, server: &Server, turn: Turn, n: usize) {
    let text = match turn {
        Turn::XiaozhiAnswer => format!(
            "turn {n}: [[mock:reply={}]]",
            "今天天气晴朗，适合出门散步。".repeat(21)
        ),
        _ => format!("turn {n}: what is the weather like today?"),
    };
    let request = match turn {
        Turn::DashScopeStream | Turn::DashScopeJson | Turn::XiaozhiAnswer => {
            let r = client
                .post(format!("{}/api/apps/bench/completion", server.url))
                .bearer_auth(KEY)
                .json(&json!({"input": {"prompt": text, "session_id": format!("s-{}", n % 50)}}));
            if matches!(turn, Turn::DashScopeStream | Turn::XiaozhiAnswer) {
                r.header("X-DashScope-SSE", "enable")
            } else {
                r
            }
        }
        Turn::OpenAiStream => client
            .post(format!("{}/v1/chat/completions", server.url))
            .bearer_auth(KEY)
            .json(
                &json!({"stream": true, "thread_id": format!("t-{}", n % 50),
                          "messages": [{"role": "user", "content": text}]}),
            ),
    };
    let response = request.send().await.expect("request");
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().await.expect("body");
}

/// `serve`'s command line, run under callgrind writing to `out_dir`.
fn under_callgrind(serve: Command, out_dir: &Path) -> Command {
    let leading = [
        "--tool=callgrind".into(),
        // Each dump readable on its own by callgrind_annotate.
        "--compress-strings=no".into(),
        format!("--callgrind-out-file={}/callgrind.out", out_dir.display()).into(),
        common::measured_binary(&serve),
    ];
    common::rerun_as(&serve, "valgrind", &leading)
}

/// What a dump counted.
struct Counted {
    total: u64,
    /// In SQLite's full-text index code: only the search indexer's passes run it (a turn's
    /// writes never touch the index; only deleting or editing indexed rows would).
    full_text_index: u64,
}

/// The newest callgrind dump in `dir`: its instruction total, and how much of it the
/// full-text index work took.
fn newest_dump(dir: &Path) -> Counted {
    let newest = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("callgrind.out"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .expect("a callgrind dump");
    let text = std::fs::read_to_string(newest.path()).unwrap();
    let total = text
        .lines()
        .find_map(|l| l.strip_prefix("summary: ").or(l.strip_prefix("totals: ")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a summary line");
    Counted {
        total,
        full_text_index: inclusive_cost(&text, |f| {
            f.starts_with("fts5") || f.starts_with("sqlite3Fts5")
        }),
    }
}

/// The instructions spent in the functions `inside` names, callees included: the sum of the
/// costs of the calls into them from functions outside them (names uncompressed,
/// `--compress-strings=no`). In callgrind's format a `calls=` line is followed by the line
/// giving that call's inclusive cost, its second field.
fn inclusive_cost(dump: &str, inside: impl Fn(&str) -> bool) -> u64 {
    let (mut caller, mut callee) = ("", "");
    let mut call_follows = false;
    let mut cost = 0;
    for line in dump.lines() {
        if let Some(f) = line.strip_prefix("fn=") {
            caller = f;
        } else if let Some(f) = line.strip_prefix("cfn=") {
            callee = f;
        } else if line.starts_with("calls=") {
            call_follows = true;
        } else if call_follows {
            call_follows = false;
            if inside(callee) && !inside(caller) {
                cost += line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    cost
}

fn callgrind_control(flag: &str, pid: u32) {
    let status = Command::new("callgrind_control")
        .args([flag, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("callgrind_control");
    assert!(status.success(), "callgrind_control {flag} failed");
}

#[tokio::main]
async fn main() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("valgrind is not installed; nothing measured");
        return;
    }
    let turns: usize = std::env::var("BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    // `BENCH_CALLGRIND_DIR` keeps the dumps (for `callgrind_annotate`).
    let out = std::env::var_os("BENCH_CALLGRIND_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("callgrind"));
    std::fs::create_dir_all(&out).unwrap();
    let serve = Server::command(
        &dir.path().join("data"),
        Some(&mock.base_url),
        &[],
        &[("FAST_AUTH_KEYS", KEY)],
    );
    let server = Server::ready(
        Proc::spawn(under_callgrind(serve, &out)),
        &dir.path().join("data"),
    );
    let pid = server.proc.pid();
    let client = http();

    println!("lang-agent instructions per turn (callgrind), {turns} turns per row, chat route");
    println!(
        "{:<18} {:>14} {:>12} {:>18} {:>22}",
        "turn", "instructions", "per turn", "full-text index", "without it, per turn"
    );
    for turn in [
        Turn::DashScopeStream,
        Turn::DashScopeJson,
        Turn::OpenAiStream,
        Turn::XiaozhiAnswer,
    ] {
        for n in 0..20 {
            one(&client, &server, turn, n).await;
        }
        callgrind_control("-z", pid);
        for n in 0..turns {
            one(&client, &server, turn, n).await;
        }
        callgrind_control("-d", pid);
        let counted = newest_dump(&out);
        let per_turn = |n: u64| n / turns as u64;
        println!(
            "{:<18} {:>14} {:>12} {:>18} {:>22}",
            turn.label(),
            counted.total,
            per_turn(counted.total),
            per_turn(counted.full_text_index),
            per_turn(counted.total - counted.full_text_index)
        );
    }
}

//! `lang-agent eval` against `mock-llm`: a dataset's rows run through the real turn pipeline,
//! graded on route, tools and (by the mock acting as judge) the answer; the run's CSV, the
//! history row per run, bad lines reported by number; and `--from-log` turning a served
//! conversation into a dataset that grades the same.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const CALC: &str = r#"[[mock:route=tool]] [[mock:call=calculator {"expression": "6*7"}]]"#;

/// `lang-agent --base-url <mock> --data-dir <dir>/data eval ARGS…`, run in `dir`.
fn eval(mock: &Mock, dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(bin())
        .args(["--base-url", &mock.base_url])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("eval")
        .args(args)
        .args(["--router-llm-name", "fast"])
        .env("ALI_API_KEY", UPSTREAM_KEY)
        .env_remove("ALI_BASE_URL")
        .current_dir(dir)
        .output()
        .unwrap();
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The rows of a CSV file as header → value maps.
fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The run CSVs in `out`, oldest first.
fn run_csvs(out: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("eval-") && name.ends_with(".csv")
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn eval_writes_graded_rows_and_a_history_row_per_run() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("set.jsonl");
    let lines = [
        serde_json::json!({"inputs": {"text": "Hello there"},
            "outputs": {"answer": "a greeting", "tool_use": []}})
        .to_string(),
        serde_json::json!({"inputs": {"text": format!("What is 6 times 7? {CALC}")},
            "outputs": {"answer": "42", "tool_use": ["calculator"]}})
        .to_string(),
        r#"{"inputs": {"text": "cut off"#.to_string(),
        serde_json::json!({"inputs": {"text": "Tell me a joke [[mock:judge=incorrect]]"},
            "outputs": {"answer": "a joke"}, "route": "chat"})
        .to_string(),
    ];
    std::fs::write(&dataset, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("results");
    let args = [
        "set.jsonl",
        "--out",
        "results",
        "--judge-model",
        "judge-m",
        "--concurrency",
        "2",
    ];

    let first = eval(&mock, dir.path(), &args);
    assert!(first.status.success());
    let stderr = text(&first.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("set.jsonl:3: ")),
        "bad line not reported by number: {stderr}"
    );
    let stdout = text(&first.stdout);
    assert!(
        stdout.contains("answer        3      2     0.667"),
        "{stdout}"
    );

    let csvs = run_csvs(&out);
    assert_eq!(csvs.len(), 1);
    let rows = csv_rows(&csvs[0]);
    let get = |row: usize, column: &str| rows[row][column].clone();
    assert_eq!(rows.len(), 3, "the bad line is not a row");
    assert_eq!(
        rows.iter().map(|r| r["line"].as_str()).collect::<Vec<_>>(),
        ["1", "2", "4"]
    );
    // The chat row.
    assert_eq!(get(0, "expected_route"), "chat");
    assert_eq!(get(0, "route"), "chat");
    assert_eq!(get(0, "route_ok"), "true");
    assert_eq!(get(0, "tools"), "");
    assert_eq!(get(0, "tools_ok"), "true");
    assert!(get(0, "answer").starts_with("You said: Hello there"));
    assert_eq!(get(0, "verdict"), "correct");
    assert_eq!(get(0, "reason"), "mock judge");
    // The calculator row: routed to tools, the calculator called, its result in the answer.
    assert_eq!(get(1, "route"), "tool");
    assert_eq!(get(1, "route_ok"), "true");
    assert_eq!(get(1, "expected_tools"), "calculator");
    assert_eq!(get(1, "tools"), "calculator");
    assert_eq!(get(1, "tools_ok"), "true");
    assert_eq!(get(1, "answer"), "Tool said: 42.");
    assert_eq!(get(1, "verdict"), "correct");
    // The row the judge finds wrong; it has no tool_use, so tools are not graded.
    assert_eq!(get(2, "route_ok"), "true");
    assert_eq!(get(2, "tools_ok"), "");
    assert_eq!(get(2, "verdict"), "incorrect");
    assert_eq!(get(2, "reason"), "mock judge");
    assert!(get(2, "latency_ms").parse::<u64>().is_ok());

    // The judge was the judge model, asked with the judge prompt.
    let judged: Vec<serde_json::Value> = mock
        .requests()
        .await
        .into_iter()
        .filter(|r| r["model"] == "judge-m")
        .collect();
    assert_eq!(judged.len(), 3);
    let system = judged[0]["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You grade the answers of a voice assistant"));

    // Each run's conversations are in a store of its own.
    let run_db = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sqlite3"))
        .expect("the run's store");
    let tool_rows: i64 = rusqlite::Connection::open(&run_db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM messages
             WHERE conversation_id = 'eval-line-2' AND tool_name = 'calculator'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tool_rows, 1);

    let history = out.join("history.csv");
    let runs = csv_rows(&history);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["dataset"], "set.jsonl");
    assert_eq!(runs[0]["rows"], "3");
    assert_eq!(runs[0]["errors"], "1");
    assert_eq!(runs[0]["route_accuracy"], "1.000");
    assert_eq!(runs[0]["tool_accuracy"], "1.000");
    assert_eq!(runs[0]["answer_accuracy"], "0.667");
    assert_eq!(runs[0]["judge_model"], "judge-m");
    assert_eq!(runs[0]["chat_model"], "qwen-plus");

    let second = eval(&mock, dir.path(), &args);
    assert!(second.status.success());
    assert_eq!(run_csvs(&out).len(), 2, "each run writes its own CSV");
    let history_text = std::fs::read_to_string(&history).unwrap();
    assert_eq!(
        history_text
            .lines()
            .filter(|l| l.starts_with("timestamp,"))
            .count(),
        1,
        "one header: {history_text}"
    );
    assert_eq!(csv_rows(&history).len(), 2);
}

#[test]
fn eval_fails_only_when_nothing_can_run() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();

    let missing = eval(&mock, dir.path(), &["nope.jsonl", "--out", "r"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("cannot read the dataset nope.jsonl"));

    std::fs::write(
        dir.path().join("failing.jsonl"),
        r#"{"inputs":{"text":"boom [[mock:status=500]]"},"outputs":{"answer":"x"}}"#,
    )
    .unwrap();
    let failing = eval(
        &mock,
        dir.path(),
        &["failing.jsonl", "--out", "r", "--llm-attempts", "1"],
    );
    assert!(!failing.status.success());
    assert!(text(&failing.stderr).contains("no row ran"));
    // The failed run is still on record.
    let rows = csv_rows(&run_csvs(&dir.path().join("r"))[0]);
    assert_eq!(rows[0]["verdict"], "error");
    assert!(rows[0]["reason"].contains("500"), "{:?}", rows[0]);
    assert_eq!(csv_rows(&dir.path().join("r/history.csv")).len(), 1);
}

#[tokio::test]
async fn from_log_turns_served_conversations_into_a_dataset() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let server = Server::start(&data, &mock.base_url, &["--router-llm-name", "fast"]);
        for question in ["Good morning".to_string(), format!("6 times 7? {CALC}")] {
            let response = openai_call(
                &server,
                serde_json::json!({"model": "qwen-plus", "thread_id": "kitchen",
                    "messages": [{"role": "user", "content": question}]}),
            )
            .await;
            assert_eq!(response.status(), 200);
        }
    }
    let today = chrono::Utc::now().date_naive();
    let day = today.format("%Y-%m-%d").to_string();
    let made = eval(
        &mock,
        dir.path(),
        &[
            "--from-log",
            "--since",
            &day,
            "--until",
            &day,
            "--out",
            "made.jsonl",
        ],
    );
    assert!(made.status.success());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("made.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["inputs"]["text"], "Good morning");
    assert_eq!(lines[0]["route"], "chat");
    assert_eq!(lines[0]["outputs"]["tool_use"], serde_json::json!([]));
    assert!(
        lines[0]["outputs"]["answer"]
            .as_str()
            .unwrap()
            .starts_with("You said: Good morning")
    );
    assert_eq!(lines[1]["route"], "tool");
    assert_eq!(
        lines[1]["outputs"]["tool_use"],
        serde_json::json!(["calculator"])
    );
    assert_eq!(lines[1]["outputs"]["answer"], "Tool said: 42.");

    // Days outside the range give nothing.
    let yesterday = today.pred_opt().unwrap().format("%Y-%m-%d").to_string();
    let none = eval(
        &mock,
        dir.path(),
        &["--from-log", "--until", &yesterday, "--out", "none.jsonl"],
    );
    assert!(none.status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("none.jsonl")).unwrap(),
        ""
    );

    // The dataset grades the box as it answered.
    let graded = eval(&mock, dir.path(), &["made.jsonl", "--out", "r"]);
    assert!(graded.status.success());
    let rows = csv_rows(&run_csvs(&dir.path().join("r"))[0]);
    for row in &rows {
        assert_eq!(row["route_ok"], "true", "{row:?}");
        assert_eq!(row["tools_ok"], "true", "{row:?}");
        assert_eq!(row["verdict"], "correct", "{row:?}");
    }
}

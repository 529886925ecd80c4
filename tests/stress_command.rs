//! `lang-agent stress` against a real `serve` (over the scripted upstream): the table has a
//! row per level with every request answered, the JSON and the SVG chart are written, each
//! request ran on its own conversation, the local server's memory is measured, and a wrong key
//! makes every row fail and the command exit non-zero.

mod common;

use std::path::Path;
use std::process::Command;

use common::{KEY, Mock, Server, bin};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn stress(server: &Server, args: &[&str]) -> Run {
    let output = Command::new(bin())
        .args([
            "stress",
            "--url",
            &server.url,
            "--concurrency",
            "1,4",
            "--requests",
            "4,8",
        ])
        .args(args)
        .output()
        .expect("run lang-agent stress");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The table's data rows, cells trimmed, by their first cell (the concurrency).
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with('|') && !l.contains("Concurrency") && !l.contains("--"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// Concurrency, requests and success % of every row; each row's RSS must be a figure.
fn check_rows(run: &Run) -> Vec<(String, String, String)> {
    let rows = rows(&run.stdout);
    for row in &rows {
        assert_eq!(row.len(), 10, "{}", run.stdout);
        let rss: f64 = row[9]
            .parse()
            .unwrap_or_else(|_| panic!("RSS not measured:\n{}", run.stdout));
        assert!(rss > 1.0, "{}", run.stdout);
    }
    rows.into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect()
}

fn level(concurrency: &str, requests: &str, success: &str) -> (String, String, String) {
    (concurrency.into(), requests.into(), success.into())
}

fn count(server: &Server, sql: &str) -> i64 {
    server.db().query_row(sql, [], |row| row.get(0)).unwrap()
}

#[test]
fn stress_fills_the_table_writes_json_and_chart_and_fails_on_a_wrong_key() {
    let mock = Mock::start(20, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let json_file = dir.path().join("stress.json");
    let chart_file = dir.path().join("stress.svg");
    let path = |p: &Path| p.to_str().unwrap().to_string();

    let streamed = stress(
        &server,
        &[
            "--api",
            "dashscope",
            "--key",
            KEY,
            "--stream",
            "--json",
            &path(&json_file),
            "--chart",
            &path(&chart_file),
        ],
    );
    assert_eq!(
        streamed.code,
        Some(0),
        "{}{}",
        streamed.stdout,
        streamed.stderr
    );
    assert_eq!(
        check_rows(&streamed),
        [level("1", "4", "100.0"), level("4", "8", "100.0")]
    );
    // Every request was its own conversation, answered to the end.
    let stress_threads =
        "SELECT COUNT(*) FROM conversations WHERE conversation_id LIKE '%stress-%'";
    assert_eq!(count(&server, stress_threads), 12);
    assert_eq!(
        count(&server, "SELECT COUNT(*) FROM turns WHERE status = 'done'"),
        12
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    assert_eq!(report["api"], "dashscope");
    assert_eq!(report["stream"], true);
    let levels = report["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for (figures, (concurrency, requests)) in levels.iter().zip([(1, 4), (4, 8)]) {
        assert_eq!(figures["concurrency"], concurrency);
        assert_eq!(figures["requests"], requests);
        assert_eq!(figures["succeeded"], requests);
        assert_eq!(figures["failed"], 0);
        assert_eq!(figures["success_rate"], 1.0);
        for figure in [
            "throughput_rps",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "ttfb_avg_ms",
            "rss_mib",
        ] {
            assert!(
                figures[figure].as_f64().unwrap() > 0.0,
                "{figure}: {figures}"
            );
        }
    }

    let svg = std::fs::read_to_string(&chart_file).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for text in [
        "Concurrency",
        "Latency (ms)",
        "p50",
        "p95",
        "p99",
        "<polyline",
    ] {
        assert!(svg.contains(text), "{text} missing from the chart");
    }

    let whole = stress(&server, &["--api", "openai", "--key", KEY]);
    assert_eq!(whole.code, Some(0), "{}{}", whole.stdout, whole.stderr);
    assert_eq!(
        check_rows(&whole),
        [level("1", "4", "100.0"), level("4", "8", "100.0")]
    );
    assert_eq!(count(&server, stress_threads), 24);

    // Last: wrong keys may get this client refused for a while.
    let refused = stress(
        &server,
        &["--api", "dashscope", "--key", "wrong-key", "--stream"],
    );
    assert_eq!(
        refused.code,
        Some(1),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    assert_eq!(
        check_rows(&refused),
        [level("1", "4", "0.0"), level("4", "8", "0.0")]
    );
    assert!(refused.stderr.contains("HTTP 401"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("12 of 12 requests failed"),
        "{}",
        refused.stderr
    );
}

#[test]
fn unpaired_levels_are_refused_before_any_request() {
    let output = Command::new(bin())
        .args([
            "stress",
            "--url",
            "http://127.0.0.1:9",
            "--concurrency",
            "1,2,3",
        ])
        .args(["--requests", "1,2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("3 levels but --requests has 2"), "{stderr}");
}

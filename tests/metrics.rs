//! `GET /metrics` through the real binary: protected by the API key unless `--metrics-open`,
//! valid OpenMetrics text (checked line by line by a strict parser below), and its counters,
//! histograms and gauges move with turns through both APIs and a tool turn.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::export::{TestDb, eventually, pg_rows};
use common::*;
use serde_json::json;

const CALC: &str = r#"[[mock:call=calculator {"expression": "37 * 49"}]]"#;

/// One sample's name and labels (sorted), the key of a parsed exposition.
type SampleKey = (String, BTreeMap<String, String>);

/// A scrape, parsed: every sample's value.
struct Scrape(BTreeMap<SampleKey, f64>);

impl Scrape {
    /// The value of the sample `name` with exactly `labels`; 0 when absent (a labelled
    /// counter appears only once it has counted).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .get(&(name.to_string(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    fn has(&self, name: &str) -> bool {
        self.0.keys().any(|(n, _)| n == name)
    }
}

/// Parses OpenMetrics text strictly: `# HELP`, `# TYPE` and `# UNIT` lines, samples of declared
/// families only (with the suffixes their type allows), label syntax with escapes, float
/// values, and `# EOF` as the last line. Panics naming the first bad line.
fn parse(text: &str) -> Scrape {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "the exposition ends with # EOF"
    );
    assert!(text.ends_with('\n'));
    for &line in &lines[..lines.len() - 1] {
        let bad = || -> ! { not_openmetrics(line) };
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let rest = parts.next().unwrap_or("");
            if !is_metric_name(name) {
                bad();
            }
            match kind {
                "TYPE" => {
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ];
                    if !known.contains(&rest) || families.contains_key(name) {
                        bad();
                    }
                    families.insert(name.to_string(), rest.to_string());
                }
                "HELP" | "UNIT" => {}
                _ => bad(),
            }
            continue;
        }
        let (name, labels, rest) = match line.find(['{', ' ']) {
            Some(at) if line.as_bytes()[at] == b'{' => {
                let (labels, end) = parse_labels(&line[at + 1..]).unwrap_or_else(|| bad());
                (&line[..at], labels, &line[at + 1 + end..])
            }
            Some(at) => (&line[..at], BTreeMap::new(), &line[at..]),
            None => bad(),
        };
        if !is_metric_name(name) {
            bad();
        }
        let mut fields = rest.strip_prefix(' ').unwrap_or_else(|| bad()).split(' ');
        let value = fields.next().and_then(parse_float).unwrap_or_else(|| bad());
        // An optional timestamp, then nothing.
        if let Some(timestamp) = fields.next()
            && parse_float(timestamp).is_none()
        {
            bad();
        }
        if fields.next().is_some() {
            bad();
        }
        let declared = families.iter().any(|(family, kind)| {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_count", "_sum", "_created"],
                "info" => &["_info"],
                "gauge" | "stateset" | "unknown" => &[""],
                _ => &["", "_count", "_sum", "_created"],
            };
            suffixes
                .iter()
                .any(|suffix| name == format!("{family}{suffix}"))
        });
        if !declared {
            panic!("sample of an undeclared family: {line:?}");
        }
        if samples.insert((name.to_string(), labels), value).is_some() {
            panic!("a sample twice: {line:?}");
        }
    }
    Scrape(samples)
}

fn not_openmetrics(line: &str) -> ! {
    panic!("not OpenMetrics text: {line:?}")
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `a="x",b="y\"z"}` → the labels and the index just past the `}`.
fn parse_labels(text: &str) -> Option<(BTreeMap<String, String>, usize)> {
    let mut labels = BTreeMap::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    if bytes.first() == Some(&b'}') {
        return Some((labels, 1));
    }
    loop {
        let eq = at + text[at..].find('=')?;
        let name = &text[at..eq];
        if !is_label_name(name) || bytes.get(eq + 1) != Some(&b'"') {
            return None;
        }
        let mut value = String::new();
        let mut i = eq + 2;
        loop {
            match *bytes.get(i)? {
                b'"' => break,
                b'\\' => {
                    value.push(match *bytes.get(i + 1)? {
                        b'\\' => '\\',
                        b'"' => '"',
                        b'n' => '\n',
                        _ => return None,
                    });
                    i += 2;
                }
                _ => {
                    let c = text[i..].chars().next()?;
                    value.push(c);
                    i += c.len_utf8();
                }
            }
        }
        if labels.insert(name.to_string(), value).is_some() {
            return None;
        }
        match *bytes.get(i + 1)? {
            b',' => at = i + 2,
            b'}' => return Some((labels, i + 2)),
            _ => return None,
        }
    }
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if text.starts_with(['+', '-', '.'])
            || text.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// A scrape with the test key; checks the status and the declared content type.
async fn scrape(server: &Server) -> Scrape {
    let response = http()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    parse(&response.text().await.unwrap())
}

#[test]
fn the_parser_refuses_what_is_not_openmetrics() {
    let good = "# HELP a_total A.\n# TYPE a counter\na_total{x=\"1\\\"2\",y=\"\"} 3.5\n# EOF\n";
    assert_eq!(
        parse(good).value("a_total", &[("x", "1\"2"), ("y", "")]),
        3.5
    );
    for bad in [
        "# TYPE a counter\na_total 1\n",                   // no EOF
        "a_total 1\n# EOF\n",                              // no TYPE
        "# TYPE a counter\na 1\n# EOF\n",                  // a counter's sample needs _total
        "# TYPE a counter\na_total{x=1} 1\n# EOF\n",       // unquoted label value
        "# TYPE a counter\na_total{x=\"1\"} one\n# EOF\n", // not a number
        "# TYPE a gauge\na 1\na 2\n# EOF\n",               // a sample twice
    ] {
        let refused = std::panic::catch_unwind(|| parse(bad)).is_err();
        assert!(refused, "accepted {bad:?}");
    }
}

#[tokio::test]
async fn metrics_need_the_api_key_unless_open() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    for key in [None, Some("wrong-key")] {
        let mut request = http().get(format!("{}/metrics", server.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "key {key:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        // OpenAI's error shape, which a Prometheus server shows as it is.
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(body["error"]["type"].is_string(), "{body}");
    }
    // A path no route matches counts as `unmatched`, never as itself.
    let response = http()
        .get(format!("{}/no/such/path-7f3a", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let with_key = scrape(&server).await;
    assert!(with_key.has("lang_agent_active_turns"));
    assert_eq!(
        with_key.value(
            "lang_agent_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert!(
        !with_key
            .0
            .keys()
            .any(|(_, labels)| labels.values().any(|v| v.contains("path-7f3a")))
    );
    // The two refusals were counted under the route's template.
    assert_eq!(
        with_key.value(
            "lang_agent_http_requests_total",
            &[("route", "/metrics"), ("status", "401")]
        ),
        2.0
    );

    let open_dir = tempfile::tempdir().unwrap();
    let open = Server::start(
        &open_dir.path().join("data"),
        &mock.base_url,
        &["--metrics-open"],
    );
    let response = http()
        .get(format!("{}/metrics", open.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let scraped = parse(&response.text().await.unwrap());
    assert!(scraped.value("lang_agent_store_size_bytes", &[]) > 0.0);
    // The API itself still needs the key.
    let response = http()
        .post(format!("{}/v1/chat/completions", open.url))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn counters_move_with_turns_through_both_apis_and_a_tool() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let before = scrape(&server).await;
    let turns = |s: &Scrape, route: &str| {
        s.value(
            "lang_agent_turn_duration_seconds_count",
            &[("route_taken", route), ("status", "done")],
        )
    };
    assert_eq!(turns(&before, "chat"), 0.0);
    assert_eq!(before.value("lang_agent_active_turns", &[]), 0.0);

    // One chat turn through DashScope (streamed), one through OpenAI (collected).
    let sse = dashscope_stream(&server, Some("metrics-1"), "hello").await;
    assert!(final_text(&sse).starts_with("You said: hello."), "{sse}");
    let response = openai_call(
        &server,
        json!({"model": "qwen-plus", "messages": [{"role": "user", "content": "hi there"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let after_chat = scrape(&server).await;
    assert_eq!(turns(&after_chat, "chat"), 2.0);
    assert_eq!(turns(&after_chat, "tool"), 0.0);
    assert_eq!(
        after_chat.value("lang_agent_turn_ttft_seconds_count", &[]),
        2.0
    );
    let requests = |s: &Scrape, route: &str| {
        s.value(
            "lang_agent_http_requests_total",
            &[("route", route), ("status", "200")],
        )
    };
    assert_eq!(requests(&after_chat, "/api/apps/{app_id}/completion"), 1.0);
    assert_eq!(requests(&after_chat, "/v1/chat/completions"), 1.0);
    // The scrape before was counted (each one is counted once its answer is made).
    assert_eq!(requests(&after_chat, "/metrics"), 1.0);
    let upstream = |s: &Scrape, role: &str| {
        s.value(
            "lang_agent_upstream_duration_seconds_count",
            &[("role", role)],
        )
    };
    assert_eq!(upstream(&after_chat, "chat"), 2.0);
    assert_eq!(upstream(&after_chat, "router"), 2.0);
    assert!(upstream(&after_chat, "chat") > upstream(&before, "chat"));
    let routed = |s: &Scrape, decision: &str| {
        s.value(
            "lang_agent_router_decisions_total",
            &[("decision", decision), ("reason", "router")],
        )
    };
    assert_eq!(routed(&after_chat, "chat"), 2.0);
    assert_eq!(after_chat.value("lang_agent_active_turns", &[]), 0.0);
    assert_eq!(after_chat.value("lang_agent_active_streams", &[]), 0.0);
    assert_eq!(
        after_chat.value("lang_agent_interrupted_turns_total", &[]),
        0.0
    );
    assert!(after_chat.value("lang_agent_store_size_bytes", &[]) > 0.0);
    // Two turns' writes are in the WAL, far from the first checkpoint.
    let wal_pages = after_chat.value("lang_agent_store_wal_pages", &[]);
    assert!(wal_pages > 0.0 && wal_pages < 1000.0, "{wal_pages}");
    // Each turn wrote twice (as it opened and as it closed; the search indexer may have
    // written since), and every write is timed in each of its phases.
    let writes = |phase: &str| {
        let labels = [("phase", phase)];
        (
            after_chat.value("lang_agent_store_write_duration_seconds_count", &labels),
            after_chat.value("lang_agent_store_write_duration_seconds_sum", &labels),
        )
    };
    let (committed, _) = writes("commit");
    assert!(committed >= 4.0, "{committed} writes");
    for phase in ["queued", "statements", "commit", "reply"] {
        let (count, seconds) = writes(phase);
        assert_eq!(count, committed, "{phase}");
        assert!(seconds > 0.0, "{phase}");
    }

    // A tool turn: the router sends it to the tool branch, which calls the calculator.
    let turn = format!("what is 37 times 49 [[mock:route=tool]] {CALC}");
    let sse = dashscope_stream(&server, Some("metrics-2"), &turn).await;
    assert_eq!(final_text(&sse), "Tool said: 1813.");
    let after_tool = scrape(&server).await;
    assert_eq!(turns(&after_tool, "tool"), 1.0);
    assert_eq!(turns(&after_tool, "chat"), 2.0);
    assert_eq!(routed(&after_tool, "tool"), 1.0);
    assert_eq!(
        after_tool.value(
            "lang_agent_tool_calls_total",
            &[("tool", "calculator"), ("outcome", "ok")]
        ),
        1.0
    );
    // The tool model called the tool, then answered with its result.
    assert_eq!(upstream(&after_tool, "tools"), 2.0);
    assert_eq!(requests(&after_tool, "/api/apps/{app_id}/completion"), 2.0);
    assert_eq!(after_tool.value("lang_agent_active_turns", &[]), 0.0);
}

#[tokio::test]
async fn the_export_lag_counts_the_messages_the_follower_has_yet_to_copy() {
    let db = TestDb::create().await;
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A conversation stored before the follower runs...
    let mut first = Server::start(&data, &mock.base_url, &[]);
    assert!(!scrape(&first).await.has("lang_agent_export_lag_rows"));
    dashscope_stream(&first, Some("lag-1"), "before").await;
    first.proc.kill();
    // ...is copied on its first look; the next look is an hour away.
    let server = Server::start(
        &data,
        &mock.base_url,
        &["--export-to", &db.url, "--export-interval-secs", "3600"],
    );
    let client = db.client().await;
    eventually(
        Duration::from_secs(15),
        "the first turn in PostgreSQL",
        || {
            let client = &client;
            async move {
                let table: Option<String> = client
                    .query_one("SELECT to_regclass('messages')::text", &[])
                    .await
                    .unwrap()
                    .get(0);
                table.is_some() && pg_rows(client, "").await.len() == 2
            }
        },
    )
    .await;
    // Counted from the follower's position, which it reports once the batch has committed.
    let lag = |s: &Scrape| s.value("lang_agent_export_lag_rows", &[]);
    eventually(Duration::from_secs(15), "no export lag", || async {
        lag(&scrape(&server).await) == 0.0
    })
    .await;

    dashscope_stream(&server, Some("lag-1"), "after").await;
    assert_eq!(lag(&scrape(&server).await), 2.0);
}

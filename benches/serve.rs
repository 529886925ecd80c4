//! API overhead benchmark: what lang-agent adds on top of the upstream model.
//!
//! The fake upstream answers every call after 500 ms. The same load (DashScope calls, each on
//! its own session, as many Xiaozhi devices would make) is sent first straight to the fake's
//! OpenAI API, then through lang-agent, at concurrency 1, 20 and 200, streaming and not.
//! Printed per row: latency p50/p99, overhead (latency − 500 ms) p50/p99, time to first byte
//! p50, throughput, and the server's resident memory. Figures only; nothing is asserted.
//!
//! Each client makes one unmeasured warm-up call first (its connection), so the figures are
//! the steady state.
//!
//! `cargo bench --bench serve` (set `BENCH_REQUESTS_PER_CLIENT` to change the run length).

mod common;

use std::time::{Duration, Instant};

use common::{KEY, Mock, Server, cpu_ms, http, ms, percentile, rss_kib};
use futures::StreamExt;
use serde_json::json;

const UPSTREAM_DELAY: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq)]
enum Target {
    MockDirect,
    LangAgent,
}

struct Sample {
    total: Duration,
    first_byte: Duration,
}

async fn one_call(
    client: &reqwest::Client,
    url: &str,
    target: Target,
    stream: bool,
    n: usize,
) -> Sample {
    let text = format!("bench turn {n}, what is the weather like today?");
    let started = Instant::now();
    let request = match target {
        Target::MockDirect => client.post(format!("{url}/chat/completions")).json(&json!({
            "model": "m", "stream": stream,
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": text}],
        })),
        Target::LangAgent => {
            let mut r = client
                .post(format!("{url}/api/apps/bench/completion"))
                .bearer_auth(KEY)
                .json(
                    &json!({"input": {"messages": [{"role": "user", "content": text}],
                                        "session_id": format!("bench-{n}")}, "parameters": {}}),
                );
            if stream {
                r = r.header("X-DashScope-SSE", "enable");
            }
            r
        }
    };
    let response = request.send().await.expect("request");
    assert!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let mut body = response.bytes_stream();
    let mut first_byte = None;
    while let Some(chunk) = body.next().await {
        chunk.expect("body");
        first_byte.get_or_insert_with(|| started.elapsed());
    }
    Sample {
        total: started.elapsed(),
        first_byte: first_byte.unwrap_or_else(|| started.elapsed()),
    }
}

async fn run_level(
    url: &str,
    target: Target,
    stream: bool,
    concurrency: usize,
    per_client: usize,
) -> (Vec<Sample>, Duration) {
    let client = http();
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            // One unmeasured call opens this client's connection: the figures are the
            // steady state, not a burst of 200 TCP handshakes at once.
            one_call(&client, &url, target, stream, c * 1_000_000 + 999_999).await;
            let mut samples = Vec::new();
            for i in 0..per_client {
                let n = c * 1_000_000 + i + if stream { 500_000 } else { 0 };
                samples.push(one_call(&client, &url, target, stream, n).await);
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, started.elapsed())
}

#[tokio::main]
async fn main() {
    let per_client: usize = std::env::var("BENCH_REQUESTS_PER_CLIENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mock = Mock::start(UPSTREAM_DELAY.as_millis() as u64, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--llm-read-timeout-secs", "30"],
    );
    let pid = server.proc.pid();

    println!(
        "lang-agent API overhead; upstream answers after {} ms; {per_client} calls per client",
        UPSTREAM_DELAY.as_millis()
    );
    println!(
        "{:<10} {:<7} {:>5} {:>6} | {:>8} {:>8} | {:>9} {:>9} | {:>8} | {:>7} | {:>8}",
        "target",
        "mode",
        "conc",
        "calls",
        "p50 ms",
        "p99 ms",
        "ovh p50",
        "ovh p99",
        "ttfb p50",
        "req/s",
        "RSS MiB"
    );
    for concurrency in [1usize, 20, 200] {
        for stream in [false, true] {
            for target in [Target::MockDirect, Target::LangAgent] {
                let url = match target {
                    Target::MockDirect => mock.base_url.clone(),
                    Target::LangAgent => server.url.clone(),
                };
                let target_pid = if target == Target::LangAgent {
                    pid
                } else {
                    mock.proc.pid()
                };
                let cpu_before = cpu_ms(target_pid);
                let (samples, wall) =
                    run_level(&url, target, stream, concurrency, per_client).await;
                // Warm-up calls included: one per client.
                let cpu_per_call =
                    (cpu_ms(target_pid) - cpu_before) / (samples.len() + concurrency) as f64;
                let mut totals: Vec<_> = samples.iter().map(|s| s.total).collect();
                let mut firsts: Vec<_> = samples.iter().map(|s| s.first_byte).collect();
                let mut overhead: Vec<_> = totals
                    .iter()
                    .map(|t| t.saturating_sub(UPSTREAM_DELAY))
                    .collect();
                totals.sort();
                firsts.sort();
                overhead.sort();
                let rss = if target == Target::LangAgent {
                    format!("{:.1}", rss_kib(pid, "VmRSS:") as f64 / 1024.0)
                } else {
                    "-".into()
                };
                println!(
                    "{:<10} {:<7} {:>5} {:>6} | {:>8.1} {:>8.1} | {:>9.2} {:>9.2} | {:>8.1} | {:>7.1} | {:>8} | {:>9.3}",
                    if target == Target::LangAgent {
                        "lang-agent"
                    } else {
                        "mock"
                    },
                    if stream { "stream" } else { "json" },
                    concurrency,
                    samples.len(),
                    ms(percentile(&totals, 0.5)),
                    ms(percentile(&totals, 0.99)),
                    ms(percentile(&overhead, 0.5)),
                    ms(percentile(&overhead, 0.99)),
                    ms(percentile(&firsts, 0.5)),
                    samples.len() as f64 / wall.as_secs_f64(),
                    rss,
                    cpu_per_call,
                );
            }
        }
    }
    println!(
        "server peak RSS (VmHWM): {:.1} MiB",
        rss_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    println!(
        "overhead = latency - 500 ms; compare the lang-agent rows with the mock rows at the same concurrency."
    );
}

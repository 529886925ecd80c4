//! API overhead benchmark: what lang-agent adds on top of the upstream model.
//!
//! The fake upstream answers every call after 500 ms. The same load (DashScope calls, each on
//! its own session, as many Xiaozhi devices would make) is sent first straight to the fake's
//! OpenAI API, then through lang-agent, at concurrency 1, 20 and 200, streaming and not, and
//! 1,000 streaming. Printed per level: the direct call's latency p50/p99, lang-agent's, the
//! box's overhead (lang-agent's p50/p99 minus the direct call's, measured in the same run), time
//! to first byte p50, throughput, CPU time per turn (the box's process; the router and chat
//! calls and the log write included), the fake upstream's CPU time for the same turns (what
//! answering their router and chat calls costs a plain HTTP server: a yardstick for the box,
//! which serves one call and makes those two) and the server's resident memory; at the end, its peak
//! and what it holds once idle. First, the time from start to ready. Figures only; nothing is
//! asserted.
//!
//! The same load also goes through a bare proxy (`serve/bare_proxy.rs`): the same call and the
//! same two upstream calls on the box's HTTP server, client and runtime, with none of its work
//! (memory, log writes, bounds). Its overhead, CPU per turn and memory are the floor those
//! crates set on this machine, measured in the same run, beside which the box's figures and
//! the targets can be read.
//!
//! Where the box's own time goes: after the table, each level's writes to the log, read from
//! the box's `/metrics` (`lang_agent_store_write_duration_seconds`) before and after the level:
//! writes per turn, and the mean time of each phase of a write (queued for the writer thread,
//! its statements, the rest of its batch and the commit, the reply back to the async worker).
//! A turn waits for both of its writes.
//!
//! Each client makes one unmeasured warm-up call first (its connection), so the figures are
//! the steady state.
//!
//! A lone client makes twenty times the calls of the others, so the p99 of concurrency 1 is
//! read from 100 calls.
//!
//! `cargo bench --bench serve` (set `BENCH_REQUESTS_PER_CLIENT` to change the run length;
//! `LANG_AGENT_BIN=path` measures another build of the server, e.g. the one before a change).

#[path = "serve/bare_proxy.rs"]
mod bare_proxy;
mod common;

use std::time::{Duration, Instant};

use common::{CpuReading, KEY, Mock, Proc, Server, http, ms, percentile, raise_fd_limit, rss_kib};
use futures::StreamExt;
use lang_agent::metrics::STORE_WRITE_PHASES;
use serde_json::json;

const UPSTREAM_DELAY: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq)]
enum Target {
    MockDirect,
    /// The stack's floor (`bare_proxy`): the same DashScope call, the same two upstream calls.
    BareProxy,
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
        Target::BareProxy | Target::LangAgent => {
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

/// One level's figures for one target.
struct Level {
    p50: Duration,
    p99: Duration,
    ttfb_p50: Duration,
    per_sec: f64,
    cpu_ms_per_call: f64,
    /// What the turns cost the fake upstream, when it is watched (their router and chat calls):
    /// a yardstick for the box's own cost, which serves one call and makes those two.
    upstream_cpu_ms_per_call: Option<f64>,
}

async fn measure(
    url: &str,
    pid: u32,
    upstream_pid: Option<u32>,
    target: Target,
    stream: bool,
    concurrency: usize,
    per_client: usize,
) -> Level {
    let cpu_before = CpuReading::now(pid);
    let upstream_before = upstream_pid.map(|p| (p, CpuReading::now(p)));
    let (samples, wall) = run_level(url, target, stream, concurrency, per_client).await;
    // Warm-up calls included: one per client.
    let calls = (samples.len() + concurrency) as f64;
    let cpu_ms_per_call = CpuReading::now(pid).ms_since(&cpu_before) / calls;
    let upstream_cpu_ms_per_call =
        upstream_before.map(|(p, before)| CpuReading::now(p).ms_since(&before) / calls);
    let mut totals: Vec<_> = samples.iter().map(|s| s.total).collect();
    let mut firsts: Vec<_> = samples.iter().map(|s| s.first_byte).collect();
    totals.sort();
    firsts.sort();
    Level {
        p50: percentile(&totals, 0.5),
        p99: percentile(&totals, 0.99),
        ttfb_p50: percentile(&firsts, 0.5),
        per_sec: samples.len() as f64 / wall.as_secs_f64(),
        cpu_ms_per_call,
        upstream_cpu_ms_per_call,
    }
}

/// The box's store writes so far, per phase: how many, and their seconds together.
#[derive(Clone, Copy, Default)]
struct WriteTotals([(f64, f64); 4]);

impl WriteTotals {
    /// Read from the box's `/metrics`; a build without the family reads as none.
    async fn read(client: &reqwest::Client, url: &str) -> WriteTotals {
        let text = client
            .get(format!("{url}/metrics"))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        let value = |series: &str, phase: &str| {
            let prefix =
                format!("lang_agent_store_write_duration_seconds_{series}{{phase=\"{phase}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        WriteTotals(STORE_WRITE_PHASES.map(|phase| (value("count", phase), value("sum", phase))))
    }

    /// The writes since `earlier`, and each phase's mean over them in microseconds.
    fn since(&self, earlier: &WriteTotals) -> (f64, [f64; 4]) {
        let writes = self.0[0].0 - earlier.0[0].0;
        let mean = |i: usize| (self.0[i].1 - earlier.0[i].1) / writes * 1e6;
        (writes, [mean(0), mean(1), mean(2), mean(3)])
    }
}

/// `serve` on `data` against `upstream`, as the binary this run measures (`LANG_AGENT_BIN`).
fn measured_serve(data: &std::path::Path, upstream: &str, extra: &[&str]) -> std::process::Command {
    let command = Server::command(data, Some(upstream), extra, &[("FAST_AUTH_KEYS", KEY)]);
    common::rerun_as(&command, common::measured_binary(&command), &[])
}

/// Start to ready: from spawning `serve` to its ready line (the API and viewer ports bound,
/// the store open), read straight from its stderr. The median of `runs` starts on a new data
/// directory (the database made and migrated) and on the one those left.
fn start_to_ready(upstream: &str, runs: usize) -> (Duration, Duration) {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut fresh = Vec::new();
    let mut existing = Vec::new();
    for run in 0..runs {
        let data = dir.path().join(format!("data-{run}"));
        for times in [&mut fresh, &mut existing] {
            let mut command = measured_serve(&data, upstream, &[]);
            command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            let started = Instant::now();
            let mut child = command.spawn().expect("spawn serve");
            let stderr = BufReader::new(child.stderr.take().unwrap());
            let ready = stderr
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("lang-agent ready"));
            times.push(started.elapsed());
            assert!(ready, "serve stopped before its ready line");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    fresh.sort();
    existing.sort();
    (percentile(&fresh, 0.5), percentile(&existing, 0.5))
}

/// Calls each client makes at a level: a lone client makes twenty times as many, so that its
/// p99 is read from 100 calls (the second slowest), not the slowest of five.
fn calls_per_client(concurrency: usize, per_client: usize) -> usize {
    if concurrency == 1 {
        per_client * 20
    } else {
        per_client
    }
}

#[tokio::main]
async fn main() {
    if let Ok(upstream) = std::env::var(bare_proxy::UPSTREAM_ENV) {
        return bare_proxy::serve(upstream).await;
    }
    raise_fd_limit();
    let per_client: usize = std::env::var("BENCH_REQUESTS_PER_CLIENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mock = Mock::start(UPSTREAM_DELAY.as_millis() as u64, 0);
    let (fresh, existing) = start_to_ready(&mock.base_url, 10);
    println!(
        "start to ready (median of 10): {:.1} ms on a new data directory, {:.1} ms on an existing one",
        ms(fresh),
        ms(existing)
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = measured_serve(&data, &mock.base_url, &["--llm-read-timeout-secs", "30"]);
    let server = Server::ready(Proc::spawn(serve), &data);
    let pid = server.proc.pid();
    // The stack's floor, run from this program in a process of its own.
    let mut bare_command = std::process::Command::new(std::env::current_exe().unwrap());
    bare_command.env(bare_proxy::UPSTREAM_ENV, &mock.base_url);
    let bare = Proc::spawn(bare_command);
    let bare_url = bare
        .wait_for_line(bare_proxy::LISTENING)
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();

    println!(
        "lang-agent API overhead; upstream answers after {} ms; {per_client} calls per client, {} at concurrency 1",
        UPSTREAM_DELAY.as_millis(),
        calls_per_client(1, per_client)
    );
    println!(
        "{:<7} {:>5} | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8} | {:>8} | {:>7} | {:>7} | {:>7} | {:>7} | {:>8} {:>8} {:>7} {:>7}",
        "mode",
        "conc",
        "direct50",
        "direct99",
        "box p50",
        "box p99",
        "ovh p50",
        "ovh p99",
        "ttfb p50",
        "req/s",
        "CPU ms",
        "up CPU",
        "RSS MiB",
        "bare o50",
        "bare o99",
        "bare ms",
        "bare MB"
    );
    let levels = [
        (1usize, false),
        (1, true),
        (20, false),
        (20, true),
        (200, false),
        (200, true),
        (1000, true),
    ];
    let metrics_client = http();
    let mut write_rows = Vec::new();
    for (concurrency, stream) in levels {
        let calls = calls_per_client(concurrency, per_client);
        let direct = measure(
            &mock.base_url,
            mock.proc.pid(),
            None,
            Target::MockDirect,
            stream,
            concurrency,
            calls,
        )
        .await;
        let floor = measure(
            &bare_url,
            bare.pid(),
            None,
            Target::BareProxy,
            stream,
            concurrency,
            calls,
        )
        .await;
        let writes_before = WriteTotals::read(&metrics_client, &server.url).await;
        let boxed = measure(
            &server.url,
            pid,
            Some(mock.proc.pid()),
            Target::LangAgent,
            stream,
            concurrency,
            calls,
        )
        .await;
        let (writes, phases) = WriteTotals::read(&metrics_client, &server.url)
            .await
            .since(&writes_before);
        // Warm-up calls included, as in the CPU column: one per client.
        let turns = (calls + 1) * concurrency;
        let per_turn = writes / turns as f64;
        write_rows.push(format!(
            "{:<7} {:>5} | {:>11.2} | {:>8.0} {:>10.0} {:>8.0} {:>8.0} | {:>8.0}",
            if stream { "stream" } else { "json" },
            concurrency,
            per_turn,
            phases[0],
            phases[1],
            phases[2],
            phases[3],
            per_turn * phases.iter().sum::<f64>(),
        ));
        let overhead = |b: Duration, d: Duration| ms(b) - ms(d);
        println!(
            "{:<7} {:>5} | {:>9.1} {:>9.1} | {:>9.1} {:>9.1} | {:>8.2} {:>8.2} | {:>8.1} | {:>7.1} | {:>7.3} | {:>7.3} | {:>7.1} | {:>8.2} {:>8.2} {:>7.3} {:>7.1}",
            if stream { "stream" } else { "json" },
            concurrency,
            ms(direct.p50),
            ms(direct.p99),
            ms(boxed.p50),
            ms(boxed.p99),
            overhead(boxed.p50, direct.p50),
            overhead(boxed.p99, direct.p99),
            ms(boxed.ttfb_p50),
            boxed.per_sec,
            boxed.cpu_ms_per_call,
            boxed.upstream_cpu_ms_per_call.unwrap_or(f64::NAN),
            rss_kib(pid, "VmRSS:") as f64 / 1024.0,
            overhead(floor.p50, direct.p50),
            overhead(floor.p99, direct.p99),
            floor.cpu_ms_per_call,
            rss_kib(bare.pid(), "VmRSS:") as f64 / 1024.0,
        );
    }
    println!(
        "the box's writes to its log (/metrics: lang_agent_store_write_duration_seconds), mean µs per write"
    );
    println!(
        "{:<7} {:>5} | {:>11} | {:>8} {:>10} {:>8} {:>8} | {:>8}",
        "mode", "conc", "writes/turn", "queued", "statements", "commit", "reply", "µs/turn"
    );
    for row in &write_rows {
        println!("{row}");
    }
    println!(
        "server peak RSS (VmHWM): {:.1} MiB; the bare proxy's: {:.1} MiB",
        rss_kib(pid, "VmHWM:") as f64 / 1024.0,
        rss_kib(bare.pid(), "VmHWM:") as f64 / 1024.0
    );
    common::print_idle_rss(pid, &[Duration::from_secs(15), Duration::from_secs(110)]).await;
    println!(
        "ovh = lang-agent's latency minus the direct call's at the same level, same run (ms); \
         CPU ms = the box's CPU time per turn; up CPU = the fake upstream's, for the turn's \
         router and chat calls (the box serves one call and makes those two); bare = the \
         stack's floor (benches/serve/bare_proxy.rs: the same call and upstream calls on the \
         box's crates, with none of the box's work): its overhead p50/p99, CPU ms per turn, RSS"
    );
}

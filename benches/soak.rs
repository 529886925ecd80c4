//! Soak benchmark (not a CI test): does the box stay up and flat under hours-like load?
//!
//! The fake upstream answers every model call after 500 ms, in chunks 50 ms apart (a reply of
//! about 40 chunks, so a turn takes about 2.5 s). `SOAK_CONVERSATIONS` (default 1,000)
//! conversations, each a loop of streaming DashScope turns on its own session id, as many
//! Xiaozhi devices talking at once, run against `serve` (the release binary, default settings)
//! for `SOAK_SECS` (default 600) seconds. Every turn's stream must end with `finish_reason`
//! `stop` and the whole scripted reply; anything else is an error.
//!
//! Printed every 30 s: elapsed time, turns done, errors, turn time p50/p99, and the server's
//! resident memory (VmRSS) and open descriptors (/proc/<pid>/fd). At the end: errors (target
//! 0), RSS after warm-up against RSS at the end (target: flat) and peak descriptors. Exits
//! non-zero if any turn failed; then the idle server's memory, 15 s and 110 s after the load; the figures themselves are not asserted.
//!
//! `cargo bench --bench soak` (`SOAK_SECS=150 SOAK_CONVERSATIONS=200` for a short run).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{KEY, Mock, Server, final_text, ms, open_fds, percentile, raise_fd_limit, rss_kib};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Mutex;

const UPSTREAM_DELAY_MS: u64 = 500;
const CHUNK_DELAY_MS: u64 = 50;
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// Memory is compared from the first report after this (or half the run, if shorter): with
/// 1,000 conversations the server's allocator and pools settle in about two to three minutes.
const WARM_UP: Duration = Duration::from_secs(120);
/// When the idle server's memory is read after the load.
const IDLE_MARKS: [Duration; 2] = [Duration::from_secs(15), Duration::from_secs(110)];
/// How long a single turn may take before it counts as an error.
const TURN_DEADLINE: Duration = Duration::from_secs(60);
/// Conversations start this far apart, not all in one burst of connects.
const RAMP_STEP: Duration = Duration::from_millis(5);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What every conversation's turns share.
struct Load {
    url: String,
    client: reqwest::Client,
    /// The scripted reply: about 40 chunks of 8 characters.
    reply: String,
    stop: AtomicBool,
    turns: AtomicU64,
    errors: AtomicU64,
    /// Turn times since the last report.
    times: Mutex<Vec<Duration>>,
    /// The first few distinct errors, to print.
    first_errors: Mutex<Vec<String>>,
}

impl Load {
    async fn turn(&self, session: &str, n: u64) -> Result<(), String> {
        let text = format!("turn {n} of {session} [[mock:reply={}]]", self.reply);
        let response = self
            .client
            .post(format!("{}/api/apps/soak/completion", self.url))
            .bearer_auth(KEY)
            .header("X-DashScope-SSE", "enable")
            .json(
                &json!({"input": {"messages": [{"role": "user", "content": text}],
                                    "session_id": session}, "parameters": {}}),
            )
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let mut body = response.bytes_stream();
        let mut sse = Vec::new();
        while let Some(chunk) = body.next().await {
            sse.extend_from_slice(&chunk.map_err(|e| format!("body: {e}"))?);
        }
        let sse = String::from_utf8_lossy(&sse);
        if !status.is_success() {
            return Err(format!("status {status}: {sse}"));
        }
        if !sse.contains(r#""finish_reason":"stop""#) {
            return Err(format!("no stop frame: {}", tail(&sse)));
        }
        if final_text(&sse) != self.reply {
            return Err(format!("wrong answer: {}", tail(&sse)));
        }
        Ok(())
    }

    async fn conversation(self: Arc<Self>, i: usize) {
        let session = format!("soak-{i}");
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let started = Instant::now();
            let result = match tokio::time::timeout(TURN_DEADLINE, self.turn(&session, n)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {TURN_DEADLINE:?}")),
            };
            match result {
                Ok(()) => {
                    self.turns.fetch_add(1, Ordering::Relaxed);
                    self.times.lock().await.push(started.elapsed());
                }
                Err(e) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    let mut first = self.first_errors.lock().await;
                    if first.len() < 5 && !first.contains(&e) {
                        first.push(e);
                    }
                    // A failing server is not hammered in a tight loop.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(300);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let secs = env_or("SOAK_SECS", 600);
    let conversations = env_or("SOAK_CONVERSATIONS", 1000) as usize;
    // Before any child starts: they inherit it.
    let fd_limit = raise_fd_limit();

    let mock = Mock::start(UPSTREAM_DELAY_MS, CHUNK_DELAY_MS);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--llm-read-timeout-secs", "30"],
    );
    let pid = server.proc.pid();
    // The mock records every request; it is cleared at each report so that it stays small.
    let mock_requests = mock.base_url.replace("/v1", "/mock/requests");

    let _ = common::http(); // installs the TLS provider reqwest needs
    let load = Arc::new(Load {
        url: server.url.clone(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(conversations)
            .build()
            .unwrap(),
        reply: "Soak test reply, spoken in short pieces like a real voice answer. "
            .repeat(5)
            .trim_end()
            .to_string(),
        stop: AtomicBool::new(false),
        turns: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        times: Mutex::new(Vec::new()),
        first_errors: Mutex::new(Vec::new()),
    });
    println!(
        "soak: {conversations} streaming conversations for {secs} s; upstream {UPSTREAM_DELAY_MS} ms + \
         {} chunks {CHUNK_DELAY_MS} ms apart; descriptor limit {fd_limit}",
        load.reply.len().div_ceil(8)
    );
    println!(
        "{:>7} {:>9} {:>7} {:>9} {:>9} {:>9} {:>6}",
        "elapsed", "turns", "errors", "p50 ms", "p99 ms", "RSS MiB", "fds"
    );

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conversations);
    for i in 0..conversations {
        tasks.push(tokio::spawn(Arc::clone(&load).conversation(i)));
        tokio::time::sleep(RAMP_STEP).await;
    }

    let end = started + Duration::from_secs(secs);
    let mut next_report = started + REPORT_EVERY;
    let mut peak_fds = 0;
    let mut warm_rss = None;
    let mut last_rss = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_fds = peak_fds.max(open_fds(pid));
        if Instant::now() >= next_report || Instant::now() >= end {
            next_report += REPORT_EVERY;
            let mut times = std::mem::take(&mut *load.times.lock().await);
            times.sort();
            let (p50, p99) = if times.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                (ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)))
            };
            last_rss = rss_kib(pid, "VmRSS:");
            let elapsed = started.elapsed();
            if warm_rss.is_none() && elapsed >= WARM_UP.min(Duration::from_secs(secs / 2)) {
                warm_rss = Some((elapsed, last_rss));
            }
            println!(
                "{:>6}s {:>9} {:>7} {:>9.0} {:>9.0} {:>9.1} {:>6}",
                elapsed.as_secs(),
                load.turns.load(Ordering::Relaxed),
                load.errors.load(Ordering::Relaxed),
                p50,
                p99,
                mib(last_rss),
                open_fds(pid),
            );
            let _ = load.client.delete(&mock_requests).send().await;
        }
    }

    // Let every conversation finish the turn it is in.
    load.stop.store(true, Ordering::Relaxed);
    let drained = tokio::time::timeout(TURN_DEADLINE, futures::future::join_all(tasks)).await;
    let errors = load.errors.load(Ordering::Relaxed);
    println!(
        "--- summary after {:.0} s ---",
        started.elapsed().as_secs_f64()
    );
    println!(
        "turns completed:       {}",
        load.turns.load(Ordering::Relaxed)
    );
    println!("errors:                {errors} (target 0)");
    for e in load.first_errors.lock().await.iter() {
        println!("  e.g. {e}");
    }
    if drained.is_err() {
        println!("  conversations still running {TURN_DEADLINE:?} after the end");
    }
    if let Some((at, warm)) = warm_rss {
        println!(
            "server RSS:            {:.1} MiB after warm-up ({} s), {:.1} MiB at the end ({:+.1}%) (target flat)",
            mib(warm),
            at.as_secs(),
            mib(last_rss),
            (last_rss as f64 - warm as f64) * 100.0 / warm.max(1) as f64
        );
    }
    println!(
        "server peak RSS:       {:.1} MiB (VmHWM)",
        mib(rss_kib(pid, "VmHWM:"))
    );
    println!("server peak fds:       {peak_fds}");
    println!("server fds now (idle): {}", open_fds(pid));
    common::print_idle_rss(pid, &IDLE_MARKS).await;
    drop(server);
    drop(mock);
    if errors > 0 || drained.is_err() {
        std::process::exit(1);
    }
}

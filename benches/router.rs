//! Router latency benchmark: does the `route` graph make small talk wait for the router?
//!
//! Every call to the fake upstream takes 300 ms before its first byte (router, chat and tool
//! calls alike). A chat-routed turn under `--graph route` (router call and chat call started
//! together, chat text held until the router says `chat`) is compared with a plain answer under
//! `--graph react` (one model call, tools offered, none called). Printed: time to first token
//! (the first SSE data frame of a DashScope stream) and total time, p50/p99 over N sequential
//! turns each, and route's TTFT over react's. Figures only; nothing is asserted.
//!
//! `cargo bench --bench router` (`BENCH_TURNS` sets N, default 50).

mod common;

use std::time::Duration;

use common::{Mock, Server, http, ms, percentile, timed_turn};

const UPSTREAM_DELAY_MS: u64 = 300;
const QUESTION: &str = "how are you doing today?";

async fn measure(server: &Server, graph: &str, turns: usize) -> (Vec<Duration>, Vec<Duration>) {
    let client = http();
    // One unmeasured turn opens the connection.
    timed_turn(&client, server, &format!("{graph}-warmup"), QUESTION).await;
    let mut firsts = Vec::new();
    let mut totals = Vec::new();
    for n in 0..turns {
        let sample = timed_turn(&client, server, &format!("{graph}-{n}"), QUESTION).await;
        firsts.push(sample.first_token);
        totals.push(sample.total);
    }
    firsts.sort();
    totals.sort();
    (firsts, totals)
}

#[tokio::main]
async fn main() {
    let turns: usize = std::env::var("BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mock = Mock::start(UPSTREAM_DELAY_MS, 0);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "router latency; every upstream call waits {UPSTREAM_DELAY_MS} ms; {turns} sequential chat turns per graph"
    );
    println!(
        "{:<22} | {:>9} {:>9} | {:>10} {:>10}",
        "graph", "TTFT p50", "TTFT p99", "total p50", "total p99"
    );
    let mut ttft_p50 = Vec::new();
    for graph in ["react", "route"] {
        let server = Server::start(
            &dir.path().join(format!("data-{graph}")),
            &mock.base_url,
            &["--graph", graph],
        );
        let (firsts, totals) = measure(&server, graph, turns).await;
        let label = match graph {
            "route" => "route (routed to chat)",
            _ => "react (plain answer)",
        };
        println!(
            "{:<22} | {:>9.1} {:>9.1} | {:>10.1} {:>10.1}",
            label,
            ms(percentile(&firsts, 0.5)),
            ms(percentile(&firsts, 0.99)),
            ms(percentile(&totals, 0.5)),
            ms(percentile(&totals, 0.99)),
        );
        ttft_p50.push(percentile(&firsts, 0.5));
    }
    println!(
        "route TTFT p50 / react TTFT p50 = {:.3}",
        ttft_p50[1].as_secs_f64() / ttft_p50[0].as_secs_f64()
    );
}

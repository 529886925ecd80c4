//! Thinking off for voice: what `"enable_thinking": false` saves before the first spoken word.
//!
//! The fake upstream answers after 150 ms, plus 800 ms of "thinking" on every call that does
//! not turn thinking off (`mock-llm --thinking-delay-ms`), as Qwen's hybrid-thinking models do.
//! The same chat turns run against a box with `--thinking on` and one with `--thinking off`
//! (what DashScope upstreams get by default, `--thinking auto`). Printed: time to first token
//! and total, p50/p99 over N sequential turns each. Figures only; nothing is asserted.
//!
//! `cargo bench --bench thinking` (`BENCH_TURNS` sets N, default 20).

mod common;

use common::{Mock, Server, http, ms, percentile, timed_turn};

const FIRST_TOKEN_MS: u64 = 150;
const THINKING_MS: &str = "800";

#[tokio::main]
async fn main() {
    let turns: usize = std::env::var("BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mock = Mock::start_with(FIRST_TOKEN_MS, 0, &["--thinking-delay-ms", THINKING_MS]);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "thinking: upstream first token {FIRST_TOKEN_MS} ms, +{THINKING_MS} ms while thinking is on; {turns} sequential chat turns each"
    );
    println!(
        "{:<16} | {:>9} {:>9} | {:>10} {:>10}",
        "--thinking", "TTFT p50", "TTFT p99", "total p50", "total p99"
    );
    for thinking in ["on", "off"] {
        let server = Server::start(
            &dir.path().join(format!("data-{thinking}")),
            &mock.base_url,
            &["--thinking", thinking],
        );
        let client = http();
        timed_turn(&client, &server, &format!("{thinking}-warmup"), "hello").await;
        let (mut firsts, mut totals) = (Vec::new(), Vec::new());
        for n in 0..turns {
            let sample = timed_turn(&client, &server, &format!("{thinking}-{n}"), "hello").await;
            firsts.push(sample.first_token);
            totals.push(sample.total);
        }
        firsts.sort();
        totals.sort();
        println!(
            "{:<16} | {:>9.1} {:>9.1} | {:>10.1} {:>10.1}",
            thinking,
            ms(percentile(&firsts, 0.5)),
            ms(percentile(&firsts, 0.99)),
            ms(percentile(&totals, 0.5)),
            ms(percentile(&totals, 0.99)),
        );
    }
}

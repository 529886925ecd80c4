//! Figures of a load run: percentiles of latencies and the per-level summary that the table,
//! the JSON file and the chart are made from.
//!
//! The benchmarks (`benches/common`) use the same [`percentile`] and [`ms`], so a figure in a
//! benchmark's output and one in `lang-agent stress`'s table mean the same thing.

use std::time::Duration;

use serde::Serialize;

use super::load::Outcome;

/// The `p` quantile of sorted samples (nearest rank).
///
/// # Panics
/// When `sorted` is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds, fractional.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One level of a stress run, summed up. Latency and time-to-first-byte figures are over the
/// successful requests only (a refused request is fast and would flatter them); they are
/// `None` when no request succeeded.
#[derive(Debug, Clone, Serialize)]
pub struct LevelFigures {
    pub concurrency: usize,
    pub requests: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// `succeeded / requests`, from 0.0 to 1.0.
    pub success_rate: f64,
    /// Successful requests per second of the level's wall time.
    pub throughput_rps: f64,
    pub wall_secs: f64,
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub ttfb_avg_ms: Option<f64>,
    pub ttfb_p99_ms: Option<f64>,
    /// Peak resident memory of the local server during the level; `None` when the server is
    /// not on this machine or its process was not found.
    pub rss_mib: Option<f64>,
    /// The first few distinct failure reasons, so a failed level says why.
    pub errors: Vec<String>,
}

/// How many distinct failure reasons a level keeps.
const KEPT_ERRORS: usize = 5;

impl LevelFigures {
    pub fn new(
        concurrency: usize,
        outcomes: &[Outcome],
        wall: Duration,
        rss_kib: Option<u64>,
    ) -> LevelFigures {
        let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
        let mut latencies: Vec<Duration> = ok.iter().map(|o| o.latency).collect();
        let mut first_bytes: Vec<Duration> = ok.iter().filter_map(|o| o.first_byte).collect();
        latencies.sort();
        first_bytes.sort();
        let mut errors: Vec<String> = Vec::new();
        for reason in outcomes.iter().filter_map(|o| o.error.as_ref()) {
            if errors.len() < KEPT_ERRORS && !errors.contains(reason) {
                errors.push(reason.clone());
            }
        }
        let requests = outcomes.len();
        let wall_secs = wall.as_secs_f64();
        LevelFigures {
            concurrency,
            requests,
            succeeded: ok.len(),
            failed: requests - ok.len(),
            success_rate: if requests == 0 {
                0.0
            } else {
                ok.len() as f64 / requests as f64
            },
            throughput_rps: if wall_secs > 0.0 {
                ok.len() as f64 / wall_secs
            } else {
                0.0
            },
            wall_secs,
            avg_ms: average_ms(&latencies),
            p50_ms: quantile_ms(&latencies, 0.50),
            p95_ms: quantile_ms(&latencies, 0.95),
            p99_ms: quantile_ms(&latencies, 0.99),
            ttfb_avg_ms: average_ms(&first_bytes),
            ttfb_p99_ms: quantile_ms(&first_bytes, 0.99),
            rss_mib: rss_kib.map(|kib| kib as f64 / 1024.0),
            errors,
        }
    }
}

fn average_ms(samples: &[Duration]) -> Option<f64> {
    (!samples.is_empty())
        .then(|| samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64)
}

fn quantile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| ms(percentile(sorted, p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(latency_ms: u64, error: Option<&str>) -> Outcome {
        Outcome {
            latency: Duration::from_millis(latency_ms),
            first_byte: Some(Duration::from_millis(latency_ms / 2)),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn percentile_is_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&sorted[..1], 0.99), Duration::from_millis(1));
    }

    #[test]
    fn latencies_count_only_successes_and_failures_keep_their_reasons() {
        let outcomes = [
            outcome(100, None),
            outcome(300, None),
            outcome(1, Some("HTTP 401")),
            outcome(1, Some("HTTP 401")),
        ];
        let f = LevelFigures::new(2, &outcomes, Duration::from_secs(2), Some(2048));
        assert_eq!((f.requests, f.succeeded, f.failed), (4, 2, 2));
        assert_eq!(f.success_rate, 0.5);
        assert_eq!(f.throughput_rps, 1.0);
        assert_eq!(f.avg_ms, Some(200.0));
        assert_eq!(f.p99_ms, Some(300.0));
        assert_eq!(f.ttfb_avg_ms, Some(100.0));
        assert_eq!(f.rss_mib, Some(2.0));
        assert_eq!(f.errors, ["HTTP 401"]);
    }

    #[test]
    fn a_level_without_success_has_no_latency_figures() {
        let f = LevelFigures::new(1, &[outcome(5, Some("x"))], Duration::from_secs(1), None);
        assert_eq!(f.success_rate, 0.0);
        assert_eq!((f.avg_ms, f.p95_ms, f.ttfb_p99_ms), (None, None, None));
    }
}

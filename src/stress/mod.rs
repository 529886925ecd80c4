//! `lang-agent stress`: a load generator for a running server (this one or another speaking
//! the same APIs). Levels of load, each `concurrency` clients sending `requests` requests in
//! all, are run one after another; each level is summed up as the original project's stress
//! table (success, throughput, latency percentiles) plus time to first byte and, when the server
//! is on this machine, its peak memory.
//!
//! The parts: [`load`] sends the requests, [`stats`] sums them up, [`rss`] finds and samples
//! the local server, [`table`] and [`chart`] show the figures. The command (progress bars,
//! files, exit status) is `commands/stress.rs`.

pub mod chart;
pub mod load;
pub mod rss;
pub mod stats;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use load::{Outcome, Target};
pub use stats::LevelFigures;

/// Which API the load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StressApi {
    /// `POST /api/v1/apps/stress/completion`, as Xiaozhi calls it.
    Dashscope,
    /// `POST /v1/chat/completions`.
    Openai,
}

/// One level of load: `concurrency` clients at once, `requests` requests in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub concurrency: usize,
    pub requests: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StressError {
    #[error("{0}")]
    BadLevels(String),
    #[error("cannot make the HTTP client: {0}")]
    Client(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Chart(String),
    #[error("{failed} of {total} requests failed")]
    Failures { failed: usize, total: usize },
}

/// The levels `concurrency[i]` with `requests[i]`; a single `requests` value goes with every
/// level.
pub fn pair_levels(concurrency: &[usize], requests: &[usize]) -> Result<Vec<Level>, StressError> {
    if concurrency.is_empty() || concurrency.contains(&0) || requests.contains(&0) {
        return Err(StressError::BadLevels(
            "--concurrency and --requests take positive numbers, e.g. 1,10,50".into(),
        ));
    }
    let requests: Vec<usize> = match requests {
        [one] => vec![*one; concurrency.len()],
        many if many.len() == concurrency.len() => many.to_vec(),
        many => {
            return Err(StressError::BadLevels(format!(
                "--concurrency has {} levels but --requests has {} values: give one value \
                 for every level, or a single one for all",
                concurrency.len(),
                many.len()
            )));
        }
    };
    Ok(concurrency
        .iter()
        .zip(requests)
        .map(|(&concurrency, requests)| Level {
            concurrency,
            requests,
        })
        .collect())
}

/// Runs levels against one target with one HTTP client (connections are reused across
/// levels, as long-lived clients would).
pub struct Runner {
    client: reqwest::Client,
    target: Arc<Target>,
    server_pid: Option<u32>,
    /// Names this run's sessions apart from an earlier run's, so no thread grows across runs.
    run_tag: String,
}

impl Runner {
    pub fn new(target: Target) -> Result<Runner, StressError> {
        crate::http::install_tls_provider();
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| StressError::Client(e.to_string()))?;
        let server_pid = rss::local_server_pid(&target.url);
        let run_tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        Ok(Runner {
            client,
            target: Arc::new(target),
            server_pid,
            run_tag,
        })
    }

    /// The local server's process, when one was found.
    pub fn server_pid(&self) -> Option<u32> {
        self.server_pid
    }

    /// Runs level number `index`; `on_done` is called as each request ends. Its sessions are
    /// `stress-<index>-<n>-<run>`.
    pub async fn run_level(
        &self,
        index: usize,
        level: Level,
        on_done: Arc<dyn Fn(&Outcome) + Send + Sync>,
    ) -> LevelFigures {
        let memory = self.server_pid.map(rss::PeakRss::start);
        let prefix = format!("stress-{index}-{}", self.run_tag);
        let (outcomes, wall) = load::run_level(
            &self.client,
            &self.target,
            level.concurrency,
            level.requests,
            &prefix,
            on_done,
        )
        .await;
        let peak = match memory {
            Some(memory) => memory.finish().await,
            None => None,
        };
        LevelFigures::new(level.concurrency, &outcomes, wall, peak)
    }
}

/// What `--json FILE` holds.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub url: &'a str,
    pub api: StressApi,
    pub stream: bool,
    pub levels: &'a [LevelFigures],
}

/// Writes `contents` to `path`.
pub fn write_file(path: &Path, contents: &str) -> Result<(), StressError> {
    std::fs::write(path, contents).map_err(|source| StressError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_pair_one_by_one_or_share_a_single_request_count() {
        let level = |concurrency, requests| Level {
            concurrency,
            requests,
        };
        assert_eq!(
            pair_levels(&[1, 10], &[10, 50]).unwrap(),
            [level(1, 10), level(10, 50)]
        );
        assert_eq!(
            pair_levels(&[1, 10], &[20]).unwrap(),
            [level(1, 20), level(10, 20)]
        );
        let error = pair_levels(&[1, 10, 50], &[10, 50])
            .unwrap_err()
            .to_string();
        assert!(error.contains("3 levels but --requests has 2"), "{error}");
        assert!(pair_levels(&[0], &[1]).is_err());
        assert!(pair_levels(&[1], &[0]).is_err());
    }
}

//! What the benchmarks share: the test harness (the real binary as `mock-llm` and `serve`
//! children, from `tests/common`), figures (percentiles, milliseconds) and what /proc says
//! about the server process (memory, CPU time, open descriptors).

#![allow(dead_code)] // each benchmark uses its own part

#[path = "../../tests/common/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use futures::StreamExt;

pub use harness::*;

// The figures and the memory reading are `lang-agent stress`'s, so that a benchmark's p99 and
// the stress table's mean the same thing. (Each benchmark uses its own part.)
#[allow(unused_imports)]
pub use lang_agent::stress::rss::rss_kib;
#[allow(unused_imports)]
pub use lang_agent::stress::stats::{ms, percentile};

/// The CPU time each of a process's threads has used so far, user and system together, in
/// nanoseconds as the scheduler counts it (`/proc/PID/task/TID/schedstat`), so that a level
/// of a few hundred turns is measured to the microsecond rather than in 10 ms clock ticks.
pub struct CpuReading(std::collections::HashMap<String, u64>);

impl CpuReading {
    pub fn now(pid: u32) -> CpuReading {
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        CpuReading(
            threads
                .filter_map(|t| t.ok())
                .filter_map(|t| {
                    let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
                    let on_cpu = stat.split_whitespace().next()?.parse().ok()?;
                    Some((t.file_name().to_string_lossy().into_owned(), on_cpu))
                })
                .collect(),
        )
    }

    /// Milliseconds of CPU used since `earlier`: each thread's growth, and all of a thread's
    /// time if it began since. A thread that ended in between is not counted (the server's
    /// threads live for the run, bar blocking-pool threads idle for 10 s).
    pub fn ms_since(&self, earlier: &CpuReading) -> f64 {
        let ns: u64 = self
            .0
            .iter()
            .map(|(tid, &now)| now.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e6
    }
}

/// Prints the server's resident memory once it has been idle for each of `marks` after a load:
/// the heap trimmer gives memory back a few seconds after a busy spell and again after 100 s,
/// when the connections the load opened have closed (`src/heap.rs`).
pub async fn print_idle_rss(pid: u32, marks: &[Duration]) {
    let idle_since = Instant::now();
    for mark in marks {
        tokio::time::sleep(mark.saturating_sub(idle_since.elapsed())).await;
        println!(
            "server RSS idle {:>3} s after the load: {:.1} MiB (anonymous {:.1} MiB)",
            mark.as_secs(),
            rss_kib(pid, "VmRSS:") as f64 / 1024.0,
            rss_kib(pid, "RssAnon:") as f64 / 1024.0
        );
    }
}

/// The `lang-agent` a benchmark measures: `LANG_AGENT_BIN` when set (another build, e.g. the
/// one before a change), else `serve`'s own program, this build's.
pub fn measured_binary(serve: &std::process::Command) -> std::ffi::OsString {
    std::env::var_os("LANG_AGENT_BIN").unwrap_or_else(|| serve.get_program().into())
}

/// `command`'s arguments, environment and directory, run as `program` with `leading` arguments
/// first (a tool that runs it, or the same program from another build).
pub fn rerun_as(
    command: &std::process::Command,
    program: impl AsRef<std::ffi::OsStr>,
    leading: &[std::ffi::OsString],
) -> std::process::Command {
    let mut rerun = std::process::Command::new(program);
    rerun.args(leading).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => rerun.env(key, v),
            None => rerun.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        rerun.current_dir(dir);
    }
    rerun
}

/// How many descriptors the process holds open (entries of /proc/<pid>/fd).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Raises this process's soft limit on open descriptors to the hard limit, so that many
/// client sockets fit; children started afterwards inherit it. Returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("cannot raise the open-descriptor limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// One timed DashScope streaming turn.
pub struct Sample {
    /// Until the first SSE data frame: what a voice user waits before the first word.
    pub first_token: Duration,
    pub total: Duration,
}

/// Asks `text` on `session` of `server` as a streaming DashScope call and times it.
pub async fn timed_turn(
    client: &reqwest::Client,
    server: &Server,
    session: &str,
    text: &str,
) -> Sample {
    let started = Instant::now();
    let response = client
        .post(format!("{}/api/apps/bench/completion", server.url))
        .bearer_auth(KEY)
        .header("X-DashScope-SSE", "enable")
        .json(
            &serde_json::json!({"input": {"messages": [{"role": "user", "content": text}],
                                            "session_id": session}, "parameters": {}}),
        )
        .send()
        .await
        .expect("request");
    assert!(response.status().is_success(), "{}", response.status());
    let mut body = response.bytes_stream();
    let mut first_token = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body");
        if first_token.is_none() && String::from_utf8_lossy(&chunk).contains("data:") {
            first_token = Some(started.elapsed());
        }
    }
    Sample {
        first_token: first_token.expect("an answer frame"),
        total: started.elapsed(),
    }
}

//! `lang-agent doctor`: is this box able to serve? One line per check, a non-zero exit when
//! any check fails.
//!
//! It takes the same options as `serve` (so an operator runs it with the unit's command line)
//! and checks what `serve` would need, without serving: the configuration, the data directory
//! (writable, free space, `PRAGMA integrity_check`), the upstream and its key (one cheap call
//! per model the graph uses), each MCP server (connects, lists its tools), the export target
//! when one is set, the open-files limit and the clock. Nothing is written to the store.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::cli::ServeArgs;
use crate::config::{Config, ServeConfig};
use crate::llm::{ChatMessage, ChatRequest, LlmClient, LlmError, Sampling};
use crate::pg::PgTarget;
use crate::redact::redact_url;
use crate::store::{MIN_FREE_DISK_BYTES, disk_free_bytes};
use crate::tools::mcp::{self, McpServer};

/// Why `doctor` exits non-zero.
#[derive(Debug, thiserror::Error)]
#[error("{0} of the checks failed")]
pub struct DoctorFailed(pub usize);

/// How long the export target may take to answer.
const PG_TIMEOUT: Duration = Duration::from_secs(10);
/// A clock before this is wrong (the binary was built later): TLS and the log's times break.
const EARLIEST_SANE_UNIX_SECS: u64 = 1_767_225_600; // 2026-01-01

/// The checks' results, printed as they come.
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn ok(&mut self, check: &str, detail: impl std::fmt::Display) {
        println!("ok    {check}: {detail}");
    }
    fn warn(&mut self, check: &str, detail: impl std::fmt::Display) {
        println!("warn  {check}: {detail}");
    }
    fn fail(&mut self, check: &str, detail: impl std::fmt::Display) {
        self.failed += 1;
        println!("FAIL  {check}: {detail}");
    }
}

/// Runs every check; `Err` when any failed.
pub async fn run(config: Config, args: &ServeArgs) -> Result<(), DoctorFailed> {
    let mut report = Report::default();
    let (config, serve) = match config.for_serve(args) {
        Ok(both) => both,
        Err(e) => {
            report.fail("configuration", e);
            return Err(DoctorFailed(report.failed));
        }
    };
    report.ok(
        "configuration",
        format_args!(
            "{}; upstream {}",
            serve.agent.models_in_use(&config.llm.model),
            redact_url(&config.llm.base_url)
        ),
    );
    check_data_dir(&mut report, &config.data_dir, &config.sqlite_path());
    check_upstream(&mut report, &config, &serve).await;
    check_mcp(&mut report, &serve).await;
    check_export(&mut report, &serve).await;
    check_open_files(&mut report, &serve);
    check_clock(&mut report);
    match report.failed {
        0 => Ok(()),
        n => Err(DoctorFailed(n)),
    }
}

fn check_data_dir(report: &mut Report, dir: &Path, db: &Path) {
    let probe = dir.join(".doctor-write-test");
    let writable = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    match writable {
        Ok(()) => report.ok(
            "data directory",
            format_args!("{} is writable", dir.display()),
        ),
        Err(e) => report.fail("data directory", format_args!("{}: {e}", dir.display())),
    }
    match disk_free_bytes(dir) {
        Some(free) if free < MIN_FREE_DISK_BYTES => report.fail(
            "free space",
            format_args!(
                "{} MiB (turns are refused below {} MiB)",
                free >> 20,
                MIN_FREE_DISK_BYTES >> 20
            ),
        ),
        Some(free) => report.ok("free space", format_args!("{} MiB", free >> 20)),
        None => report.warn("free space", "unknown"),
    }
    if !db.exists() {
        report.ok(
            "store",
            format_args!("{} will be created at first start", db.display()),
        );
        return;
    }
    let checked =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)));
    match checked {
        Ok(answer) if answer == "ok" => {
            report.ok("store", format_args!("{} integrity ok", db.display()))
        }
        Ok(answer) => report.fail(
            "store",
            format_args!("{}: integrity_check says {answer}", db.display()),
        ),
        Err(e) => report.fail("store", format_args!("{}: {e}", db.display())),
    }
}

/// One cheap call (a one-token answer) per model the graph uses.
async fn check_upstream(report: &mut Report, config: &Config, serve: &ServeConfig) {
    let client = match LlmClient::new(&config.llm) {
        Ok(client) => client,
        Err(e) => return report.fail("upstream", e),
    };
    let models: BTreeSet<&str> = [
        config.llm.model.as_str(),
        serve.agent.router_model.as_str(),
        serve.agent.tool_model.as_str(),
    ]
    .into_iter()
    .collect();
    let messages = [ChatMessage::user("ping")];
    let sampling = Sampling {
        max_tokens: Some(1),
        ..Sampling::NONE
    };
    for model in models {
        let request = ChatRequest {
            model,
            messages: &messages,
            tools: &[],
            json_object: false,
            sampling: &sampling,
            tool_choice: None,
        };
        let check = format!("model {model}");
        match client.complete(&request).await {
            Ok(_) => report.ok(&check, "answers"),
            Err(LlmError::Status {
                status: 401 | 403, ..
            }) => report.fail(&check, "the upstream refused the key (ALI_API_KEY)"),
            Err(LlmError::Status { status: 404, .. }) => {
                report.fail(&check, "the upstream does not know this model")
            }
            Err(e) => report.fail(&check, e),
        }
    }
}

async fn check_mcp(report: &mut Report, serve: &ServeConfig) {
    let servers = match mcp::config::load(&serve.agent.mcp_config) {
        Ok(servers) => servers,
        Err(e) => return report.fail("MCP servers", e),
    };
    if servers.is_empty() {
        return report.ok(
            "MCP servers",
            format_args!("none configured ({})", serve.agent.mcp_config.display()),
        );
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client builds");
    for server in servers {
        let check = format!("MCP server {}", server.name);
        match McpServer::probe(server, &http).await {
            Ok(tools) => report.ok(&check, format_args!("{} tools", tools.len())),
            Err(e) => report.fail(&check, e),
        }
    }
}

async fn check_export(report: &mut Report, serve: &ServeConfig) {
    let Some(export) = &serve.export else {
        return;
    };
    let target = match PgTarget::parse(export.url.expose()) {
        Ok(target) => target,
        Err(e) => return report.fail("export target", e),
    };
    match tokio::time::timeout(PG_TIMEOUT, target.connect()).await {
        Ok(Ok(_)) => report.ok("export target", target.redacted()),
        Ok(Err(e)) => report.fail("export target", format_args!("{}: {e}", target.redacted())),
        Err(_) => report.fail(
            "export target",
            format_args!("{}: no answer within {PG_TIMEOUT:?}", target.redacted()),
        ),
    }
}

fn check_open_files(report: &mut Report, serve: &ServeConfig) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let ports = if serve.viewer_addr.is_some() { 2 } else { 1 };
    let wanted = (ports * serve.http.max_connections + 256) as u64;
    match limit.maximum {
        Some(hard) if hard < wanted => report.warn(
            "open files",
            format_args!(
                "hard limit {hard} is below the {wanted} that --max-connections needs (LimitNOFILE)"
            ),
        ),
        Some(hard) => report.ok("open files", format_args!("hard limit {hard}")),
        None => report.ok("open files", "unlimited"),
    }
}

fn check_clock(report: &mut Report) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now < EARLIEST_SANE_UNIX_SECS {
        report.fail(
            "clock",
            "the system clock is before 2026 (no time sync?): TLS and the log's times break",
        );
    } else {
        report.ok("clock", crate::store::now_timestamp());
    }
}

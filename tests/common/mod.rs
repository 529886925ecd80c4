//! Test harness: the real `lang-agent` binary run as `mock-llm` and `serve` child processes on
//! ephemeral 127.0.0.1 ports, with their output captured so tests can wait for readiness and
//! check what was logged.

#![allow(dead_code)] // each test file uses its own part

pub mod browser;
pub mod export;
pub mod raw_http;
pub mod viewer;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const KEY: &str = "test-key-1";
pub const UPSTREAM_KEY: &str = "upstream-secret-do-not-log";

/// An HTTP client for tests (reqwest is built without a default TLS provider).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lang-agent")
}

/// A child process whose stdout and stderr lines are collected.
pub struct Proc {
    child: Child,
    pub output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(mut command: Command) -> Proc {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = command.spawn().expect("spawn lang-agent");
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&format!("{line}\n"));
                }
            }));
        }
        Proc {
            child,
            output,
            readers,
        }
    }

    /// Waits for an output line containing `needle`, returning it; panics with the output
    /// on timeout.
    pub fn wait_for_line(&self, needle: &str) -> String {
        self.wait_for_line_with(&[needle])
    }

    /// Waits for one output line holding every one of `needles` (e.g. a JSON line's
    /// message and its thread, which other lines of the same turn also carry).
    pub fn wait_for_line_with(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_string();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no line with {needles:?}; output so far:\n{}", self.log());
    }

    /// Waits for the process to exit, returning its status code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The pipes close with the process; read them to the end.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "process did not exit; output:\n{}",
            self.output.lock().unwrap()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The scripted fake upstream.
pub struct Mock {
    pub proc: Proc,
    pub base_url: String,
}

impl Mock {
    pub fn start(delay_ms: u64, chunk_delay_ms: u64) -> Mock {
        Self::start_with(delay_ms, chunk_delay_ms, &[])
    }

    /// A mock with more `mock-llm` options (`--api-key K`).
    pub fn start_with(delay_ms: u64, chunk_delay_ms: u64, extra: &[&str]) -> Mock {
        let mut command = Command::new(bin());
        command
            .args([
                "mock-llm",
                "--port",
                "0",
                "--delay-ms",
                &delay_ms.to_string(),
                "--chunk-delay-ms",
                &chunk_delay_ms.to_string(),
            ])
            .args(extra);
        let proc = Proc::spawn(command);
        let line = proc.wait_for_line("mock-llm listening on ");
        let base_url = line.rsplit(' ').next().unwrap().to_string();
        Mock { proc, base_url }
    }

    pub async fn requests(&self) -> Vec<serde_json::Value> {
        let url = self.base_url.replace("/v1", "/mock/requests");
        http().get(url).send().await.unwrap().json().await.unwrap()
    }
}

/// A `lang-agent serve` process.
pub struct Server {
    pub proc: Proc,
    pub url: String,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts a server on `data_dir` against `upstream`, with `extra` arguments and the test key.
    pub fn start(data_dir: &Path, upstream: &str, extra: &[&str]) -> Server {
        Self::start_with_env(data_dir, upstream, extra, &[("FAST_AUTH_KEYS", KEY)])
    }

    pub fn start_with_env(
        data_dir: &Path,
        upstream: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Self::ready(
            Proc::spawn(Self::command(data_dir, Some(upstream), extra, env)),
            data_dir,
        )
    }

    /// A started `serve` process, once it says it is ready, serving `data_dir`.
    pub fn ready(proc: Proc, data_dir: &Path) -> Server {
        let line = proc.wait_for_line("lang-agent ready");
        // A text line (`api=…`), or a JSON one (`--log-format json`).
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api="))
            .map(str::to_string)
            .or_else(|| {
                let json: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
                json["api"].as_str().map(str::to_string)
            })
            .expect("ready line names the API address");
        Server {
            proc,
            url: format!("http://{addr}"),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The `serve` command line; without `upstream`, the default (DashScope) applies.
    pub fn command(
        data_dir: &Path,
        upstream: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Command {
        let mut command = Command::new(bin());
        command
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--viewer-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(upstream.map(|u| ["--base-url", u]).into_iter().flatten())
            .args(extra)
            .env_remove("FAST_AUTH_KEYS")
            .env_remove("ALI_BASE_URL")
            .env("ALI_API_KEY", UPSTREAM_KEY)
            .env("LANG_AGENT_LOG", "info");
        for (k, v) in env {
            command.env(k, v);
        }
        // Run where no stray .env can change the settings.
        command.current_dir(data_dir.parent().unwrap_or(data_dir));
        command
    }

    /// The viewer's base URL, when it was started with a `--viewer-port`.
    pub fn viewer_url(&self) -> Option<String> {
        let line = self.proc.wait_for_line("lang-agent ready");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("viewer="))
            .filter(|v| *v != "off")
            .map(|v| format!("http://{v}"))
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data_dir.join("lang-agent.sqlite3")).unwrap()
    }
}

/// A DashScope streaming call; returns the raw SSE text.
pub async fn dashscope_stream(server: &Server, session: Option<&str>, text: &str) -> String {
    let mut input = serde_json::json!({"messages": [{"role": "user", "content": text}]});
    if let Some(s) = session {
        input["session_id"] = s.into();
    }
    http()
        .post(format!("{}/api/apps/app1/completion", server.url))
        .bearer_auth(KEY)
        .header("X-DashScope-SSE", "enable")
        .json(&serde_json::json!({"input": input, "parameters": {}}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An OpenAI chat completion with the test key; the response as it came.
pub async fn openai_call(server: &Server, body: serde_json::Value) -> reqwest::Response {
    http()
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A DashScope non-streaming call; returns status and JSON body.
pub async fn dashscope_call(server: &Server, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = http()
        .post(format!("{}/api/v1/apps/app1/completion", server.url))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The text of the last `data:` JSON frame of a DashScope stream.
pub fn final_text(sse: &str) -> String {
    let last = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()
        .unwrap_or_else(|| panic!("no data frame in {sse:?}"));
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    v["output"]["text"].as_str().unwrap_or_default().to_string()
}

/// The status and error of every turn of `conversation`, oldest first.
pub fn turn_rows(db: &rusqlite::Connection, conversation: &str) -> Vec<(String, Option<String>)> {
    db.prepare("SELECT status, error FROM turns WHERE conversation_id = ?1 ORDER BY id")
        .unwrap()
        .query_map([conversation], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Rows of the log: (message_type, content, interrupted) in order.
pub fn log_rows(db: &rusqlite::Connection, conversation: &str) -> Vec<(String, String, bool)> {
    let mut stmt = db
        .prepare(
            "SELECT message_type, content, interrupted FROM messages
             WHERE conversation_id = ?1 ORDER BY sequence_number",
        )
        .unwrap();
    stmt.query_map([conversation], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The repository root (where `target/mcp-venv` and `target/mcp-node` are installed).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mcp_install_missing(what: &Path) -> ! {
    panic!(
        "{} is missing: run tests/mcp/setup.sh (it installs the MCP test servers from PyPI and npm)",
        what.display()
    )
}

/// A free 127.0.0.1 port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, proc: &Proc) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}; output:\n{}", proc.log());
}

/// Transports `tests/mcp/fastmcp_server.py` serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FastMcpTransport {
    StreamableHttp,
    Sse,
}

/// The FastMCP test server (Python `mcp` package) on its own port.
pub struct FastMcp {
    pub proc: Proc,
    pub port: u16,
    pub transport: FastMcpTransport,
}

impl FastMcp {
    pub fn start(transport: FastMcpTransport) -> FastMcp {
        Self::start_on(transport, free_port())
    }

    pub fn start_on(transport: FastMcpTransport, port: u16) -> FastMcp {
        let python = repo_root().join("target/mcp-venv/bin/python");
        if !python.exists() {
            mcp_install_missing(&python);
        }
        let mut command = Command::new(python);
        command
            .arg(repo_root().join("tests/mcp/fastmcp_server.py"))
            .args(["--port", &port.to_string(), "--transport"])
            .arg(match transport {
                FastMcpTransport::StreamableHttp => "streamable-http",
                FastMcpTransport::Sse => "sse",
            });
        let proc = Proc::spawn(command);
        wait_for_port(port, &proc);
        FastMcp {
            proc,
            port,
            transport,
        }
    }

    /// This server as an `mcp_config.json` entry in the original format.
    pub fn config_entry(&self) -> serde_json::Value {
        match self.transport {
            FastMcpTransport::StreamableHttp => serde_json::json!({
                "url": format!("http://127.0.0.1:{}/mcp", self.port), "transport": "streamable_http"}),
            FastMcpTransport::Sse => serde_json::json!({
                "url": format!("http://127.0.0.1:{}/sse", self.port), "transport": "sse"}),
        }
    }
}

/// `@modelcontextprotocol/server-everything` over stdio, as an `mcpServers` entry.
pub fn everything_stdio_entry() -> serde_json::Value {
    let entry = repo_root()
        .join("target/mcp-node/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    if !entry.exists() {
        mcp_install_missing(&entry);
    }
    serde_json::json!({"command": "node", "args": [entry, "stdio"]})
}

/// `@modelcontextprotocol/server-everything` started the README's way, by `npx` (offline: from
/// the directory it is installed in, which the caller runs in), as an `mcp_config.json`; and
/// that directory.
pub fn everything_npx_config() -> (PathBuf, serde_json::Value) {
    let everything = everything_stdio_entry();
    let node_dir = Path::new(everything["args"][0].as_str().unwrap())
        .ancestors()
        .find(|p| p.ends_with("mcp-node"))
        .unwrap()
        .to_path_buf();
    let config = serde_json::json!({"mcpServers": {"everything": {"command": "npx",
        "args": ["--offline", "--yes", "@modelcontextprotocol/server-everything", "stdio"]}}});
    (node_dir, config)
}

/// A config directory holding `mcp_config.json` with `config` (and the default prompts).
pub fn config_dir_with_mcp(parent: &Path, config: &serde_json::Value) -> PathBuf {
    let dir = parent.join("configs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mcp_config.json"),
        format!("// written by the test\n{config:#}\n"),
    )
    .unwrap();
    dir
}

/// The log's rows with their tool columns: (message_type, content, tool_calls, tool_name).
pub fn tool_rows(
    db: &rusqlite::Connection,
    conversation: &str,
) -> Vec<(String, String, Option<String>, Option<String>)> {
    let mut stmt = db
        .prepare(
            "SELECT message_type, content, tool_calls, tool_name FROM messages
             WHERE conversation_id = ?1 ORDER BY sequence_number",
        )
        .unwrap();
    stmt.query_map([conversation], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The model requests the mock received whose last user message contains `needle`.
pub async fn requests_about(mock: &Mock, needle: &str) -> Vec<serde_json::Value> {
    mock.requests()
        .await
        .into_iter()
        .filter(|r| {
            r["messages"]
                .as_array()
                .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                .and_then(|m| m["content"].as_str())
                .is_some_and(|c| c.contains(needle))
        })
        .collect()
}

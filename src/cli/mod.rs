//! The command line: one `lang-agent` binary with subcommands.
//!
//! Global options (`--data-dir`, `--config-dir`, `--base-url`, `--llm-name`) are declared once
//! here and accepted by every subcommand in the same way, so scripts can put them anywhere on
//! the line. Parsing only: turning these into a validated [`crate::config::Config`] happens in
//! `config.rs`, the one place that knows defaults from the environment.
//!
//! Only `main.rs`, `config.rs` and the commands read this file. The choices a flag offers are
//! the domains' own types (`GraphKind`, `BusyPolicy`, …) and every default is the domain's
//! constant, so nothing here is written twice.

use std::fmt::Display;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::agent::ClientPromptMode;
use crate::agent::graph::{GraphKind, ToolNode};
use crate::agent::router::{DEFAULT_ROUTER_MODEL, DEFAULT_ROUTER_TIMEOUT_MS};
use crate::agent::tool_loop::DEFAULT_MAX_TOOL_STEPS;
use crate::agent::turns::{
    BusyPolicy, DEFAULT_CLIENT_STALL_SECS, DEFAULT_TURN_TIMEOUT_SECS, MemoryScope,
};
use crate::export::{DEFAULT_BATCH_SIZE, DEFAULT_FOLLOW_INTERVAL_SECS, DEFAULT_STALL_TIMEOUT_SECS};
use crate::http::{
    DEFAULT_BODY_TIMEOUT_SECS, DEFAULT_HEADER_TIMEOUT_SECS, DEFAULT_IDLE_TIMEOUT_SECS,
    DEFAULT_LISTEN_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS,
};
use crate::llm::{
    DEFAULT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT_SECS, DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_READ_TIMEOUT_SECS, Thinking,
};
use crate::logging::LogFormat;
use crate::stress::StressApi;
use crate::tools::DEFAULT_TOOL_TIMEOUT_SECS;
use crate::tools::mcp::MCP_CONFIG_FILE;
use crate::viewer::DEFAULT_PORT as DEFAULT_VIEWER_PORT;

#[derive(Debug, Parser)]
#[command(
    name = "lang-agent",
    version,
    about = "Voice-assistant brain for Xiaozhi boxes"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand understands.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Where the SQLite store, the generated API key and other state live.
    #[arg(long, global = true, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Prompts (`route_sys_prompts/`) and MCP server settings.
    #[arg(long, global = true, default_value = "./configs")]
    pub config_dir: PathBuf,
    /// Upstream OpenAI-compatible base URL; overrides `ALI_BASE_URL`.
    #[arg(long, global = true)]
    pub base_url: Option<String>,
    /// Upstream chat model name.
    #[arg(long, global = true, default_value = "qwen-plus")]
    pub llm_name: String,
    /// Hybrid-thinking models (Qwen 3) think before the first spoken word: `auto` turns that
    /// off on DashScope (`"enable_thinking": false` on every call) and leaves other upstreams
    /// alone; `off` and `on` send it everywhere.
    #[arg(long, global = true, value_enum, default_value_t = Thinking::default())]
    pub thinking: Thinking,
    /// How log lines are written to stderr: readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::default())]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
// Parsed once at start: the size of the biggest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve the DashScope and OpenAI APIs (and the viewer).
    #[command(args_override_self = true)]
    Serve(ServeArgs),
    /// A scripted OpenAI-compatible fake upstream, for tests and benchmarks.
    #[command(args_override_self = true, disable_help_flag = true)]
    MockLlm(MockLlmArgs),
    /// Copy the conversation log to PostgreSQL (or to a file `psql -f` loads), incrementally.
    Export(ExportArgs),
    /// Only the conversation viewer, over this box's SQLite file or a fleet's PostgreSQL.
    Viewer(ViewerArgs),
    /// Write a consistent copy of the store to FILE, also while the box serves.
    Backup(BackupArgs),
    /// Replace the store by a backup; refused while a server runs on the data directory.
    Restore(RestoreArgs),
    /// Check that the box can serve (takes `serve`'s options): one line per check, non-zero
    /// exit when one fails.
    #[command(args_override_self = true)]
    Doctor(ServeArgs),
    /// Talk to the box in the terminal, through the same turn pipeline as the server (takes
    /// `serve`'s options); reads lines from stdin, so it works from a pipe too.
    #[command(args_override_self = true)]
    Chat(ChatArgs),
    /// The box's API keys (kept as hashes in the data directory); changes reach a running
    /// server within a second, no restart.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Grade the box against a dataset (JSON Lines of questions and expected answers): each
    /// row runs through the turn pipeline, an LLM judge grades the answers; writes a CSV per
    /// run and a row of DIR/history.csv. `--from-log` makes such a dataset from the log.
    #[command(args_override_self = true)]
    Eval(EvalArgs),
    /// Load a running server with concurrent DashScope or OpenAI calls, level after level, and
    /// print the figures (success, throughput, latency percentiles, time to first byte, the
    /// local server's memory). Exits 1 when any request of any level failed.
    Stress(StressArgs),
}

/// `lang-agent eval`: the dataset, where the results go, and the options of the pipeline
/// (`serve`'s, so a run grades the box as the unit's command line configures it).
#[derive(Debug, Args, Clone)]
pub struct EvalArgs {
    /// The dataset: one JSON object per line,
    /// `{"inputs":{"text":…},"outputs":{"answer":…,"tool_use":[…]},"route":"chat"|"tool"}`.
    #[arg(value_name = "DATASET", required_unless_present = "from_log")]
    pub dataset: Option<PathBuf>,
    /// Where the run's CSV and history.csv go (created if missing). With --from-log: the
    /// dataset file to write.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Rows run at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// The model that judges the answers. [default: the --llm-name]
    #[arg(long, value_name = "NAME")]
    pub judge_model: Option<String>,
    /// Make a dataset from the conversation log of --data-dir instead of running one: each
    /// finished turn becomes a row (its answer the expected answer), written to --out FILE.
    #[arg(long, conflicts_with = "dataset")]
    pub from_log: bool,
    /// With --from-log: turns from this UTC day on (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", conflicts_with = "dataset")]
    pub since: Option<chrono::NaiveDate>,
    /// With --from-log: turns up to this UTC day, included (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", conflicts_with = "dataset")]
    pub until: Option<chrono::NaiveDate>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ChatArgs {
    /// Continue this conversation (its id in the log) instead of starting a new one.
    #[arg(long, value_name = "ID")]
    pub thread: Option<String>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The managed keys (name, fingerprint, when made), and which other keys are accepted.
    List,
    /// Make a key named NAME and print it: the only time it is shown.
    Add {
        /// What you call it (`kitchen-speaker`): letters, digits, `.`, `_`, `-`.
        name: String,
    },
    /// Remove the key named NAME: clients using it are refused from then on.
    Revoke { name: String },
    /// Print the key file's path.
    ShowPath,
}

#[derive(Debug, Args, Clone)]
pub struct BackupArgs {
    /// Where the copy goes; an existing file is never overwritten.
    pub file: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct RestoreArgs {
    /// A file `lang-agent backup` wrote. The replaced store is kept as
    /// `<data-dir>/lang-agent.sqlite3.before-restore`.
    pub file: PathBuf,
}

/// `lang-agent export`: where to, and how.
///
/// `--to` and `--sql` exclude each other, but a `CONN_STR` in the environment (or `.env`) must
/// not stop `--sql` from working, and clap counts environment values as given: so `--to` is
/// only required without `--sql` here, and [`ExportArgs::destination`] rejects both given on
/// the command line.
#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    /// PostgreSQL URL, e.g. postgresql://user:password@host/ai_conversations.
    #[arg(
        long,
        value_name = "URL",
        env = "CONN_STR",
        hide_env_values = true,
        required_unless_present = "sql"
    )]
    pub to: Option<String>,
    /// Write a file that `psql -f FILE` loads (schema and data) instead of connecting.
    #[arg(long, value_name = "FILE")]
    pub sql: Option<PathBuf>,
    /// Name of this box: conversation ids become `<box-id>/<id>` so many boxes share a table.
    #[arg(long, value_name = "NAME")]
    pub box_id: Option<String>,
    /// Keep running and export new messages as they are stored.
    #[arg(long, conflicts_with = "sql")]
    pub follow: bool,
    /// With --follow: seconds between looks for new messages.
    #[arg(long, default_value_t = DEFAULT_FOLLOW_INTERVAL_SECS)]
    pub interval_secs: u64,
    /// Messages per PostgreSQL transaction.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Seconds PostgreSQL may take to connect or to take one batch before the connection is
    /// dropped as stalled (and, with --follow, made again).
    #[arg(long, hide = true, value_name = "SECS", default_value_t = DEFAULT_STALL_TIMEOUT_SECS)]
    pub stall_timeout_secs: u64,
}

/// Where `lang-agent export` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportDestination {
    Postgres(String),
    SqlFile(PathBuf),
}

impl ExportArgs {
    /// The one destination, given `conn_str_env` (the `CONN_STR` environment value, if any);
    /// `Err` says why there is not exactly one.
    pub fn destination(&self, conn_str_env: Option<&str>) -> Result<ExportDestination, String> {
        match (&self.to, &self.sql) {
            (Some(to), Some(_)) if Some(to.as_str()) != conn_str_env => {
                Err("--to and --sql cannot be used together".into())
            }
            (_, Some(file)) => Ok(ExportDestination::SqlFile(file.clone())),
            (Some(to), None) => Ok(ExportDestination::Postgres(to.clone())),
            (None, None) => {
                Err("nowhere to export to: give --to URL (or set CONN_STR), or --sql FILE".into())
            }
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[arg(long, default_value = DEFAULT_LISTEN_HOST)]
    pub host: String,
    #[arg(long, default_value_t = 8588)]
    pub port: u16,
    /// Conversation viewer port; 0 turns the viewer off.
    #[arg(long, default_value_t = DEFAULT_VIEWER_PORT)]
    pub viewer_port: u16,
    /// Produce the whole answer first, then stream it as one event (debugging).
    #[arg(long)]
    pub fake_stream: bool,
    /// What names a DashScope thread: the session id, or the app id (memory survives reconnects).
    #[arg(long, value_enum, default_value_t = MemoryScope::default())]
    pub memory_scope: MemoryScope,
    /// Delete conversations nobody has touched for this many days, in the background (off:
    /// keep everything).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub retain_days: Option<u32>,
    /// What a session call's own system text (Xiaozhi's persona, the time, its memory block)
    /// does: goes after the box's chat and tool prompts, replaces them, or is ignored.
    #[arg(long, value_enum, default_value_t = ClientPromptMode::default())]
    pub client_prompt: ClientPromptMode,
    /// A new turn on a thread whose previous turn still runs: interrupt it (barge-in) or wait.
    #[arg(long, value_enum, default_value_t = BusyPolicy::default())]
    pub on_busy: BusyPolicy,
    /// At most this many stored messages of a thread are sent to the model.
    #[arg(long, default_value_t = 40)]
    pub history_max_messages: usize,
    /// Seconds of silence on a stream before a `:` keep-alive comment is sent.
    #[arg(long, default_value_t = 5)]
    pub keepalive_secs: u64,
    /// Largest request body accepted, in bytes (larger gets 413). Large bodies share one
    /// budget per port (64 MiB, or one largest body); past it they get 503.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Turn API-key checks off. Only for closed networks: anyone who can reach the port can
    /// use the upstream key.
    #[arg(long)]
    pub no_auth: bool,
    /// Try the box without an LLM key: a built-in canned model answers (no network), and
    /// arithmetic goes to the calculator tool. Everything else is the real box.
    #[arg(long)]
    pub demo: bool,
    /// Open the conversation viewer without login. Only for a trusted LAN: anyone who can
    /// reach the viewer port reads (and can delete) every conversation.
    #[arg(long)]
    pub viewer_open: bool,
    /// Serve `GET /metrics` (Prometheus) on the API port without a key. Only for a trusted
    /// LAN: it tells anyone who can reach the port how busy the box is and which tools it has.
    #[arg(long)]
    pub metrics_open: bool,
    /// Upstream connect timeout, seconds.
    #[arg(long, default_value_t = DEFAULT_CONNECT_TIMEOUT_SECS)]
    pub llm_connect_timeout_secs: u64,
    /// Upstream read timeout (longest silence between bytes), seconds.
    #[arg(long, default_value_t = DEFAULT_READ_TIMEOUT_SECS)]
    pub llm_read_timeout_secs: u64,
    /// Attempts per upstream call when it fails before the first token (connect error, 429, 5xx).
    #[arg(long, default_value_t = DEFAULT_ATTEMPTS)]
    pub llm_attempts: u32,
    /// Longest model answer, in bytes (text plus tool calls). Past it the model call is
    /// stopped and the answer so far is the answer, with finish reason `length`.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_ANSWER_BYTES)]
    pub max_answer_bytes: usize,
    /// How long the route graph waits for the router's decision, milliseconds; past it the
    /// turn goes on as chat (the chat model is already answering).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_ROUTER_TIMEOUT_MS)]
    pub router_timeout_ms: u64,
    /// Export the conversation log to this PostgreSQL URL while serving (as `export --follow`).
    #[arg(long, value_name = "URL")]
    pub export_to: Option<String>,
    /// With --export-to: this box's name, prefixed to conversation ids (`<box-id>/<id>`).
    #[arg(long, value_name = "NAME", requires = "export_to")]
    pub export_box_id: Option<String>,
    /// With --export-to: seconds between looks for new messages.
    #[arg(long, default_value_t = DEFAULT_FOLLOW_INTERVAL_SECS)]
    pub export_interval_secs: u64,
    // The next flags are `Option`s: `agent.json` may set them, and a flag only wins when given.
    // So clap cannot show their defaults itself; `with_default` adds them to the help, which
    // is written there (a doc comment would be a second copy clap ignores).
    #[arg(long, value_enum, help = with_default(
        "How turns are answered: `route` (a router picks the chat model or the tool model) or \
         `react` (one model with every tool).",
        value_name(GraphKind::default()),
    ))]
    pub graph: Option<GraphKind>,
    #[arg(long, value_name = "NAME", help = with_default(
        "The fast model that routes turns (and speaks chatty filler).",
        format_args!("{DEFAULT_ROUTER_MODEL} on DashScope, else the --llm-name"),
    ))]
    pub router_llm_name: Option<String>,
    /// The model of the route graph's tool branch. [default: the --llm-name]
    #[arg(long, value_name = "NAME")]
    pub tool_llm_name: Option<String>,
    #[arg(long, value_enum, help = with_default(
        "The route graph's tool branch: `tool`, or `chatty` (spoken filler while tools work, \
         streaming only).",
        value_name(ToolNode::default()),
    ))]
    pub tool_node: Option<ToolNode>,
    #[arg(long, value_name = "N", help = with_default(
        "Rounds of tool calls in one turn before the model must answer.",
        DEFAULT_MAX_TOOL_STEPS,
    ))]
    pub max_tool_steps: Option<usize>,
    #[arg(long, value_name = "SECS", help = with_default(
        "Time limit of one tool call, seconds (an MCP server's `timeout` overrides it).",
        DEFAULT_TOOL_TIMEOUT_SECS,
    ))]
    pub tool_timeout_secs: Option<u64>,
    #[arg(long, value_name = "FILE", help = with_default(
        "MCP servers file; a missing file means none.",
        format!("<config-dir>/{MCP_CONFIG_FILE}"),
    ))]
    pub mcp_config: Option<PathBuf>,
    /// The longest a turn may take (router, tools and model calls together), seconds; past it
    /// the turn stops, keeps its partial answer and the client gets a timeout error.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TURN_TIMEOUT_SECS)]
    pub turn_timeout_secs: u64,
    /// A streaming client that takes nothing of the answer for this many seconds is dropped
    /// and its turn ends as interrupted.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CLIENT_STALL_SECS)]
    pub client_stall_secs: u64,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// Connection limits of each HTTP port (the API and the viewer, each on its own).
#[derive(Debug, Args, Clone)]
pub struct HttpArgs {
    /// Seconds a client gets to send a request's headers, from connecting (or, on a kept-alive
    /// connection, from the request's first byte); slower clients are disconnected.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS)]
    pub http_header_timeout_secs: u64,
    /// Seconds a client gets to send a whole request body; past it the answer is 408.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_BODY_TIMEOUT_SECS)]
    pub http_body_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub http_idle_timeout_secs: u64,
    /// Open connections per port; past it new connections are closed at once (the ones being
    /// served go on).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
}

#[derive(Debug, Args, Clone)]
pub struct ViewerArgs {
    /// The conversation log: a SQLite file, or a `postgres://` URL of a database in the
    /// documented `messages` schema. Default: `CONN_STR`, else the SQLite file of `--data-dir`.
    // `--help` must not print the environment's value: it holds a password.
    #[arg(long, env = "CONN_STR", hide_env_values = true)]
    pub db: Option<String>,
    #[arg(long, default_value = DEFAULT_LISTEN_HOST)]
    pub host: String,
    /// 0 picks a free port; the address is printed either way.
    #[arg(long, default_value_t = DEFAULT_VIEWER_PORT)]
    pub port: u16,
    /// No login. Only for a trusted LAN: anyone who can reach the port reads (and can delete)
    /// every conversation.
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Args, Clone)]
pub struct MockLlmArgs {
    /// Print help (its own options only: the global ones mean nothing to the fake upstream).
    #[arg(short, long, action = clap::ArgAction::SetTrue)]
    pub help: bool,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port; the chosen one is printed.
    #[arg(long, default_value_t = DEFAULT_MOCK_PORT)]
    pub port: u16,
    /// Latency to the first token of every answer, milliseconds.
    #[arg(
        long,
        visible_alias = "ttft-ms",
        value_name = "MS",
        default_value_t = 0
    )]
    pub delay_ms: u64,
    /// Interval between streamed tokens (pieces of 8 characters), milliseconds.
    #[arg(
        long,
        visible_alias = "token-interval-ms",
        value_name = "MS",
        default_value_t = 0
    )]
    pub chunk_delay_ms: u64,
    /// Answers are this many tokens long (default: `You said: … I remember: …`, as it comes).
    #[arg(long, value_name = "N")]
    pub tokens: Option<usize>,
    /// Extra delay before the first token of calls that do not send `"enable_thinking": false`
    /// (a hybrid-thinking model thinking first), milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub thinking_delay_ms: u64,
    /// The router's answer to calls without a `[[mock:route=…]]` directive.
    #[arg(long, value_enum, default_value_t = MockRoute::Chat)]
    pub route: MockRoute,
    /// A tool call made when tools are offered and the text has no `[[mock:call=…]]`
    /// directive: `NAME {"json":"arguments"}`.
    #[arg(long, value_name = "CALL")]
    pub tool_call: Option<String>,
    /// Answer model calls only with this Bearer key (others get a 401), as a real upstream.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
}

impl MockLlmArgs {
    /// `mock-llm --help`: this command's options alone.
    pub fn help() -> String {
        let command = clap::Command::new("lang-agent mock-llm")
            .about(
                "A scripted OpenAI-compatible fake upstream, for tests and benchmarks. \
                    Directives in the user text script single calls: see src/mock_llm/script.rs.",
            )
            .disable_help_flag(true);
        <MockLlmArgs as Args>::augment_args(command)
            .render_long_help()
            .to_string()
    }
}

/// `mock-llm --port`'s default, beside the box's 8588 and 8590.
pub const DEFAULT_MOCK_PORT: u16 = 8591;

/// The router answer `mock-llm --route` scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MockRoute {
    Chat,
    Tool,
}

/// `lang-agent stress`: where to, how hard, and where the figures go.
#[derive(Debug, Args, Clone)]
pub struct StressArgs {
    /// The server's base URL.
    #[arg(long, value_name = "BASE", default_value = "http://127.0.0.1:8588")]
    pub url: String,
    /// Which API to call: DashScope (`/api/v1/apps/stress/completion`) or OpenAI
    /// (`/v1/chat/completions`).
    #[arg(long, value_enum, default_value_t = StressApi::Dashscope)]
    pub api: StressApi,
    /// API key, sent as `Authorization: Bearer KEY`; without it no key is sent.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Clients at once, one level each (comma-separated).
    #[arg(
        long,
        value_name = "N,N,…",
        value_delimiter = ',',
        default_value = "1,10,50,200"
    )]
    pub concurrency: Vec<usize>,
    /// Requests in all per level, paired with --concurrency level by level (or one value for
    /// every level).
    #[arg(
        long,
        value_name = "N,N,…",
        value_delimiter = ',',
        default_value = "10,50,200,1000"
    )]
    pub requests: Vec<usize>,
    /// Stream the answers (SSE); time to first byte is then the first event's.
    #[arg(long)]
    pub stream: bool,
    /// What every request asks.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "What is the weather like today?"
    )]
    pub prompt: String,
    /// Longest one request may take to its answer's end, seconds; past it the request failed.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout_secs: u64,
    /// Also write every level's figures to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also draw p50/p95/p99 latency against concurrency to FILE (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
}

/// `text` with the `[default: …]` note clap gives flags whose default it applies itself.
fn with_default(text: &str, default: impl Display) -> String {
    format!("{text} [default: {default}]")
}

/// How a choice is written on the command line (`route`, `chatty`).
fn value_name(choice: impl ValueEnum) -> String {
    choice
        .to_possible_value()
        .map(|value| value.get_name().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;

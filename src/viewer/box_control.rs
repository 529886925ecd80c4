//! What the box page needs from the running box: its configuration as it stands (profiles,
//! MCP servers, local tools, config errors), a way to save a profile's prompt, and a way to
//! start a try-it turn on a profile.
//!
//! The viewer only sees this trait; `serve` implements it over its live configuration
//! (`commands/serve/box_control.rs`). `lang-agent viewer` alone has no box, so it gives
//! `None` and the page is not mounted.

use crate::agent::turns::TurnHandle;

/// The running box, as the box page sees it.
pub trait BoxControl: Send + Sync {
    /// The configuration in force now.
    fn status(&self) -> BoxStatus;

    /// Replaces `profile`'s prompt `prompt` (a name from [`PromptView::name`]) with `text`:
    /// validated, written atomically, the previous version kept as `<file>.bak`, then applied
    /// by the live reload. Returns once the file is written.
    fn save_prompt(&self, profile: &str, prompt: &str, text: &str) -> Result<(), BoxError>;

    /// Starts a turn of `profile` from the page: `conversation` continues an earlier try-it
    /// conversation (the id a previous handle gave), None starts a new one. The conversation
    /// is logged as from the page.
    fn try_turn(
        &self,
        profile: &str,
        conversation: Option<String>,
        text: String,
    ) -> Result<TurnHandle, BoxError>;
}

/// Why the box refused a page's request; the message is shown to the user as is.
#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("no profile named {0:?}")]
    NoSuchProfile(String),
    #[error("profile {profile:?} has no prompt {prompt:?}")]
    NoSuchPrompt { profile: String, prompt: String },
    #[error("{0}")]
    Invalid(String),
    #[error("writing the prompt: {0}")]
    Io(#[from] std::io::Error),
}

/// The box's configuration as the page shows it.
#[derive(Debug, Clone, Default)]
pub struct BoxStatus {
    /// When the configuration in force was read (RFC 3339, UTC).
    pub loaded_at: String,
    /// One line per file the last reload could not use (the previous config stays in force).
    pub config_errors: Vec<String>,
    pub profiles: Vec<ProfileView>,
    pub mcp_servers: Vec<McpServerView>,
    /// The box's local tools (e.g. `calculator`).
    pub local_tools: Vec<String>,
}

/// One profile (one assistant of the box).
#[derive(Debug, Clone, Default)]
pub struct ProfileView {
    pub name: String,
    pub is_default: bool,
    /// The DashScope app ids that select it.
    pub app_ids: Vec<String>,
    pub graph: String,
    pub tool_node: String,
    /// (role, model): ("chat", "qwen-plus"), ("router", …), ("tool", …).
    pub models: Vec<(String, String)>,
    /// The upstream's base URL, credentials redacted.
    pub upstream: String,
    /// The name of the environment variable holding the upstream's key (never the key).
    pub key_env: String,
    /// Whether that variable is set.
    pub key_set: bool,
    /// The tools this profile may use (MCP servers' tools and local tools).
    pub tools: Vec<String>,
    pub memory_scope: String,
    pub on_busy: String,
    pub history_max_messages: usize,
    pub prompts: Vec<PromptView>,
}

/// One prompt file of a profile.
#[derive(Debug, Clone, Default)]
pub struct PromptView {
    /// The prompt's name, as `save_prompt` takes it (e.g. `chat_prompt`).
    pub name: String,
    /// Its file on disk.
    pub file: String,
    pub text: String,
}

/// One configured MCP server.
#[derive(Debug, Clone, Default)]
pub struct McpServerView {
    pub name: String,
    /// `stdio`, `streamable_http` or `sse`.
    pub transport: String,
    /// `connected`, `retrying` or `disabled`.
    pub state: String,
    /// Since when it is in that state (RFC 3339, UTC).
    pub since: String,
    pub last_error: Option<String>,
    pub tools: Vec<String>,
    /// The profiles allowed to use it.
    pub used_by: Vec<String>,
}

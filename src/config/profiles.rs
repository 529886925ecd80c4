//! Profiles: the assistants one box runs, each from `configs/profiles/<name>.json`.
//!
//! Xiaozhi selects an assistant by its DashScope `app_id` (a storyteller, a shop assistant, a
//! device controller on one box); an OpenAI client by `model`. A profile file says which app
//! ids select it and whatever it does differently from the box's flags and `agent.json`: its
//! prompts directory, graph, models, upstream (base URL and the *name* of the environment
//! variable holding its key), `extra_body` per model role, the tools it may use, memory scope,
//! history, client prompt mode and busy policy. Anything it leaves out is the box's.
//!
//! Without profile files the box has one profile, `default`, made of the flags and
//! `agent.json` exactly as before. A file may take the default role (`"default": true`);
//! otherwise the flags' profile stays the default. Files are read again on every live reload;
//! a bad one fails the whole reload with one line naming it, so the previous set stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{ConfigError, DEFAULT_BASE_URL, ServeConfig};
use crate::agent::ClientPromptMode;
use crate::agent::graph::{AgentConfig, GraphKind, RoleExtraBody, ToolNode};
use crate::agent::turns::{BusyPolicy, MemoryScope};
use crate::llm::{LlmConfig, Thinking};
use crate::redact::Secret;
use crate::store::DEFAULT_PROFILE;

/// The profiles directory inside the config directory.
pub const PROFILES_DIR: &str = "profiles";
/// The prompts directory inside the config directory (and the default of every profile).
pub const PROMPTS_DIR: &str = "route_sys_prompts";
/// Where the box's own upstream key is read from.
pub const DEFAULT_KEY_ENV: &str = "ALI_API_KEY";
/// Longest profile name: it prefixes thread names and shows in the log and the export.
const MAX_NAME_BYTES: usize = 48;

/// One profile, resolved: everything its pipeline is built from.
#[derive(Debug, Clone)]
pub struct ProfileSettings {
    pub name: String,
    pub is_default: bool,
    /// The DashScope app ids that select it.
    pub app_ids: Vec<String>,
    /// Its prompts directory (like `route_sys_prompts/`).
    pub prompts_dir: PathBuf,
    pub agent: AgentConfig,
    /// Its upstream: base URL, key, chat model, thinking.
    pub llm: LlmConfig,
    /// The environment variable its key is read from (shown on the box page, never the key).
    pub key_env: String,
    /// The MCP servers and local tools it may use; None: all of them.
    pub tools: Option<Vec<String>>,
    pub memory_scope: MemoryScope,
    pub history_max_messages: usize,
    pub client_prompt: ClientPromptMode,
    pub on_busy: BusyPolicy,
}

/// A profile file as written (comments allowed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    app_ids: Vec<String>,
    #[serde(default)]
    default: bool,
    /// Relative to the config directory.
    prompts: Option<PathBuf>,
    graph: Option<GraphKind>,
    tool_node: Option<ToolNode>,
    llm_name: Option<String>,
    router_llm_name: Option<String>,
    tool_llm_name: Option<String>,
    max_tool_steps: Option<usize>,
    upstream: Option<UpstreamFile>,
    thinking: Option<Thinking>,
    #[serde(default)]
    extra_body: ExtraBodyFile,
    tools: Option<Vec<String>>,
    memory_scope: Option<MemoryScope>,
    history_max_messages: Option<usize>,
    client_prompt: Option<ClientPromptMode>,
    on_busy: Option<BusyPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    base_url: Option<String>,
    /// The name of the environment variable holding the key, never the key itself.
    api_key_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtraBodyFile {
    #[serde(default)]
    chat: Map<String, Value>,
    #[serde(default)]
    router: Map<String, Value>,
    #[serde(default)]
    tool: Map<String, Value>,
}

/// The box's profiles: the flags' own (`default`) and one per file of
/// `<config_dir>/profiles/`, sorted by name, exactly one of them the default.
pub fn resolve(
    config_dir: &Path,
    llm: &LlmConfig,
    serve: &ServeConfig,
) -> Result<Vec<ProfileSettings>, ConfigError> {
    let base = ProfileSettings {
        name: DEFAULT_PROFILE.to_string(),
        is_default: true,
        app_ids: Vec::new(),
        prompts_dir: config_dir.join(PROMPTS_DIR),
        agent: serve.agent.clone(),
        llm: llm.clone(),
        key_env: DEFAULT_KEY_ENV.to_string(),
        tools: None,
        memory_scope: serve.memory_scope,
        history_max_messages: serve.history_max_messages,
        client_prompt: serve.client_prompt,
        on_busy: serve.on_busy,
    };
    let mut profiles = Vec::new();
    for (name, path) in profile_files(&config_dir.join(PROFILES_DIR))? {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let file: ProfileFile = jsonc_parser::parse_to_serde_value(&text, &Default::default())
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        let profile = apply(&base, name, file, config_dir)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        profiles.push(profile);
    }
    check_set(base, profiles)
}

/// `dir`'s `*.json` files by profile name; no directory means no files.
fn profile_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", dir.display()))),
    };
    let mut files = BTreeMap::new();
    for entry in entries {
        let path = entry
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", dir.display())))?
            .path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        check_name(name).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        files.insert(name.to_string(), path);
    }
    Ok(files)
}

/// Profile names: lower-case letters, digits, `-` and `_`, so a name is safe in a thread
/// name, a URL and the export's `pipeline_id`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "profile name {name:?}: use 1 to {MAX_NAME_BYTES} of a-z, 0-9, - and _"
        ))
    }
}

/// `base` with what `file` changes.
fn apply(
    base: &ProfileSettings,
    name: String,
    file: ProfileFile,
    config_dir: &Path,
) -> Result<ProfileSettings, String> {
    let mut profile = base.clone();
    profile.name = name;
    profile.is_default = file.default;
    profile.app_ids = file.app_ids;
    if let Some(dir) = file.prompts {
        profile.prompts_dir = config_dir.join(dir);
    }
    let agent = &mut profile.agent;
    agent.graph = file.graph.unwrap_or(agent.graph);
    agent.tool_node = file.tool_node.unwrap_or(agent.tool_node);
    if let Some(steps) = file.max_tool_steps {
        if steps == 0 {
            return Err("max_tool_steps must be at least 1".into());
        }
        agent.max_tool_steps = steps;
    }
    agent.extra_body = RoleExtraBody {
        chat: file.extra_body.chat,
        router: file.extra_body.router,
        tool: file.extra_body.tool,
    };
    if let Some(upstream) = file.upstream {
        if let Some(url) = upstream.base_url {
            profile.llm.base_url = super::check_base_url(&url).map_err(|e| e.0)?;
        }
        if let Some(var) = upstream.api_key_env {
            profile.llm.api_key = std::env::var(&var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(Secret::new);
            profile.key_env = var;
        }
    }
    if let Some(thinking) = file.thinking {
        profile.llm.thinking = thinking;
    }
    let model = |given: Option<String>, current: &str, what: &str| match given {
        Some(m) if m.trim().is_empty() => Err(format!("{what} must not be empty")),
        Some(m) => Ok(m),
        None => Ok(current.to_string()),
    };
    profile.llm.model = model(file.llm_name, &base.llm.model, "llm_name")?;
    agent.router_model = model(
        file.router_llm_name,
        &base.agent.router_model,
        "router_llm_name",
    )?;
    agent.tool_model = model(file.tool_llm_name, &base.agent.tool_model, "tool_llm_name")?;
    profile.tools = file.tools;
    profile.memory_scope = file.memory_scope.unwrap_or(base.memory_scope);
    profile.client_prompt = file.client_prompt.unwrap_or(base.client_prompt);
    profile.on_busy = file.on_busy.unwrap_or(base.on_busy);
    if let Some(history) = file.history_max_messages {
        if history == 0 {
            return Err("history_max_messages must be at least 1".into());
        }
        profile.history_max_messages = history;
    }
    if profile.llm.api_key.is_none() && profile.llm.base_url == DEFAULT_BASE_URL {
        return Err(format!(
            "its upstream is DashScope but {} is not set",
            profile.key_env
        ));
    }
    Ok(profile)
}

/// The whole set, checked: at most one file is the default (else the flags' profile is), no
/// app id selects two profiles.
fn check_set(
    base: ProfileSettings,
    files: Vec<ProfileSettings>,
) -> Result<Vec<ProfileSettings>, ConfigError> {
    let defaults: Vec<String> = files
        .iter()
        .filter(|p| p.is_default)
        .map(|p| p.name.clone())
        .collect();
    if defaults.len() > 1 {
        return Err(ConfigError(format!(
            "profiles {} all say \"default\": true; one may",
            defaults.join(", ")
        )));
    }
    let mut all = files;
    if defaults.is_empty() && !all.iter().any(|p| p.name == DEFAULT_PROFILE) {
        all.insert(0, base);
    } else if defaults.is_empty() {
        // A file named `default` without the flag still is the default.
        for p in &mut all {
            p.is_default = p.name == DEFAULT_PROFILE;
        }
    }
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for profile in &all {
        for app in &profile.app_ids {
            if let Some(other) = owner.insert(app, &profile.name) {
                return Err(ConfigError(format!(
                    "app id {app:?} selects both profile {other} and profile {}",
                    profile.name
                )));
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests;

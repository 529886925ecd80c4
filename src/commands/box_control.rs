//! The box page's view of the running box: `serve`'s [`BoxControl`] over its live
//! configuration ([`LiveBox`]).
//!
//! Status is read from what is in force (the profiles' settings as last loaded, the running
//! MCP servers, the last reload's errors); credentials never leave: upstream URLs are
//! redacted and a key is shown only as the name of its variable and whether it is set. A saved
//! prompt is written by `agent::prompts::save` and applied by a reload. A try-it turn runs
//! through the same [`TurnRunner`](crate::agent::turns::TurnRunner) as an API call, on a
//! thread of its own named `try-…` under the profile, marked as from the page.

use std::sync::Arc;

use clap::ValueEnum;

use super::live::LiveBox;
use super::pipeline::allowed;
use crate::agent::graph::GraphKind;
use crate::agent::profile::Profile;
use crate::agent::prompts::{self, PromptName};
use crate::agent::turns::{TurnHandle, TurnRequest};
use crate::redact::redact_url;
use crate::store::Origin;
use crate::tools::ToolSource;
use crate::tools::local::LocalTools;
use crate::tools::mcp::McpTransport;
use crate::viewer::{BoxControl, BoxError, BoxStatus, McpServerView, ProfileView, PromptView};

/// Longest message the try-it chat takes.
const MAX_TRY_TEXT_BYTES: usize = 8 * 1024;
/// What try-it threads are named from (under their profile).
const TRY_PREFIX: &str = "try-";

/// `serve`'s box, as the box page sees it.
pub struct ServeBox(pub Arc<LiveBox>);

impl BoxControl for ServeBox {
    fn status(&self) -> BoxStatus {
        let loaded = self.0.status();
        let running = self.0.turns.profiles();
        let servers = self.0.tools.mcp_servers();
        let profiles = loaded
            .profiles
            .iter()
            .map(|s| {
                let live = running.by_name(&s.name);
                let mut models = vec![("chat".to_string(), s.llm.model.clone())];
                if s.agent.graph == GraphKind::Route {
                    models.push(("router".into(), s.agent.router_model.clone()));
                    models.push(("tool".into(), s.agent.tool_model.clone()));
                }
                ProfileView {
                    name: s.name.clone(),
                    is_default: s.is_default,
                    app_ids: s.app_ids.clone(),
                    graph: value_name(s.agent.graph),
                    tool_node: value_name(s.agent.tool_node),
                    models,
                    upstream: redact_url(&s.llm.base_url),
                    key_env: s.key_env.clone(),
                    key_set: s.llm.api_key.is_some(),
                    tools: live.map(|p| p.agent.box_tool_names()).unwrap_or_default(),
                    memory_scope: value_name(s.memory_scope),
                    on_busy: value_name(s.on_busy),
                    history_max_messages: s.history_max_messages,
                    prompts: live.map(|p| prompt_views(p)).unwrap_or_default(),
                }
            })
            .collect();
        let mcp_servers = servers
            .iter()
            .map(|server| {
                let config = server.config();
                let state = server.state();
                McpServerView {
                    name: config.name.clone(),
                    transport: match config.transport {
                        McpTransport::StreamableHttp { .. } => "streamable_http",
                        McpTransport::Sse { .. } => "sse",
                        McpTransport::Stdio { .. } => "stdio",
                    }
                    .into(),
                    state: state.phase.as_str().into(),
                    since: state.since.to_rfc3339(),
                    last_error: state.last_error,
                    tools: server.tools().into_iter().map(|t| t.name).collect(),
                    used_by: loaded
                        .profiles
                        .iter()
                        .filter(|s| allowed(s, &config.name))
                        .map(|s| s.name.clone())
                        .collect(),
                }
            })
            .collect();
        BoxStatus {
            loaded_at: loaded.at.to_rfc3339(),
            config_errors: loaded.errors,
            profiles,
            mcp_servers,
            local_tools: LocalTools::builtin().names(),
        }
    }

    fn save_prompt(&self, profile: &str, prompt: &str, text: &str) -> Result<(), BoxError> {
        let profiles = self.0.turns.profiles();
        let profile = profiles
            .by_name(profile)
            .ok_or_else(|| BoxError::NoSuchProfile(profile.into()))?;
        let name = PromptName::parse(prompt).ok_or_else(|| BoxError::NoSuchPrompt {
            profile: profile.name.clone(),
            prompt: prompt.into(),
        })?;
        prompts::save(profile.prompts.dir(), name, text).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => BoxError::Invalid(e.to_string()),
            _ => BoxError::Io(e),
        })?;
        tracing::info!(profile = %profile.name, prompt, "prompt saved from the box page");
        // The file watch reloads too; this makes it certain where inotify is missing.
        let live = Arc::clone(&self.0);
        tokio::spawn(async move { live.reload().await });
        Ok(())
    }

    fn try_turn(
        &self,
        profile: &str,
        conversation: Option<String>,
        text: String,
    ) -> Result<TurnHandle, BoxError> {
        let profiles = self.0.turns.profiles();
        let profile = profiles
            .by_name(profile)
            .ok_or_else(|| BoxError::NoSuchProfile(profile.into()))?;
        if text.trim().is_empty() {
            return Err(BoxError::Invalid("say something first".into()));
        }
        if text.len() > MAX_TRY_TEXT_BYTES {
            return Err(BoxError::Invalid(format!(
                "a try-it message is at most {MAX_TRY_TEXT_BYTES} bytes"
            )));
        }
        let thread = try_thread(profile, conversation)?;
        let request = TurnRequest::said(thread, text, Arc::clone(profile), Origin::Page);
        Ok(self.0.turns.start(request))
    }
}

/// The try-it thread: a new one, or `conversation` if it is one of this profile's try-it
/// threads (the page cannot be used to write into a device's conversation).
fn try_thread(profile: &Profile, conversation: Option<String>) -> Result<String, BoxError> {
    let prefix = profile.thread_name(TRY_PREFIX);
    match conversation {
        None => Ok(profile.thread_name(&format!(
            "{TRY_PREFIX}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))),
        Some(id) if id.starts_with(&prefix) && id.len() <= prefix.len() + 64 => Ok(id),
        Some(id) => Err(BoxError::Invalid(format!(
            "{id:?} is not a try-it conversation of profile {}",
            profile.name
        ))),
    }
}

fn prompt_views(profile: &Profile) -> Vec<PromptView> {
    PromptName::ALL
        .into_iter()
        .map(|name| PromptView {
            // The file's stem, as the page names prompts (`PromptName::parse` reads it back).
            name: format!("{}_prompt", name.as_str()),
            file: profile
                .prompts
                .dir()
                .join(name.file_name())
                .display()
                .to_string(),
            text: profile.prompts.get(name).to_string(),
        })
        .collect()
}

/// The name a setting has on the command line (`route`, `session`, `interrupt`).
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

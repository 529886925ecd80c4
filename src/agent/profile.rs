//! Profiles at run time: the assistants of one box, each with its agent built, and the set a
//! call picks from (by DashScope app id, or by OpenAI `model` name).
//!
//! A turn carries its profile ([`TurnRequest::profile`](super::turns::TurnRequest)) from the
//! moment the call is read: a live reload that swaps the set never changes a running turn.
//! Two profiles never share a thread: the default profile's threads keep the names they
//! always had, every other profile's are prefixed with its name and [`PROFILE_SEPARATOR`],
//! which client ids may not contain ([`thread_name`](super::turns::CallIds::place)).

use std::sync::Arc;

use super::Agent;
use super::ClientPromptMode;
use super::prompts::Prompts;
use super::turns::{BusyPolicy, MemoryScope};

/// Separates a non-default profile's name from the rest of its thread names. Client ids
/// containing it are refused, so such a name never collides with another profile's.
pub const PROFILE_SEPARATOR: char = '\u{00B7}';

/// One assistant of the box.
pub struct Profile {
    pub name: String,
    pub is_default: bool,
    /// The DashScope app ids that select it.
    pub app_ids: Vec<String>,
    pub agent: Arc<dyn Agent>,
    /// Its prompts (its own directory, or the box's).
    pub prompts: Prompts,
    pub memory_scope: MemoryScope,
    pub client_prompt: ClientPromptMode,
    pub on_busy: BusyPolicy,
    pub history_max_messages: usize,
}

impl Profile {
    /// The name its threads are stored under: as given for the default profile, else
    /// `<profile>·<name>`.
    pub fn thread_name(&self, name: &str) -> String {
        if self.is_default {
            name.to_string()
        } else {
            format!("{}{PROFILE_SEPARATOR}{name}", self.name)
        }
    }
}

impl Profile {
    /// A profile for reading calls only (the API's parsing tests and the fuzz targets): its
    /// agent is the chat graph on an upstream at 127.0.0.1:9, which nothing listens on.
    #[doc(hidden)]
    pub fn for_parsing(
        name: &str,
        is_default: bool,
        memory_scope: MemoryScope,
        client_prompt: ClientPromptMode,
    ) -> Profile {
        let llm = crate::llm::LlmClient::new(&crate::llm::LlmConfig {
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: None,
            model: "parse-only".into(),
            connect_timeout: std::time::Duration::from_secs(1),
            read_timeout: std::time::Duration::from_secs(1),
            attempts: 1,
            max_answer_bytes: 1 << 16,
            thinking: crate::llm::Thinking::Auto,
        })
        .expect("a plain HTTP client builds");
        let prompts = Prompts::from_dir(std::path::Path::new("/nonexistent"))
            .expect("missing prompt files are their defaults");
        Profile {
            name: name.into(),
            is_default,
            app_ids: Vec::new(),
            agent: Arc::new(super::chat::ChatAgent::new(
                llm,
                "parse-only",
                prompts.clone(),
            )),
            prompts,
            memory_scope,
            client_prompt,
            on_busy: BusyPolicy::Interrupt,
            history_max_messages: 20,
        }
    }
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("is_default", &self.is_default)
            .field("app_ids", &self.app_ids)
            .finish_non_exhaustive()
    }
}

/// Every profile of the box; exactly one is the default.
pub struct Profiles {
    all: Vec<Arc<Profile>>,
    default: usize,
}

impl Profiles {
    /// The set of `all`; the default is the one marked so (the first if none is).
    pub fn new(all: Vec<Profile>) -> Profiles {
        assert!(!all.is_empty(), "a box has at least its default profile");
        let default = all.iter().position(|p| p.is_default).unwrap_or(0);
        Profiles {
            all: all.into_iter().map(Arc::new).collect(),
            default,
        }
    }

    /// One profile, the default.
    pub fn single(profile: Profile) -> Profiles {
        Profiles::new(vec![profile])
    }

    pub fn default_profile(&self) -> &Arc<Profile> {
        &self.all[self.default]
    }

    /// The profile app `app_id` selects, else the default.
    pub fn for_app(&self, app_id: &str) -> &Arc<Profile> {
        self.all
            .iter()
            .find(|p| p.app_ids.iter().any(|a| a == app_id))
            .unwrap_or_else(|| self.default_profile())
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Profile>> {
        self.all.iter().find(|p| p.name == name)
    }

    /// The profile an OpenAI `model` names, else the default.
    pub fn for_model(&self, model: Option<&str>) -> &Arc<Profile> {
        model
            .and_then(|m| self.by_name(m))
            .unwrap_or_else(|| self.default_profile())
    }

    pub fn all(&self) -> &[Arc<Profile>] {
        &self.all
    }
}

//! System prompts, read from `<config-dir>/route_sys_prompts/<name>_prompt.txt`.
//!
//! The texts are kept in memory and re-read on [`Prompts::reload`] (the server calls it on
//! SIGHUP), so an operator can tune a prompt without dropping live conversations. A prompt file
//! that is missing falls back to the default shipped in the binary, so a box with an empty
//! config directory still answers sensibly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The prompts the agents use, by name: `chat` (the chat branch and plain answers), `route`
/// (the router's decision), `tool` (the tool-using model), `chatty` (filler while tools work).
#[derive(Clone)]
pub struct Prompts {
    dir: PathBuf,
    texts: Arc<RwLock<HashMap<&'static str, Arc<str>>>>,
}

/// Defaults compiled in from the repository's `configs/`.
pub const DEFAULTS: &[(&str, &str)] = &[
    (
        "chat",
        include_str!("../../configs/route_sys_prompts/chat_prompt.txt"),
    ),
    (
        "route",
        include_str!("../../configs/route_sys_prompts/route_prompt.txt"),
    ),
    (
        "tool",
        include_str!("../../configs/route_sys_prompts/tool_prompt.txt"),
    ),
    (
        "chatty",
        include_str!("../../configs/route_sys_prompts/chatty_prompt.txt"),
    ),
];

/// The built-in text of prompt `name`, trimmed as loaded (the mock upstream recognises the
/// chatty call by it).
pub fn default_text(name: &str) -> Option<&'static str> {
    DEFAULTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| text.trim())
}

impl Prompts {
    /// Loads every known prompt from `config_dir`.
    pub fn load(config_dir: &Path) -> std::io::Result<Prompts> {
        let prompts = Prompts {
            dir: config_dir.join("route_sys_prompts"),
            texts: Arc::default(),
        };
        prompts.reload()?;
        Ok(prompts)
    }

    /// Re-reads the prompt files. On error the previous texts stay in force.
    pub fn reload(&self) -> std::io::Result<()> {
        let mut fresh = HashMap::new();
        for (name, default) in DEFAULTS {
            let path = self.dir.join(format!("{name}_prompt.txt"));
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => default.to_string(),
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", path.display()),
                    ));
                }
            };
            fresh.insert(*name, Arc::from(text.trim()));
        }
        *self.texts.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The current text of prompt `name`.
    pub fn get(&self, name: &str) -> Arc<str> {
        self.texts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_to_defaults_and_reloads_edits() {
        let dir = tempfile::tempdir().unwrap();
        let prompts = Prompts::load(dir.path()).unwrap();
        assert!(prompts.get("chat").contains("voice assistant"));
        assert!(prompts.get("route").contains(r#"{"step": "tool"}"#));
        assert!(!prompts.get("tool").is_empty() && !prompts.get("chatty").is_empty());
        std::fs::create_dir_all(dir.path().join("route_sys_prompts")).unwrap();
        std::fs::write(
            dir.path().join("route_sys_prompts/chat_prompt.txt"),
            " Be a pirate.\n",
        )
        .unwrap();
        assert!(prompts.get("chat").contains("voice assistant"));
        prompts.reload().unwrap();
        assert_eq!(&*prompts.get("chat"), "Be a pirate.");
    }
}

//! System prompts, read from `<config-dir>/route_sys_prompts/<name>_prompt.txt`.
//!
//! The texts are kept in memory and re-read on [`Prompts::reload`] (the server calls it on
//! SIGHUP), so an operator can tune a prompt without dropping live conversations. A prompt file
//! that is missing falls back to the default shipped in the binary, so a box with an empty
//! config directory still answers sensibly.
//!
//! Prompts are named by [`PromptName`], not by text: every name has a file and a default, so
//! asking for a prompt always gets one (a misspelt name does not compile, where a string would
//! silently have given an empty prompt).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The prompts the agents use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptName {
    /// The chat branch and plain answers (and the `react` graph's tool loop).
    Chat,
    /// The router's decision.
    Route,
    /// The tool-using model of the route graph.
    Tool,
    /// Filler spoken while tools work.
    Chatty,
}

impl PromptName {
    /// Every prompt, in the order their texts are kept.
    pub const ALL: [PromptName; 4] = [
        PromptName::Chat,
        PromptName::Route,
        PromptName::Tool,
        PromptName::Chatty,
    ];

    /// The name as operators know it: the start of its file's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptName::Chat => "chat",
            PromptName::Route => "route",
            PromptName::Tool => "tool",
            PromptName::Chatty => "chatty",
        }
    }

    /// Its file in `<config-dir>/route_sys_prompts/`.
    pub fn file_name(self) -> String {
        format!("{}_prompt.txt", self.as_str())
    }

    /// The text compiled in from the repository's `configs/`, trimmed as loaded (the mock
    /// upstream recognises the chatty call by it).
    pub fn default_text(self) -> &'static str {
        let text = match self {
            PromptName::Chat => include_str!("../../configs/route_sys_prompts/chat_prompt.txt"),
            PromptName::Route => {
                include_str!("../../configs/route_sys_prompts/route_prompt.txt")
            }
            PromptName::Tool => include_str!("../../configs/route_sys_prompts/tool_prompt.txt"),
            PromptName::Chatty => {
                include_str!("../../configs/route_sys_prompts/chatty_prompt.txt")
            }
        };
        text.trim()
    }

    /// Where its text is kept in [`Prompts`].
    fn index(self) -> usize {
        self as usize
    }
}

/// The current texts of every [`PromptName`].
#[derive(Clone)]
pub struct Prompts {
    dir: PathBuf,
    texts: Arc<RwLock<[Arc<str>; PromptName::ALL.len()]>>,
}

impl Prompts {
    /// Loads every prompt from `config_dir`'s `route_sys_prompts/`.
    pub fn load(config_dir: &Path) -> std::io::Result<Prompts> {
        Prompts::from_dir(&config_dir.join("route_sys_prompts"))
    }

    /// Loads every prompt from `dir` (a profile's own prompts directory); a missing file is
    /// its built-in default.
    pub fn from_dir(dir: &Path) -> std::io::Result<Prompts> {
        let prompts = Prompts {
            dir: dir.to_path_buf(),
            texts: Arc::new(RwLock::new(
                PromptName::ALL.map(|name| Arc::from(name.default_text())),
            )),
        };
        prompts.reload()?;
        Ok(prompts)
    }

    /// Re-reads the prompt files. On error the previous texts stay in force.
    pub fn reload(&self) -> std::io::Result<()> {
        let mut fresh = PromptName::ALL.map(|name| Arc::from(name.default_text()));
        for name in PromptName::ALL {
            let path = self.dir.join(name.file_name());
            match std::fs::read_to_string(&path) {
                Ok(text) => fresh[name.index()] = Arc::from(text.trim()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", path.display()),
                    ));
                }
            }
        }
        *self.texts.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The directory the prompts are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current text of prompt `name`.
    pub fn get(&self, name: PromptName) -> Arc<str> {
        self.texts.read().unwrap_or_else(|e| e.into_inner())[name.index()].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_to_defaults_and_reloads_edits() {
        let dir = tempfile::tempdir().unwrap();
        let prompts = Prompts::load(dir.path()).unwrap();
        assert!(prompts.get(PromptName::Chat).contains("voice assistant"));
        assert!(
            prompts
                .get(PromptName::Route)
                .contains(r#"{"step": "tool"}"#)
        );
        assert!(
            !prompts.get(PromptName::Tool).is_empty()
                && !prompts.get(PromptName::Chatty).is_empty()
        );
        std::fs::create_dir_all(dir.path().join("route_sys_prompts")).unwrap();
        std::fs::write(
            dir.path().join("route_sys_prompts/chat_prompt.txt"),
            " Be a pirate.\n",
        )
        .unwrap();
        assert!(prompts.get(PromptName::Chat).contains("voice assistant"));
        prompts.reload().unwrap();
        assert_eq!(&*prompts.get(PromptName::Chat), "Be a pirate.");
    }

    #[test]
    fn every_name_has_its_own_file_and_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("route_sys_prompts");
        std::fs::create_dir_all(&files).unwrap();
        for name in PromptName::ALL {
            assert!(!name.default_text().is_empty(), "{name:?}");
            assert_eq!(name.file_name(), format!("{}_prompt.txt", name.as_str()));
            std::fs::write(files.join(name.file_name()), format!("the {name:?} text")).unwrap();
        }
        let prompts = Prompts::load(dir.path()).unwrap();
        for name in PromptName::ALL {
            assert_eq!(&*prompts.get(name), format!("the {name:?} text"));
        }
    }
}

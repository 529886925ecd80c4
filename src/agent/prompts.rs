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

    /// The prompt called `name`: the name operators know (`chat`) or its file's stem
    /// (`chat_prompt`, as the box page names prompts).
    pub fn parse(name: &str) -> Option<PromptName> {
        let name = name.strip_suffix("_prompt").unwrap_or(name);
        PromptName::ALL.into_iter().find(|p| p.as_str() == name)
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

/// The longest prompt [`save`] accepts.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;

/// Replaces prompt `name` in `dir` (a prompts directory) with `text`, so that a crash at any
/// moment leaves either the old file or the new one, never half of either: the text is
/// written to a temporary file in `dir`, flushed to disk, the current file is kept as
/// `<file>.bak`, and the new one renamed into place. The live reload then applies it.
///
/// A text that is empty (after trimming), over [`MAX_PROMPT_BYTES`] or holds a NUL is refused
/// with [`std::io::ErrorKind::InvalidInput`] and nothing is touched.
pub fn save(dir: &Path, name: PromptName, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    if text.trim().is_empty() {
        return Err(invalid(format!(
            "the {} prompt may not be empty",
            name.as_str()
        )));
    }
    if text.len() > MAX_PROMPT_BYTES {
        return Err(invalid(format!(
            "the {} prompt is {} bytes; at most {MAX_PROMPT_BYTES} are allowed",
            name.as_str(),
            text.len()
        )));
    }
    if text.contains('\0') {
        return Err(invalid(format!(
            "the {} prompt holds a NUL character",
            name.as_str()
        )));
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name.file_name());
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    let backup = dir.join(format!("{}.bak", name.file_name()));
    match std::fs::copy(&path, &backup) {
        Ok(_) => {}
        // No file yet: the prompt was the built-in default, nothing to keep.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    temp.persist(&path).map_err(|e| e.error)?;
    // The rename itself is durable only once the directory is.
    std::fs::File::open(dir)?.sync_all()
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

    #[test]
    fn names_parse_as_operators_and_the_box_page_write_them() {
        for name in PromptName::ALL {
            assert_eq!(PromptName::parse(name.as_str()), Some(name));
            assert_eq!(
                PromptName::parse(&format!("{}_prompt", name.as_str())),
                Some(name)
            );
        }
        for wrong in ["", "_prompt", "Chat", "chat_prompt.txt", "../chat", "chats"] {
            assert_eq!(PromptName::parse(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn save_replaces_the_file_and_keeps_the_old_text_as_bak() {
        let dir = tempfile::tempdir().unwrap();
        let prompts_dir = dir.path().join("route_sys_prompts");
        save(&prompts_dir, PromptName::Chat, "First.").unwrap();
        let file = prompts_dir.join("chat_prompt.txt");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "First.");
        assert!(!prompts_dir.join("chat_prompt.txt.bak").exists());
        save(&prompts_dir, PromptName::Chat, "Be a pirate.").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "Be a pirate.");
        assert_eq!(
            std::fs::read_to_string(prompts_dir.join("chat_prompt.txt.bak")).unwrap(),
            "First."
        );
        // No temporary file is left behind.
        let mut names: Vec<_> = std::fs::read_dir(&prompts_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["chat_prompt.txt", "chat_prompt.txt.bak"]);
        let prompts = Prompts::from_dir(&prompts_dir).unwrap();
        assert_eq!(&*prompts.get(PromptName::Chat), "Be a pirate.");
    }

    #[test]
    fn save_refuses_an_invalid_text_and_leaves_the_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), PromptName::Tool, "Use tools.").unwrap();
        let too_long = "x".repeat(MAX_PROMPT_BYTES + 1);
        for bad in ["", "  \n\t ", "a\0b", too_long.as_str()] {
            let error = save(dir.path(), PromptName::Tool, bad).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
            assert!(error.to_string().contains("tool prompt"), "{error}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("tool_prompt.txt")).unwrap(),
            "Use tools."
        );
        assert!(!dir.path().join("tool_prompt.txt.bak").exists());
        save(dir.path(), PromptName::Tool, &"y".repeat(MAX_PROMPT_BYTES)).unwrap();
    }
}

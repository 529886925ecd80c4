//! The client's own system text on a remembered thread, and how it meets the box's prompt.
//!
//! Xiaozhi sends its first system message on every call: the persona the user set in Xiaozhi,
//! the current time, and the `<memory>` block its memory provider fills. A session call takes
//! only the newest user turn from the dialogue, so without this the persona would never reach
//! the model. `--client-prompt` says what happens to that text: `append` (the default) puts it
//! after the box's prompt, inside a clearly marked block; `replace` uses it alone; `ignore`
//! drops it. The text is fresh every turn (the time changes) and is never stored. Only the
//! answering models (chat, tools) see it; the router and chatty filler keep their own prompt.

/// `--client-prompt`: what a session call's own system text does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientPromptMode {
    /// After the box's prompt, delimited.
    #[default]
    Append,
    /// Instead of the box's prompt.
    Replace,
    /// Dropped: the box's prompt alone.
    Ignore,
}

impl ClientPromptMode {
    /// What becomes of a call's system text (`None` when it carried none).
    pub fn apply(self, text: Option<String>) -> Option<ClientSystem> {
        let text = text.filter(|t| !t.trim().is_empty())?;
        match self {
            ClientPromptMode::Append => Some(ClientSystem::Append(text)),
            ClientPromptMode::Replace => Some(ClientSystem::Replace(text)),
            ClientPromptMode::Ignore => None,
        }
    }
}

/// The client's system text of one turn, with how it joins the box's prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSystem {
    Append(String),
    Replace(String),
}

/// Opens the client's block in an appended prompt. Tags, because models keep tagged blocks
/// apart reliably, and Xiaozhi's own text already uses them (`<memory>`).
pub const CLIENT_BLOCK_OPEN: &str = "<client_instructions>";
/// Closes it.
pub const CLIENT_BLOCK_CLOSE: &str = "</client_instructions>";

impl ClientSystem {
    /// The system text an answering model call is sent, given the box's `prompt`.
    pub fn join(&self, prompt: &str) -> String {
        match self {
            ClientSystem::Replace(text) => text.clone(),
            ClientSystem::Append(text) => format!(
                "{prompt}\n\nThe device's app sent these instructions with this turn \
                 (its persona, the current time, what it remembers of the user):\n\
                 {CLIENT_BLOCK_OPEN}\n{text}\n{CLIENT_BLOCK_CLOSE}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_keeps_the_box_prompt_first_and_delimits_the_client_text() {
        let joined = ClientPromptMode::Append
            .apply(Some("You are Xiaoming. Now: 10:42".into()))
            .unwrap()
            .join("box prompt");
        assert!(joined.starts_with("box prompt\n\n"), "{joined}");
        let open = joined.find(CLIENT_BLOCK_OPEN).unwrap();
        let close = joined.find(CLIENT_BLOCK_CLOSE).unwrap();
        assert_eq!(
            joined[open + CLIENT_BLOCK_OPEN.len()..close].trim(),
            "You are Xiaoming. Now: 10:42"
        );
    }

    #[test]
    fn replace_uses_the_client_text_alone_and_ignore_drops_it() {
        let text = || Some("persona".to_string());
        assert_eq!(
            ClientPromptMode::Replace.apply(text()).unwrap().join("box"),
            "persona"
        );
        assert_eq!(ClientPromptMode::Ignore.apply(text()), None);
        assert_eq!(ClientPromptMode::Append.apply(Some("  ".into())), None);
        assert_eq!(ClientPromptMode::Append.apply(None), None);
    }
}

//! The request-to-turn step both protocols share.
//!
//! A handler parses its protocol into a [`Call`] (the undecoded dialogue, the ids the client
//! named, and whether it streams), and this module does the rest the same way for both: checks
//! the ids, has the turn runner name the thread and the device ([`CallIds::place`]), decodes
//! what that thread needs of the dialogue, builds the [`TurnRequest`], starts it, and answers
//! it as a stream or as one body, in the shape the protocol's [`AnswerShape`] gives. So a handler is only: its parsing, [`Call::into_turn`],
//! [`answer`] with its shape.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;

use super::dialogue::{Needed, WireDialogue};
use super::error::ApiError;
use super::stream::{self, FrameWriter};
use crate::agent::profile::{PROFILE_SEPARATOR, Profile};
use crate::agent::turns::{CallIds, MemoryScope, TurnRequest, TurnRunner, TurnSummary};

/// Longest thread / session id accepted, in bytes.
pub const MAX_THREAD_ID_BYTES: usize = 256;

/// An id the client chose, with the field it came in (named when the id is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    pub value: String,
    pub field: &'static str,
}

impl ClientId {
    pub fn new(value: impl Into<String>, field: &'static str) -> ClientId {
        ClientId {
            value: value.into(),
            field,
        }
    }
}

/// A call in protocol-neutral terms: what the client said and asked for.
#[derive(Debug)]
pub struct Call<'a> {
    /// The dialogue as sent, still slices of the request body.
    pub dialogue: WireDialogue<'a>,
    /// The session the client named (DashScope's `session_id`, OpenAI's `thread_id`); none
    /// starts a new thread.
    pub session: Option<ClientId>,
    /// The app the call is addressed to (DashScope's `app_id`).
    pub app: Option<ClientId>,
    /// What names the thread of a call addressed to an app (the profile's `memory_scope`;
    /// always the session on OpenAI calls).
    pub memory_scope: MemoryScope,
    /// The assistant that answers: its threads, client prompt mode and agent.
    pub profile: Arc<Profile>,
    /// The turn streams its answer to the client as it is produced.
    pub streaming: bool,
}

impl Call<'_> {
    /// The turn to run: the ids checked, the thread and device named by the turn runner, the
    /// dialogue decoded and cut to what that thread does not remember yet.
    pub fn into_turn(self) -> Result<TurnRequest, ApiError> {
        for id in [&self.session, &self.app].into_iter().flatten() {
            check_thread_id(&id.value, id.field)?;
        }
        let ids = CallIds {
            session: self.session.as_ref().map(|id| id.value.as_str()),
            app: self.app.as_ref().map(|id| id.value.as_str()),
        };
        let place = ids
            .place_for(self.memory_scope, &self.profile)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let dialogue = self.dialogue.decode(Needed::on(&place.thread))?;
        dialogue.into_turn(place, self.streaming, self.profile)
    }
}

/// Checks a client-chosen thread, session or app id.
pub fn check_thread_id(id: &str, field: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::invalid(format!("{field} is empty")));
    }
    if id.len() > MAX_THREAD_ID_BYTES {
        return Err(ApiError::invalid(format!(
            "{field} is {} bytes long; at most {MAX_THREAD_ID_BYTES} are accepted",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} contains control characters"
        )));
    }
    // It separates a profile from the rest of its thread names.
    if id.contains(PROFILE_SEPARATOR) {
        return Err(ApiError::invalid(format!(
            "{field} contains {PROFILE_SEPARATOR:?}, which the box keeps for profile names"
        )));
    }
    Ok(())
}

/// What a protocol's answer looks like.
pub trait AnswerShape: Send + Sync {
    type Frames: FrameWriter;
    /// The frames of an answer streamed on thread `thread_id`.
    fn frames(&self, thread_id: &str) -> Self::Frames;
    /// The whole answer of a turn that was collected.
    fn whole(&self, thread_id: &str, text: &str, summary: &TurnSummary) -> Response;
    /// An error before any of the answer was sent.
    fn error(&self, error: ApiError) -> Response;
}

/// Starts `turn` (a stateless one in the conversation it continues, if any) and answers it in
/// `shape`: streamed when the turn streams (with keep-alives every `keepalive`), else collected
/// into one answer once the turn is stored. Either way a turn interrupted by a newer one of its
/// session ends as a finished answer with the text it gave ([`stream::client_ending`]).
pub async fn answer<S: AnswerShape>(
    turns: &Arc<TurnRunner>,
    turn: TurnRequest,
    keepalive: Duration,
    shape: S,
) -> Response {
    let streaming = turn.options.streaming;
    // A stateless call resending a logged dialogue continues that conversation in the log.
    let turn = turns.continue_stateless(turn).await;
    // The client hears of its own session, not the profile-qualified name it is kept under.
    let client_thread = turn.session.clone();
    let model = turn.profile.agent.model_name().to_string();
    let model = model.as_str();
    let handle = turns.start(turn);
    let thread_id = client_thread.unwrap_or_else(|| handle.thread_id.clone());
    if streaming {
        let frames = shape.frames(&thread_id);
        let open = turns.metrics().stream_open();
        return stream::respond(handle, frames, keepalive, model, |e| shape.error(e), open).await;
    }
    let (text, end) = handle.collect().await;
    match stream::client_ending(end, model) {
        Ok(summary) => shape.whole(&thread_id, &text, &summary),
        Err(e) => shape.error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::ClientSystem;
    use crate::agent::turns::ThreadChoice;
    use crate::llm::ChatMessage;

    const DIALOGUE: &str = r#"[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "two"}
    ]"#;

    fn dialogue() -> WireDialogue<'static> {
        WireDialogue {
            messages: serde_json::from_str(DIALOGUE).unwrap(),
            prompt: None,
        }
    }

    fn call(session: Option<&str>, app: Option<&str>, scope: MemoryScope) -> Call<'static> {
        Call {
            dialogue: dialogue(),
            session: session.map(|s| ClientId::new(s, "session_id")),
            app: app.map(|a| ClientId::new(a, "app_id")),
            memory_scope: scope,
            profile: Arc::new(Profile::for_parsing(
                "default",
                true,
                scope,
                crate::agent::ClientPromptMode::Append,
            )),
            streaming: true,
        }
    }

    #[test]
    fn a_remembered_session_takes_the_newest_user_turn_and_its_device() {
        let turn = call(Some("conv_speaker"), Some("kitchen"), MemoryScope::Session)
            .into_turn()
            .unwrap();
        assert_eq!(turn.thread, ThreadChoice::Remember("conv_speaker".into()));
        assert_eq!(turn.new_messages, vec![ChatMessage::user("two")]);
        assert_eq!(turn.options.device_id.as_deref(), Some("speaker"));
        assert_eq!(turn.options.instructions, None);
        // The session call's system text is the client's prompt for this turn, not memory.
        assert_eq!(
            turn.options.client_system,
            Some(ClientSystem::Append("be brief".into()))
        );
        assert!(turn.options.streaming);
    }

    #[test]
    fn app_scope_names_the_thread_by_app_and_device() {
        let turn = call(Some("conv_speaker"), Some("kitchen"), MemoryScope::App)
            .into_turn()
            .unwrap();
        assert_eq!(
            turn.thread,
            ThreadChoice::Remember("kitchen/speaker".into())
        );
    }

    #[test]
    fn a_new_thread_keeps_the_dialogue_and_the_instructions() {
        let turn = call(None, Some("kitchen"), MemoryScope::App)
            .into_turn()
            .unwrap();
        assert_eq!(turn.thread, ThreadChoice::Start);
        assert_eq!(turn.new_messages.len(), 3);
        assert_eq!(turn.options.instructions.as_deref(), Some("be brief"));
        assert_eq!(turn.options.client_system, None);
    }

    #[test]
    fn bad_ids_are_refused_naming_their_field_session_first() {
        let long = "x".repeat(MAX_THREAD_ID_BYTES + 1);
        let both_bad = call(Some(""), Some(&long), MemoryScope::Session);
        assert_eq!(
            both_bad.into_turn().unwrap_err().message,
            "session_id is empty"
        );
        let app_bad = call(Some("s"), Some("a\u{7}b"), MemoryScope::Session);
        assert!(app_bad.into_turn().unwrap_err().message.contains("app_id"));
        // A separator in the app id is refused only where the app names the thread.
        let slash = call(Some("s_d"), Some("kit/chen"), MemoryScope::App);
        assert!(slash.into_turn().unwrap_err().message.contains("kit/chen"));
        assert!(
            call(Some("s_d"), Some("kit/chen"), MemoryScope::Session)
                .into_turn()
                .is_ok()
        );
    }

    #[test]
    fn thread_ids_are_checked() {
        assert!(check_thread_id(&"x".repeat(300), "session_id").is_err());
        assert!(check_thread_id("a\u{0}b", "session_id").is_err());
        assert!(check_thread_id("sess_aa:bb", "session_id").is_ok());
    }
}

//! Stateless calls that continue a conversation in the log.
//!
//! A client without a session (OpenAI without `thread_id`, DashScope without `session_id`)
//! resends its whole dialogue on every call. What the model sees does not change: it is the
//! client's dialogue, with the client's system text as instructions. Only the log does: when
//! the dialogue's earlier messages (all but its trailing run of non-assistant messages: the new
//! user turn, or tool results) are exactly the dialogue of a recent stateless conversation
//! (found by the store's dialogue digest), the turn is logged into that conversation and only
//! the new messages are appended; N turns make one conversation of 2N rows instead of N
//! conversations of N(N+1) rows.
//!
//! The digest follows the dialogue as the client sees it: what it sent, and each answer as it
//! heard it. A client that heard only part of an answer (barge-in) and resends that part, or
//! that edits an earlier message, no longer matches, and its call starts a new conversation;
//! nothing is lost either way. Two identical calls at once may both continue the same
//! conversation; the runner orders them on that thread like any other two turns.

use super::{ThreadChoice, TurnRequest, TurnRunner};
use crate::agent::memory::to_log;
use crate::llm::{ChatMessage, Role};

impl TurnRunner {
    /// The request with its thread chosen for the log: a stateless call ([`ThreadChoice::Start`])
    /// that resends a recent stateless conversation's dialogue continues it
    /// ([`ThreadChoice::Continue`], its earlier messages moved to [`TurnRequest::resent`]);
    /// any other request, or a failed lookup, is returned as it is.
    pub async fn continue_stateless(&self, mut request: TurnRequest) -> TurnRequest {
        if request.thread != ThreadChoice::Start {
            return request;
        }
        let new_from = resent_len(&request.new_messages);
        if new_from == 0 || new_from == request.new_messages.len() {
            // Nothing resent, or nothing new to log after it.
            return request;
        }
        let earlier = request.new_messages[..new_from]
            .iter()
            .filter_map(to_log)
            .collect();
        match self
            .store
            .stateless_conversation_ending_with(earlier, &request.profile.name)
            .await
        {
            Ok(Some(id)) => {
                let new_messages = request.new_messages.split_off(new_from);
                request.resent = std::mem::replace(&mut request.new_messages, new_messages);
                request.thread = ThreadChoice::Continue(id);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("stateless lookup failed, starting a new conversation: {e}"),
        }
        request
    }
}

/// How many of a stateless call's messages the client is resending: all but the trailing run of
/// non-assistant messages (the new user turn, or the results of tools the answer called).
pub(super) fn resent_len(dialogue: &[ChatMessage]) -> usize {
    dialogue
        .iter()
        .rposition(|m| m.role == Role::Assistant)
        .map_or(0, |last_answer| last_answer + 1)
}

/// The history the model sees on a continued stateless conversation: the client's dialogue
/// under the same window a new conversation's memory has (the newest `limit` messages, from
/// the first user turn in them on, so no tool result comes without its call).
pub(super) fn client_history(
    resent: &[ChatMessage],
    new_messages: &[ChatMessage],
    limit: usize,
) -> Vec<ChatMessage> {
    let all: Vec<&ChatMessage> = resent.iter().chain(new_messages).collect();
    let window = &all[all.len().saturating_sub(limit)..];
    let start = window
        .iter()
        .position(|m| m.role == Role::User)
        .unwrap_or(window.len());
    window[start..].iter().map(|m| (*m).clone()).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::BoxFuture;

    use super::*;
    use crate::agent::turns::{BusyPolicy, TurnLimits};
    use crate::agent::{Agent, AgentOutcome, AgentSink, TurnInput, TurnOptions};
    use crate::llm::LlmError;
    use crate::store::open_temp;

    /// Runs a tool the client never sees, then answers with the messages it was shown, so a
    /// test sees the model's history.
    struct ShowsHistory;

    impl Agent for ShowsHistory {
        fn answer<'a>(
            &'a self,
            input: &'a TurnInput,
            sink: AgentSink,
        ) -> BoxFuture<'a, Result<AgentOutcome, LlmError>> {
            Box::pin(async move {
                let shown: Vec<&str> = input.history.iter().map(|m| m.content.as_str()).collect();
                let shown = shown.join("|");
                let mut call = ChatMessage::assistant("");
                call.tool_calls = vec![crate::llm::ToolCall {
                    id: "c1".into(),
                    kind: "function".into(),
                    function: crate::llm::FunctionCall {
                        name: "calc".into(),
                        arguments: "{}".into(),
                    },
                }];
                let mut result = ChatMessage::new(Role::Tool, "42");
                result.tool_call_id = Some("c1".into());
                sink.message(call);
                sink.message(result);
                sink.text(&shown);
                sink.message(ChatMessage::assistant(shown));
                Ok(AgentOutcome::default())
            })
        }

        fn model_name(&self) -> &str {
            "shows-history"
        }
    }

    fn stateless_call(turns: &TurnRunner, dialogue: &[ChatMessage]) -> TurnRequest {
        TurnRequest {
            profile: Arc::clone(turns.profiles().default_profile()),
            origin: crate::store::Origin::Api,
            thread: ThreadChoice::Start,
            resent: Vec::new(),
            new_messages: dialogue.to_vec(),
            options: TurnOptions::default(),
            session: None,
        }
    }

    #[tokio::test]
    async fn a_resent_dialogue_is_logged_once_and_the_model_sees_the_clients_dialogue() {
        let (_dir, store) = open_temp();
        let limits = TurnLimits::default();
        let turns = TurnRunner::new(
            store.clone(),
            super::super::tests::profiles_of(Arc::new(ShowsHistory), BusyPolicy::Wait, 40),
            limits,
            crate::metrics::Metrics::new(false),
        );
        let first = turns
            .continue_stateless(stateless_call(&turns, &[ChatMessage::user("one")]))
            .await;
        assert_eq!(first.thread, ThreadChoice::Start);
        let handle = turns.start(first);
        let id = handle.thread_id.clone();
        let (heard, end) = handle.collect().await;
        end.unwrap();
        let dialogue = [
            ChatMessage::user("one"),
            ChatMessage::assistant(heard),
            ChatMessage::user("two"),
        ];
        let second = turns
            .continue_stateless(stateless_call(&turns, &dialogue))
            .await;
        assert_eq!(second.thread, ThreadChoice::Continue(id.clone()));
        assert_eq!(second.resent, dialogue[..2]);
        assert_eq!(second.new_messages, dialogue[2..]);
        let handle = turns.start(second);
        assert_eq!(handle.thread_id, id);
        let (answer, end) = handle.collect().await;
        end.unwrap();
        assert_eq!(
            answer, "one|one|two",
            "the model sees the client's dialogue"
        );
        let log: Vec<String> = store
            .conversation(&id)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.message.content)
            .collect();
        assert_eq!(
            log,
            ["one", "", "42", "one", "two", "", "42", "one|one|two"]
        );
        // A session's call is never redirected.
        let mut session = stateless_call(&turns, &dialogue);
        session.thread = ThreadChoice::Remember("s".into());
        assert_eq!(
            turns.continue_stateless(session).await.thread,
            ThreadChoice::Remember("s".into())
        );
    }

    fn tool_result() -> ChatMessage {
        let mut m = ChatMessage::new(Role::Tool, "42");
        m.tool_call_id = Some("c1".into());
        m
    }

    #[test]
    fn the_new_messages_are_the_trailing_run_after_the_last_answer() {
        let u = ChatMessage::user;
        let a = ChatMessage::assistant;
        assert_eq!(resent_len(&[u("one")]), 0);
        assert_eq!(resent_len(&[u("one"), a("ok"), u("two")]), 2);
        assert_eq!(resent_len(&[u("one"), u("again")]), 0);
        assert_eq!(resent_len(&[u("one"), a(""), tool_result()]), 2);
        assert_eq!(resent_len(&[u("one"), a("ok")]), 2);
    }

    #[test]
    fn the_history_is_the_clients_dialogue_in_the_memory_window() {
        let dialogue: Vec<ChatMessage> = (0..6)
            .map(|i| match i % 2 {
                0 => ChatMessage::user(format!("u{i}")),
                _ => ChatMessage::assistant(format!("a{i}")),
            })
            .collect();
        let (resent, new) = dialogue.split_at(5);
        assert_eq!(client_history(resent, new, 40), dialogue);
        // A window starting on an answer starts at the next user turn instead.
        assert_eq!(client_history(resent, new, 3), dialogue[4..].to_vec());
        let (resent, new) = ([tool_result(), ChatMessage::user("u")], []);
        assert_eq!(
            client_history(&resent, &new, 40),
            vec![ChatMessage::user("u")]
        );
    }
}

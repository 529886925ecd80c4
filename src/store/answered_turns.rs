//! The log's finished turns as question, answer and tools called: what `eval --from-log`
//! turns into a dataset. Read only.
//!
//! A turn is taken when it finished (`done`) and has both a user message and a plain answer;
//! its question is its last user message (a new thread's first turn may carry an earlier
//! dialogue), its answer its last assistant message without tool calls, its tools the tools
//! that answered in it, in order. Stateless conversations (helper calls that bring their own
//! instructions) are left out: their answers follow the client's prompt, not the box's.

use super::{Store, StoreError};

/// One finished turn of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredTurn {
    pub conversation_id: String,
    pub started_at: String,
    pub question: String,
    pub answer: String,
    pub tools: Vec<String>,
}

impl Store {
    /// Finished turns that started at or after `since` and before `until` (stored timestamps,
    /// or their prefixes such as `2026-12-02`), oldest first.
    pub async fn answered_turns(
        &self,
        since: Option<String>,
        until: Option<String>,
    ) -> Result<Vec<AnsweredTurn>, StoreError> {
        self.run(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT t.id, t.conversation_id, t.started_at, m.message_type, m.content,
                        m.tool_calls IS NOT NULL, m.tool_name
                 FROM turns t
                 JOIN conversations c ON c.conversation_id = t.conversation_id
                 JOIN messages m ON m.turn_id = t.id
                 WHERE t.status = 'done' AND c.stateless = 0
                   AND (?1 IS NULL OR t.started_at >= ?1)
                   AND (?2 IS NULL OR t.started_at < ?2)
                 ORDER BY t.id, m.sequence_number",
            )?;
            let mut rows = stmt.query(rusqlite::params![since, until])?;
            let mut turns: Vec<(i64, AnsweredTurn)> = Vec::new();
            while let Some(row) = rows.next()? {
                let turn_id: i64 = row.get(0)?;
                if turns.last().is_none_or(|(id, _)| *id != turn_id) {
                    let turn = AnsweredTurn {
                        conversation_id: row.get(1)?,
                        started_at: row.get(2)?,
                        question: String::new(),
                        answer: String::new(),
                        tools: Vec::new(),
                    };
                    turns.push((turn_id, turn));
                }
                let turn = &mut turns.last_mut().expect("pushed above").1;
                let kind: String = row.get(3)?;
                let content: String = row.get(4)?;
                let calls_tools: bool = row.get(5)?;
                match kind.as_str() {
                    "human" => turn.question = content,
                    "ai" if !calls_tools => turn.answer = content,
                    "tool" => turn.tools.extend(row.get::<_, Option<String>>(6)?),
                    _ => {}
                }
            }
            Ok(turns
                .into_iter()
                .map(|(_, turn)| turn)
                .filter(|t| !t.question.trim().is_empty() && !t.answer.trim().is_empty())
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::store::ConversationTags;
    use crate::store::{MessageKind, NewMessage, TurnOutcome, TurnStatus, open_temp};

    fn outcome(status: TurnStatus) -> TurnOutcome {
        TurnOutcome {
            status,
            error: None,
            input_tokens: 0,
            output_tokens: 0,
            ttft_ms: None,
            total_ms: 0,
        }
    }

    #[tokio::test]
    async fn finished_turns_come_back_with_their_tools() {
        let (_dir, store) = open_temp();
        let user = |text: &str| vec![NewMessage::new(MessageKind::Human, text)];
        // A chat turn.
        let (t1, _) = store
            .open_turn(
                "c1",
                None,
                "m",
                user("hi"),
                10,
                &ConversationTags::stateless(false),
            )
            .await
            .unwrap();
        let answer = vec![NewMessage::new(MessageKind::Ai, "hello")];
        store
            .close_turn("c1", None, t1, answer, outcome(TurnStatus::Done), None)
            .await
            .unwrap();
        // A tool turn.
        let (t2, _) = store
            .open_turn(
                "c1",
                None,
                "m",
                user("6*7?"),
                10,
                &ConversationTags::stateless(false),
            )
            .await
            .unwrap();
        let mut call = NewMessage::new(MessageKind::Ai, "");
        call.tool_calls = Some(
            r#"[{"id":"a","type":"function","function":{"name":"calculator","arguments":"{}"}}]"#
                .into(),
        );
        let mut result = NewMessage::new(MessageKind::Tool, "42");
        result.tool_name = Some("calculator".into());
        result.tool_call_id = Some("a".into());
        let rows = vec![call, result, NewMessage::new(MessageKind::Ai, "It is 42.")];
        store
            .close_turn("c1", None, t2, rows, outcome(TurnStatus::Done), None)
            .await
            .unwrap();
        // A failed turn is no example.
        let (t3, _) = store
            .open_turn(
                "c2",
                None,
                "m",
                user("broken"),
                10,
                &ConversationTags::stateless(false),
            )
            .await
            .unwrap();
        store
            .close_turn("c2", None, t3, vec![], outcome(TurnStatus::Failed), None)
            .await
            .unwrap();

        let turns = store.answered_turns(None, None).await.unwrap();
        let seen: Vec<(&str, &str, Vec<String>)> = turns
            .iter()
            .map(|t| (t.question.as_str(), t.answer.as_str(), t.tools.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                ("hi", "hello", vec![]),
                ("6*7?", "It is 42.", vec!["calculator".to_string()])
            ]
        );
        assert!(
            store
                .answered_turns(Some("2999-01-01".into()), None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .answered_turns(None, Some("2999-01-01".into()))
                .await
                .unwrap()
                .len(),
            2
        );
    }
}

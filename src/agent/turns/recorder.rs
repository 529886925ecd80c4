//! The turn's log: records its messages as they complete, and closes the turn, in one write,
//! with its outcome and whatever answer it has.
//!
//! A plain answer is held back so that the closing write stores it together with the turn's
//! outcome (marked interrupted if the turn did not finish: the client was never told it was
//! complete); a write that fails leaves its messages for the closing write to try again. A turn
//! is closed whatever happens to its task: dropping a recorder that was not closed (the task
//! panicked) closes the turn from a task of its own, as interrupted, with what was said.

use std::sync::Arc;
use std::time::Instant;

use super::TurnError;
use crate::agent::AgentOutcome;
use crate::agent::memory::to_log;
use crate::llm::{ChatMessage, Role, ToolCall, Usage};
use crate::metrics::Metrics;
use crate::store::{MessageKind, NewMessage, Store, StoreError, TurnOutcome, TurnStatus};

/// Logs a turn's messages as they complete and keeps the turn's metrics. If the turn's task
/// dies before the turn is closed, dropping the recorder closes it (as interrupted).
pub(super) struct Recorder {
    store: Store,
    thread_id: String,
    device: Option<String>,
    turn_id: i64,
    /// Text spoken since the last logged assistant message: what an interruption must keep.
    spoken: String,
    /// On a stateless turn, all the text the client was given (filler and answer alike): the
    /// answer as the client will resend it, which the conversation's dialogue digest follows.
    heard: Option<String>,
    /// Messages recorded but not yet written. A plain answer, most likely the turn's last
    /// message, is held back so that `close` writes it with the turn's outcome in one go; a
    /// write that failed leaves its messages here for `close` to try again.
    unsaved: Vec<NewMessage>,
    first_text: Option<Instant>,
    started: Instant,
    /// The runner closed the turn (or gave up trying), so dropping has nothing to do.
    closed: bool,
    /// The tools the model called, in order, for the turn's log line.
    tools_called: Vec<String>,
    /// Where the closed turn's time, time to first text and route are counted.
    metrics: Arc<Metrics>,
}

impl Recorder {
    pub(super) fn new(
        store: &Store,
        thread_id: &str,
        device: Option<&str>,
        turn_id: i64,
        started: Instant,
        stateless: bool,
        metrics: &Arc<Metrics>,
    ) -> Recorder {
        Recorder {
            store: store.clone(),
            thread_id: thread_id.to_string(),
            device: device.map(str::to_string),
            turn_id,
            spoken: String::new(),
            heard: stateless.then(String::new),
            unsaved: Vec::new(),
            first_text: None,
            started,
            closed: false,
            tools_called: Vec::new(),
            metrics: Arc::clone(metrics),
        }
    }

    pub(super) fn spoke(&mut self, piece: &str) {
        self.first_text.get_or_insert_with(Instant::now);
        self.spoken.push_str(piece);
        if let Some(heard) = &mut self.heard {
            heard.push_str(piece);
        }
    }

    /// The name of every tool the model called so far in this turn, in order.
    pub(super) fn tools_called(&self) -> &[String] {
        &self.tools_called
    }

    /// What a stateless client heard of the answer, as it will resend it, when it heard
    /// anything: the text, and the calls of its own tools it was asked to run (it resends
    /// them as the assistant message its tool results answer).
    fn heard(&self, client_calls: &[ToolCall]) -> Option<NewMessage> {
        let heard = self.heard.as_deref()?;
        if heard.is_empty() && client_calls.is_empty() {
            return None;
        }
        let mut message = NewMessage::new(MessageKind::Ai, heard);
        if !client_calls.is_empty() {
            message.tool_calls = serde_json::to_string(client_calls).ok();
        }
        Some(message)
    }

    pub(super) async fn record(&mut self, message: ChatMessage) -> Result<(), TurnError> {
        if message.role == Role::Assistant {
            self.spoken.clear();
            let names = message.tool_calls.iter().map(|c| c.function.name.clone());
            self.tools_called.extend(names);
        }
        let Some(row) = to_log(&message) else {
            return Ok(());
        };
        let hold = row.kind == MessageKind::Ai && row.tool_calls.is_none();
        self.unsaved.push(row);
        if hold {
            return Ok(());
        }
        self.store
            .append(
                &self.thread_id,
                self.device.as_deref(),
                Some(self.turn_id),
                self.unsaved.clone(),
            )
            .await
            .map_err(|e| TurnError::Store(e.to_string()))?;
        tracing::debug!(
            thread = %self.thread_id,
            rows = self.unsaved.len(),
            "tool step stored"
        );
        self.unsaved.clear();
        Ok(())
    }

    /// The closing write of the turn: the unsaved messages, any partial answer, the outcome.
    fn closing(&self, result: &Result<AgentOutcome, TurnError>) -> (Vec<NewMessage>, TurnOutcome) {
        let mut rows = self.unsaved.clone();
        if result.is_err() {
            // A held-back answer of a turn that did not finish was never confirmed to the
            // client (it may not have heard it all): it is kept, marked interrupted.
            for row in &mut rows {
                if row.kind == MessageKind::Ai && row.tool_calls.is_none() {
                    row.interrupted = true;
                }
            }
        }
        if result.is_err() && !self.spoken.is_empty() {
            let mut partial = NewMessage::new(MessageKind::Ai, self.spoken.clone());
            partial.interrupted = true;
            rows.push(partial);
        }
        let (status, error, usage) = match result {
            Ok(outcome) => (TurnStatus::Done, None, outcome.usage),
            Err(TurnError::Interrupted) => (TurnStatus::Interrupted, None, Usage::default()),
            Err(e @ (TurnError::ClientStalled { .. } | TurnError::Aborted)) => (
                TurnStatus::Interrupted,
                Some(e.to_string()),
                Usage::default(),
            ),
            Err(e) => (TurnStatus::Failed, Some(e.to_string()), Usage::default()),
        };
        let outcome = TurnOutcome {
            status,
            error,
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            ttft_ms: self
                .first_text
                .map(|t| (t - self.started).as_millis() as u64),
            total_ms: self.started.elapsed().as_millis() as u64,
        };
        (rows, outcome)
    }

    /// Writes the closing write; on success nothing is left unsaved.
    pub(super) async fn close(
        &mut self,
        result: &Result<AgentOutcome, TurnError>,
    ) -> Result<(), StoreError> {
        self.closed = true;
        let (rows, outcome) = self.closing(result);
        let logged = outcome.clone();
        let client_calls = result.as_ref().map_or(&[][..], |o| &o.client_calls[..]);
        let heard = self.heard(client_calls);
        self.store
            .close_turn(
                &self.thread_id,
                self.device.as_deref(),
                self.turn_id,
                rows,
                outcome,
                heard,
            )
            .await?;
        self.heard = None;
        self.unsaved.clear();
        self.spoken.clear();
        self.log_line(&logged, result);
        self.metrics.turn_closed(
            !self.tools_called.is_empty(),
            logged.status.as_str(),
            self.started.elapsed(),
            self.first_text.map(|t| t - self.started),
        );
        Ok(())
    }

    /// One line per finished turn, at info: what an operator reads in the journal.
    fn log_line(&self, outcome: &TurnOutcome, result: &Result<AgentOutcome, TurnError>) {
        let finish = result.as_ref().map_or("", |o| o.finish.as_str());
        tracing::info!(
            thread = %self.thread_id,
            device = self.device.as_deref().unwrap_or("-"),
            status = outcome.status.as_str(),
            finish,
            route = if self.tools_called.is_empty() { "chat" } else { "tool" },
            tools = %self.tools_called.join(","),
            ttft_ms = outcome.ttft_ms.unwrap_or(0),
            total_ms = outcome.total_ms,
            tokens_in = outcome.input_tokens,
            tokens_out = outcome.output_tokens,
            "turn"
        );
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // The turn's task is unwinding (a panic) or being torn down: close the turn from a
        // task of its own, keeping what was said. Without a runtime (process exit) the next
        // start closes it instead.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (rows, outcome) = self.closing(&Err(TurnError::Aborted));
        let store = self.store.clone();
        let (thread_id, device, turn_id) =
            (self.thread_id.clone(), self.device.clone(), self.turn_id);
        let heard = self.heard(&[]);
        tracing::error!(thread = %thread_id, "turn task ended abnormally; closing the turn");
        runtime.spawn(async move {
            let closed = store
                .close_turn(&thread_id, device.as_deref(), turn_id, rows, outcome, heard)
                .await;
            if let Err(e) = closed {
                tracing::error!(thread = %thread_id, "aborted turn not closed: {e}");
            }
        });
    }
}

//! The turn runner: gives a turn its thread's memory, runs the agent, and logs what was said.
//!
//! Invariants it keeps:
//! - The user's turn is stored before the model is called, so a failed or cut call loses
//!   nothing the user said.
//! - Turns on one thread never interleave. A new turn on a busy thread interrupts the running
//!   one (voice barge-in) or waits behind it, by `--on-busy`; either way turns are stored in
//!   arrival order. Different threads run in parallel.
//! - Each turn runs in its own task, so a client that goes away cannot cut the bookkeeping
//!   short: dropping the [`TurnHandle`] cancels the turn, which stops the model call and keeps
//!   the partial answer, marked interrupted.
//! - A thread named from parts (an app and a device, [`ThreadChoice::for_app`]) is named so
//!   that different parts never share a thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::memory::{from_log, to_log};
use super::{Agent, AgentEvent, AgentSink, TurnInput};
use crate::cli::BusyPolicy;
use crate::llm::{ChatMessage, LlmError, Role, Usage};
use crate::store::{MessageKind, NewMessage, Store, TurnOutcome, TurnStatus};

/// Which thread a turn belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadChoice {
    /// A thread the server remembers: its memory is the history.
    Remember(String),
    /// A new thread, started from the messages the client carried.
    Start,
}

/// Separates the app from the device in an app-scoped thread name. App ids may not contain
/// it, so a name splits back into its parts at its first separator.
pub const APP_DEVICE_SEPARATOR: char = '/';

/// Why parts cannot name a thread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThreadNameError {
    #[error("app id is empty")]
    EmptyAppId,
    #[error(
        "app id {0:?} contains {APP_DEVICE_SEPARATOR:?}, which separates the app from the device in a thread name"
    )]
    SeparatorInAppId(String),
}

impl ThreadChoice {
    /// The thread an app's turns share whatever session they come in on (`--memory-scope app`):
    /// the app id alone without a device (the name such threads always had), and
    /// `{app_id}/{device}` with one. Since app ids never hold the separator, the name tells its
    /// parts apart again: two different (app, device) pairs never share a thread.
    pub fn for_app(app_id: &str, device: Option<&str>) -> Result<ThreadChoice, ThreadNameError> {
        if app_id.is_empty() {
            return Err(ThreadNameError::EmptyAppId);
        }
        if app_id.contains(APP_DEVICE_SEPARATOR) {
            return Err(ThreadNameError::SeparatorInAppId(app_id.to_string()));
        }
        Ok(ThreadChoice::Remember(match device {
            Some(device) => format!("{app_id}{APP_DEVICE_SEPARATOR}{device}"),
            None => app_id.to_string(),
        }))
    }
}

/// A turn to run.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub thread: ThreadChoice,
    pub device_id: Option<String>,
    /// Messages not yet in memory: the newest user turn, or the whole carried dialogue of a new
    /// thread (never system messages).
    pub new_messages: Vec<ChatMessage>,
    /// The client's own system text on a new thread.
    pub instructions: Option<String>,
    /// The client receives the answer as it is produced (not collected into one reply), so
    /// an agent may speak filler while it works.
    pub streaming: bool,
}

/// What the client side of a turn receives.
#[derive(Debug)]
pub enum TurnEvent {
    Text(String),
    Finished(TurnSummary),
    Failed(TurnError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnSummary {
    pub model: String,
    pub usage: Usage,
}

/// Why a turn did not finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Model(#[from] LlmError),
    #[error("storing the conversation failed: {0}")]
    Store(String),
    #[error("a newer turn on this conversation interrupted this one")]
    Interrupted,
}

/// The client's end of a running turn. Dropping it cancels the turn.
pub struct TurnHandle {
    pub thread_id: String,
    events: mpsc::UnboundedReceiver<TurnEvent>,
    _cancel_on_drop: DropGuard,
}

impl TurnHandle {
    /// The next event; `None` once the turn is over.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        self.events.recv().await
    }

    /// Waits for the whole answer (non-streaming clients).
    pub async fn collect(mut self) -> Result<(String, TurnSummary), TurnError> {
        let mut text = String::new();
        while let Some(event) = self.next().await {
            match event {
                TurnEvent::Text(piece) => text.push_str(&piece),
                TurnEvent::Finished(summary) => return Ok((text, summary)),
                TurnEvent::Failed(error) => return Err(error),
            }
        }
        Err(TurnError::Store("the turn ended without an answer".into()))
    }
}

/// Per-thread ordering state.
#[derive(Default)]
struct ThreadSlot {
    turn_lock: tokio::sync::Mutex<()>,
    /// The newest turn on the thread, running or waiting, by serial number: the one a barge-in
    /// interrupts.
    newest: Mutex<Option<(u64, CancellationToken)>>,
}

pub struct TurnRunner {
    store: Store,
    agent: Arc<dyn Agent>,
    on_busy: BusyPolicy,
    history_max_messages: usize,
    threads: Mutex<HashMap<String, Arc<ThreadSlot>>>,
    next_serial: AtomicU64,
}

impl TurnRunner {
    pub fn new(
        store: Store,
        agent: Arc<dyn Agent>,
        on_busy: BusyPolicy,
        history_max_messages: usize,
    ) -> Arc<TurnRunner> {
        Arc::new(TurnRunner {
            store,
            agent,
            on_busy,
            history_max_messages,
            threads: Mutex::default(),
            next_serial: AtomicU64::new(1),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn model_name(&self) -> &str {
        self.agent.model_name()
    }

    /// Starts a turn in its own task and returns the client's end of it.
    pub fn start(self: &Arc<Self>, request: TurnRequest) -> TurnHandle {
        let thread_id = match &request.thread {
            ThreadChoice::Remember(id) => id.clone(),
            ThreadChoice::Start => uuid::Uuid::new_v4().to_string(),
        };
        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let slot = self.slot(&thread_id);
        {
            let mut newest = slot.newest.lock().unwrap_or_else(|e| e.into_inner());
            if self.on_busy == BusyPolicy::Interrupt
                && let Some((_, previous)) = newest.take()
            {
                previous.cancel();
            }
            *newest = Some((serial, cancel.clone()));
        }
        let runner = Arc::clone(self);
        let id = thread_id.clone();
        let token = cancel.clone();
        tokio::spawn(async move {
            {
                // Waiting turns queue here in arrival order, even when already interrupted, so
                // that every user turn is stored in the order it was said.
                let _turn = slot.turn_lock.lock().await;
                runner.run(&id, request, &token, &tx).await;
            }
            runner.release(&id, slot, serial);
        });
        TurnHandle {
            thread_id,
            events: rx,
            _cancel_on_drop: cancel.drop_guard(),
        }
    }

    fn slot(&self, thread_id: &str) -> Arc<ThreadSlot> {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.entry(thread_id.to_string()).or_default().clone()
    }

    /// Forgets the thread's slot once no turn holds it, so idle threads cost nothing.
    fn release(&self, thread_id: &str, slot: Arc<ThreadSlot>, serial: u64) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut newest = slot.newest.lock().unwrap_or_else(|e| e.into_inner());
            if newest.as_ref().is_some_and(|(s, _)| *s == serial) {
                *newest = None;
            }
        }
        // Clones are only made under `threads`' lock: two strong counts are the map's and ours.
        if Arc::strong_count(&slot) == 2 {
            threads.remove(thread_id);
        }
    }

    async fn run(
        &self,
        thread_id: &str,
        request: TurnRequest,
        cancel: &CancellationToken,
        client: &mpsc::UnboundedSender<TurnEvent>,
    ) {
        let started = Instant::now();
        let device = request.device_id.as_deref();
        // The user's turn is stored before the model is called.
        let rows = request.new_messages.iter().filter_map(to_log).collect();
        let opened = self
            .store
            .open_turn(
                thread_id,
                device,
                self.agent.model_name(),
                rows,
                self.history_max_messages,
            )
            .await
            .map(|(turn_id, memory)| (turn_id, from_log(&memory)));
        let (turn_id, history) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                tracing::error!(thread = thread_id, "turn not stored: {e}");
                let _ = client.send(TurnEvent::Failed(TurnError::Store(e.to_string())));
                return;
            }
        };

        let input = TurnInput {
            thread_id: thread_id.to_string(),
            device_id: request.device_id.clone(),
            history,
            instructions: request.instructions,
            streaming: request.streaming,
        };
        let mut recorder = Recorder {
            store: &self.store,
            thread_id,
            device,
            turn_id,
            spoken: String::new(),
            pending: None,
            first_text: None,
            started,
        };
        let result = if cancel.is_cancelled() {
            Err(TurnError::Interrupted)
        } else {
            self.drive(&input, cancel, client, &mut recorder).await
        };
        let outcome = recorder.close(&result).await;
        let event = match result {
            Ok(usage) => TurnEvent::Finished(TurnSummary {
                model: self.agent.model_name().to_string(),
                usage,
            }),
            Err(error) => {
                if !matches!(error, TurnError::Interrupted) {
                    tracing::warn!(thread = thread_id, "turn failed: {error}");
                }
                TurnEvent::Failed(error)
            }
        };
        if let Err(e) = outcome {
            tracing::error!(thread = thread_id, "turn outcome not stored: {e}");
        }
        let _ = client.send(event);
    }

    /// Runs the agent until it finishes, fails or the turn is cancelled, passing text to the
    /// client and complete messages to the log as they come.
    async fn drive(
        &self,
        input: &TurnInput,
        cancel: &CancellationToken,
        client: &mpsc::UnboundedSender<TurnEvent>,
        recorder: &mut Recorder<'_>,
    ) -> Result<Usage, TurnError> {
        let (sink, mut events) = AgentSink::channel();
        let answer = self.agent.answer(input, sink);
        tokio::pin!(answer);
        let mut finished = None;
        loop {
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(TurnError::Interrupted),
                event = events.recv() => event,
                result = &mut answer, if finished.is_none() => {
                    finished = Some(result);
                    continue;
                }
            };
            match event {
                Some(AgentEvent::Text(piece)) => {
                    recorder.spoke(&piece);
                    let _ = client.send(TurnEvent::Text(piece));
                }
                Some(AgentEvent::Message(message)) => recorder.record(message).await?,
                // The agent's future owned the sink; once it is done and drained, so is the turn.
                None => {
                    return finished
                        .expect("sink closes only when the agent is done")
                        .map_err(Into::into);
                }
            }
        }
    }
}

/// Logs a turn's messages as they complete and keeps the turn's metrics.
struct Recorder<'a> {
    store: &'a Store,
    thread_id: &'a str,
    device: Option<&'a str>,
    turn_id: i64,
    /// Text spoken since the last logged assistant message: what an interruption must keep.
    spoken: String,
    /// A plain answer, most likely the turn's last message: held back so that `close` writes
    /// it with the turn's outcome in one go. Any later message flushes it first.
    pending: Option<NewMessage>,
    first_text: Option<Instant>,
    started: Instant,
}

impl Recorder<'_> {
    fn spoke(&mut self, piece: &str) {
        self.first_text.get_or_insert_with(Instant::now);
        self.spoken.push_str(piece);
    }

    async fn record(&mut self, message: ChatMessage) -> Result<(), TurnError> {
        if message.role == Role::Assistant {
            self.spoken.clear();
        }
        let Some(row) = to_log(&message) else {
            return Ok(());
        };
        let mut rows: Vec<NewMessage> = self.pending.take().into_iter().collect();
        if row.kind == MessageKind::Ai && row.tool_calls.is_none() {
            self.pending = Some(row);
            if rows.is_empty() {
                return Ok(());
            }
        } else {
            rows.push(row);
        }
        self.store
            .append(self.thread_id, self.device, Some(self.turn_id), rows)
            .await
            .map(|_| ())
            .map_err(|e| TurnError::Store(e.to_string()))
    }

    /// Writes the held-back answer, any partial answer, and the turn's outcome.
    async fn close(
        &mut self,
        result: &Result<Usage, TurnError>,
    ) -> Result<(), crate::store::StoreError> {
        let mut rows: Vec<NewMessage> = self.pending.take().into_iter().collect();
        if result.is_err() && !self.spoken.is_empty() {
            let mut partial = NewMessage::new(MessageKind::Ai, std::mem::take(&mut self.spoken));
            partial.interrupted = true;
            rows.push(partial);
        }
        let (status, error, usage) = match result {
            Ok(usage) => (TurnStatus::Done, None, *usage),
            Err(TurnError::Interrupted) => (TurnStatus::Interrupted, None, Usage::default()),
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
        self.store
            .close_turn(self.thread_id, self.device, self.turn_id, rows, outcome)
            .await
    }
}

#[cfg(test)]
mod thread_name_tests {
    use super::*;

    fn name(app: &str, device: Option<&str>) -> String {
        match ThreadChoice::for_app(app, device).unwrap() {
            ThreadChoice::Remember(name) => name,
            ThreadChoice::Start => unreachable!("an app always names a thread"),
        }
    }

    #[test]
    fn an_app_without_a_device_keeps_its_old_thread_name() {
        assert_eq!(name("kitchen", None), "kitchen");
    }

    #[test]
    fn an_app_and_its_device_never_collide_with_another_app() {
        // The collision the old `{app}_{device}` naming had.
        assert_ne!(
            name("kitchen", Some("speaker")),
            name("kitchen_speaker", None)
        );
        assert_eq!(name("kitchen", Some("speaker")), "kitchen/speaker");
    }

    #[test]
    fn different_parts_always_name_different_threads() {
        let apps = ["a", "a_b", "a_b_c", "b", "b_c", "a-", "_", "a__b"];
        let devices = [
            None,
            Some(""),
            Some("b"),
            Some("c"),
            Some("b_c"),
            Some("b/c"),
            Some("/"),
            Some("c/"),
        ];
        let mut seen = std::collections::HashMap::new();
        for app in apps {
            for device in devices {
                let thread = name(app, device);
                if let Some(earlier) = seen.insert(thread.clone(), (app, device)) {
                    panic!("{earlier:?} and {:?} both name {thread:?}", (app, device));
                }
                // The name splits back into exactly its parts.
                let parts = match thread.split_once(APP_DEVICE_SEPARATOR) {
                    Some((a, d)) => (a, Some(d)),
                    None => (thread.as_str(), None),
                };
                assert_eq!(parts, (app, device));
            }
        }
    }

    #[test]
    fn app_ids_that_could_be_misread_are_refused() {
        assert_eq!(
            ThreadChoice::for_app("kitchen/speaker", None),
            Err(ThreadNameError::SeparatorInAppId("kitchen/speaker".into()))
        );
        assert_eq!(
            ThreadChoice::for_app("", Some("speaker")),
            Err(ThreadNameError::EmptyAppId)
        );
    }
}

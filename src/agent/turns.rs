//! The turn runner: gives a turn its thread's memory, runs the agent, and logs what was said.
//!
//! Invariants it keeps:
//! - The user's turn is stored before the model is called, so a failed or cut call loses
//!   nothing the user said.
//! - Turns on one thread never interleave; they are stored in arrival order. A new turn
//!   interrupts a running or waiting turn of the same session on its thread (voice barge-in)
//!   or waits behind it, by `--on-busy`. A turn of another session sharing the thread (an
//!   app's devices under `--memory-scope app`) always waits: one device never cuts another
//!   off. Different threads run in parallel.
//! - Each turn runs in its own task, so a client that goes away cannot cut the bookkeeping
//!   short: dropping the [`TurnHandle`] cancels the turn, which stops the model call and keeps
//!   the partial answer, marked interrupted.
//! - Nothing holds a turn, or its thread, for ever: the whole turn has a deadline
//!   (`--turn-timeout-secs`), and a client that stops reading is dropped after
//!   `--client-stall-secs` ([`client`]).
//! - The client is told an answer is complete only once the write closing the turn has
//!   committed; if it fails, the client gets a store error instead.
//! - A turn is closed whatever happens to its task: if the task dies (a panic), the turn is
//!   closed as interrupted with what was said so far.
//! - Every thread is named in [`thread_name`] ([`CallIds::place`]): a session, an app, an app
//!   and a device, or a new thread. Different parts never share a thread.

mod client;
mod recorder;
mod stateless;
mod thread_name;
mod thread_policy;
mod upkeep;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use self::client::ClientLink;
use self::recorder::Recorder;
use super::memory::{from_log, to_log};
use super::profile::{Profile, Profiles};
use super::{Agent, AgentEvent, AgentOutcome, AgentSink, FinishReason, TurnInput, TurnOptions};
use crate::llm::{ChatMessage, LlmError, ToolCall, Usage};
use crate::metrics::Metrics;
use crate::store::{ConversationTags, Origin, Store};

pub use self::thread_name::{
    APP_DEVICE_SEPARATOR, CallIds, ThreadChoice, ThreadNameError, TurnPlace, device_of,
};
pub use self::thread_policy::{BusyPolicy, MemoryScope};
pub use self::upkeep::{ForgetError, TurnHealth};

/// `--turn-timeout-secs`: the longest a turn may take, router, tools and model calls together.
pub const DEFAULT_TURN_TIMEOUT_SECS: u64 = 120;
/// `--client-stall-secs`: the longest a client may leave the answer untaken.
pub const DEFAULT_CLIENT_STALL_SECS: u64 = 30;

/// Time limits of every turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnLimits {
    /// The whole turn, from the moment it may run (a turn waiting behind another on its
    /// thread has not started).
    pub turn_timeout: Duration,
    /// How long text may wait for a client that takes nothing before the client is dropped.
    pub client_stall: Duration,
}

impl Default for TurnLimits {
    fn default() -> Self {
        TurnLimits {
            turn_timeout: Duration::from_secs(DEFAULT_TURN_TIMEOUT_SECS),
            client_stall: Duration::from_secs(DEFAULT_CLIENT_STALL_SECS),
        }
    }
}

/// A turn to run.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub thread: ThreadChoice,
    /// On a continued stateless conversation ([`ThreadChoice::Continue`]): the dialogue the
    /// client resent, which the log already holds. The model sees it before `new_messages`;
    /// the log does not get it again. Empty otherwise.
    pub resent: Vec<ChatMessage>,
    /// Messages not yet in memory: the newest user turn, or the whole carried dialogue of a new
    /// thread (never system messages).
    pub new_messages: Vec<ChatMessage>,
    /// The device, the client's own system text (on a new thread) and whether it streams; the
    /// agent gets them as they are.
    pub options: TurnOptions,
    /// The session the call came in on (DashScope's `session_id`, OpenAI's `thread_id`): a
    /// barge-in interrupts only a turn of the same session. None: the thread is the session.
    pub session: Option<String>,
    /// The assistant that answers: its agent, memory window and busy policy, as they were when
    /// the call came in (a live reload does not change a running turn).
    pub profile: Arc<Profile>,
    /// Where the turn came from (an API client, or the box page's try-it chat), for the log.
    pub origin: Origin,
}

impl TurnRequest {
    /// A user's message on the remembered thread `thread`, answered by `profile` as a stream:
    /// the terminal chat's and the box page's try-it turns.
    pub fn said(
        thread: String,
        text: impl Into<String>,
        profile: Arc<Profile>,
        origin: Origin,
    ) -> TurnRequest {
        TurnRequest {
            thread: ThreadChoice::Remember(thread),
            resent: Vec::new(),
            new_messages: vec![ChatMessage::user(text)],
            options: TurnOptions {
                streaming: true,
                ..TurnOptions::default()
            },
            session: None,
            profile,
            origin,
        }
    }
}

/// What the client side of a turn receives.
#[derive(Debug)]
pub enum TurnEvent {
    Text(String),
    /// Boxed, as [`crate::agent::AgentEvent::Message`] is: the channel's slots stay small.
    Finished(Box<TurnSummary>),
    Failed(TurnError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnSummary {
    pub model: String,
    pub usage: Usage,
    /// Why the answer ended: `Length` when it was cut at `--max-answer-bytes`, `ToolCalls`
    /// when the model called the client's tools.
    pub finish: FinishReason,
    /// The client's tools the model called, for the client to run (finish `ToolCalls`).
    pub tool_calls: Vec<ToolCall>,
    /// The name of every tool the model called in this turn, in order: the box's own (which
    /// ran) and the client's (also in `tool_calls`). Empty: the turn took the chat route.
    /// What `eval` grades the route and tool use by.
    pub tools_called: Vec<String>,
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
    #[error("the turn timed out after {} s", .after.as_secs_f64())]
    Timeout { after: Duration },
    #[error("the client stopped reading the answer for {} s", .after.as_secs_f64())]
    ClientStalled { after: Duration },
    #[error("the turn stopped unexpectedly")]
    Aborted,
}

/// The client's end of a running turn. Dropping it cancels the turn.
pub struct TurnHandle {
    pub thread_id: String,
    events: mpsc::Receiver<TurnEvent>,
    _cancel_on_drop: DropGuard,
}

impl TurnHandle {
    /// The next event; `None` once the turn is over.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        self.events.recv().await
    }

    /// Waits for the whole answer (non-streaming clients): the text the turn gave, and how it
    /// ended.
    pub async fn collect(mut self) -> (String, Result<TurnSummary, TurnError>) {
        let mut text = String::new();
        while let Some(event) = self.next().await {
            match event {
                TurnEvent::Text(piece) => text.push_str(&piece),
                TurnEvent::Finished(summary) => return (text, Ok(*summary)),
                TurnEvent::Failed(error) => return (text, Err(error)),
            }
        }
        (text, Err(TurnError::Aborted))
    }
}

/// Per-thread ordering state.
#[derive(Default)]
struct ThreadSlot {
    turn_lock: tokio::sync::Mutex<()>,
    /// The newest turn of each session on the thread, running or waiting, by serial number:
    /// the one a barge-in from that session interrupts.
    newest: Mutex<HashMap<String, (u64, CancellationToken)>>,
}

pub struct TurnRunner {
    store: Store,
    /// The box's profiles as they stand; a live reload swaps them whole.
    profiles: RwLock<Arc<Profiles>>,
    limits: TurnLimits,
    threads: Mutex<HashMap<String, Arc<ThreadSlot>>>,
    next_serial: AtomicU64,
    /// Running turns, and each closed turn's time and route, are counted here.
    metrics: Arc<Metrics>,
}

impl TurnRunner {
    pub fn new(
        store: Store,
        profiles: Profiles,
        limits: TurnLimits,
        metrics: Arc<Metrics>,
    ) -> Arc<TurnRunner> {
        Arc::new(TurnRunner {
            store,
            profiles: RwLock::new(Arc::new(profiles)),
            limits,
            threads: Mutex::default(),
            next_serial: AtomicU64::new(1),
            metrics,
        })
    }

    /// The box's metrics, which the turns' callers count their part in too (open streams).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The profiles in force: what a new call picks its profile from.
    pub fn profiles(&self) -> Arc<Profiles> {
        Arc::clone(&self.profiles.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `profiles` in force for the turns that start from now on; running turns keep the
    /// profile they started with.
    pub fn set_profiles(&self, profiles: Profiles) {
        *self.profiles.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(profiles);
    }

    /// Starts a turn in its own task and returns the client's end of it.
    pub fn start(self: &Arc<Self>, request: TurnRequest) -> TurnHandle {
        let thread_id = request.thread.id();
        let session = request.session.clone().unwrap_or_else(|| thread_id.clone());
        let cancel = CancellationToken::new();
        let (client, rx) = ClientLink::channel(self.limits.client_stall);
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let slot = self.slot(&thread_id);
        {
            let mut newest = slot.newest.lock().unwrap_or_else(|e| e.into_inner());
            let previous = newest.insert(session.clone(), (serial, cancel.clone()));
            if request.profile.on_busy == BusyPolicy::Interrupt
                && let Some((_, previous)) = previous
            {
                previous.cancel();
            }
        }
        let runner = Arc::clone(self);
        let id = thread_id.clone();
        let token = cancel.clone();
        // In the caller's span: the request's id is on every line the turn logs.
        let turn = async move {
            // Frees the thread's slot even if the turn's task dies.
            let slot = SlotGuard {
                runner: &runner,
                thread_id: &id,
                session: &session,
                slot,
                serial,
            };
            // Waiting turns queue here in arrival order, even when already interrupted, so
            // that every user turn is stored in the order it was said.
            let _turn = slot.slot.turn_lock.lock().await;
            runner.run(&id, request, &token, client).await;
        };
        tokio::spawn(turn.in_current_span());
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
    fn release(&self, thread_id: &str, session: &str, slot: &Arc<ThreadSlot>, serial: u64) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut newest = slot.newest.lock().unwrap_or_else(|e| e.into_inner());
            if newest.get(session).is_some_and(|(s, _)| *s == serial) {
                newest.remove(session);
            }
        }
        // Clones are only made under `threads`' lock: two strong counts are the map's and ours.
        if Arc::strong_count(slot) == 2 {
            threads.remove(thread_id);
        }
    }

    async fn run(
        &self,
        thread_id: &str,
        request: TurnRequest,
        cancel: &CancellationToken,
        mut client: ClientLink,
    ) {
        // Released before the client hears the turn's end, so a scrape after it sees it gone.
        let running = self.metrics.turn_running();
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.limits.turn_timeout;
        // The user's turn is stored before the model is called.
        let rows = request.new_messages.iter().filter_map(to_log).collect();
        let stateless = request.thread.is_stateless();
        // A continued stateless conversation's history is the client's dialogue, not the log.
        let continued = matches!(request.thread, ThreadChoice::Continue(_));
        let profile = Arc::clone(&request.profile);
        let agent = &profile.agent;
        let memory_limit = if continued {
            0
        } else {
            profile.history_max_messages
        };
        let tags = ConversationTags {
            stateless,
            profile: profile.name.clone(),
            origin: request.origin,
        };
        let opened = self
            .store
            .open_turn(
                thread_id,
                request.options.device_id.as_deref(),
                agent.model_name(),
                rows,
                memory_limit,
                &tags,
            )
            .await
            .map(|(turn_id, memory)| {
                let history = if continued {
                    stateless::client_history(
                        &request.resent,
                        &request.new_messages,
                        profile.history_max_messages,
                    )
                } else {
                    from_log(&memory)
                };
                (turn_id, history)
            });
        let (turn_id, history) = match opened {
            Ok(opened) => {
                tracing::debug!(
                    thread = thread_id,
                    turn_id = opened.0,
                    remembered = opened.1.len(),
                    "turn opened: the user's turn is stored"
                );
                opened
            }
            Err(e) => {
                tracing::error!(thread = thread_id, "turn not stored: {e}");
                drop(running);
                client.finish(TurnEvent::Failed(TurnError::Store(e.to_string())));
                return;
            }
        };

        let input = TurnInput {
            thread_id: thread_id.to_string(),
            history,
            options: request.options,
        };
        let mut recorder = Recorder::new(
            &self.store,
            thread_id,
            input.options.device_id.as_deref(),
            turn_id,
            started,
            stateless,
            &self.metrics,
        );
        let mut result = if cancel.is_cancelled() {
            Err(TurnError::Interrupted)
        } else {
            let limits = Limits {
                cancel,
                deadline,
                timeout: self.limits.turn_timeout,
            };
            self.drive(agent.as_ref(), &input, &limits, &mut client, &mut recorder)
                .await
        };
        // The answer is confirmed to the client only once the closing write has committed.
        if let Err(e) = recorder.close(&result).await {
            tracing::error!(thread = thread_id, "turn outcome not stored: {e}");
            if result.is_ok() {
                result = Err(TurnError::Store(e.to_string()));
                // Keep the unconfirmed answer, marked interrupted, if the store takes anything.
                if let Err(e) = recorder.close(&result).await {
                    tracing::error!(thread = thread_id, "the answer could not be kept: {e}");
                }
            }
        }
        let event = match result {
            Ok(outcome) => TurnEvent::Finished(Box::new(summary(
                agent.model_name(),
                outcome,
                recorder.tools_called(),
            ))),
            Err(error) => {
                match error {
                    TurnError::Interrupted => {}
                    TurnError::ClientStalled { .. } => {
                        tracing::warn!(thread = thread_id, "client dropped: {error}");
                        // Nobody reads; dropping the link ends the client's stream.
                        return;
                    }
                    _ => tracing::warn!(thread = thread_id, "turn failed: {error}"),
                }
                TurnEvent::Failed(error)
            }
        };
        drop(running);
        client.finish(event);
    }

    /// Runs the agent until it finishes, fails, runs out of time or the turn is cancelled,
    /// passing text to the client and complete messages to the log as they come; then hands
    /// the client the text it has not taken yet.
    async fn drive(
        &self,
        agent: &dyn Agent,
        input: &TurnInput,
        limits: &Limits<'_>,
        client: &mut ClientLink,
        recorder: &mut Recorder,
    ) -> Result<AgentOutcome, TurnError> {
        let (sink, mut events) = AgentSink::channel();
        let answer = agent.answer(input, sink);
        tokio::pin!(answer);
        let mut finished = None;
        // Made once: a new one per event would set and clear a timer for every piece of text.
        let stop = limits.reached();
        tokio::pin!(stop);
        loop {
            let step = tokio::select! {
                biased;
                stop = &mut stop => return Err(stop),
                delivered = client.deliver() => Step::Delivered(delivered),
                event = events.recv() => Step::Agent(event),
                result = &mut answer, if finished.is_none() => Step::Done(result),
            };
            match step {
                Step::Delivered(delivered) => delivered?,
                Step::Done(result) => finished = Some(result),
                Step::Agent(Some(AgentEvent::Text(piece))) => {
                    recorder.spoke(&piece);
                    client.text(piece);
                }
                Step::Agent(Some(AgentEvent::Message(message))) => {
                    recorder.record(*message).await?
                }
                // The agent's future owned the sink; once it is done and drained, so is the turn.
                Step::Agent(None) => {
                    let result = finished.expect("sink closes only when the agent is done");
                    tokio::select! {
                        biased;
                        stop = &mut stop => return Err(stop),
                        delivered = client.deliver_all() => delivered?,
                    }
                    return result.map_err(Into::into);
                }
            }
        }
    }
}

/// What a finished turn reports to its client.
fn summary(model: &str, outcome: AgentOutcome, tools_called: &[String]) -> TurnSummary {
    TurnSummary {
        model: model.to_string(),
        usage: outcome.usage,
        finish: outcome.finish,
        tool_calls: outcome.client_calls,
        tools_called: tools_called.to_vec(),
    }
}

/// One wake-up of [`TurnRunner::drive`].
enum Step {
    Delivered(Result<(), TurnError>),
    Agent(Option<AgentEvent>),
    Done(Result<AgentOutcome, LlmError>),
}

/// What stops a running turn from outside: a newer turn or a client gone, or its deadline.
struct Limits<'a> {
    cancel: &'a CancellationToken,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl Limits<'_> {
    /// Resolves with the reason once the turn must stop.
    async fn reached(&self) -> TurnError {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => TurnError::Interrupted,
            _ = tokio::time::sleep_until(self.deadline) => TurnError::Timeout { after: self.timeout },
        }
    }
}

/// Releases a thread's slot when the turn's task ends, however it ends.
struct SlotGuard<'a> {
    runner: &'a TurnRunner,
    thread_id: &'a str,
    session: &'a str,
    slot: Arc<ThreadSlot>,
    serial: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.runner
            .release(self.thread_id, self.session, &self.slot, self.serial);
    }
}

#[cfg(test)]
mod tests;

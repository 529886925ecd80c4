//! The runner's promises, with scripted agents: an answer is confirmed only once stored, a
//! turn past its deadline stops and keeps what it said, a turn whose task dies is closed, and
//! a barge-in interrupts only a turn of its own session.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::*;
use crate::store::open_temp;

/// What a scripted agent does with its sink; the one place that knows `Agent::answer`'s shape.
type Script =
    Box<dyn Fn(AgentSink) -> BoxFuture<'static, Result<AgentOutcome, LlmError>> + Send + Sync>;

struct ScriptedAgent(Script);

impl Agent for ScriptedAgent {
    fn answer<'a>(
        &'a self,
        _input: &'a TurnInput,
        sink: AgentSink,
    ) -> BoxFuture<'a, Result<AgentOutcome, LlmError>> {
        (self.0)(sink)
    }

    fn model_name(&self) -> &str {
        "scripted"
    }
}

fn runner(store: &Store, script: Script, limits: TurnLimits) -> Arc<TurnRunner> {
    TurnRunner::new(
        store.clone(),
        profiles_of(Arc::new(ScriptedAgent(script)), BusyPolicy::Interrupt, 10),
        limits,
        crate::metrics::Metrics::new(false),
    )
}

/// The one, default, profile of a runner whose agent is `agent`.
pub(super) fn profiles_of(
    agent: Arc<dyn Agent>,
    on_busy: BusyPolicy,
    history_max_messages: usize,
) -> Profiles {
    let mut profile = Profile::for_parsing(
        crate::store::DEFAULT_PROFILE,
        true,
        MemoryScope::Session,
        crate::agent::ClientPromptMode::Append,
    );
    profile.agent = agent;
    profile.on_busy = on_busy;
    profile.history_max_messages = history_max_messages;
    Profiles::single(profile)
}

fn request(turns: &TurnRunner, thread: &str) -> TurnRequest {
    TurnRequest {
        profile: Arc::clone(turns.profiles().default_profile()),
        origin: Origin::Api,
        thread: ThreadChoice::Remember(thread.into()),
        resent: Vec::new(),
        new_messages: vec![ChatMessage::user("hello")],
        options: TurnOptions {
            streaming: true,
            ..TurnOptions::default()
        },
        session: None,
    }
}

/// The thread's turn (status, error) once it is closed, and its log (content, interrupted).
async fn stored(
    store: &Store,
    thread: &'static str,
) -> ((String, Option<String>), Vec<(String, bool)>) {
    for _ in 0..200 {
        let turn: (String, Option<String>) = store
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT status, error FROM turns WHERE conversation_id = ?1",
                    [thread],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        if turn.0 != "running" {
            let log = store.conversation(thread).await.unwrap();
            let log = log
                .into_iter()
                .map(|m| (m.message.content, m.message.interrupted))
                .collect();
            return (turn, log);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the turn of {thread} is still running");
}

#[tokio::test]
async fn an_answer_whose_closing_write_fails_is_not_confirmed() {
    let (_dir, store) = open_temp();
    let (go, gate) = tokio::sync::watch::channel(false);
    let answer = "a long answer ".repeat(10_000);
    let script: Script = Box::new(move |sink| {
        let (mut gate, answer) = (gate.clone(), answer.clone());
        Box::pin(async move {
            sink.text("a long");
            let _ = gate.wait_for(|go| *go).await;
            sink.message(ChatMessage::assistant(answer));
            Ok(AgentOutcome::default())
        })
    });
    let turns = runner(&store, script, TurnLimits::default());
    let mut turn = turns.start(request(&turns, "unstored"));
    assert!(matches!(turn.next().await, Some(TurnEvent::Text(_))));
    // The disk fills while the model speaks: the answer's pages cannot be written.
    store
        .write(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
            Ok(())
        })
        .await
        .unwrap();
    go.send(true).unwrap();
    let error = turn.collect().await.1.unwrap_err();
    assert!(matches!(error, TurnError::Store(_)), "{error}");
    let shown = crate::api::error::ApiError::from(&error);
    assert_eq!(shown.status().as_u16(), 503);
    let done: i64 = store
        .run(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM turns WHERE status = 'done'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(done, 0, "nothing claims the turn was stored");
}

#[tokio::test]
async fn a_turn_past_its_deadline_stops_and_keeps_what_it_said() {
    let (_dir, store) = open_temp();
    let script: Script = Box::new(|sink| {
        Box::pin(async move {
            sink.text("so far");
            std::future::pending().await
        })
    });
    let limits = TurnLimits {
        turn_timeout: Duration::from_millis(300),
        ..TurnLimits::default()
    };
    let turns = runner(&store, script, limits);
    let error = turns
        .start(request(&turns, "slow"))
        .collect()
        .await
        .1
        .unwrap_err();
    assert!(matches!(error, TurnError::Timeout { .. }), "{error}");
    assert_eq!(error.to_string(), "the turn timed out after 0.3 s");
    let ((status, error), log) = stored(&store, "slow").await;
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("failed", Some("the turn timed out after 0.3 s"))
    );
    assert_eq!(
        log,
        [("hello".to_string(), false), ("so far".to_string(), true)]
    );
}

#[tokio::test]
async fn a_turn_whose_task_panics_is_closed_as_interrupted_with_what_was_said() {
    let (_dir, store) = open_temp();
    let script: Script = Box::new(|sink| {
        Box::pin(async move {
            sink.text("half an ans");
            tokio::task::yield_now().await;
            panic!("a bug in an agent");
        })
    });
    let turns = runner(&store, script, TurnLimits::default());
    let error = turns
        .start(request(&turns, "panic"))
        .collect()
        .await
        .1
        .unwrap_err();
    assert!(matches!(error, TurnError::Aborted), "{error}");
    let ((status, error), log) = stored(&store, "panic").await;
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("interrupted", Some("the turn stopped unexpectedly"))
    );
    assert_eq!(
        log,
        [
            ("hello".to_string(), false),
            ("half an ans".to_string(), true)
        ]
    );
    // The thread is free again.
    assert!(turns.threads.lock().unwrap().is_empty());
}

/// A request of `session` on the shared thread `thread` (an app's devices under
/// `--memory-scope app`).
fn request_of(turns: &TurnRunner, thread: &str, session: &str, text: &str) -> TurnRequest {
    TurnRequest {
        session: Some(session.into()),
        new_messages: vec![ChatMessage::user(text)],
        ..request(turns, thread)
    }
}

/// An agent that says "answer", then waits for the gate before finishing.
fn gated() -> (tokio::sync::watch::Sender<bool>, Script) {
    let (go, gate) = tokio::sync::watch::channel(false);
    let script: Script = Box::new(move |sink| {
        let mut gate = gate.clone();
        Box::pin(async move {
            sink.text("answer");
            let _ = gate.wait_for(|go| *go).await;
            sink.message(ChatMessage::assistant("answer"));
            Ok(AgentOutcome::default())
        })
    });
    (go, script)
}

/// The statuses of the thread's turns, oldest first, once none runs.
async fn statuses(store: &Store, thread: &'static str) -> Vec<String> {
    for _ in 0..200 {
        let rows: Vec<String> = store
            .run(move |c| {
                let mut stmt =
                    c.prepare("SELECT status FROM turns WHERE conversation_id = ?1 ORDER BY id")?;
                let rows = stmt.query_map([thread], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        if !rows.iter().any(|s| s == "running") {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a turn of {thread} is still running");
}

#[tokio::test]
async fn a_turn_of_another_session_waits_instead_of_interrupting() {
    let (_dir, store) = open_temp();
    let (go, script) = gated();
    let turns = runner(&store, script, TurnLimits::default());
    let mut first = turns.start(request_of(&turns, "app", "device-a", "one"));
    assert!(matches!(first.next().await, Some(TurnEvent::Text(_))));
    let second = turns.start(request_of(&turns, "app", "device-b", "two"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    go.send(true).unwrap();
    let (text, end) = first.collect().await;
    assert_eq!((text.as_str(), end.is_ok()), ("", true), "{end:?}");
    assert!(second.collect().await.1.is_ok());
    assert_eq!(statuses(&store, "app").await, ["done", "done"]);
    let log: Vec<_> = store
        .conversation("app")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message.content)
        .collect();
    assert_eq!(log, ["one", "answer", "two", "answer"], "in arrival order");
}

#[tokio::test]
async fn a_turn_of_the_same_session_still_interrupts() {
    let (_dir, store) = open_temp();
    let (go, script) = gated();
    let turns = runner(&store, script, TurnLimits::default());
    let mut first = turns.start(request_of(&turns, "app", "device-a", "one"));
    assert!(matches!(first.next().await, Some(TurnEvent::Text(_))));
    let second = turns.start(request_of(&turns, "app", "device-a", "two"));
    let (_, end) = first.collect().await;
    assert!(matches!(end, Err(TurnError::Interrupted)), "{end:?}");
    go.send(true).unwrap();
    assert!(second.collect().await.1.is_ok());
    assert_eq!(statuses(&store, "app").await, ["interrupted", "done"]);
}

//! The runner's promises, with scripted agents: an answer is confirmed only once stored, a
//! turn past its deadline stops and keeps what it said, and a turn whose task dies is closed.

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
        Arc::new(ScriptedAgent(script)),
        BusyPolicy::Interrupt,
        10,
        limits,
    )
}

fn request(thread: &str) -> TurnRequest {
    TurnRequest {
        thread: ThreadChoice::Remember(thread.into()),
        resent: Vec::new(),
        new_messages: vec![ChatMessage::user("hello")],
        options: TurnOptions {
            streaming: true,
            ..TurnOptions::default()
        },
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
    let mut turn = turns.start(request("unstored"));
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
    let error = turn.collect().await.unwrap_err();
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
    let error = turns.start(request("slow")).collect().await.unwrap_err();
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
    let error = turns.start(request("panic")).collect().await.unwrap_err();
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

//! `lang-agent chat`: a conversation in the terminal, through the server's own turn pipeline
//! (`pipeline.rs`) with no server running: the answer streams as it is made, the box's tool
//! calls and their results appear dimmed, `/new` starts a new conversation and `/exit` (or the
//! end of stdin) leaves. It reads plain lines, so scripts pipe questions in.
//!
//! The conversation is logged in the data directory like any other (the viewer shows it),
//! unless a server is running there: then the chat runs on a throwaway store and says so,
//! because one data directory has one server (`store::backup::ServingLock`).

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::broadcast;

use super::pipeline::{Pipeline, PipelineError};
use crate::agent::turns::{TurnEvent, TurnRequest, TurnRunner};
use crate::config::{Config, ServeConfig};
use crate::metrics::Metrics;
use crate::store::backup::{BackupError, ServingLock};
use crate::store::{MessageKind, Origin, Store, StoreError, StoreEvent};

/// Why the chat could not run.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot lock the data directory: {0}")]
    Lock(BackupError),
    #[error("cannot read stdin: {0}")]
    Stdin(std::io::Error),
    #[error("cannot make a throwaway store: {0}")]
    TempDir(std::io::Error),
}

/// What the terminal shows: dimmed tool lines and a prompt only on a terminal.
struct Screen {
    color: bool,
    prompt: bool,
}

impl Screen {
    fn step(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = match self.color {
            true => writeln!(out, "\x1b[2m  {text}\x1b[0m"),
            false => writeln!(out, "  {text}"),
        };
        let _ = out.flush();
    }

    fn prompt(&self) {
        if self.prompt {
            print!("you> ");
            let _ = std::io::stdout().flush();
        }
    }
}

/// Runs the chat until `/exit` or the end of stdin.
pub async fn run(
    config: Config,
    serve: ServeConfig,
    thread: Option<String>,
) -> Result<(), ChatError> {
    let db = config.sqlite_path();
    let (_lock, _throwaway, store) = match ServingLock::take(&db) {
        Ok(lock) => (Some(lock), None, Store::open_for_serve(&db)?),
        Err(BackupError::Serving(dir)) => {
            eprintln!(
                "A server is running on {}: this chat uses a throwaway store and is not logged.",
                dir.display()
            );
            let dir = tempfile::tempdir().map_err(ChatError::TempDir)?;
            let store = Store::open(&dir.path().join("chat.sqlite3"))?;
            (None, Some(dir), store)
        }
        Err(other) => return Err(ChatError::Lock(other)),
    };
    let Pipeline { turns, .. } =
        Pipeline::build(&config, &serve, store.clone(), Metrics::new(false)).await?;
    let screen = Screen {
        color: std::io::stdout().is_terminal(),
        prompt: std::io::stdin().is_terminal(),
    };
    let mut thread = thread.unwrap_or_else(new_thread);
    if screen.prompt {
        println!("Conversation {thread}. /new starts another, /exit leaves.");
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        screen.prompt();
        let Some(line) = lines.next_line().await.map_err(ChatError::Stdin)? else {
            break;
        };
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/new" => {
                thread = new_thread();
                println!("New conversation {thread}.");
            }
            text => turn(&turns, &store, &thread, text, &screen).await,
        }
    }
    Ok(())
}

fn new_thread() -> String {
    format!("chat-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// One turn: the answer streamed to stdout, the box's tool steps shown as they are logged.
async fn turn(turns: &Arc<TurnRunner>, store: &Store, thread: &str, text: &str, screen: &Screen) {
    let mut changes = store.subscribe();
    let mut shown = store.conversation(thread).await.map_or(0, |m| m.len());
    let profile = Arc::clone(turns.profiles().default_profile());
    let request = TurnRequest::said(thread.to_string(), text, profile, Origin::Api);
    let mut handle = turns.start(request);
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            biased;
            change = changes.recv() => {
                let ours = matches!(&change, Ok(StoreEvent::ConversationNew(id) | StoreEvent::ConversationUpdated(id)) if id == thread)
                    || matches!(change, Err(broadcast::error::RecvError::Lagged(_)));
                if ours {
                    shown = show_steps(store, thread, shown, screen).await;
                }
            }
            event = handle.next() => match event {
                Some(TurnEvent::Text(piece)) => {
                    let _ = out.write_all(piece.as_bytes());
                    let _ = out.flush();
                }
                Some(TurnEvent::Finished(_)) | None => break,
                Some(TurnEvent::Failed(error)) => {
                    eprintln!("\n[the turn failed: {error}]");
                    break;
                }
            },
        }
    }
    println!();
}

/// Prints the tool calls and results logged after the first `shown` messages of `thread`;
/// returns how many messages are shown now.
async fn show_steps(store: &Store, thread: &str, shown: usize, screen: &Screen) -> usize {
    let Ok(messages) = store.conversation(thread).await else {
        return shown;
    };
    for stored in messages.iter().skip(shown) {
        let message = &stored.message;
        match (message.kind, &message.tool_calls) {
            (MessageKind::Ai, Some(calls)) => {
                screen.step(&format!("→ calls {}", describe_calls(calls)))
            }
            (MessageKind::Tool, _) => screen.step(&format!(
                "← {}: {}",
                message.tool_name.as_deref().unwrap_or("tool"),
                message.content
            )),
            _ => {}
        }
    }
    messages.len()
}

/// `calculator {"expression":"6*7"}` for each call of a logged `tool_calls` array.
fn describe_calls(calls: &str) -> String {
    let Ok(serde_json::Value::Array(calls)) = serde_json::from_str(calls) else {
        return calls.to_string();
    };
    let described: Vec<String> = calls
        .iter()
        .map(|c| {
            let name = c
                .pointer("/function/name")
                .and_then(|n| n.as_str())
                .unwrap_or("?");
            let arguments = c
                .pointer("/function/arguments")
                .and_then(|a| a.as_str())
                .unwrap_or("");
            format!("{name} {arguments}")
        })
        .collect();
    described.join(", ")
}

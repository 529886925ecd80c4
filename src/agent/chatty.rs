//! Chatty mode (`--tool-node chatty`): short spoken filler while the tool branch works.
//!
//! Tools take seconds; a speaker that says nothing for seconds feels broken. While the tool
//! branch runs, a chatty model (`chatty_prompt.txt`, on the fast router model) says a few short
//! sentences acknowledging the request. The filler is released one sentence at a time at
//! speaking speed, so the client's speech queue never holds more than the sentence being said:
//! when the tool branch starts its answer, the filler stops at the end of a sentence (it is only
//! ever released in whole sentences) and the answer follows straight after. The client hears
//! filler then answer, with no markers.
//!
//! The log gets the filler as its own AI message (exactly what was spoken), followed by the
//! tool branch's messages, held back until then so that the order of the log is the order of
//! speech. Filler needs a listener: collected (non-stream) answers get the answer alone.
//! Client-tool turns (OpenAI `tools`) get no filler.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::prompts::{PromptName, Prompts};
use super::{Agent, AgentEvent, AgentOutcome, AgentSink, TurnInput, tool_calls_without_tools};
use crate::llm::{ChatMessage, ChatRequest, LlmClient, LlmError, Sampling, Usage};

pub struct ChattyToolAgent {
    tool_branch: Arc<dyn Agent>,
    llm: LlmClient,
    filler_model: String,
    prompts: Prompts,
}

impl ChattyToolAgent {
    pub fn new(
        tool_branch: Arc<dyn Agent>,
        llm: LlmClient,
        filler_model: impl Into<String>,
        prompts: Prompts,
    ) -> ChattyToolAgent {
        ChattyToolAgent {
            tool_branch,
            llm,
            filler_model: filler_model.into(),
            prompts,
        }
    }

    /// Streams the chatty model's filler into `pieces`.
    async fn filler(
        &self,
        input: &TurnInput,
        pieces: mpsc::UnboundedSender<String>,
    ) -> Result<Usage, LlmError> {
        let messages = input.own_prompt_messages(&self.prompts.get(PromptName::Chatty));
        let request = ChatRequest {
            model: &self.filler_model,
            messages: &messages,
            tools: &[],
            json_object: false,
            sampling: &Sampling::NONE,
            tool_choice: None,
        };
        let mut on_text = |piece: &str| {
            let _ = pieces.send(piece.to_string());
        };
        let completion = self.llm.stream(&request, &mut on_text).await?;
        if completion.message.content.is_empty() && !completion.message.tool_calls.is_empty() {
            return Err(tool_calls_without_tools());
        }
        Ok(completion.usage)
    }

    async fn run(&self, input: &TurnInput, sink: AgentSink) -> Result<AgentOutcome, LlmError> {
        if input.is_client_tool_turn() {
            // The client speaks around its own tool calls: filler would only sit in front of
            // the calls it is waiting for.
            return self.tool_branch.answer(input, sink).await;
        }
        let (work_sink, mut work_events) = AgentSink::channel();
        let mut work = self.tool_branch.answer(input, work_sink).fuse();
        let (pieces_tx, mut pieces) = mpsc::unbounded_channel();
        let mut filler_call = self.filler(input, pieces_tx).boxed().fuse();
        let mut pacer = Pacer::default();
        let mut filler_usage = Usage::default();
        let mut spoken_filler = String::new();
        // The tool branch's messages, held while filler is being spoken.
        let mut held: Vec<ChatMessage> = Vec::new();
        let mut answering = false;
        let mut work_result = None;
        let mut events_open = true;
        let mut pieces_open = true;

        while events_open || work_result.is_none() {
            let next_sentence_at = pacer.next_at();
            tokio::select! {
                event = work_events.recv(), if events_open => match event {
                    Some(AgentEvent::Text(text)) => {
                        if !answering {
                            answering = true;
                            // Stop the filler model; its request is aborted.
                            filler_call = futures::future::Fuse::terminated();
                            finish_filler(&sink, &mut spoken_filler, &mut held);
                        }
                        sink.text(&text);
                    }
                    Some(AgentEvent::Message(message)) if answering => sink.forward(AgentEvent::Message(message)),
                    Some(AgentEvent::Message(message)) => held.push(*message),
                    None => events_open = false,
                },
                result = &mut work, if work_result.is_none() => work_result = Some(result),
                piece = pieces.recv(), if pieces_open && !answering => match piece {
                    Some(piece) => pacer.push(&piece),
                    None => {
                        pieces_open = false;
                        pacer.finish();
                    }
                },
                result = &mut filler_call, if !answering => match result {
                    Ok(usage) => filler_usage = usage,
                    // Filler is a nicety; the answer does not depend on it.
                    Err(e) => tracing::warn!(thread = %input.thread_id, "filler call failed: {e}"),
                },
                _ = tokio::time::sleep_until(next_sentence_at.unwrap_or_else(Instant::now)),
                    if !answering && next_sentence_at.is_some() =>
                {
                    if let Some(sentence) = pacer.release() {
                        sink.text(&sentence);
                        spoken_filler.push_str(&sentence);
                    }
                }
            }
        }
        // The tool branch finished without speaking (or failed): what was said is still logged.
        finish_filler(&sink, &mut spoken_filler, &mut held);
        let mut outcome = work_result.expect("the loop ends once the work is done")?;
        outcome.usage += filler_usage;
        Ok(outcome)
    }
}

/// Logs the filler spoken so far as its own message, then the held tool-branch messages.
fn finish_filler(sink: &AgentSink, spoken: &mut String, held: &mut Vec<ChatMessage>) {
    if !spoken.is_empty() {
        sink.message(ChatMessage::assistant(std::mem::take(spoken)));
    }
    for message in held.drain(..) {
        sink.message(message);
    }
}

impl Agent for ChattyToolAgent {
    fn answer<'a>(
        &'a self,
        input: &'a TurnInput,
        sink: AgentSink,
    ) -> BoxFuture<'a, Result<AgentOutcome, LlmError>> {
        if input.options.streaming {
            self.run(input, sink).boxed()
        } else {
            self.tool_branch.answer(input, sink)
        }
    }

    fn model_name(&self) -> &str {
        self.tool_branch.model_name()
    }

    fn box_tool_names(&self) -> Vec<String> {
        self.tool_branch.box_tool_names()
    }
}

/// Releases filler text one whole sentence at a time, no faster than it is spoken.
#[derive(Default)]
struct Pacer {
    pending: String,
    /// The filler model has finished: the rest is a sentence even without punctuation.
    finished: bool,
    /// When the previous sentence will have been spoken.
    free_at: Option<Instant>,
}

impl Pacer {
    fn push(&mut self, piece: &str) {
        self.pending.push_str(piece);
    }

    fn finish(&mut self) {
        self.finished = true;
    }

    /// When the next sentence may go out, if one is complete.
    fn next_at(&self) -> Option<Instant> {
        sentence_end(&self.pending, self.finished)?;
        Some(self.free_at.unwrap_or_else(Instant::now))
    }

    /// The next complete sentence; the one after it waits until this one has been said.
    fn release(&mut self) -> Option<String> {
        let end = sentence_end(&self.pending, self.finished)?;
        let sentence: String = self.pending.drain(..end).collect();
        let now = Instant::now();
        self.free_at = Some(now + speaking_time(&sentence));
        Some(sentence)
    }
}

/// Byte index just past the first complete sentence of `text` (with the spaces after it).
fn sentence_end(text: &str, finished: bool) -> Option<usize> {
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = i + c.len_utf8();
        let closes = match c {
            '。' | '！' | '？' | '…' | '；' | '\n' => true,
            // A Latin full stop ends a sentence only before a space: not in "3.5", and not
            // before we know what follows it.
            '.' | '!' | '?' | ';' => match chars.peek() {
                Some((_, next)) => next.is_whitespace(),
                None => finished,
            },
            _ => false,
        };
        if closes {
            let mut end = end;
            while let Some((j, next)) = chars.peek().copied() {
                if !next.is_whitespace() {
                    break;
                }
                end = j + next.len_utf8();
                chars.next();
            }
            return Some(end);
        }
    }
    (finished && !text.trim().is_empty()).then_some(text.len())
}

/// About how long a text-to-speech voice takes to say `text`: ~4 Chinese characters or
/// ~14 other characters (2.5 English words) a second.
fn speaking_time(text: &str) -> Duration {
    let millis: u64 = text.chars().map(|c| if is_cjk(c) { 250 } else { 70 }).sum();
    Duration::from_millis(millis)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3000..=0x303F | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xFF00..=0xFFEF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_sentences_only() {
        assert_eq!(sentence_end("One moment. Then", false), Some(12));
        assert_eq!(sentence_end("Pi is 3.14 or so", false), None);
        assert_eq!(sentence_end("Almost done.", false), None);
        assert_eq!(sentence_end("Almost done.", true), Some(12));
        assert_eq!(
            sentence_end("好的，我看看。马上", false),
            Some("好的，我看看。".len())
        );
        assert_eq!(sentence_end("no stop at all", true), Some(14));
        assert_eq!(sentence_end("  ", true), None);
    }

    #[test]
    fn releases_sentences_at_speaking_pace() {
        let mut pacer = Pacer::default();
        pacer.push("Let me see. One ");
        assert!(pacer.next_at().unwrap() <= Instant::now());
        let before = Instant::now();
        assert_eq!(pacer.release().as_deref(), Some("Let me see. "));
        let after = Instant::now();
        // The rest is not a sentence yet.
        assert_eq!(pacer.next_at(), None);
        pacer.push("moment please.");
        pacer.finish();
        let next = pacer.next_at().unwrap();
        let said = speaking_time("Let me see. ");
        assert_eq!(said, Duration::from_millis(12 * 70));
        assert!(next >= before + said && next <= after + said);
        assert_eq!(pacer.release().as_deref(), Some("One moment please."));
        assert_eq!(pacer.release(), None);
        assert_eq!(speaking_time("好的"), Duration::from_millis(500));
    }
}

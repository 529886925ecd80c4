//! Server-sent events from the upstream, decoded with a bound on every buffer.
//!
//! Only what a chat-completions stream uses is kept: the `data:` lines of each event, joined
//! by newlines (the WHATWG rules: `\n`, `\r\n` or `\r` end a line, a blank line ends an event,
//! `:` starts a comment, other fields are ignored, an event without data is no event). A
//! general SSE parser buffers an unfinished line or event without limit, so one endless line
//! from a broken upstream would grow until the process dies; here a line or event past
//! `max_event_bytes` is a protocol error instead.

use bytes::{Buf, Bytes};

use super::client::LlmError;

pub struct SseDecoder {
    max_event_bytes: usize,
    /// Bytes received but not yet decoded.
    pending: Bytes,
    /// The line being read (without its end).
    line: Vec<u8>,
    /// The event's data so far, each line followed by `\n`.
    data: String,
    has_data: bool,
    /// The last line ended with `\r`: a `\n` right after it belongs to that line end.
    after_cr: bool,
}

impl SseDecoder {
    pub fn new(max_event_bytes: usize) -> SseDecoder {
        SseDecoder {
            max_event_bytes,
            pending: Bytes::new(),
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            after_cr: false,
        }
    }

    /// Adds received bytes; call [`SseDecoder::next_event`] until it returns `None` first.
    pub fn feed(&mut self, bytes: Bytes) {
        debug_assert!(
            self.pending.is_empty(),
            "feed after next_event returned None"
        );
        self.pending = bytes;
    }

    /// The data of the next complete event in what was fed, or `None` when more bytes are
    /// needed.
    pub fn next_event(&mut self) -> Result<Option<String>, LlmError> {
        while !self.pending.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if self.pending[0] == b'\n' {
                    self.pending.advance(1);
                    continue;
                }
            }
            let Some(end) = self.pending.iter().position(|b| matches!(b, b'\n' | b'\r')) else {
                let rest = self.pending.split_off(0);
                self.grow_line(&rest)?;
                return Ok(None);
            };
            let head = self.pending.split_to(end + 1);
            self.after_cr = head[end] == b'\r';
            self.grow_line(&head[..end])?;
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.take_line(&line)? {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    fn grow_line(&mut self, bytes: &[u8]) -> Result<(), LlmError> {
        if self.line.len() + self.data.len() + bytes.len() > self.max_event_bytes {
            return Err(LlmError::Invalid(format!(
                "upstream sent an event over {} bytes",
                self.max_event_bytes
            )));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// Handles one complete line; a blank line ends the event and returns its data.
    fn take_line(&mut self, line: &[u8]) -> Result<Option<String>, LlmError> {
        if line.is_empty() {
            if !self.has_data {
                return Ok(None);
            }
            self.has_data = false;
            let mut data = std::mem::take(&mut self.data);
            data.pop(); // the `\n` after the last data line
            return Ok(Some(data));
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            let value = std::str::from_utf8(value).map_err(|_| {
                LlmError::Invalid("upstream sent an event that is not UTF-8".into())
            })?;
            self.data.push_str(value);
            self.data.push('\n');
            self.has_data = true;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]], max: usize) -> Result<Vec<String>, LlmError> {
        let mut decoder = SseDecoder::new(max);
        let mut events = Vec::new();
        for chunk in chunks {
            decoder.feed(Bytes::copy_from_slice(chunk));
            while let Some(event) = decoder.next_event()? {
                events.push(event);
            }
        }
        Ok(events)
    }

    #[test]
    fn decodes_events_across_chunks_and_line_ends() {
        let events = decode(
            &[
                b"data: {\"a\":",
                b"1}\n\n: comment\r\nevent: x\r\ndata:two\r",
                b"\ndata: lines\r\rid: 7\ndata:[DONE]\n",
                b"\n",
            ],
            1024,
        )
        .unwrap();
        assert_eq!(events, ["{\"a\":1}", "two\nlines", "[DONE]"]);
        // No data, no event; an unfinished event at the end is not an event.
        assert!(
            decode(&[b"event: ping\n\nretry: 5\n\ndata: cut"], 1024)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_endless_line_or_event_is_an_error_not_a_buffer() {
        let long = vec![b'a'; 600];
        let err = decode(&[b"data: ", &long, &long], 1000).unwrap_err();
        assert!(err.to_string().contains("over 1000 bytes"), "{err}");
        // Many short data lines without the blank line that ends the event.
        let lines = b"data: 0123456789\n".repeat(100);
        assert!(decode(&[&lines], 1000).is_err());
        assert_eq!(decode(&[&lines[..170], b"\n"], 1000).unwrap().len(), 1);
        assert!(decode(&[b"data: \xff\n\n"], 100).is_err());
    }
}

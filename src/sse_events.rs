//! Server-sent events read from a peer we do not control (the upstream model, a legacy-SSE MCP
//! server), with a bound on how much one event may take.
//!
//! Parsing is `sse-stream`'s (the parser rmcp uses). A general SSE parser buffers an unfinished
//! line or event without limit, so one endless line from a broken peer would grow until the
//! process dies. [`bounded_events`] therefore counts the bytes of the event being received on
//! the way into the parser, and past `max_event_bytes` the stream fails with
//! [`SseError::TooLarge`] instead of buffering. An event ends at a blank line (`\n`, `\r\n` or
//! `\r` line ends, as the WHATWG rules say), which is where the count starts again.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sse_stream::{Sse, SseStream};

/// Why reading events stopped.
#[derive(Debug, thiserror::Error)]
pub enum SseError<E> {
    /// The byte stream under the events failed (its own error, untouched).
    #[error(transparent)]
    Body(E),
    #[error("the peer sent an event over {0} bytes")]
    TooLarge(usize),
    #[error("the peer sent an event that could not be read: {0}")]
    Invalid(String),
}

/// The events of `bytes`, each at most `max_event_bytes` long.
pub fn bounded_events<S, E>(
    bytes: S,
    max_event_bytes: usize,
) -> impl Stream<Item = Result<Sse, SseError<E>>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut bound = EventBound::new(max_event_bytes);
    let guarded = bytes.map(move |chunk| match chunk {
        Ok(bytes) => bound.check(&bytes).map(|()| bytes),
        Err(e) => Err(Guarded::Body(e)),
    });
    SseStream::from_bytes_stream(guarded).map(|event| event.map_err(from_parser))
}

/// What the parser's byte stream may fail with: passed through the parser as its body error
/// and taken back out by [`from_parser`].
#[derive(Debug, thiserror::Error)]
enum Guarded<E> {
    #[error(transparent)]
    Body(E),
    #[error("event over {0} bytes")]
    TooLarge(usize),
}

fn from_parser<E>(error: sse_stream::Error) -> SseError<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match error {
        sse_stream::Error::Body(body) => match body.downcast::<Guarded<E>>() {
            Ok(guarded) => match *guarded {
                Guarded::Body(e) => SseError::Body(e),
                Guarded::TooLarge(max) => SseError::TooLarge(max),
            },
            Err(other) => SseError::Invalid(other.to_string()),
        },
        other => SseError::Invalid(other.to_string()),
    }
}

/// Counts the bytes of the event being received.
struct EventBound {
    max: usize,
    in_event: usize,
    /// No byte but line ends since the last line end: the next line end ends the event.
    at_line_start: bool,
    /// The last byte was `\r`: a `\n` right after it is the same line end.
    after_cr: bool,
}

impl EventBound {
    fn new(max: usize) -> EventBound {
        EventBound {
            max,
            in_event: 0,
            at_line_start: true,
            after_cr: false,
        }
    }

    /// Takes the next bytes of the stream. A line at a time, not a byte at a time: the
    /// upstream's answer passes through here whole, and a loop over each byte cost more than
    /// the SSE parser behind it.
    fn check<E>(&mut self, bytes: &[u8]) -> Result<(), Guarded<E>> {
        let mut rest = bytes;
        while let Some(end) = memchr::memchr2(b'\n', b'\r', rest) {
            self.line_text(end)?;
            let line_end = rest[end];
            if line_end == b'\n' && self.after_cr {
                // The `\n` of a `\r\n` whose `\r` was the last byte seen.
                self.after_cr = false;
            } else {
                if self.at_line_start {
                    self.in_event = 0;
                }
                self.at_line_start = true;
                self.after_cr = line_end == b'\r';
            }
            rest = &rest[end + 1..];
        }
        self.line_text(rest.len())
    }

    /// `len` bytes of a line's text (no line ends) arrived.
    fn line_text<E>(&mut self, len: usize) -> Result<(), Guarded<E>> {
        if len == 0 {
            return Ok(());
        }
        self.after_cr = false;
        self.at_line_start = false;
        self.in_event += len;
        if self.in_event > self.max {
            return Err(Guarded::TooLarge(self.max));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Events = Result<Vec<String>, SseError<std::io::Error>>;

    fn events(chunks: &[&[u8]], max: usize) -> Events {
        let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::executor::block_on(
            bounded_events(futures::stream::iter(chunks), max)
                .map(|event| event.map(|e| e.data.unwrap_or_default()))
                .collect::<Vec<_>>(),
        )
        .into_iter()
        .filter(|e| !matches!(e, Ok(data) if data.is_empty()))
        .collect()
    }

    #[test]
    fn events_pass_across_chunks_and_line_ends() {
        let got = events(
            &[
                b"data: {\"a\":",
                b"1}\n\n: comment\r\n\r\ndata:two\r",
                b"\ndata: lines\r\n\r\ndata:[DONE]\n",
                b"\n",
            ],
            64,
        )
        .unwrap();
        assert_eq!(got, ["{\"a\":1}", "two\nlines", "[DONE]"]);
    }

    #[test]
    fn an_endless_line_or_event_is_an_error_not_a_buffer() {
        let long = vec![b'a'; 600];
        let err = events(&[b"data: ", &long, &long], 1000).unwrap_err();
        assert!(matches!(err, SseError::TooLarge(1000)), "{err}");
        // Many short data lines without the blank line that ends the event.
        let lines = b"data: 0123456789\n".repeat(100);
        assert!(matches!(
            events(&[&lines], 1000),
            Err(SseError::TooLarge(_))
        ));
        // The same lines in events of their own are fine, however many.
        let many = b"data: 0123456789\n\n".repeat(1000);
        assert_eq!(events(&[&many], 100).unwrap().len(), 1000);
    }

    /// The bound as the WHATWG rules put it, a byte at a time: what `EventBound::check`, which
    /// jumps from line end to line end, must agree with.
    fn bound_byte_by_byte(chunks: &[&[u8]], max: usize) -> Option<usize> {
        let (mut in_event, mut at_line_start, mut after_cr) = (0, true, false);
        for (i, &byte) in chunks.concat().iter().enumerate() {
            let was_cr = std::mem::replace(&mut after_cr, byte == b'\r');
            match byte {
                b'\n' if was_cr => {}
                b'\n' | b'\r' => {
                    if at_line_start {
                        in_event = 0;
                    }
                    at_line_start = true;
                }
                _ => {
                    at_line_start = false;
                    in_event += 1;
                    if in_event > max {
                        return Some(i);
                    }
                }
            }
        }
        None
    }

    #[test]
    fn the_line_at_a_time_bound_agrees_with_the_byte_at_a_time_rules() {
        // Streams of text and every kind of line end, cut into chunks at random places: a
        // `\r\n` split between chunks, blank lines, `\r\r`, lines right at the bound.
        let alphabet: &[&[u8]] = &[b"a", b"bc", b"data: xyz", b"\n", b"\r", b"\r\n", b"\n\n"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..5000 {
            let stream: Vec<u8> = (0..next(40))
                .flat_map(|_| alphabet[next(alphabet.len())].iter().copied())
                .collect();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(1 + next(rest.len()));
                chunks.push(chunk);
                rest = tail;
            }
            let max = 1 + next(12);
            let expected_failure = bound_byte_by_byte(&chunks, max);
            let mut bound = EventBound::new(max);
            let mut seen = 0;
            let mut failed_in = None;
            for chunk in &chunks {
                if bound.check::<std::io::Error>(chunk).is_err() {
                    failed_in = Some(seen);
                    break;
                }
                seen += chunk.len();
            }
            // Both fail, in the same chunk, or neither does.
            let expected_chunk_start = expected_failure.map(|at| {
                let mut start = 0;
                for chunk in &chunks {
                    if at < start + chunk.len() {
                        break;
                    }
                    start += chunk.len();
                }
                start
            });
            assert_eq!(
                failed_in, expected_chunk_start,
                "{stream:?} in {chunks:?}, max {max}"
            );
        }
    }

    #[test]
    fn the_byte_streams_own_error_comes_back_as_it_was() {
        let chunks = vec![
            Ok(Bytes::from_static(b"data: x\n\n")),
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow")),
        ];
        let got: Vec<_> = futures::executor::block_on(
            bounded_events(futures::stream::iter(chunks), 100).collect::<Vec<_>>(),
        );
        assert!(
            matches!(&got[1], Err(SseError::Body(e)) if e.kind() == std::io::ErrorKind::TimedOut)
        );
    }
}

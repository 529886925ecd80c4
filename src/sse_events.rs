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

    fn check<E>(&mut self, bytes: &[u8]) -> Result<(), Guarded<E>> {
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    if self.at_line_start {
                        self.in_event = 0;
                    }
                    self.at_line_start = true;
                }
                _ => {
                    self.at_line_start = false;
                    self.in_event += 1;
                    if self.in_event > self.max {
                        return Err(Guarded::TooLarge(self.max));
                    }
                }
            }
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

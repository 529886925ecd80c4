//! The header and idle deadlines of one connection, kept on its reads.
//!
//! A connection is either busy (a request is being answered: no deadline here, the body has
//! its own and the answer may stream for minutes) or waiting for a request. A new connection
//! waits with the header deadline from the moment it opens (a client that connects and says
//! nothing is dropped as soon as one that stops half-way through its headers). After an answer
//! it waits with the idle deadline, until the first byte of the next request starts the
//! header deadline. A read that is still pending when the deadline passes fails with
//! `TimedOut`, and hyper closes the connection.
//!
//! hyper's `header_read_timeout` starts its timer whenever it waits for a request head,
//! including on an idle kept-alive connection, so it would close idle connections after the
//! (short) header timeout; it is off and this clock keeps both deadlines.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Shared by a connection's reads and its requests.
#[derive(Clone)]
pub struct ConnClock {
    state: Arc<Mutex<ClockState>>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

struct ClockState {
    phase: Phase,
    /// The connection's task, woken when it goes idle so that its read takes up the deadline.
    waker: Option<Waker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request: until `deadline`, for the reason `why`.
    Waiting { deadline: Instant, why: Wait },
    /// This many requests are being answered.
    Busy(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A request's head has begun (or the connection is new): the header deadline.
    Head,
    /// Between requests, nothing received yet: the idle deadline.
    Idle,
}

impl ConnClock {
    /// The clock of a connection that has just opened: the header deadline runs.
    pub fn new(header_timeout: Duration, idle_timeout: Duration) -> ConnClock {
        let phase = Phase::Waiting {
            deadline: Instant::now() + header_timeout,
            why: Wait::Head,
        };
        ConnClock {
            state: Arc::new(Mutex::new(ClockState { phase, waker: None })),
            header_timeout,
            idle_timeout,
        }
    }

    /// A request's head has been read: the connection is busy until the returned guard is
    /// dropped (see [`Busy::until_sent`]).
    pub fn request_started(&self) -> Busy {
        let mut state = self.lock();
        state.phase = match state.phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Waiting { .. } => Phase::Busy(1),
        };
        Busy(self.clone())
    }

    /// Bytes arrived: on an idle connection, a request has begun and must finish its head in time.
    fn bytes_arrived(&self) {
        let mut state = self.lock();
        if let Phase::Waiting {
            why: Wait::Idle, ..
        } = state.phase
        {
            state.phase = Phase::Waiting {
                deadline: Instant::now() + self.header_timeout,
                why: Wait::Head,
            };
        }
    }

    /// The deadline of a read that has to wait now, if any; remembers whom to wake when the
    /// connection goes from busy to idle (and so gets a deadline).
    fn deadline(&self, waker: &Waker) -> Option<(Instant, Wait)> {
        let mut state = self.lock();
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
        match state.phase {
            Phase::Waiting { deadline, why } => Some((deadline, why)),
            Phase::Busy(_) => None,
        }
    }

    fn request_ended(&self) {
        let mut state = self.lock();
        state.phase = match state.phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Waiting {
                deadline: Instant::now() + self.idle_timeout,
                why: Wait::Idle,
            },
        };
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClockState> {
        // The state stays consistent whatever panicked while holding it: take it back.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One request being answered; dropping it lets the connection go idle.
pub struct Busy(ConnClock);

impl Busy {
    /// `body`, holding this guard until it has been sent to the end or dropped.
    pub fn until_sent(self, body: Body) -> SentBody {
        SentBody {
            inner: body,
            busy: Some(self),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// An answer's body that keeps its connection busy until its last frame.
pub struct SentBody {
    inner: Body,
    busy: Option<Busy>,
}

impl HttpBody for SentBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket whose pending reads fail once the clock's deadline has passed.
pub struct ClockedIo {
    stream: TcpStream,
    clock: ConnClock,
    timer: Option<Pin<Box<Sleep>>>,
}

impl ClockedIo {
    pub fn new(stream: TcpStream, clock: ConnClock) -> ClockedIo {
        ClockedIo {
            stream,
            clock,
            timer: None,
        }
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((deadline, why)) = self.clock.deadline(cx.waker()) else {
            return Poll::Pending;
        };
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                match why {
                    Wait::Head => "request headers did not arrive in time",
                    Wait::Idle => "kept-alive connection idle for too long",
                },
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for ClockedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.clock.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_deadline(cx),
        }
    }
}

impl AsyncWrite for ClockedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why the connection waits, and for about how many whole seconds more; `None` if busy.
    fn waiting(clock: &ConnClock) -> Option<(Wait, u64)> {
        match clock.lock().phase {
            Phase::Waiting { deadline, why } => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Rounded up: a few microseconds have passed since the deadline was set.
                Some((why, (left.as_millis() as u64).div_ceil(1000)))
            }
            Phase::Busy(_) => None,
        }
    }

    #[test]
    fn a_connection_waits_with_the_header_deadline_then_idle_then_header_again() {
        let clock = ConnClock::new(Duration::from_secs(2), Duration::from_secs(9));
        assert_eq!(waiting(&clock), Some((Wait::Head, 2)), "a new connection");
        let first = clock.request_started();
        let second = clock.request_started();
        drop(first);
        assert_eq!(waiting(&clock), None, "still answering one");
        clock.bytes_arrived();
        assert_eq!(waiting(&clock), None, "body bytes change nothing");
        drop(second);
        assert_eq!(waiting(&clock), Some((Wait::Idle, 9)));
        clock.bytes_arrived();
        assert_eq!(
            waiting(&clock),
            Some((Wait::Head, 2)),
            "the next request's first byte starts the header deadline"
        );
        let Phase::Waiting { deadline, .. } = clock.lock().phase else {
            panic!("waiting")
        };
        std::thread::sleep(Duration::from_millis(5));
        clock.bytes_arrived();
        assert_eq!(
            clock.lock().phase,
            Phase::Waiting {
                deadline,
                why: Wait::Head
            },
            "later bytes do not extend it"
        );
    }
}

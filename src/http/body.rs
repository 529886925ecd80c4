//! Request bodies with limits: a deadline for the whole body ([`DeadlineBody`], put on every
//! request by the serving loop) and a size limit and a share of the port's body budget
//! ([`LimitedBody`], put on the API's requests) that read the rest of a refused body before
//! failing, so the client can read the 413 or 503 instead of finding its pipe broken.
//!
//! Both fail with a [`BodyError`] that the handler's body extractor passes on inside its
//! rejection; [`BodyError::find`] gets it back out to choose the answer (408, 413 or 503).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::{Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::body_budget::BodyClaim;

/// How much of an oversized body is read (and dropped) before giving up on it: four times
/// the limit, but never more than this.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// Why a request body could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body did not arrive within {} s", .0.as_secs_f32())]
    TimedOut(Duration),
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(
        "the server is receiving too many large request bodies at once ({budget} bytes); retry shortly"
    )]
    Busy { budget: usize },
}

impl BodyError {
    /// The `BodyError` somewhere in `error`'s chain of sources (extractor rejections wrap it).
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<BodyError>() {
                return Some(found);
            }
            current = e.source();
        }
        None
    }
}

/// Whether a [`DeadlineBody`]'s deadline passed while its reader waited.
#[derive(Clone, Default)]
pub struct Missed(Arc<AtomicBool>);

impl Missed {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A body that fails with [`BodyError::TimedOut`] when it is not complete `timeout` after the
/// request arrived. The clock runs from creation; nothing happens unless the body is read.
pub struct DeadlineBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    missed: Missed,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, timeout: Duration) -> DeadlineBody<B> {
        DeadlineBody {
            inner,
            timeout,
            deadline: Instant::now() + timeout,
            timer: None,
            missed: Missed::default(),
        }
    }

    /// Tells afterwards whether the deadline was missed.
    pub fn missed(&self) -> Missed {
        self.missed.clone()
    }
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.missed.is_set() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.missed.0.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyError::TimedOut(self.timeout).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a [`LimitedBody`] was refused (too large, or no room in the budget): what is left
/// of it may be unread, so its connection must not be reused.
#[derive(Clone, Default)]
pub struct Refused(Arc<AtomicBool>);

impl Refused {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A body that fails with [`BodyError::TooLarge`] past `limit` bytes, or with
/// [`BodyError::Busy`] when its claim on the port's body budget finds no room, but only after
/// reading and dropping the rest (up to four times the limit, at most [`MAX_DRAIN_BYTES`]): a
/// client that sends its whole body before reading the answer (Python's `requests`, `urllib`)
/// then gets the answer instead of a broken pipe. A body declared larger than that is refused
/// at once. The claim is given back when the body is dropped (it has been read whole).
pub struct LimitedBody<B> {
    inner: B,
    limit: usize,
    claim: BodyClaim,
    drain_until: usize,
    seen: usize,
    /// Why the body is refused, once it is: the rest is read and dropped, then this is the error.
    refusal: Option<BodyError>,
    refused: Refused,
    finished: bool,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: usize, claim: BodyClaim) -> LimitedBody<B> {
        LimitedBody {
            inner,
            limit,
            claim,
            drain_until: limit.saturating_mul(4).min(MAX_DRAIN_BYTES).max(limit),
            seen: 0,
            refusal: None,
            refused: Refused::default(),
            finished: false,
        }
    }

    /// Tells afterwards whether the body was refused.
    pub fn refused(&self) -> Refused {
        self.refused.clone()
    }

    fn refuse(&mut self, why: BodyError) {
        self.refused.0.store(true, Ordering::Relaxed);
        self.refusal.get_or_insert(why);
    }

    fn fail(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finished = true;
        let why = self
            .refusal
            .clone()
            .unwrap_or(BodyError::TooLarge { limit: self.limit });
        Poll::Ready(Some(Err(why.into())))
    }
}

impl<B> HttpBody for LimitedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let limit = self.limit;
        if self.seen == 0 && self.inner.size_hint().lower() > self.drain_until as u64 {
            self.refuse(BodyError::TooLarge { limit });
            return self.fail();
        }
        loop {
            let refused = self.refusal.is_some();
            match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                // The end of a refused body, read to the end: now say why it was refused.
                None if refused => return self.fail(),
                None => {
                    self.finished = true;
                    return Poll::Ready(None);
                }
                // It was refused anyway; whatever stopped the reading, say that.
                Some(Err(_)) if refused => return self.fail(),
                Some(Err(e)) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Some(Ok(frame)) => {
                    self.seen = self
                        .seen
                        .saturating_add(frame.data_ref().map_or(0, Bytes::len));
                    if self.seen > self.drain_until {
                        self.refuse(BodyError::TooLarge { limit });
                        return self.fail();
                    }
                    if self.refusal.is_some() {
                        continue; // Refused: drop it and read on.
                    }
                    let seen = self.seen;
                    if seen > limit {
                        self.refuse(BodyError::TooLarge { limit });
                    } else if !self.claim.grow_to(seen) {
                        let budget = self.claim.budget_total();
                        self.refuse(BodyError::Busy { budget });
                    } else {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || (self.inner.is_end_stream() && self.refusal.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        // Not exact: the body may end in an error instead.
        let mut hint = SizeHint::new();
        hint.set_upper(self.limit as u64);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::BodyBudget;
    use crate::http::body_budget::UNBUDGETED_BODY_BYTES;
    use axum::body::Body;

    fn chunks(sizes: &[usize]) -> Body {
        let parts: Vec<Result<Bytes, std::io::Error>> = sizes
            .iter()
            .map(|n| Ok(Bytes::from(vec![b'x'; *n])))
            .collect();
        Body::from_stream(futures::stream::iter(parts))
    }

    /// A claim on a budget that always has room.
    fn room() -> BodyClaim {
        BodyBudget::new(usize::MAX).claim()
    }

    async fn read<B>(body: B) -> Result<usize, BodyError>
    where
        B: HttpBody<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        match axum::body::to_bytes(Body::new(body), usize::MAX).await {
            Ok(bytes) => Ok(bytes.len()),
            Err(e) => Err(BodyError::find(&e).expect("a BodyError").clone()),
        }
    }

    #[tokio::test]
    async fn a_body_within_the_limit_passes_whole() {
        assert_eq!(
            read(LimitedBody::new(chunks(&[4, 6]), 10, room())).await,
            Ok(10)
        );
    }

    #[tokio::test]
    async fn an_oversized_body_is_read_to_its_end_before_the_error() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
        for _ in 0..30 {
            tx.unbounded_send(Ok(Bytes::from_static(b"0123456789")))
                .unwrap();
        }
        drop(tx);
        let body = Body::from_stream(rx);
        // 300 bytes against a limit of 100: all read (within 4 × 100 = 400), then refused.
        assert_eq!(
            read(LimitedBody::new(body, 100, room())).await,
            Err(BodyError::TooLarge { limit: 100 })
        );
    }

    #[tokio::test]
    async fn draining_stops_at_four_times_the_limit() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
        for _ in 0..5 {
            tx.unbounded_send(Ok(Bytes::from_static(b"0123456789")))
                .unwrap();
        }
        // The sender stays open: the body never ends, yet the error comes once 40 bytes are in.
        let body = LimitedBody::new(Body::from_stream(rx), 10, room());
        assert_eq!(read(body).await, Err(BodyError::TooLarge { limit: 10 }));
        drop(tx);
    }

    #[tokio::test]
    async fn a_big_body_without_room_in_the_budget_is_read_then_refused_as_busy() {
        let budget = BodyBudget::new(1000);
        let big = UNBUDGETED_BODY_BYTES + 600;
        let held = LimitedBody::new(chunks(&[big]), 1 << 20, budget.claim());
        let waiting = LimitedBody::new(chunks(&[big / 2, big / 2]), 1 << 20, budget.claim());
        let refused = waiting.refused();
        // The first body holds 600 bytes of the budget until it is dropped.
        let mut held = held;
        let frame = std::future::poll_fn(|cx| Pin::new(&mut held).poll_frame(cx)).await;
        assert!(frame.is_some_and(|f| f.is_ok()));
        assert_eq!(budget.in_use(), 600);
        assert_eq!(read(waiting).await, Err(BodyError::Busy { budget: 1000 }));
        assert!(refused.is_set());
        // A small body passes all the same.
        let small = LimitedBody::new(chunks(&[100]), 1 << 20, budget.claim());
        assert_eq!(read(small).await, Ok(100));
        drop(held);
        assert_eq!(budget.in_use(), 0);
        let again = LimitedBody::new(chunks(&[big]), 1 << 20, budget.claim());
        assert_eq!(read(again).await, Ok(big));
    }

    #[tokio::test]
    async fn a_body_that_stops_fails_at_its_deadline() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
        tx.unbounded_send(Ok(Bytes::from_static(b"{\"half")))
            .unwrap();
        let timeout = Duration::from_millis(200);
        let body = DeadlineBody::new(Body::from_stream(rx), timeout);
        let missed = body.missed();
        let started = Instant::now();
        assert_eq!(read(body).await, Err(BodyError::TimedOut(timeout)));
        assert!(missed.is_set());
        assert!(started.elapsed() >= timeout);
        drop(tx);
    }

    #[tokio::test]
    async fn a_body_in_time_is_untouched() {
        let body = DeadlineBody::new(chunks(&[3, 4]), Duration::from_secs(3));
        let missed = body.missed();
        assert_eq!(read(body).await, Ok(7));
        assert!(!missed.is_set());
    }
}

//! Request bodies with limits: a deadline for the whole body ([`DeadlineBody`], put on every
//! request by the serving loop) and a size limit that reads the rest of an oversized body
//! before failing ([`LimitedBody`], put on the API's requests), so the client can read the
//! 413 instead of finding its pipe broken.
//!
//! Both fail with a [`BodyError`] that the handler's body extractor passes on inside its
//! rejection; [`BodyError::find`] gets it back out to choose the answer (408 or 413).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::{Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

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

/// A body that fails with [`BodyError::TooLarge`] past `limit` bytes, but only after reading
/// and dropping the rest (up to four times the limit, at most [`MAX_DRAIN_BYTES`]): a client
/// that sends its whole body before reading the answer (Python's `requests`, `urllib`) then
/// gets the 413 instead of a broken pipe. A body declared larger than that is refused at once.
pub struct LimitedBody<B> {
    inner: B,
    limit: usize,
    drain_until: usize,
    seen: usize,
    finished: bool,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: usize) -> LimitedBody<B> {
        LimitedBody {
            inner,
            limit,
            drain_until: limit.saturating_mul(4).min(MAX_DRAIN_BYTES).max(limit),
            seen: 0,
            finished: false,
        }
    }

    fn too_large(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finished = true;
        Poll::Ready(Some(Err(BodyError::TooLarge { limit: self.limit }.into())))
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
        if self.seen == 0 && self.inner.size_hint().lower() > self.drain_until as u64 {
            return self.too_large();
        }
        loop {
            let over = self.seen > self.limit;
            match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                // The end of an oversized body, read to the end: now say it was too large.
                None if over => return self.too_large(),
                None => {
                    self.finished = true;
                    return Poll::Ready(None);
                }
                // It was too large anyway; whatever stopped the reading, say that.
                Some(Err(_)) if over => return self.too_large(),
                Some(Err(e)) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Some(Ok(frame)) => {
                    self.seen = self
                        .seen
                        .saturating_add(frame.data_ref().map_or(0, Bytes::len));
                    if self.seen > self.drain_until {
                        return self.too_large();
                    }
                    if self.seen <= self.limit {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    // Over the limit: drop it and read on.
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || (self.inner.is_end_stream() && self.seen <= self.limit)
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
    use axum::body::Body;

    fn chunks(sizes: &[usize]) -> Body {
        let parts: Vec<Result<Bytes, std::io::Error>> = sizes
            .iter()
            .map(|n| Ok(Bytes::from(vec![b'x'; *n])))
            .collect();
        Body::from_stream(futures::stream::iter(parts))
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
        assert_eq!(read(LimitedBody::new(chunks(&[4, 6]), 10)).await, Ok(10));
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
            read(LimitedBody::new(body, 100)).await,
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
        let body = LimitedBody::new(Body::from_stream(rx), 10);
        assert_eq!(read(body).await, Err(BodyError::TooLarge { limit: 10 }));
        drop(tx);
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

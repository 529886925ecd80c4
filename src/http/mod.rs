//! Serving an axum [`Router`] on a port, with the limits a small box needs against careless and
//! hostile clients: both the API and the viewer (in `serve` and `lang-agent viewer`) use it.
//!
//! `axum::serve` holds a connection as long as the client wants: half-sent headers, a body
//! that never finishes and idle keep-alives each kept a descriptor forever, and a few hundred
//! idle sockets locked the box out ("Too many open files"). Here every connection is HTTP/1.1
//! (hyper) with:
//! - a header deadline: a request's headers must arrive within `header_timeout` of the
//!   connection opening, or of their first byte on a kept-alive connection (`conn_clock.rs`);
//! - an idle deadline: a kept-alive connection with no request for `idle_timeout` is closed
//!   (hyper's own `header_read_timeout` would also close it, but after the header timeout,
//!   which is meant to be short, so it is off and `conn_clock.rs` keeps both);
//! - a body deadline: the whole request body within `body_timeout` of its headers; past it the
//!   handler's read fails (`body.rs`), the request is answered 408 and the connection closed;
//! - a cap on open connections: past `max_connections` a new connection is accepted and closed
//!   at once, so clients learn quickly, while the connections being served go on.
//!
//! Every request carries `ConnectInfo<SocketAddr>` (the peer), as `axum::serve` with connect
//! info would give. A stop signal stops accepting and lets each connection finish its
//! current answer (the caller bounds that with a grace period: `shutdown.rs`).
//!
//! A shared leaf: it knows nothing of the API, the viewer or the commands that use it.

mod body;
mod body_budget;
mod conn_clock;
mod fd_limit;
mod shutdown;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use body::{BodyError, DeadlineBody, LimitedBody, Refused};
pub use body_budget::{BodyBudget, BodyClaim, UNBUDGETED_BODY_BYTES};
pub use fd_limit::raise_open_files_limit;
pub use shutdown::{SHUTDOWN_GRACE, run_with_grace, stop_on_signal};

use self::conn_clock::{ClockedIo, ConnClock};

/// `--host`' default (`serve`, `lang-agent viewer`): every interface, as a LAN box needs.
pub const DEFAULT_LISTEN_HOST: &str = "0.0.0.0";
/// `--http-header-timeout-secs`: seconds a client gets to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// `--http-body-timeout-secs`: seconds a client gets to send a whole request body.
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = 30;
/// `--max-body-bytes`: the largest request body taken. Xiaozhi resends its whole dialogue on
/// every call, never trimmed, and the SDK escapes each Chinese character as 6 bytes: a long
/// connection sends more than 1 MiB per call after about 1,300 turns.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The request bodies a port holds at once (past each one's first [`UNBUDGETED_BODY_BYTES`];
/// [`BodyBudget`]), so that many large bodies cannot take the box's memory. Never less than
/// one largest body.
pub const DEFAULT_BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// `--http-idle-timeout-secs`: seconds a kept-alive connection may wait for its next request.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// `--max-connections`: open connections per port.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;

/// How long to pause accepting after an error that is not one connection's (out of
/// descriptors): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// At most one log line per this much time about refused connections or accept errors: an
/// attacker must not be able to fill the log.
const REPEATED_LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A port that could not be had.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `addr`, saying which address could not be had; also returns the bound address (the
/// port chosen for port 0).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let failed = |source| BindError { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// Installs rustls' crypto provider (ring, the small one): reqwest is built without a default,
/// so every outgoing client (upstream, MCP, stress) calls this before it is built. A second
/// install fails harmlessly.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Answers are many small writes (one SSE frame per piece of text); Nagle's algorithm would
/// hold each back until the previous one is acknowledged, adding ~40 ms per turn.
pub fn no_delay(stream: &mut TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY not set: {e}");
    }
}

/// Serves `app` on `listener` until `shutdown`; then stops accepting and returns once every
/// connection has finished its current answer.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: &CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refusals = RateLimitedLog::default();
    let mut accept_errors = RateLimitedLog::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(pair) => pair,
            // The client gave up between connecting and our accept: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                accept_errors
                    .note(|n| tracing::warn!("cannot accept connections ({n} times): {e}"));
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it: the client learns at once instead of waiting.
            drop(stream);
            let max = limits.max_connections;
            refusals.note(|n| {
                tracing::warn!(
                    "{max} connections open (--max-connections): refused {n} new ones, the last from {peer}"
                )
            });
            continue;
        };
        no_delay(&mut stream);
        tokio::spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            limits,
            shutdown.clone(),
            slot,
        ));
    }
    drop(listener);
    // Every connection holds a slot until it ends; all of them back means all have ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// One connection, until the client closes it, a deadline passes, or (after `shutdown`) its
/// current answer is done.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let clock = ConnClock::new(limits.header_timeout, limits.idle_timeout);
    let io = TokioIo::new(ClockedIo::new(stream, clock.clone()));
    let service = hyper::service::service_fn(move |request| {
        answer(
            request,
            app.clone(),
            peer,
            clock.clone(),
            limits.body_timeout,
        )
    });
    let mut builder = http1::Builder::new();
    // ClockedIo keeps the header deadline, and the idle one hyper's timer would cut short.
    builder.header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// Runs one request through `app`. The request body gets its deadline and the request its
/// peer address; the connection counts as busy (no idle deadline) until the answer's body
/// has been sent or dropped.
async fn answer(
    request: Request<Incoming>,
    app: Router,
    peer: SocketAddr,
    clock: ConnClock,
    body_timeout: Duration,
) -> Result<Response<Body>, Infallible> {
    let busy = clock.request_started();
    let (parts, incoming) = request.into_parts();
    let body = DeadlineBody::new(incoming, body_timeout);
    let missed = body.missed();
    let mut request = Request::from_parts(parts, Body::new(body));
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = match app.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let mut response = if missed.is_set() && response.status() != StatusCode::REQUEST_TIMEOUT {
        // The router answered as if the body were bad; it was late.
        (
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {body_timeout:?}\n"),
        )
            .into_response()
    } else {
        response
    };
    if missed.is_set() {
        // The rest of the body may still be on its way: this connection cannot be reused.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response.map(|body| Body::new(busy.until_sent(body))))
}

/// Errors of one connection that `accept` reports; the listener is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Counts repeated events and lets a log line through at most every [`REPEATED_LOG_EVERY`].
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    since: u64,
}

impl RateLimitedLog {
    fn note(&mut self, log: impl FnOnce(u64)) {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= REPEATED_LOG_EVERY) {
            log(self.since);
            self.last = Some(Instant::now());
            self.since = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn peer(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
        peer.to_string()
    }

    #[tokio::test]
    async fn requests_carry_the_peer_address_and_a_stop_ends_the_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            let app = Router::new().route("/peer", get(peer));
            async move { serve(listener, app, HttpLimits::default(), &shutdown).await }
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let me = client.local_addr().unwrap().to_string();
        assert!(answer.ends_with(&me), "the peer is {me}: {answer}");

        // An idle kept-alive connection does not hold the stop.
        let _idle = TcpStream::connect(addr).await.unwrap();
        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    }
}

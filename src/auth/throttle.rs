//! The brute-force brake: failed key checks counted per client address, on both ports.
//!
//! Without it a guesser tries tens of thousands of keys a second. After
//! [`MAX_FAILURES`] wrong keys within [`WINDOW`] an address gets 429 with `Retry-After` until
//! its window has passed. Only wrong keys count and only wrong keys are braked: a request with
//! a good key is checked first and never slowed or refused here, so a household whose one
//! device has a stale key keeps working on the others.
//!
//! Addresses are IPv4 addresses or IPv6 /64 networks (one host usually owns a whole /64, and
//! would otherwise get a fresh count per address). The table is bounded ([`MAX_CLIENTS`]): when
//! it is full, expired windows go first, then the oldest tenth. Refusals are logged at warn
//! with the address and path, never the key, at most once per address per [`LOG_EVERY`], with
//! the number of refusals not logged since.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderValue, header};
use axum::response::Response;

/// Wrong keys an address may send within [`WINDOW`] before it is braked.
pub const MAX_FAILURES: u32 = 10;
/// How long failures are remembered: the window starts at an address's first failure.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most addresses tracked at once.
pub const MAX_CLIENTS: usize = 10_000;
/// At most one log line per address this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a key check did not let a request in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No key, or a wrong one: 401.
    WrongKey,
    /// Too many wrong keys from this address lately: 429 with `Retry-After`.
    Throttled { retry_after: Duration },
}

impl Refusal {
    /// The `Retry-After` header of a throttled refusal.
    pub fn add_retry_after(&self, response: &mut Response) {
        if let Refusal::Throttled { retry_after } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs()),
            );
        }
    }
}

/// The limits of a brake (the constants above, smaller in tests).
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_failures: u32,
    window: Duration,
    max_clients: usize,
    log_every: Duration,
}

const LIMITS: Limits = Limits {
    max_failures: MAX_FAILURES,
    window: WINDOW,
    max_clients: MAX_CLIENTS,
    log_every: LOG_EVERY,
};

/// What is remembered of one address.
#[derive(Debug)]
struct Record {
    window_start: Instant,
    failures: u32,
    last_logged: Option<Instant>,
    not_logged: u64,
}

/// Failed key checks per client address.
pub struct AuthBrake {
    limits: Limits,
    clients: Mutex<HashMap<IpAddr, Record>>,
}

impl std::fmt::Debug for AuthBrake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthBrake").finish_non_exhaustive()
    }
}

impl Default for AuthBrake {
    fn default() -> Self {
        AuthBrake::with_limits(LIMITS)
    }
}

/// A refusal and, when one is due, the count of refusals not logged before it.
type Recorded = (Refusal, Option<u64>);

impl AuthBrake {
    fn with_limits(limits: Limits) -> AuthBrake {
        AuthBrake {
            limits,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a wrong key from `client` (asking for `path`) and says how to refuse it.
    pub fn failed(&self, client: IpAddr, path: &str) -> Refusal {
        let (refusal, log) = self.record(Instant::now(), client);
        if let Some(not_logged) = log {
            let braked = matches!(refusal, Refusal::Throttled { .. });
            tracing::warn!(
                client = %client,
                path = %path,
                braked,
                not_logged,
                "authentication failed: wrong key"
            );
        }
        refusal
    }

    fn record(&self, now: Instant, client: IpAddr) -> Recorded {
        let limits = self.limits;
        let key = address_key(client);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if !clients.contains_key(&key) && clients.len() >= limits.max_clients {
            make_room(&mut clients, now, limits);
        }
        let record = clients.entry(key).or_insert(Record {
            window_start: now,
            failures: 0,
            last_logged: None,
            not_logged: 0,
        });
        if now.duration_since(record.window_start) >= limits.window {
            record.window_start = now;
            record.failures = 0;
        }
        let refusal = if record.failures >= limits.max_failures {
            // Braked attempts do not count: the window ends a minute after it began, whatever
            // the guesser does meanwhile.
            let left = limits.window - now.duration_since(record.window_start);
            Refusal::Throttled {
                retry_after: Duration::from_secs(left.as_secs_f64().ceil().max(1.0) as u64),
            }
        } else {
            record.failures += 1;
            Refusal::WrongKey
        };
        let log_due = record
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= limits.log_every);
        let log = if log_due {
            record.last_logged = Some(now);
            Some(std::mem::take(&mut record.not_logged))
        } else {
            record.not_logged += 1;
            None
        };
        (refusal, log)
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.clients.lock().unwrap().len()
    }
}

/// Frees room in a full table: expired windows first, then the oldest tenth.
fn make_room(clients: &mut HashMap<IpAddr, Record>, now: Instant, limits: Limits) {
    clients.retain(|_, r| now.duration_since(r.window_start) < limits.window);
    if clients.len() < limits.max_clients {
        return;
    }
    let mut starts: Vec<Instant> = clients.values().map(|r| r.window_start).collect();
    let nth = (starts.len() / 10).max(1) - 1;
    let (_, cutoff, _) = starts.select_nth_unstable(nth);
    let cutoff = *cutoff;
    clients.retain(|_, r| r.window_start > cutoff);
}

/// The address as counted: IPv4 (also when mapped into IPv6), or the IPv6 /64 network.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

/// The client address of a request, from the `ConnectInfo` the server puts in every request;
/// `0.0.0.0` where there is none (a router served without it, as some tests do).
pub fn client_ip(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// A handler's view of [`client_ip`].
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.extensions)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_eleventh_wrong_key_in_a_minute_is_braked_until_the_window_ends() {
        let brake = AuthBrake::default();
        let start = Instant::now();
        let guesser = ip("192.0.2.7");
        for i in 0..10 {
            let at = start + Duration::from_secs(i);
            assert_eq!(brake.record(at, guesser).0, Refusal::WrongKey, "{i}");
        }
        let at = start + Duration::from_millis(10_500);
        assert_eq!(
            brake.record(at, guesser).0,
            Refusal::Throttled {
                retry_after: Duration::from_secs(50)
            }
        );
        // Others are not braked by it.
        assert_eq!(brake.record(at, ip("192.0.2.8")).0, Refusal::WrongKey);
        // Still braked near the end, whatever was tried meanwhile; counted afresh after it.
        let late = start + Duration::from_millis(59_900);
        assert_eq!(
            brake.record(late, guesser).0,
            Refusal::Throttled {
                retry_after: Duration::from_secs(1)
            }
        );
        assert_eq!(brake.record(start + WINDOW, guesser).0, Refusal::WrongKey);
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address_and_mapped_ipv4_as_its_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let brake = AuthBrake::default();
        let now = Instant::now();
        for i in 0..10 {
            brake.record(now, ip(&format!("2001:db8::{i:x}")));
        }
        assert!(matches!(
            brake.record(now, ip("2001:db8::ff")).0,
            Refusal::Throttled { .. }
        ));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_the_newest() {
        let brake = AuthBrake::with_limits(Limits {
            max_clients: 100,
            ..LIMITS
        });
        let start = Instant::now();
        for i in 0..5_000u32 {
            let at = start + Duration::from_millis(u64::from(i));
            brake.record(at, IpAddr::V4(Ipv4Addr::from(i)));
            assert!(brake.tracked() <= 100);
        }
        // The newest address still has its count.
        let newest = IpAddr::V4(Ipv4Addr::from(4_999u32));
        let at = start + Duration::from_secs(5);
        for _ in 0..9 {
            assert_eq!(brake.record(at, newest).0, Refusal::WrongKey);
        }
        assert!(matches!(
            brake.record(at, newest).0,
            Refusal::Throttled { .. }
        ));
    }

    #[test]
    fn an_address_is_logged_at_most_every_ten_seconds_with_the_count_left_out() {
        let brake = AuthBrake::default();
        let start = Instant::now();
        let guesser = ip("198.51.100.1");
        let logs: Vec<Option<u64>> = (0..25)
            .map(|i| {
                brake
                    .record(start + Duration::from_millis(i * 500), guesser)
                    .1
            })
            .collect();
        let logged: Vec<(usize, u64)> = logs
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|n| (i, n)))
            .collect();
        assert_eq!(logged, [(0, 0), (20, 19)]);
    }
}

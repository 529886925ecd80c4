//! The PostgreSQL to export to: its URL, checked once, shown only with the password hidden.
//!
//! The URL usually carries a password (`postgresql://user:password@host/db`, the original
//! system's `CONN_STR`), and export errors are printed and logged, so the only printable form
//! of a target is [`PgTarget::redacted`]. Connections are plain TCP (no TLS), as on a LAN box,
//! with TCP keepalives, so a server that vanished (host down, cable out) is noticed within
//! about half a minute even on an idle connection.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::redact::redact_url;

/// Shown in `pg_stat_activity`, so an operator (or a test) can find the exporter's session.
pub const APPLICATION_NAME: &str = "lang-agent export";

/// How long a dropped connection may take to say goodbye (`Terminate`) before its socket is
/// closed regardless: a stopped server never reads it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A URL that is not a usable PostgreSQL URL; `url` is already redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a PostgreSQL URL: {url} ({reason}); expected postgresql://user:password@host/database"
)]
pub struct PgUrlError {
    pub url: String,
    pub reason: String,
}

/// Whether `db` names a PostgreSQL database (rather than, say, a SQLite file).
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A parsed PostgreSQL URL.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    redacted: String,
}

impl PgTarget {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(url: &str) -> Result<PgTarget, PgUrlError> {
        let url = url.trim();
        let redacted = redact_url(url);
        let bad = |reason: &str| PgUrlError {
            url: redacted.clone(),
            reason: reason.to_string(),
        };
        if !is_postgres_url(url) {
            return Err(bad("it must start with postgresql:// or postgres://"));
        }
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| bad(&e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(bad("it names no host"));
        }
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A host that vanishes without closing the socket is noticed within 10 + 3 × 5 s. (A
        // stopped server's kernel still answers keepalives: that takes a client deadline.)
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        Ok(PgTarget { config, redacted })
    }

    /// The checked connection settings (for pools and listeners that connect themselves).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The URL with its password replaced by `***`: the only form fit to print.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Opens a connection. Its driver task runs on the current runtime until the returned
    /// guard drops (with the client): then the connection gets [`CLOSE_GRACE`] to end politely
    /// and is closed, even if the server stopped answering mid-request.
    pub async fn connect(&self) -> Result<(Client, DropGuard), tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        let shown = self.redacted.clone();
        let closed = CancellationToken::new();
        let close = closed.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = &mut connection => Some(ended),
                _ = close.cancelled() => tokio::time::timeout(CLOSE_GRACE, &mut connection).await.ok(),
            };
            match ended {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::debug!("export: connection to {shown} ended: {e}"),
                None => tracing::debug!("export: connection to {shown} closed unanswered"),
            }
        });
        Ok((client, closed.drop_guard()))
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PgTarget").field(&self.redacted).finish()
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgresql://myapp_user:secure_password_123@localhost/ai_conversations"),
            "postgresql://myapp_user:***@localhost/ai_conversations"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h:5432/db?sslmode=disable&password=x"),
            "postgres://u:***@h:5432/db?sslmode=***&password=***"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("host=h password=x user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(redact_url("u:hunter2@h/db"), "u:***@h/db");
        let target = PgTarget::parse("postgresql://u:hunter2@127.0.0.1/db").unwrap();
        assert!(!format!("{target} {target:?}").contains("hunter2"));
    }

    #[test]
    fn only_postgres_urls_are_accepted_and_the_error_hides_the_password() {
        for url in [
            "http://u:hunter2@h/db",
            "u:hunter2@h/db",
            "host=h password=hunter2",
            "postgres://u:hunter2@h:notaport/db",
        ] {
            let err = PgTarget::parse(url).unwrap_err().to_string();
            assert!(err.starts_with("not a PostgreSQL URL: "), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert!(PgTarget::parse("postgres://postgres@127.0.0.1:5432/test").is_ok());
    }
}

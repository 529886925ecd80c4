//! What can go wrong exporting, as one error type whose messages say what to do.
//!
//! PostgreSQL reports problems as SQLSTATE codes buried in a chain of causes; this file turns
//! them into the few cases a person acts on differently (wrong URL, server unreachable, missing
//! rights, a table of the wrong shape) and tells the follower which ones are worth retrying.
//! No message ever contains the URL's password: URLs reach here already redacted.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::BadBoxId;
use crate::pg::PgUrlError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    BadUrl(#[from] PgUrlError),
    #[error("{0}")]
    Destination(String),
    #[error("--box-id {0}")]
    BadBoxId(#[from] BadBoxId),
    #[error("--batch-size must be at least 1")]
    BadBatchSize,
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        url: String,
        reason: String,
        transient: bool,
    },
    #[error(
        "permission denied: {action}: {detail}; grant the role that right, or run it as the table owner"
    )]
    Permission { action: String, detail: String },
    #[error("table {table}: {problem}; the data was left untouched")]
    Shape { table: String, problem: String },
    #[error("{action}: {detail}")]
    Postgres {
        action: String,
        detail: String,
        transient: bool,
    },
    #[error(
        "PostgreSQL did not answer within {}s while {action}; dropped the connection",
        after.as_secs()
    )]
    Stalled { action: String, after: Duration },
    #[error("message id {id} cannot be exported: {problem}")]
    BadRow { id: i64, problem: String },
    #[error("no conversation log at {0} (is --data-dir right?)")]
    NoStore(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExportError {
    /// Whether trying again later may succeed without anyone changing anything: the server
    /// was down, restarting or dropped the connection. Everything else (bad URL, login,
    /// rights, table shape) needs a person.
    pub fn is_transient(&self) -> bool {
        match self {
            ExportError::Connect { transient, .. } | ExportError::Postgres { transient, .. } => {
                *transient
            }
            ExportError::Store(_) | ExportError::Stalled { .. } => true,
            _ => false,
        }
    }

    /// Classifies an error from a statement that was doing `action`.
    pub(crate) fn postgres(action: impl Into<String>, error: tokio_postgres::Error) -> ExportError {
        let action = action.into();
        if let Some(db) = error.as_db_error() {
            if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE {
                return ExportError::Permission {
                    action,
                    detail: db.message().to_string(),
                };
            }
            return ExportError::Postgres {
                action,
                detail: db.message().to_string(),
                transient: is_transient_state(db.code()),
            };
        }
        // Not a server answer: the connection broke (closed, reset, timed out).
        ExportError::Postgres {
            action,
            detail: format!("lost the connection: {}", describe(&error)),
            transient: true,
        }
    }

    /// Classifies a failure to open a connection to `url` (already redacted).
    pub(crate) fn connect(url: &str, error: tokio_postgres::Error) -> ExportError {
        let url = url.to_string();
        if let Some(db) = error.as_db_error() {
            let code = db.code();
            let reason = if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                format!("login refused: {}", db.message())
            } else {
                db.message().to_string()
            };
            return ExportError::Connect {
                url,
                transient: is_transient_state(code),
                reason,
            };
        }
        let io_kind = io_error_kind(&error);
        let reason = match io_kind {
            Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
            _ => describe(&error),
        };
        // Unreachable servers come back; a TLS demand we cannot meet does not.
        let transient = io_kind.is_some() || error.is_closed() || reason.contains("timed out");
        ExportError::Connect {
            url,
            reason,
            transient,
        }
    }
}

/// SQLSTATE classes that a retry can clear: connection exceptions (08), the server shutting
/// down or starting up (57P01-57P03), a statement cancelled by `statement_timeout` (57014),
/// resource exhaustion (53), serialization failures (40).
fn is_transient_state(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("40")
        || code.starts_with("57P")
        || code == "57014"
}

fn io_error_kind(error: &tokio_postgres::Error) -> Option<std::io::ErrorKind> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = c.source();
    }
    None
}

/// The error with its causes, on one line (tokio-postgres puts the useful part in `source`).
fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_retried_and_configuration_trouble_is_not() {
        assert!(is_transient_state(&SqlState::ADMIN_SHUTDOWN));
        assert!(is_transient_state(&SqlState::CANNOT_CONNECT_NOW));
        assert!(is_transient_state(&SqlState::CONNECTION_FAILURE));
        assert!(is_transient_state(&SqlState::QUERY_CANCELED));
        let stalled = ExportError::Stalled {
            action: "writing a batch".into(),
            after: Duration::from_secs(30),
        };
        assert!(stalled.is_transient());
        assert_eq!(
            stalled.to_string(),
            "PostgreSQL did not answer within 30s while writing a batch; dropped the connection"
        );
        assert!(!is_transient_state(&SqlState::INSUFFICIENT_PRIVILEGE));
        assert!(!is_transient_state(&SqlState::UNDEFINED_TABLE));
        assert!(!is_transient_state(&SqlState::INVALID_PASSWORD));
        let shape = ExportError::Shape {
            table: "messages".into(),
            problem: "missing column content".into(),
        };
        assert!(!shape.is_transient());
        assert_eq!(
            shape.to_string(),
            "table messages: missing column content; the data was left untouched"
        );
    }
}

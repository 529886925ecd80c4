//! The PostgreSQL pieces export and the viewer share: a checked connection target
//! ([`PgTarget`]: URL checks, redacted display, connecting with keepalives) and the
//! notification export sends and the viewer listens for ([`NOTIFY_CHANNEL`]), and how tool
//! steps are kept in the documented columns ([`tool_rows`]).
//!
//! A shared leaf: `export/` writes through it, and `lang-agent viewer --db postgres://…` reads
//! through it; neither imports the other.

mod notify;
mod target;
pub mod tool_rows;

pub use notify::{NOTIFY_CHANNEL, notify_payload};
pub use target::{APPLICATION_NAME, PgTarget, PgUrlError, is_postgres_url};

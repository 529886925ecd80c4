//! The PostgreSQL pieces export and the viewer share: a checked connection target
//! ([`PgTarget`]: URL checks, redacted display, connecting with keepalives).
//!
//! A shared leaf: `export/` writes through it, and `lang-agent viewer --db postgres://…` reads
//! through it.

mod target;

pub use target::{APPLICATION_NAME, PgTarget};

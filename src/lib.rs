//! `lang-agent` as a library: every module of the server, so that the binary, the integration
//! tests and the benchmarks share one build. See `ARCHITECTURE.md` for the request flow.

pub mod agent;
pub mod api;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod eval;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod heap;
pub mod http;
pub mod llm;
pub mod logging;
pub mod metrics;
pub mod mock_llm;
pub mod pg;
pub mod redact;
pub mod sse_events;
pub mod store;
pub mod stress;
pub mod tools;
pub mod viewer;

//! `lang-agent` as a library: every module of the server, so that the binary, the integration
//! tests and the benchmarks share one build. See `ARCHITECTURE.md` for the request flow.

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod llm;
pub mod mock_llm;
pub mod server;
pub mod store;
pub mod tools;
pub mod viewer;

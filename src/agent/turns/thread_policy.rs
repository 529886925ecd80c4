//! How threads are named and shared: what names a DashScope thread ([`MemoryScope`],
//! `--memory-scope`) and what a new turn does to a thread still answering ([`BusyPolicy`],
//! `--on-busy`).
//!
//! Domain choices of the turn runner; the command line offers them as they are.

/// What names a DashScope thread: the session id, or the app id (memory survives reconnects).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryScope {
    #[default]
    Session,
    App,
}

/// A new turn on a thread whose previous turn still runs: interrupt it (barge-in) or wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusyPolicy {
    #[default]
    Interrupt,
    Wait,
}

//! The HTTP surfaces clients call: DashScope's Application API (Xiaozhi), an OpenAI-compatible
//! API, health, and the authentication and error shapes they share.

pub mod auth;

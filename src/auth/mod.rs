//! Who may use the box: the API keys ([`keys`]) and the brute-force brake on wrong ones
//! ([`throttle`]).
//!
//! A shared leaf: the API (`api/`) and the viewer (`viewer/`) both check keys here, and one
//! set of keys carries one brake, so guessing on both ports is no faster than on one.

mod keys;
pub mod throttle;

pub use keys::{ApiKeys, KeySource, bearer_token};

//! Who may use the box: the API keys ([`keys`], the managed ones in [`key_store`]) and the brute-force brake on wrong ones
//! ([`throttle`]).
//!
//! A shared leaf: the API (`api/`) and the viewer (`viewer/`) both check keys here, and one
//! set of keys carries one brake, so guessing on both ports is no faster than on one.

pub mod key_store;
mod keys;
pub mod throttle;

pub use key_store::{KeyStore, KeyStoreError};
pub use keys::{ApiKeys, KeySource, bearer_token};

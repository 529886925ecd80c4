//! The subcommands of the binary: each file turns its part of the command line (and the
//! [`crate::config::Config`]) into a running feature.

pub mod export;
pub mod serve;

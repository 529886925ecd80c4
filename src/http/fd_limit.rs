//! The process's open-files limit, raised at start.
//!
//! Every client connection, every upstream call and the store's files take a descriptor.
//! Processes start with a soft limit of 1024 while the hard limit is usually far higher;
//! with 1024, 500 concurrent streaming turns failed by the thousand. Raising the soft limit to
//! the hard one needs no privilege; the systemd unit sets the hard limit (`LimitNOFILE`).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors the box needs besides client connections (the store, upstream and MCP
/// connections, the log): a margin for the warning, not a reservation.
const OWN_DESCRIPTORS: u64 = 256;
/// Linux's default `fs.nr_open`: the most a soft limit can be when the hard one is unlimited.
const UNLIMITED_CEILING: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the result in one line; warns
/// when `connections` (the sum of the ports' `--max-connections`) would not fit in it.
pub fn raise_open_files_limit(connections: usize) {
    let before = getrlimit(Resource::Nofile);
    let hard = before.maximum.unwrap_or(UNLIMITED_CEILING);
    let soft = before.current.unwrap_or(UNLIMITED_CEILING);
    let now = if soft >= hard {
        tracing::info!("open files limit {soft} (the hard limit)");
        soft
    } else {
        let raised = Rlimit {
            current: Some(hard),
            maximum: before.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!("open files limit {hard} (raised from {soft} to the hard limit)");
                hard
            }
            Err(e) => {
                tracing::warn!("open files limit {soft} (could not raise it to {hard}: {e})");
                soft
            }
        }
    };
    let wanted = connections as u64 + OWN_DESCRIPTORS;
    if now < wanted {
        tracing::warn!(
            "{connections} connections (--max-connections, all ports) and the box's own files \
             need about {wanted} descriptors, more than the limit of {now}: raise the hard limit \
             (LimitNOFILE in the systemd unit, `ulimit -Hn`) or lower --max-connections"
        );
    }
}

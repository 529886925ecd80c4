//! The memory of the server under load, when it runs on this machine: which process listens
//! on the URL's port (from `/proc/net/tcp{,6}` and the processes' descriptors), and its peak
//! resident size while a level runs, sampled every 100 ms from `/proc/<pid>/status`.
//!
//! Linux only, and only processes this user may look into: elsewhere nothing is found and the
//! table shows `-`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the resident size is read while a level runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The id of the process listening on the port of `url`, when the URL names this machine
/// (`127.0.0.1`, `localhost`, `::1`) and the process can be found.
pub fn local_server_pid(url: &str) -> Option<u32> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        return None;
    }
    let port = url.port_or_known_default()?;
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    process_with_socket(&inodes)
}

/// The socket inodes listening on `port`, on any local address, IPv4 or IPv6.
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        inodes.extend(text.lines().skip(1).filter_map(|line| listener(line, port)));
    }
    inodes
}

/// The inode of one `/proc/net/tcp` line when it is a listener (state `0A`) on `port`.
fn listener(line: &str, port: u16) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (_, local_port) = fields.get(1)?.rsplit_once(':')?;
    let listening = *fields.get(3)? == "0A";
    (listening && u16::from_str_radix(local_port, 16).ok()? == port)
        .then(|| fields.get(9)?.parse().ok())
        .flatten()
}

/// The first process holding one of the socket `inodes` open.
fn process_with_socket(inodes: &[u64]) -> Option<u32> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && wanted.iter().any(|w| link.as_os_str() == w.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// A KiB figure of /proc/<pid>/status (`VmRSS:`, `VmHWM:`); 0 once the process is gone.
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The largest `VmRSS` of a process seen since [`PeakRss::start`].
pub struct PeakRss {
    stop: CancellationToken,
    sampler: tokio::task::JoinHandle<u64>,
}

impl PeakRss {
    /// Starts sampling `pid` every 100 ms.
    pub fn start(pid: u32) -> PeakRss {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let sampler = tokio::spawn(async move {
            let mut peak = rss_kib(pid, "VmRSS:");
            loop {
                tokio::select! {
                    () = stopped.cancelled() => break,
                    () = tokio::time::sleep(SAMPLE_EVERY) => {}
                }
                peak = peak.max(rss_kib(pid, "VmRSS:"));
            }
            peak.max(rss_kib(pid, "VmRSS:"))
        });
        PeakRss { stop, sampler }
    }

    /// The peak in KiB; `None` when the process could not be read.
    pub async fn finish(self) -> Option<u64> {
        self.stop.cancel();
        self.sampler.await.ok().filter(|kib| *kib > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_line_gives_its_inode_and_other_lines_none() {
        // Port 0x2189 = 8585, state 0A = LISTEN, inode 4242.
        let listen = "0: 0100007F:2189 00000000:0000 0A 00000000:00000000 00:00000000 \
                      00000000 0 0 4242 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listener(listen, 8585), Some(4242));
        assert_eq!(listener(listen, 8586), None);
        let established = listen.replace(" 0A ", " 01 ");
        assert_eq!(listener(&established, 8585), None);
    }

    #[test]
    fn this_process_is_found_by_its_listening_socket() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        assert_eq!(
            local_server_pid(&format!("http://127.0.0.1:{port}")),
            Some(std::process::id())
        );
        assert_eq!(local_server_pid(&format!("http://192.0.2.1:{port}")), None);
        assert!(rss_kib(std::process::id(), "VmRSS:") > 0);
    }
}

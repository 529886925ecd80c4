//! The shipped systemd unit: it verifies, its sandbox is tight, and the process speaks the
//! unit's notify protocol (ready, then watchdog pings).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The unit as shipped, with `ExecStart` pointing at the binary under test (verify checks
/// that the command exists).
fn unit_under_test(dir: &Path) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/lang-agent.service"),
    )
    .unwrap();
    assert!(
        shipped.contains("ExecStart=/usr/bin/lang-agent "),
        "{shipped}"
    );
    let unit = dir.join("lang-agent.service");
    std::fs::write(
        &unit,
        shipped.replace(
            "ExecStart=/usr/bin/lang-agent ",
            &format!("ExecStart={} ", bin()),
        ),
    )
    .unwrap();
    unit
}

fn systemd_analyze() -> Option<Command> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) if out.status.success() => Some(Command::new("systemd-analyze")),
        _ => {
            eprintln!("SKIPPED: systemd-analyze is not installed on this machine");
            None
        }
    }
}

#[test]
fn the_unit_verifies_and_its_exposure_is_at_most_3() {
    let Some(mut verify) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let out = verify.arg("verify").arg(&unit).output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", "--threshold=30"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    eprintln!("{overall}");
    assert!(out.status.success(), "exposure above 3.0:\n{report}");
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {overall:?}"));
    assert!(score <= 3.0, "{overall}");
}

#[test]
fn the_unit_keeps_what_stdio_mcp_servers_and_the_box_need() {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/lang-agent.service"),
    )
    .unwrap();
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "StateDirectory=lang-agent lang-agent/home",
        "ConfigurationDirectory=lang-agent",
        "EnvironmentFile=-/etc/lang-agent/env",
        "UMask=0077",
        "LimitNOFILE=65536",
        // Node's V8 aborts under W^X; npx needs a home and a cache it can write.
        "MemoryDenyWriteExecute=no",
        "Environment=HOME=/var/lib/lang-agent/home",
    ] {
        assert!(
            shipped.lines().any(|l| l.trim() == line),
            "{line} missing from the unit"
        );
    }
    assert!(shipped.lines().any(|l| l.starts_with("WatchdogSec=")));
}

#[test]
fn serve_tells_systemd_it_is_ready_then_pings_the_watchdog() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let socket_env = socket_path.to_str().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &mock.base_url,
        &[],
        &[
            ("FAST_AUTH_KEYS", KEY),
            ("NOTIFY_SOCKET", socket_env),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let started = Instant::now();
    let mut messages = Vec::new();
    let mut buf = [0u8; 512];
    while messages
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 3
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "got only {messages:?}"
        );
        let n = socket.recv(&mut buf).expect("a notify message");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(messages[0].contains("READY=1"), "{messages:?}");
    drop(server);
}

/// `[Service]` settings that say how the service runs rather than how it is sandboxed, or
/// that name the installed box's own user and directories: the transient unit below sets its
/// own.
const NOT_SANDBOX: &[&str] = &[
    "Type",
    "NotifyAccess",
    "WatchdogSec",
    "ExecStart",
    "ExecReload",
    "EnvironmentFile",
    "Environment",
    "Restart",
    "RestartSec",
    "RestartPreventExitStatus",
    "TimeoutStopSec",
    "User",
    "Group",
    "StateDirectory",
    "StateDirectoryMode",
    "CacheDirectory",
    "CacheDirectoryMode",
    "ConfigurationDirectory",
    "ConfigurationDirectoryMode",
];

#[test]
fn a_stdio_mcp_server_answers_under_the_units_sandbox() {
    if !Path::new("/run/systemd/system").exists() {
        eprintln!(
            "SKIPPED systemd-run: systemd is not this machine's init (no /run/systemd/system), \
             so no transient unit can run here; tests/deb_package.rs runs the same npx MCP \
             server as the packaged unit's user with its environment instead"
        );
        return;
    }
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/lang-agent.service"),
    )
    .unwrap();
    let sandbox: Vec<String> = shipped
        .lines()
        .skip_while(|l| l.trim() != "[Service]")
        .take_while(|l| l.trim() != "[Install]")
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter(|l| !NOT_SANDBOX.contains(&l.split('=').next().unwrap()))
        .map(str::to_string)
        .collect();
    assert!(
        sandbox.iter().any(|l| l == "ProtectSystem=strict"),
        "{sandbox:?}"
    );

    // Outside /tmp (PrivateTmp) and /home (ProtectHome): under target/.
    let (node_dir, npx) = everything_npx_config();
    let config = node_dir.join("systemd-run-mcp.json");
    std::fs::write(&config, npx.to_string()).unwrap();
    let mock = Mock::start(0, 0);
    let name = "lang-agent-sandbox-test";
    let mut run = Command::new("systemd-run");
    run.args(["--wait", "--pipe", "--collect", "--quiet"])
        .arg(format!("--working-directory={}", node_dir.display()))
        .args(["-p", "DynamicUser=yes"])
        .args(["-p", &format!("StateDirectory={name} {name}/home")])
        .args(["-p", &format!("CacheDirectory={name}")])
        .args(["-E", &format!("HOME=/var/lib/{name}/home")])
        .args(["-E", &format!("NPM_CONFIG_CACHE=/var/cache/{name}/npm")])
        .args(["-E", &format!("ALI_API_KEY={UPSTREAM_KEY}")]);
    for setting in &sandbox {
        run.args(["-p", setting]);
    }
    let out = run
        .arg(bin())
        .args(["--data-dir", &format!("/var/lib/{name}")])
        .args(["--base-url", &mock.base_url, "doctor", "--mcp-config"])
        .arg(&config)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let mcp = report
        .lines()
        .find(|l| l.contains("MCP server everything"))
        .unwrap_or_else(|| panic!("{report}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(mcp.starts_with("ok ") && mcp.contains("tools"), "{report}");
}

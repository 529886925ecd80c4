//! Hostile and careless HTTP clients against both ports (the API and the viewer, and the
//! standalone `lang-agent viewer`): half-sent headers, bodies that stop, idle keep-alives and
//! a flood of idle sockets must not hold the box; and the open-files limit is raised.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::raw_http::*;
use common::*;

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n";

/// A server with its viewer on, and `extra` flags.
fn server_with_viewer(dir: &std::path::Path, mock: &Mock, extra: &[&str]) -> (Server, [String; 2]) {
    let port = free_port().to_string();
    let args = [&["--viewer-port", port.as_str()], extra].concat();
    let server = Server::start(&dir.join("data"), &mock.base_url, &args);
    let viewer = server.viewer_url().expect("the viewer is on");
    let ports = [addr_of(&server.url), addr_of(&viewer)];
    (server, ports)
}

fn message_count(server: &Server) -> i64 {
    server
        .db()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn half_sent_headers_are_dropped_after_the_header_timeout() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let (_server, ports) =
        server_with_viewer(dir.path(), &mock, &["--http-header-timeout-secs", "1"]);
    for addr in &ports {
        let opened = Instant::now();
        let mut slow = connect(addr);
        slow.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .unwrap();
        // A connection that never says anything is dropped too.
        let mut silent = connect(addr);
        for stream in [&mut slow, &mut silent] {
            match wait_for_close(stream, Duration::from_secs(8)) {
                Ending::Closed(_) => assert!(opened.elapsed() >= Duration::from_millis(900)),
                Ending::StillOpen => panic!("{addr}: half-sent headers still held after 8 s"),
            }
        }
        assert_eq!(get(addr, "/health").status, 200, "{addr} still serves");
    }
}

#[test]
fn a_body_that_stops_midway_gets_408_and_the_server_answers_others() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let (server, ports) = server_with_viewer(dir.path(), &mock, &["--http-body-timeout-secs", "1"]);
    let stalled = |addr: &str, path: &str| {
        let mut stream = connect(addr);
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n\
             {{\"messages\": [{{\"ro"
        )
        .unwrap();
        stream
    };
    let api = &ports[0];
    let mut openai = stalled(api, "/v1/chat/completions");
    let mut dashscope = stalled(api, "/api/apps/app1/completion");
    // While those hang, others are served.
    assert_eq!(get(api, "/health").status, 200);

    let response = read_response(&mut openai).expect("a 408, not silence");
    assert_eq!(response.status, 408);
    let error = response.json();
    assert_eq!(error["error"]["code"], "request_timeout", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(matches!(
        wait_for_close(&mut openai, Duration::from_secs(5)),
        Ending::Closed(_)
    ));

    let response = read_response(&mut dashscope).expect("a 408, not silence");
    assert_eq!(response.status, 408);
    let error = response.json();
    assert_eq!(error["code"], "RequestTimeOut", "{error}");
    assert!(
        error["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(matches!(
        wait_for_close(&mut dashscope, Duration::from_secs(5)),
        Ending::Closed(_)
    ));
    assert_eq!(message_count(&server), 0, "nothing half-received is stored");

    // The viewer's login form, stopped half-way.
    let viewer = &ports[1];
    let mut login = connect(viewer);
    login
        .write_all(
            b"POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 100\r\n\r\nkey=abc",
        )
        .unwrap();
    assert_eq!(get(viewer, "/health").status, 200);
    let response = read_response(&mut login).expect("a 408, not silence");
    assert_eq!(response.status, 408);
    assert!(matches!(
        wait_for_close(&mut login, Duration::from_secs(5)),
        Ending::Closed(_)
    ));
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let (_server, ports) = server_with_viewer(
        dir.path(),
        &mock,
        &[
            "--http-header-timeout-secs",
            "1",
            "--http-idle-timeout-secs",
            "3",
        ],
    );
    for addr in &ports {
        let mut stream = connect(addr);
        stream.write_all(HEALTH).unwrap();
        assert_eq!(read_response(&mut stream).unwrap().status, 200);
        // Idle for longer than the header timeout, shorter than the idle one: still reusable.
        std::thread::sleep(Duration::from_millis(1800));
        stream.write_all(HEALTH).unwrap();
        assert_eq!(
            read_response(&mut stream)
                .expect("the kept-alive connection is reused")
                .status,
            200
        );
        match wait_for_close(&mut stream, Duration::from_secs(10)) {
            Ending::Closed(after) => assert!(after >= Duration::from_secs(2), "{after:?}"),
            Ending::StillOpen => panic!("{addr}: idle keep-alive still open after 10 s"),
        }
    }
}

#[test]
fn past_max_connections_new_ones_are_closed_at_once_and_served_ones_keep_working() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let (_server, ports) = server_with_viewer(
        dir.path(),
        &mock,
        &[
            "--max-connections",
            "20",
            "--http-header-timeout-secs",
            "60",
            "--http-idle-timeout-secs",
            "60",
        ],
    );
    for addr in &ports {
        let mut served = connect(addr);
        served.write_all(HEALTH).unwrap();
        assert_eq!(read_response(&mut served).unwrap().status, 200);
        let idle: Vec<_> = (0..49).map(|_| connect(addr)).collect();
        std::thread::sleep(Duration::from_millis(1000));
        let (mut closed, mut open): (Vec<_>, Vec<_>) = idle
            .into_iter()
            .map(|mut s| (is_closed_now(&mut s), s))
            .partition(|(is_closed, _)| *is_closed);
        assert_eq!(
            (closed.len(), open.len()),
            (30, 19),
            "{addr}: 20 connections are served, the 21st and later closed at once"
        );
        closed.clear();

        served.write_all(HEALTH).unwrap();
        assert_eq!(
            read_response(&mut served)
                .expect("a served connection keeps working at the cap")
                .status,
            200
        );
        let mut refused = connect(addr);
        assert!(
            matches!(
                wait_for_close(&mut refused, Duration::from_secs(3)),
                Ending::Closed(_)
            ),
            "{addr}: still full"
        );
        open.clear();
        drop(served);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(get(addr, "/health").status, 200, "{addr}: room again");
    }
}

/// `Max open files` (soft, hard) of process `pid`.
fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<_> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit_and_logged() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let serve = Server::command(
        &dir.path().join("data"),
        Some(&mock.base_url),
        &[],
        &[("FAST_AUTH_KEYS", KEY)],
    );
    // Started with a soft limit of 256, as a login shell's 1024 would be too slow to fill.
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""])
        .arg(serve.get_program())
        .args(serve.get_args());
    for (name, value) in serve.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command.current_dir(serve.get_current_dir().unwrap());
    let proc = Proc::spawn(command);
    proc.wait_for_line("lang-agent ready");
    let (soft, hard) = open_files_limit(proc.pid());
    let line = proc.wait_for_line("open files limit");
    if hard == "256" {
        println!("skipped: the hard limit of open files here is 256, nothing to raise");
        return;
    }
    assert_eq!(soft, hard, "soft limit raised to the hard one: {line}");
    assert!(
        line.contains(&format!("open files limit {soft} (raised from 256")),
        "{line}"
    );
}

#[test]
fn the_standalone_viewer_drops_half_sent_headers_and_logs_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A store to show: serve creates it.
    let mock = Mock::start(0, 0);
    drop(Server::start(&data, &mock.base_url, &[]));
    let mut command = Command::new(bin());
    command
        .arg("--data-dir")
        .arg(&data)
        .args([
            "viewer",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--open",
            "--http-header-timeout-secs",
            "1",
        ])
        .env_remove("CONN_STR")
        .env("LANG_AGENT_LOG", "info");
    let proc = Proc::spawn(command);
    let line = proc.wait_for_line("viewer listening on ");
    let addr = addr_of(line.trim().trim_start_matches("viewer listening on "));
    proc.wait_for_line("open files limit");
    let mut slow = connect(&addr);
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    assert!(matches!(
        wait_for_close(&mut slow, Duration::from_secs(8)),
        Ending::Closed(_)
    ));
    assert_eq!(get(&addr, "/health").status, 200);
}

#[tokio::test]
async fn a_stop_signal_lets_running_answers_finish_and_refuses_new_connections() {
    let mock = Mock::start(0, 100);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let text = "tell me a long story about the sea and the wind and the boats";
    let mut stream = http()
        .post(format!("{}/api/apps/app1/completion", server.url))
        .bearer_auth(KEY)
        .header("X-DashScope-SSE", "enable")
        .json(&serde_json::json!({"input": {"prompt": text, "session_id": "stop-1"}}))
        .send()
        .await
        .unwrap();
    let mut sse = String::from_utf8(stream.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &server.proc.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    server.proc.wait_for_line("shutting down");
    let refused_soon = (0..100).any(|_| {
        let refused = std::net::TcpStream::connect(addr_of(&server.url)).is_err();
        if !refused {
            std::thread::sleep(Duration::from_millis(20));
        }
        refused
    });
    assert!(refused_soon, "no new connections after the signal");
    while let Some(chunk) = stream.chunk().await.unwrap() {
        sse.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(
        final_text(&sse),
        format!("You said: {text}. I remember: {text}."),
        "the running answer was finished"
    );
    assert_eq!(server.proc.wait_exit(), Some(0));
    let rows = log_rows(&server.db(), "stop-1");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(!rows[1].2, "stored complete, not interrupted");
}

//! Export against a PostgreSQL that stops answering: `lang-agent export --follow` runs through a
//! TCP proxy that can be frozen (it keeps every socket open and stops forwarding, as a stopped
//! or wedged server does, whose kernel still acknowledges everything). The follower must notice
//! within its deadline, say so, drop the connection, reconnect once the server answers again,
//! and still copy every row exactly once.

mod common;

use std::time::{Duration, Instant};

use common::Proc;
use common::export::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

/// A TCP proxy to `upstream` on its own thread and runtime (so a test blocked waiting for a
/// log line cannot stop it), which can be frozen and thawed.
struct FreezableProxy {
    port: u16,
    frozen: watch::Sender<bool>,
}

impl FreezableProxy {
    fn start(upstream: String) -> FreezableProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, watcher) = watch::channel(false);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let mut watcher = watcher.clone();
                    tokio::spawn(async move {
                        // A connection made while frozen is accepted and left waiting.
                        thawed(&mut watcher).await;
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, watcher.clone()),
                            pump(server_read, client_write, watcher),
                        );
                    });
                }
            });
        });
        FreezableProxy { port, frozen }
    }

    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

async fn thawed(watcher: &mut watch::Receiver<bool>) {
    let _ = watcher.wait_for(|frozen| !*frozen).await;
}

/// Copies `from` to `to`, holding whatever it read while frozen (the end of the stream too).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut watcher: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        thawed(&mut watcher).await;
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    thawed(&mut watcher).await;
    let _ = to.shutdown().await;
}

/// `url` with its `host:port` replaced by `address`; and the `host:port` it had.
fn through(url: &str, address: &str) -> (String, String) {
    let start = url
        .find('@')
        .map_or(url.find("://").unwrap() + 3, |at| at + 1);
    let end = start + url[start..].find('/').unwrap();
    let original = url[start..end].to_string();
    (
        format!("{}{address}{}", &url[..start], &url[end..]),
        original,
    )
}

/// Waits (blocking) until `proc` logged a line containing `needle` after its first `skip` bytes
/// of output, for at most `limit`.
fn line_after(proc: &Proc, skip: usize, needle: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let log = proc.log();
        if let Some(line) = log[skip.min(log.len())..]
            .lines()
            .find(|l| l.contains(needle))
        {
            return Some(line.to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_postgres_is_detected_dropped_and_reconnected_and_rows_arrive_once() {
    let db = TestDb::create().await;
    let src = TestStore::new();
    src.talk("before", 2).await;
    let (_, upstream) = through(&db.url, "unused");
    let proxy = FreezableProxy::start(upstream);
    let (proxied_url, _) = through(&db.url, &format!("127.0.0.1:{}", proxy.port));

    let mut command = lang_agent(src.data_dir());
    command
        .env("LANG_AGENT_LOG", "info")
        .args([
            "export",
            "--follow",
            "--box-id",
            "box",
            "--interval-secs",
            "1",
        ])
        .args(["--stall-timeout-secs", "3", "--to", &proxied_url]);
    let follower = Proc::spawn(command);
    let client = db.client().await;
    eventually(Duration::from_secs(20), "the first 6 rows", || async {
        count(
            &client,
            "SELECT COUNT(*) FROM pg_class WHERE relname = 'messages'",
        )
        .await
            == 1
            && pg_rows(&client, "box/").await.len() == 6
    })
    .await;

    proxy.freeze();
    let frozen_at = Instant::now();
    let before_freeze = follower.log().len();
    src.talk("during", 2).await;
    let stalled = line_after(
        &follower,
        before_freeze,
        "did not answer within 3s",
        Duration::from_secs(20),
    )
    .unwrap_or_else(|| panic!("no stall reported; output:\n{}", follower.log()));
    // Found within one look (1 s) and the deadline (3 s), with room for a slow machine.
    assert!(frozen_at.elapsed() < Duration::from_secs(15), "{stalled}");
    assert!(stalled.contains("WARN"), "{stalled}");

    // Still frozen: reconnecting fails on the deadline too (the proxy accepts and says
    // nothing), and is retried. Then the server answers again.
    std::thread::sleep(Duration::from_secs(4));
    src.talk("after", 1).await;
    let before_thaw = follower.log().len();
    proxy.thaw();
    let thawed_at = Instant::now();
    let resumed = line_after(
        &follower,
        before_thaw,
        "connected to",
        Duration::from_secs(40),
    )
    .unwrap_or_else(|| panic!("no reconnection; output:\n{}", follower.log()));
    assert!(resumed.contains("again"), "{resumed}");
    assert!(thawed_at.elapsed() < Duration::from_secs(35));
    eventually(Duration::from_secs(20), "all 15 rows", || async {
        pg_rows(&client, "box/").await.len() == 15
    })
    .await;
    assert_eq!(
        pg_rows(&client, "box/").await,
        sqlite_rows(&src.sqlite_path(), "box/")
    );
    assert_eq!(duplicates(&client).await, 0);
}

//! Viewer server time at fleet scale: 10,000 conversations and 1,000,000 messages in a temp
//! SQLite store, then p50/p99 of the list page, a deep list page, a conversation page (one
//! in the middle), searches and the JSON API, 200 requests each, through the router in
//! process (no network, so the figures are the server's own time).
//!
//! Run: `cargo bench --bench viewer` (prints figures; asserts nothing).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use lang_agent::store::Store;
use lang_agent::viewer::{Access, Source, router};
use tower::ServiceExt;

const CONVERSATIONS: usize = 10_000;
const MESSAGES_PER_CONVERSATION: usize = 100;
const REQUESTS: usize = 200;

const WORDS: &[&str] = &[
    "light",
    "kitchen",
    "music",
    "play",
    "turn",
    "on",
    "off",
    "please",
    "what",
    "time",
    "is",
    "it",
    "today",
    "tomorrow",
    "weather",
    "rain",
    "sunny",
    "cloudy",
    "temperature",
    "degrees",
    "set",
    "alarm",
    "seven",
    "morning",
    "evening",
    "remind",
    "me",
    "to",
    "buy",
    "milk",
    "bread",
    "call",
    "mother",
    "volume",
    "louder",
    "quieter",
    "story",
    "tell",
    "a",
    "joke",
    "the",
    "door",
    "window",
    "open",
    "close",
    "fan",
    "heater",
    "bedroom",
    "living",
    "room",
    "garden",
    "water",
    "plants",
    "news",
    "headlines",
    "football",
    "score",
    "recipe",
    "noodles",
    "dumplings",
    "tea",
    "coffee",
    "timer",
    "minutes",
    "hours",
    "traffic",
    "road",
    "work",
    "school",
    "homework",
    "math",
    "english",
    "translate",
    "hello",
    "thanks",
    "goodbye",
    "好的",
    "谢谢",
    "今天",
    "天气",
];

/// A small deterministic generator, so every run seeds the same data.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn sentence(&mut self, words: usize) -> String {
        let mut out = Vec::with_capacity(words + 1);
        for _ in 0..words {
            out.push(WORDS[self.next() as usize % WORDS.len()]);
        }
        // One message in a thousand mentions an umbrella: a selective search.
        if self.next().is_multiple_of(1000) {
            out.push("umbrella");
        }
        out.join(" ")
    }
}

fn seed(store_path: &std::path::Path) {
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(store_path).expect("open for seeding");
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut conversation = tx
            .prepare(
                "INSERT INTO conversations (conversation_id, device_id, message_count, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .unwrap();
        let mut message = tx
            .prepare(
                "INSERT INTO messages (conversation_id, message_type, content, sequence_number, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .unwrap();
        let mut rng = Lcg(42);
        let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap();
        for c in 0..CONVERSATIONS {
            let device = format!("dev{}", c % 40);
            let id = format!("conv-{c:05}_{device}");
            let first = start + chrono::Duration::minutes(c as i64 * 30);
            let stamp = |seq: usize| {
                (first + chrono::Duration::seconds(seq as i64 * 7))
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string()
            };
            conversation
                .execute(rusqlite::params![
                    id,
                    device,
                    MESSAGES_PER_CONVERSATION as i64,
                    stamp(1),
                    stamp(MESSAGES_PER_CONVERSATION)
                ])
                .unwrap();
            for seq in 1..=MESSAGES_PER_CONVERSATION {
                let extra = rng.next() as usize;
                let (kind, text) = match seq % 4 {
                    1 | 3 => ("human", rng.sentence(6 + extra % 8)),
                    2 => ("ai", rng.sentence(12 + extra % 20)),
                    _ => (
                        "tool",
                        serde_json::json!({"result": rng.sentence(5), "ok": true, "n": rng.next() % 100})
                            .to_string(),
                    ),
                };
                message
                    .execute(rusqlite::params![id, kind, text, seq as i64, stamp(seq)])
                    .unwrap();
            }
        }
    }
    tx.commit().unwrap();
    eprintln!(
        "seeded {CONVERSATIONS} conversations / {} messages in {:.1?}",
        CONVERSATIONS * MESSAGES_PER_CONVERSATION,
        started.elapsed()
    );
}

async fn measure(app: &axum::Router, label: &str, uri: &str) {
    let mut times = Vec::with_capacity(REQUESTS);
    let mut bytes = 0;
    for i in 0..REQUESTS + 10 {
        let started = Instant::now();
        let response = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{uri}: {}",
            response.status()
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let took = started.elapsed();
        bytes = body.len();
        if i >= 10 {
            times.push(took); // the first ten warm caches
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<34} p50 {:>7.2} ms   p99 {:>7.2} ms   ({} KiB)   {uri}",
        ms(at(0.50)),
        ms(at(0.99)),
        bytes / 1024
    );
}

/// p50 and p99 (ms) of appending one human + ai turn to fresh conversations.
async fn append_times(store: &Store, tag: &str) -> (f64, f64) {
    use lang_agent::store::{MessageKind, NewMessage};
    let mut times = Vec::new();
    for i in 0..500 {
        let turn = vec![
            NewMessage::new(MessageKind::Human, "turn on the kitchen light please"),
            NewMessage::new(
                MessageKind::Ai,
                "The kitchen light is on now. Anything else?",
            ),
        ];
        let started = Instant::now();
        store
            .append(&format!("append-{tag}-{i}"), Some("devx"), None, turn)
            .await
            .unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sqlite3");
    // Creates the schema (with the search index), then bulk-loads.
    drop(Store::open(&path).unwrap());
    seed(&path);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open(&path).unwrap();
        // The search indexer follows the log in the background; catch it up before timing.
        let indexing = std::time::Instant::now();
        let mut indexed = 0;
        loop {
            let n = store.index_for_search(50_000).await.unwrap();
            if n == 0 {
                break;
            }
            indexed += n;
        }
        println!(
            "search index built for {indexed} messages in {:.1} s",
            indexing.elapsed().as_secs_f64()
        );
        let app = router(Source::from_store(store.clone()), Access::open(), None);
        println!("viewer server time, {REQUESTS} requests each, 10,000 conversations / 1,000,000 messages:");
        measure(&app, "list page (newest)", "/").await;
        measure(&app, "list page 100 of 200", "/?page=100").await;
        measure(&app, "list filtered by device", "/?device=dev17").await;
        measure(&app, "conversation page (middle)", "/c/conv-05000_dev0").await;
        measure(&app, "search, selective (umbrella)", "/?q=umbrella").await;
        measure(&app, "search, common (weather)", "/?q=weather").await;
        measure(&app, "search, 2 chars (LIKE scan)", "/?q=%E5%A5%BD%E7%9A%84").await;
        measure(&app, "API conversation messages", "/api/conversations/conv-05000_dev0/messages").await;
        measure(&app, "sidebar fragment (live update)", "/fragments/sidebar").await;

        // The write path: logging a turn, and one background indexing batch.
        let append = append_times(&store, "write-path").await;
        let mut batch_times = Vec::new();
        for _ in 0..5 {
            let started = std::time::Instant::now();
            store.index_for_search(100).await.unwrap();
            batch_times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        batch_times.sort_by(f64::total_cmp);
        println!("Store::append of one turn (human + ai), 500 appends, sequential:");
        println!("  p50 {:>6.3} ms   p99 {:>6.3} ms   (no search indexing on this path)", append.0, append.1);
        println!("one background search-index batch (up to 100 messages): median {:.3} ms", batch_times[2]);
    });
}

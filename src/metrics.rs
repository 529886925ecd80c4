//! The box's Prometheus metrics: one [`Metrics`] (an explicit `prometheus-client` registry and
//! its typed families, no global state) that `serve` creates and hands to each part that has
//! something to count, and that `GET /metrics` renders as OpenMetrics text.
//!
//! Every label set is bounded, so a scrape stays small however long the box runs: routes are
//! the API's route templates (never raw paths), tools are the configured tools' names (a name
//! the model made up counts as [`UNKNOWN_TOOL`]), and the other labels take a few fixed words.
//! What only exists at scrape time (the database's size, the writer's queue, the export's lag)
//! is read then, through the [`ScrapeSource`] `serve` sets.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::render`]'s text (OpenMetrics 1.0, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `tool` label of a call to a tool the box does not have.
pub const UNKNOWN_TOOL: &str = "(unknown)";

/// Every family's name starts with this (`lang_agent_http_requests_total`).
const PREFIX: &str = "lang_agent";

/// Buckets of whole turns and of model calls, seconds: from a cached answer to the turn limit.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];
/// Buckets of the time to first text, seconds: what a voice user hears as the box's delay.
const TTFT_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];

/// Buckets of a store write's phases, seconds: from a warm page cache to a stalled disk.
const STORE_WRITE_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

/// The `phase` labels of `lang_agent_store_write_duration_seconds`, in [`StoreWritePhases`]'
/// order.
pub const STORE_WRITE_PHASES: [&str; 4] = ["queued", "statements", "commit", "reply"];

/// Where one store write's time went, from its caller's call to its caller resuming: the
/// `phase`s of `lang_agent_store_write_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreWritePhases {
    /// Sent to the writer thread until its batch began: the thread's wake-up, and the batches
    /// before it.
    pub queued: Duration,
    /// Its own statements.
    pub statements: Duration,
    /// From its statements to the end of its batch's commit (or rollback): the statements of
    /// the writes after it in the batch, and the commit they share.
    pub commit: Duration,
    /// From the commit to its caller running again: the hand-back to an async worker.
    pub reply: Duration,
}

/// The job a model call does, the `role` of `lang_agent_upstream_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamRole {
    /// The answering chat model (`--llm-name`; also the `react` graph's tool loop).
    Chat,
    /// The route graph's router.
    Router,
    /// The tool branch's model (`--tool-llm-name`).
    Tools,
    /// Chatty filler.
    Filler,
}

impl UpstreamRole {
    fn as_str(self) -> &'static str {
        match self {
            UpstreamRole::Chat => "chat",
            UpstreamRole::Router => "router",
            UpstreamRole::Tools => "tools",
            UpstreamRole::Filler => "filler",
        }
    }
}

/// Why the route graph sent a turn where it did, the `reason` of
/// `lang_agent_router_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// The router model decided.
    Router,
    /// The router gave no decision in time: chat (fallback).
    Timeout,
    /// The router call failed: tools (fallback).
    RouterFailed,
    /// The router's answer was not understood: tools (fallback).
    NotUnderstood,
    /// The chat model called tools, so the tool branch took the turn over.
    ChatCalledTools,
    /// The client offered its own tools or sent their results: straight to the tool loop.
    ClientTools,
    /// The client carried its own instructions: straight to chat.
    ClientInstructions,
}

impl RouteReason {
    fn as_str(self) -> &'static str {
        match self {
            RouteReason::Router => "router",
            RouteReason::Timeout => "timeout",
            RouteReason::RouterFailed => "router_failed",
            RouteReason::NotUnderstood => "not_understood",
            RouteReason::ChatCalledTools => "chat_called_tools",
            RouteReason::ClientTools => "client_tools",
            RouteReason::ClientInstructions => "client_instructions",
        }
    }
}

/// What a scrape reads from the running box; `None` leaves the gauge as it was.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readings {
    /// The database's files (main, WAL, shared memory) together.
    pub store_size_bytes: Option<u64>,
    /// Writes queued for the writer thread, not yet taken into a batch.
    pub store_writer_queue: Option<u64>,
    /// The WAL's size in pages after the writer's last commit.
    pub store_wal_pages: Option<u64>,
    /// Messages stored but not yet in PostgreSQL.
    pub export_lag_rows: Option<u64>,
}

/// Reads [`Readings`] at scrape time.
pub type ScrapeSource = Box<dyn Fn() -> BoxFuture<'static, Readings> + Send + Sync>;

/// The newest message id the export follower knows is in PostgreSQL; the lag is counted from
/// it at scrape time. Unknown (nothing reported) until the follower first connects.
#[derive(Debug, Clone)]
pub struct ExportPosition(Arc<AtomicI64>);

impl Default for ExportPosition {
    fn default() -> Self {
        ExportPosition(Arc::new(AtomicI64::new(-1)))
    }
}

impl ExportPosition {
    /// Everything up to `id` is in PostgreSQL.
    pub fn exported_up_to(&self, id: i64) {
        self.0.store(id.max(0), Ordering::Relaxed);
    }

    /// The id everything up to is exported, once the follower has said.
    pub fn get(&self) -> Option<i64> {
        let id = self.0.load(Ordering::Relaxed);
        (id >= 0).then_some(id)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TurnLabels {
    route_taken: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    outcome: &'static str,
}

/// Makes each labelled histogram with the family's buckets.
#[derive(Clone, Copy)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The heap trimmer reads the box's activity from the same gauges `/metrics` shows.
impl crate::heap::Activity for Metrics {
    fn turns_started(&self) -> u64 {
        self.turns_started.load(Ordering::Relaxed)
    }

    fn busy(&self) -> bool {
        self.active_turns.get() > 0 || self.active_streams.get() > 0
    }
}

/// The registry and every family; shared (`Arc`) by everything that counts.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    turn_duration: Family<TurnLabels, Histogram, Buckets>,
    turn_ttft: Histogram,
    upstream_duration: Family<RoleLabels, Histogram, Buckets>,
    router_decisions: Family<DecisionLabels, Counter>,
    tool_calls: Family<ToolLabels, Counter>,
    active_turns: Gauge,
    active_streams: Gauge,
    /// Turns started since the box started; the heap trimmer's sign of a busy spell.
    turns_started: AtomicU64,
    interrupted_turns: Counter,
    store_size_bytes: Gauge,
    store_writer_queue: Gauge,
    store_wal_pages: Gauge,
    /// The histograms of [`STORE_WRITE_PHASES`], each fetched once (a turn observes eight).
    store_write_phases: [Histogram; 4],
    /// Only registered when the in-process export follower runs.
    export_lag_rows: Option<Gauge>,
    export_position: ExportPosition,
    scrape_source: OnceLock<ScrapeSource>,
}

impl Metrics {
    /// Every family, registered; `exporting` adds the export follower's lag.
    pub fn new(exporting: bool) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix(PREFIX);
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "API requests answered, by route template and status code",
            http_requests.clone(),
        );
        let turn_duration = Family::new_with_constructor(Buckets(&DURATION_BUCKETS));
        registry.register_with_unit(
            "turn_duration",
            "Whole turns, from the moment they may run to the closing write, by the route they took (chat or tool) and how they ended",
            Unit::Seconds,
            turn_duration.clone(),
        );
        let turn_ttft = Histogram::new(TTFT_BUCKETS);
        registry.register_with_unit(
            "turn_ttft",
            "Time from a turn's start to its first text for the client",
            Unit::Seconds,
            turn_ttft.clone(),
        );
        let upstream_duration = Family::new_with_constructor(Buckets(&DURATION_BUCKETS));
        registry.register_with_unit(
            "upstream_duration",
            "Model calls that completed or failed (not those a turn dropped), by the job of the model",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let router_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "router_decisions",
            "Where the route graph sent turns (chat or tool) and why; a chat turn whose chat model calls tools counts again, as tool for chat_called_tools",
            router_decisions.clone(),
        );
        let tool_calls = Family::<ToolLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Calls of the box's tools by the models, by tool and outcome (ok or error)",
            tool_calls.clone(),
        );
        let active_turns = Gauge::default();
        registry.register(
            "active_turns",
            "Turns running now (not those waiting behind another on their thread)",
            active_turns.clone(),
        );
        let active_streams = Gauge::default();
        registry.register(
            "active_streams",
            "SSE answers being streamed to clients now",
            active_streams.clone(),
        );
        let interrupted_turns = Counter::default();
        registry.register(
            "interrupted_turns",
            "Turns that ended interrupted: a newer turn of their session, a client gone or stalled",
            interrupted_turns.clone(),
        );
        let store_size_bytes = Gauge::default();
        registry.register_with_unit(
            "store_size",
            "The SQLite database's files (main, WAL, shared memory) together",
            Unit::Bytes,
            store_size_bytes.clone(),
        );
        let store_writer_queue = Gauge::default();
        registry.register(
            "store_writer_queue",
            "Writes waiting for the database writer thread",
            store_writer_queue.clone(),
        );
        let store_wal_pages = Gauge::default();
        registry.register(
            "store_wal_pages",
            "The SQLite WAL's size in pages after the last commit; it starts over after a checkpoint (run by a thread of its own)",
            store_wal_pages.clone(),
        );
        let store_write = Family::<PhaseLabels, Histogram, Buckets>::new_with_constructor(Buckets(
            &STORE_WRITE_BUCKETS,
        ));
        registry.register_with_unit(
            "store_write_duration",
            "Store writes (a turn makes two: its opening and its closing), by phase, which add up to the write's whole wait: queued for the writer thread, its statements, the rest of its batch and the commit, and the reply back to the caller",
            Unit::Seconds,
            store_write.clone(),
        );
        let store_write_phases = STORE_WRITE_PHASES
            .map(|phase| store_write.get_or_create(&PhaseLabels { phase }).clone());
        let export_lag_rows = exporting.then(|| {
            let gauge = Gauge::default();
            registry.register(
                "export_lag_rows",
                "Messages stored but not yet exported to PostgreSQL (0 until the follower first connects)",
                gauge.clone(),
            );
            gauge
        });
        Arc::new(Metrics {
            registry,
            http_requests,
            turn_duration,
            turn_ttft,
            upstream_duration,
            router_decisions,
            tool_calls,
            active_turns,
            active_streams,
            turns_started: AtomicU64::new(0),
            interrupted_turns,
            store_size_bytes,
            store_writer_queue,
            store_wal_pages,
            store_write_phases,
            export_lag_rows,
            export_position: ExportPosition::default(),
            scrape_source: OnceLock::new(),
        })
    }

    /// A request answered with `status` on `route` (the route's template, or `unmatched`).
    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// A turn starts running; it counts as active until the returned guard is dropped.
    pub fn turn_running(&self) -> Active {
        self.turns_started.fetch_add(1, Ordering::Relaxed);
        Active::new(&self.active_turns)
    }

    /// An SSE answer starts; it counts as active until the returned guard is dropped.
    pub fn stream_open(&self) -> Active {
        Active::new(&self.active_streams)
    }

    /// A turn was closed. `tool_route`: it called tools; `status` is the log's (`done`,
    /// `interrupted`, `failed`); `first_text` is when its first text came, after the start.
    pub fn turn_closed(
        &self,
        tool_route: bool,
        status: &'static str,
        took: Duration,
        first_text: Option<Duration>,
    ) {
        let labels = TurnLabels {
            route_taken: if tool_route { "tool" } else { "chat" },
            status,
        };
        self.turn_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(first_text) = first_text {
            self.turn_ttft.observe(first_text.as_secs_f64());
        }
        if status == "interrupted" {
            self.interrupted_turns.inc();
        }
    }

    /// A model call for `role` ended (answered or failed) after `took`.
    pub fn upstream_call(&self, role: UpstreamRole, took: Duration) {
        self.upstream_duration
            .get_or_create(&RoleLabels {
                role: role.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// The route graph sent a turn to the tool branch (`to_tools`) or to chat, for `reason`.
    pub fn routed(&self, to_tools: bool, reason: RouteReason) {
        self.router_decisions
            .get_or_create(&DecisionLabels {
                decision: if to_tools { "tool" } else { "chat" },
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A call of the box's tool `tool` (its exposed name, or [`UNKNOWN_TOOL`]) ended.
    pub fn tool_call(&self, tool: &str, ok: bool) {
        self.tool_calls
            .get_or_create(&ToolLabels {
                tool: tool.to_string(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// A store write returned to its caller, its time spent as `phases` says.
    pub fn store_write(&self, phases: &StoreWritePhases) {
        let [queued, statements, commit, reply] = &self.store_write_phases;
        queued.observe(phases.queued.as_secs_f64());
        statements.observe(phases.statements.as_secs_f64());
        commit.observe(phases.commit.as_secs_f64());
        reply.observe(phases.reply.as_secs_f64());
    }

    /// Where the export follower reports how far it got.
    pub fn export_position(&self) -> ExportPosition {
        self.export_position.clone()
    }

    /// Sets what a scrape reads from the running box (once; later calls are ignored).
    pub fn set_scrape_source(&self, source: ScrapeSource) {
        let _ = self.scrape_source.set(source);
    }

    /// The whole exposition, as OpenMetrics text ([`CONTENT_TYPE`]), with the scrape-time
    /// readings taken first.
    pub async fn render(&self) -> String {
        if let Some(source) = self.scrape_source.get() {
            let readings = source().await;
            set(&self.store_size_bytes, readings.store_size_bytes);
            set(&self.store_writer_queue, readings.store_writer_queue);
            set(&self.store_wal_pages, readings.store_wal_pages);
            if let Some(gauge) = &self.export_lag_rows {
                set(gauge, readings.export_lag_rows);
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail, and every name and label here is valid.
        encode(&mut text, &self.registry).expect("metrics encode into a String");
        text
    }
}

fn set(gauge: &Gauge, value: Option<u64>) {
    if let Some(value) = value {
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    }
}

/// Something counted in a gauge while it lasts (a running turn, an open stream).
pub struct Active(Gauge);

impl Active {
    fn new(gauge: &Gauge) -> Active {
        gauge.inc();
        Active(gauge.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_under_the_prefix_with_their_labels() {
        let metrics = Metrics::new(false);
        metrics.http_request("/v1/chat/completions", 200);
        metrics.tool_call("calculator", true);
        metrics.turn_closed(false, "interrupted", Duration::from_millis(300), None);
        metrics.routed(true, RouteReason::NotUnderstood);
        let text = futures::executor::block_on(metrics.render());
        for line in [
            r#"lang_agent_http_requests_total{route="/v1/chat/completions",status="200"} 1"#,
            r#"lang_agent_tool_calls_total{tool="calculator",outcome="ok"} 1"#,
            r#"lang_agent_turn_duration_seconds_count{route_taken="chat",status="interrupted"} 1"#,
            r#"lang_agent_router_decisions_total{decision="tool",reason="not_understood"} 1"#,
            "lang_agent_interrupted_turns_total 1",
            "lang_agent_turn_ttft_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("export_lag"), "{text}");
    }

    #[test]
    fn a_guard_counts_while_it_lives_and_scrape_readings_set_the_gauges() {
        let metrics = Metrics::new(true);
        let turn = metrics.turn_running();
        let _stream = metrics.stream_open();
        metrics.set_scrape_source(Box::new(|| {
            Box::pin(async {
                Readings {
                    store_size_bytes: Some(4096),
                    store_writer_queue: Some(3),
                    store_wal_pages: Some(17),
                    export_lag_rows: Some(7),
                }
            })
        }));
        let text = futures::executor::block_on(metrics.render());
        for line in [
            "lang_agent_active_turns 1",
            "lang_agent_active_streams 1",
            "lang_agent_store_size_bytes 4096",
            "lang_agent_store_writer_queue 3",
            "lang_agent_store_wal_pages 17",
            "lang_agent_export_lag_rows 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        drop(turn);
        let text = futures::executor::block_on(metrics.render());
        assert!(text.lines().any(|l| l == "lang_agent_active_turns 0"));
    }

    #[test]
    fn the_export_position_is_unknown_until_reported() {
        let position = ExportPosition::default();
        assert_eq!(position.get(), None);
        position.exported_up_to(0);
        assert_eq!(position.get(), Some(0));
        position.exported_up_to(42);
        assert_eq!(position.clone().get(), Some(42));
    }
}

//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz): each takes arbitrary bytes,
//! runs them through the same code the server runs on untrusted input, and panics when an
//! invariant breaks, so that libFuzzer reports it with the input.
//!
//! They live in the library (hidden from its docs) rather than in `fuzz/` so that they see
//! crate-private parsing code, and so that every crash the fuzzer finds can be replayed as an
//! ordinary unit test here, under `cargo test`.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};

use crate::agent::ClientPromptMode;
use crate::agent::profile::{Profile, Profiles};
use crate::agent::turns::MemoryScope;
use crate::agent::turns::{APP_DEVICE_SEPARATOR, ThreadChoice, TurnRequest};
use crate::api::ApiSettings;
use crate::api::call::MAX_THREAD_ID_BYTES;
use crate::api::dashscope::{self, AppCall};
use crate::api::error::ApiError;
use crate::api::openai;
use crate::llm::{
    AnswerLimits, FINISH_LENGTH, LlmError, MAX_TOOL_CALLS_PER_STEP, Role, assemble_sse,
};
use crate::store::DEFAULT_PROFILE;
use crate::tools::mcp::config::{self, McpTransport};

/// App ids a DashScope call may name in its path, the awkward ones included (axum decodes
/// `%2F`, so an app id can hold a `/`).
const APP_IDS: &[&str] = &[
    "app1",
    "kitchen",
    "kitchen_speaker",
    "kit/chen",
    "a\u{7}b",
    "",
];

/// Session ids the `.../sessions/{session_id}/responses` path may carry.
const PATH_SESSIONS: &[Option<&str>] = &[None, Some("c_speaker"), Some("s/x_d/e"), Some("")];

/// Runs `data` as the body of a DashScope call, through [`dashscope::parse_call`] as the
/// handler does. The path parts, headers and settings are picked from a hash of `data`: a
/// crash replays with the same ones, and mutations still reach every combination.
pub fn dashscope_request(data: &[u8]) {
    let pick = fnv1a(data);
    let long_app_id = "x".repeat(MAX_THREAD_ID_BYTES + 1);
    let app_id = match APP_IDS.get((pick % 8) as usize) {
        Some(id) => *id,
        None => long_app_id.as_str(),
    };
    let path_session = PATH_SESSIONS[(pick >> 3) as usize % PATH_SESSIONS.len()];
    let mut headers = HeaderMap::new();
    if pick & (1 << 5) != 0 {
        headers.insert("x-dashscope-sse", HeaderValue::from_static("enable"));
    }
    let scope = if pick & (1 << 6) != 0 {
        MemoryScope::App
    } else {
        MemoryScope::Session
    };
    let settings = settings(pick & (1 << 7) != 0);
    let result = dashscope::parse_call(
        Ok(Bytes::copy_from_slice(data)),
        &headers,
        app_id,
        path_session.map(str::to_string),
        &settings,
        profiles(scope),
    );
    match result {
        Ok(call) => check_app_call(&call, app_id, path_session, &settings, scope),
        Err(error) => {
            check_client_error(&error);
            let _ = error.into_dashscope("fuzz");
        }
    }
}

/// Runs `data` as the body of an OpenAI chat completion, through [`openai::parse_call`] as
/// the handler does.
pub fn openai_request(data: &[u8]) {
    match openai::parse_call(
        Ok(Bytes::copy_from_slice(data)),
        profiles(MemoryScope::Session),
    ) {
        Ok(call) => {
            check_turn(&call.turn);
            if let ThreadChoice::Remember(id) = &call.turn.thread {
                assert!(id.len() <= MAX_THREAD_ID_BYTES, "thread id too long");
                assert!(!id.chars().any(char::is_control), "control in {id:?}");
            }
        }
        Err(error) => {
            check_client_error(&error);
            let _ = error.into_openai();
        }
    }
}

/// Runs `data` (when it is text: the file is read as a string) through the `mcp_config.json`
/// parser; whatever it accepts must be a server the box can try to reach.
pub fn mcp_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text) {
        Ok(servers) => {
            for server in servers {
                if let Some(timeout) = server.timeout {
                    assert!(
                        !timeout.is_zero() && timeout <= config::MAX_TIMEOUT,
                        "{}: timeout {timeout:?}",
                        server.name
                    );
                }
                match server.transport {
                    McpTransport::Stdio { command, .. } => {
                        assert!(!command.trim().is_empty(), "{}: no command", server.name);
                    }
                    McpTransport::StreamableHttp { url, .. } | McpTransport::Sse { url, .. } => {
                        let url = reqwest::Url::parse(&url).expect("accepted URLs parse");
                        assert!(matches!(url.scheme(), "http" | "https"), "{url}");
                    }
                }
            }
        }
        Err(message) => assert!(!message.is_empty(), "an error says what is wrong"),
    }
}

/// The answer limit the upstream target runs with: small, so the fuzzer reaches the cut.
const FUZZ_MAX_ANSWER_BYTES: usize = 2048;

/// Runs `data` as an upstream's streamed chat-completions body through [`assemble_sse`], the
/// path `LlmClient::stream` takes, cut into network chunks at the points the first byte picks
/// (so chunk boundaries fall inside lines, events and UTF-8 sequences). Checks that the answer
/// never outgrows the limit, that a cut answer says `length`, that tool calls stay within the
/// per-answer bound, and that what the client heard is exactly the stored text.
pub fn upstream_sse(data: &[u8]) {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 32) + 1;
    let chunks: Vec<Result<Bytes, LlmError>> = body
        .chunks(step)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let limits = AnswerLimits {
        max_answer_bytes: FUZZ_MAX_ANSWER_BYTES,
    };
    let mut heard = String::new();
    let result = futures::executor::block_on(assemble_sse(
        futures::stream::iter(chunks),
        limits,
        &mut |piece: &str| heard.push_str(piece),
    ));
    let Ok(done) = result else { return };
    let calls = &done.message.tool_calls;
    let size = done.message.content.len()
        + calls
            .iter()
            .map(|c| c.id.len() + c.function.name.len() + c.function.arguments.len())
            .sum::<usize>();
    assert!(size <= FUZZ_MAX_ANSWER_BYTES, "answer of {size} bytes");
    assert!(
        calls.len() <= MAX_TOOL_CALLS_PER_STEP,
        "{} tool calls",
        calls.len()
    );
    assert_eq!(
        heard, done.message.content,
        "the client heard what is stored"
    );
    if size == FUZZ_MAX_ANSWER_BYTES {
        assert_eq!(done.finish_reason.as_deref(), Some(FINISH_LENGTH));
    }
}

fn settings(fake_stream: bool) -> ApiSettings {
    ApiSettings {
        fake_stream,
        keepalive: std::time::Duration::from_secs(15),
        max_body_bytes: 1 << 20,
        metrics_open: false,
    }
}

/// The default profile under `scope`, built once per scope (parsing never runs its agent).
fn profiles(scope: MemoryScope) -> &'static Profiles {
    static SESSION: OnceLock<Profiles> = OnceLock::new();
    static APP: OnceLock<Profiles> = OnceLock::new();
    let cell = match scope {
        MemoryScope::Session => &SESSION,
        MemoryScope::App => &APP,
    };
    cell.get_or_init(|| {
        Profiles::single(Profile::for_parsing(
            DEFAULT_PROFILE,
            true,
            scope,
            ClientPromptMode::Append,
        ))
    })
}

/// What every parsed request must be: a turn the runner can store and answer.
fn check_turn(turn: &TurnRequest) {
    // A client's tool results may continue a turn without a new user message.
    let continues_tools = turn
        .new_messages
        .first()
        .is_some_and(|m| m.role == Role::Tool);
    assert!(
        continues_tools || turn.new_messages.iter().any(|m| m.role == Role::User),
        "a turn without a user message: {turn:?}"
    );
    assert!(
        turn.new_messages.iter().all(|m| m.role != Role::System),
        "system text is never stored as a message: {turn:?}"
    );
    match &turn.thread {
        ThreadChoice::Remember(id) => {
            assert!(!id.is_empty(), "empty thread id");
            // A remembered thread takes only the newest user turn, or the client's tool
            // results (and a user turn after them); its memory is the rest.
            if continues_tools {
                let (results, rest) = turn.new_messages.split_at(
                    turn.new_messages
                        .iter()
                        .take_while(|m| m.role == Role::Tool)
                        .count(),
                );
                assert!(!results.is_empty(), "{turn:?}");
                assert!(rest.iter().all(|m| m.role == Role::User), "{turn:?}");
            } else {
                assert_eq!(turn.new_messages.len(), 1, "{turn:?}");
            }
            assert!(turn.options.instructions.is_none(), "{turn:?}");
        }
        ThreadChoice::Start => {}
        ThreadChoice::Continue(id) => panic!("parsing continued {id:?}; only the runner does"),
    }
    if let Some(device) = &turn.options.device_id {
        assert!(!device.is_empty(), "empty device id");
    }
}

fn check_app_call(
    call: &AppCall,
    app_id: &str,
    path_session: Option<&str>,
    settings: &ApiSettings,
    scope: MemoryScope,
) {
    check_turn(&call.turn);
    assert!(!app_id.is_empty() && app_id.len() <= MAX_THREAD_ID_BYTES);
    assert!(!app_id.chars().any(char::is_control), "{app_id:?}");
    assert_eq!(
        call.turn.options.streaming,
        call.streaming && !settings.fake_stream,
        "fake streaming runs the turn collected"
    );
    if let Some(session) = &call.session_id {
        assert!(!session.is_empty() && session.len() <= MAX_THREAD_ID_BYTES);
        assert!(!session.chars().any(char::is_control), "{session:?}");
    }
    if call.session_id.is_none() {
        assert!(path_session.is_none_or(str::is_empty));
    }
    if let Some(device) = &call.turn.options.device_id {
        let session = call
            .session_id
            .as_deref()
            .expect("a device comes from a session id");
        assert!(
            session.ends_with(&format!("_{device}")),
            "{session} / {device}"
        );
    }
    match (&call.turn.thread, &call.session_id, scope) {
        (ThreadChoice::Start, None, _) => {}
        (ThreadChoice::Remember(id), Some(session), MemoryScope::Session) => {
            assert_eq!(id, session);
        }
        (ThreadChoice::Remember(id), Some(_), MemoryScope::App) => {
            // The name splits back into exactly the app and device it was built from.
            let parts = match id.split_once(APP_DEVICE_SEPARATOR) {
                Some((app, device)) => (app, Some(device)),
                None => (id.as_str(), None),
            };
            assert_eq!(parts, (app_id, call.turn.options.device_id.as_deref()));
        }
        (thread, session, scope) => {
            panic!("thread {thread:?} for session {session:?} under {scope:?}")
        }
    }
}

fn check_client_error(error: &ApiError) {
    let status = error.status();
    assert!(
        status.is_client_error() && status != StatusCode::UNAUTHORIZED,
        "a request the parser refuses is the client's error, not {status}: {error:?}"
    );
    assert!(!error.message.is_empty(), "{error:?}");
}

/// FNV-1a: a cheap, stable hash, so the same input always takes the same variant.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed corpus of each target, committed under `fuzz/corpus/`.
    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                (path.display().to_string(), std::fs::read(&path).unwrap())
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    #[test]
    fn dashscope_seeds_are_requests_the_server_answers() {
        let settings = settings(false);
        for (name, body) in seeds("dashscope_request") {
            dashscope_request(&body);
            let call = dashscope::parse_call(
                Ok(Bytes::from(body)),
                &HeaderMap::new(),
                "app1",
                None,
                &settings,
                profiles(MemoryScope::Session),
            );
            assert!(call.is_ok(), "{name}: {call:?}");
        }
    }

    #[test]
    fn openai_seeds_are_requests_the_server_answers() {
        for (name, body) in seeds("openai_request") {
            openai_request(&body);
            let call = openai::parse_call(Ok(Bytes::from(body)), profiles(MemoryScope::Session));
            assert!(call.is_ok(), "{name}: {call:?}");
        }
    }

    #[test]
    fn mcp_config_seeds_are_configs_the_box_accepts() {
        for (name, text) in seeds("mcp_config") {
            mcp_config(&text);
            let parsed = config::parse(std::str::from_utf8(&text).unwrap());
            assert!(parsed.is_ok(), "{name}: {parsed:?}");
        }
    }

    #[test]
    fn upstream_seeds_are_answers_the_box_assembles() {
        for (name, body) in seeds("upstream_sse") {
            upstream_sse(&body);
            let chunks = vec![Ok::<_, LlmError>(Bytes::from(body[1..].to_vec()))];
            let done = futures::executor::block_on(assemble_sse(
                futures::stream::iter(chunks),
                AnswerLimits::default(),
                &mut |_: &str| {},
            ));
            assert!(done.is_ok(), "{name}: {done:?}");
        }
    }

    /// Inputs the fuzzers found crashes with, replayed: each is fixed, and must stay fixed.
    #[test]
    fn crashes_found_by_fuzzing_stay_fixed() {
        // An MCP server timeout too large for a Duration panicked in from_secs_f64.
        mcp_config(
            br#"{"xiaozhi": {"url": "http://127.0.0.1:9000/mcp", "timeout": 116666666666666666666666666666666666666666666666666666666666666666666666666666666666666666666666,}}"#,
        );
    }

    #[test]
    fn every_app_id_and_path_session_variant_is_reached() {
        // The variant bits of the hash are spread well enough that a handful of inputs reach
        // each app id (including the long one, index 6 and 7) and each path session.
        let mut apps = [false; 8];
        let mut sessions = [false; PATH_SESSIONS.len()];
        for n in 0..256u32 {
            let pick = fnv1a(&n.to_le_bytes());
            apps[(pick % 8) as usize] = true;
            sessions[(pick >> 3) as usize % PATH_SESSIONS.len()] = true;
        }
        assert!(apps.iter().all(|&a| a) && sessions.iter().all(|&s| s));
    }
}

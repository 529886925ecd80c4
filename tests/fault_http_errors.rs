//! Errors the HTTP framework produces (unknown path, wrong method, a path that does not decode,
//! a header that is not text) come in the protocol's own shape: DashScope's
//! `{"code","message","request_id"}` on its paths, OpenAI's `{"error":{...}}` on `/v1/chat`,
//! `/v1/models` and `/v1/memory`. And a body over `--max-body-bytes` is read and answered 413
//! instead of breaking the client's pipe.

mod common;

use std::io::Write;
use std::time::Duration;

use common::raw_http::*;
use common::*;

#[derive(Clone, Copy, Debug)]
enum Shape {
    OpenAi,
    DashScope,
}

/// Asserts `response` is an error in `shape` with `status` and `code`.
fn assert_shaped(what: &str, response: &RawResponse, shape: Shape, status: u16, code: &str) {
    assert_eq!(response.status, status, "{what}: {response:?}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{what}: {response:?}"
    );
    let body = response.json();
    match shape {
        Shape::OpenAi => {
            let error = &body["error"];
            assert_eq!(error["code"], code, "{what}: {body}");
            assert!(
                error["type"].as_str().is_some_and(|t| !t.is_empty()),
                "{what}: {body}"
            );
            assert!(
                error["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: {body}"
            );
        }
        Shape::DashScope => {
            assert_eq!(body["code"], code, "{what}: {body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: {body}"
            );
            assert!(
                body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
                "{what}: {body}"
            );
            assert!(body.get("error").is_none(), "{what}: {body}");
        }
    }
}

/// `method path` with the test key (unless `headers` brings its own Authorization) and a
/// small valid body on POST.
fn request(addr: &str, method: &str, path: &str, headers: &[u8]) -> RawResponse {
    let body: &[u8] = if method == "POST" {
        br#"{"messages":[{"role":"user","content":"hi"}],"input":{"prompt":"hi"}}"#
    } else {
        b""
    };
    let mut raw =
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n").into_bytes();
    if !headers
        .windows(14)
        .any(|w| w.eq_ignore_ascii_case(b"authorization:"))
    {
        raw.extend_from_slice(format!("Authorization: Bearer {KEY}\r\n").as_bytes());
    }
    raw.extend_from_slice(headers);
    raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    raw.extend_from_slice(body);
    exchange(addr, &raw)
}

/// A request and the error it must get: method, path, extra header lines, status, code.
type Case = (&'static str, &'static str, &'static [u8], u16, &'static str);

const OPENAI_CASES: &[Case] = &[
    // Unknown paths.
    ("GET", "/v1/chat/nope", b"", 404, "not_found"),
    ("DELETE", "/v1/memory/a/b", b"", 404, "not_found"),
    // A known path, the wrong method.
    (
        "GET",
        "/v1/chat/completions",
        b"",
        405,
        "method_not_allowed",
    ),
    ("POST", "/v1/models", b"", 405, "method_not_allowed"),
    ("GET", "/v1/memory", b"", 405, "method_not_allowed"),
    // A path parameter that does not decode (percent-encoded bytes that are not UTF-8).
    ("DELETE", "/v1/memory/%ff%fe", b"", 400, "invalid_parameter"),
    // An Authorization header that is not text.
    (
        "POST",
        "/v1/chat/completions",
        BAD_AUTH,
        401,
        "invalid_api_key",
    ),
];

const DASHSCOPE_CASES: &[Case] = &[
    ("GET", "/api/apps/app1/nope", b"", 404, "NotFound"),
    (
        "GET",
        "/api/apps/app1/completion",
        b"",
        405,
        "MethodNotAllowed",
    ),
    (
        "PUT",
        "/api/v1/apps/app1/completion",
        b"",
        405,
        "MethodNotAllowed",
    ),
    (
        "POST",
        "/api/apps/%ff/completion",
        b"",
        400,
        "InvalidParameter",
    ),
    (
        "POST",
        "/api/v1/apps/a/sessions/%c3%28/responses",
        b"",
        400,
        "InvalidParameter",
    ),
    (
        "POST",
        "/api/apps/app1/completion",
        BAD_AUTH,
        401,
        "InvalidApiKey",
    ),
];

const BAD_AUTH: &[u8] = b"Authorization: Bearer \xff\xfe\r\n";

#[test]
fn framework_errors_come_in_the_protocols_shape() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &mock.base_url, &[]);
    let addr = addr_of(&server.url);
    let all = [
        (Shape::OpenAi, OPENAI_CASES),
        (Shape::DashScope, DASHSCOPE_CASES),
    ];
    for (shape, cases) in all {
        for (method, path, headers, status, code) in cases {
            let what = format!("{method} {path}");
            let response = request(&addr, method, path, headers);
            assert_shaped(&what, &response, shape, *status, code);
            if *status == 405 {
                assert!(
                    response.header("allow").is_some(),
                    "{what}: 405 names the allowed methods"
                );
            }
        }
    }
    // Headers that are not text where the API does not need them are no reason to fail.
    for path in ["/v1/chat/completions", "/api/apps/app1/completion"] {
        let response = request(
            &addr,
            "POST",
            path,
            b"Content-Type: \xff\xfe/json\r\nX-DashScope-SSE: \xff\r\nAccept: \xfe\r\n",
        );
        assert_eq!(response.status, 200, "{path}: {response:?}");
    }
    assert_eq!(get(&addr, "/health").status, 200, "still up");
}

/// Sends a `size`-byte JSON body to `path` whole before reading the answer, as Python's
/// `requests` and `urllib` do, at the pace of a slower network (so the server has read what
/// came so far before the rest arrives); fails if the pipe breaks before the answer was read.
fn send_large_body(addr: &str, path: &str, size: usize) -> RawResponse {
    let mut stream = connect(addr);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        if let Err(e) = stream.write_all(&chunk[..n]) {
            panic!("{path}: the pipe broke after {sent} of {size} bytes: {e}");
        }
        sent += n;
        std::thread::sleep(Duration::from_millis(3));
    }
    read_response(&mut stream).unwrap_or_else(|e| panic!("{path}: no 413 read: {e}"))
}

#[test]
fn a_body_over_the_limit_is_read_and_answered_413_in_the_protocols_shape() {
    let mock = Mock::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &mock.base_url,
        &["--max-body-bytes", "1048576"],
    );
    let addr = addr_of(&server.url);
    for (path, shape, code) in [
        ("/v1/chat/completions", Shape::OpenAi, "request_too_large"),
        (
            "/api/apps/app1/completion",
            Shape::DashScope,
            "RequestTooLarge",
        ),
    ] {
        let response = send_large_body(&addr, path, 3 * 1024 * 1024);
        assert_shaped(path, &response, shape, 413, code);
        assert_eq!(response.header("connection"), Some("close"), "{path}");
    }
    let count: i64 = server
        .db()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 0, "nothing of a refused body is stored");
    // A body of exactly the limit is still taken (JSON padded with spaces).
    let json = br#"{"messages": [{"role": "user", "content": "padded"}]}"#;
    let mut body = json.to_vec();
    body.resize(1024 * 1024, b' ');
    let mut raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Authorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let response = exchange(&addr, &raw);
    assert_eq!(response.status, 200, "{response:?}");
}

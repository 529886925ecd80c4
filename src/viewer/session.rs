//! Who may read: login with an API key, session cookies, CSRF tokens, and the two guards
//! (pages redirect to the login form, the API answers 401 JSON).
//!
//! These are private conversations, so by default the viewer asks for one of the server's API
//! keys (compared in constant time by [`ApiKeys`]). A successful login gets a random session
//! token in an `HttpOnly; SameSite=Strict` cookie; sessions live in memory and expire, so a
//! restart logs everyone out, which is fine for a box. Each session has its own CSRF token
//! that every state-changing form must echo. API clients may instead send
//! `Authorization: Bearer <key>`. [`Access::open`] skips all of this for a trusted LAN.
//! Wrong keys, at the login form or as a Bearer key, count against the client's address in
//! the keys' brake ([`crate::auth::throttle`]): after too many, 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Form;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::ViewerState;
use crate::auth::throttle::{self, ClientIp, Refusal};
use crate::auth::{ApiKeys, bearer_token};

/// The session cookie's name.
pub const COOKIE: &str = "lang_agent_viewer";
/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A wrong key costs this long, which makes guessing slow.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(400);

/// Who may use the viewer.
#[derive(Clone)]
pub enum Access {
    /// Whoever logs in with one of these keys.
    Login(ApiKeys),
    /// Anyone who can reach the port (trusted LAN only), with one CSRF token for the process.
    Open { csrf: String },
}

impl Access {
    /// Login with `keys`; keys that are themselves open (`--no-auth`) open the viewer too.
    pub fn login(keys: ApiKeys) -> Access {
        if keys.is_open() {
            Access::open()
        } else {
            Access::Login(keys)
        }
    }

    /// No login; deleting still needs the page's CSRF token, so other sites cannot delete.
    pub fn open() -> Access {
        Access::Open {
            csrf: random_token(),
        }
    }
}

/// The reader of a request, once let in.
#[derive(Clone, Debug)]
pub struct Reader {
    /// The token forms must echo (`None` for a Bearer API call, which has no forms).
    pub csrf: Option<String>,
    /// Logged in with a cookie (so a "Log out" button makes sense).
    pub has_session: bool,
}

impl Reader {
    /// Whether `token` is this reader's CSRF token (constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        match &self.csrf {
            Some(own) => bool::from(own.as_bytes().ct_eq(token.as_bytes())),
            None => false,
        }
    }
}

struct Session {
    csrf: String,
    expires: Instant,
}

/// Logged-in sessions, by token.
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions {
            by_token: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session; returns its token.
    fn create(&self) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut map = self.by_token.lock().expect("sessions");
        map.retain(|_, s| s.expires > now);
        map.insert(
            token.clone(),
            Session {
                csrf: random_token(),
                expires: now + SESSION_TTL,
            },
        );
        token
    }

    /// The CSRF token of a live session.
    fn csrf_of(&self, token: &str) -> Option<String> {
        let map = self.by_token.lock().expect("sessions");
        map.get(token)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    fn remove(&self, token: &str) {
        self.by_token.lock().expect("sessions").remove(token);
    }
}

/// 32 random bytes as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session cookie of a request.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// A request's credentials and where it comes from.
struct Asker<'a> {
    headers: &'a HeaderMap,
    client: IpAddr,
    path: &'a str,
}

impl<'a> Asker<'a> {
    fn of(request: &'a Request) -> Asker<'a> {
        Asker {
            headers: request.headers(),
            client: throttle::client_ip(request.extensions()),
            path: request.uri().path(),
        }
    }
}

/// Who is asking, if they may: open access, a live session cookie, or (API only) a key. A
/// wrong Bearer key counts against the address and may be braked.
fn reader_of(state: &ViewerState, asker: &Asker, allow_bearer: bool) -> Result<Reader, Refusal> {
    let keys = match &state.access {
        Access::Open { csrf } => {
            return Ok(Reader {
                csrf: Some(csrf.clone()),
                has_session: false,
            });
        }
        Access::Login(keys) => keys,
    };
    if let Some(csrf) = session_cookie(asker.headers).and_then(|t| state.sessions.csrf_of(t)) {
        return Ok(Reader {
            csrf: Some(csrf),
            has_session: true,
        });
    }
    let authorization = asker.headers.get(header::AUTHORIZATION);
    if !allow_bearer || authorization.is_none() {
        return Err(Refusal::WrongKey);
    }
    // An unreadable header, or another scheme, is a wrong key too.
    let key = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    keys.admit(key, asker.client, asker.path)?;
    Ok(Reader {
        csrf: None,
        has_session: false,
    })
}

/// Guard for pages: not logged in → the login form, coming back here afterwards.
pub async fn require_login_page(
    State(state): State<ViewerState>,
    mut request: Request,
    next: Next,
) -> Response {
    match reader_of(&state, &Asker::of(&request), false) {
        Ok(reader) => {
            request.extensions_mut().insert(reader);
            next.run(request).await
        }
        Err(_) => {
            let back = request
                .uri()
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string());
            let query = serde_urlencoded::to_string([("next", back)]).unwrap_or_default();
            Redirect::to(&format!("/login?{query}")).into_response()
        }
    }
}

/// Guard for the JSON API and the event stream: not logged in → 401 JSON.
pub async fn require_login_api(
    State(state): State<ViewerState>,
    mut request: Request,
    next: Next,
) -> Response {
    match reader_of(&state, &Asker::of(&request), true) {
        Ok(reader) => {
            request.extensions_mut().insert(reader);
            next.run(request).await
        }
        Err(refusal @ Refusal::Throttled { retry_after }) => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(serde_json::json!({
                    "error": format!(
                        "too many failed attempts from this address; try again in {} s",
                        retry_after.as_secs()
                    )
                })),
            )
                .into_response();
            refusal.add_retry_after(&mut response);
            response
        }
        Err(Refusal::WrongKey) => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({
                    "error": "login required: log in to the viewer, or send Authorization: Bearer <API key>"
                })),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    failed: bool,
    /// Seconds until a braked address may try again.
    retry_after: Option<u64>,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Where a login sends the browser: `next` when it is a path on this site, else `/`.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if is_local_path(n) => n.to_string(),
        _ => "/".to_string(),
    }
}

/// Whether `next` stays on this site however it is read. Browsers drop tabs and newlines from
/// URLs and read `\` as `/`, so `/%09/evil.example` or `/\evil.example` would leave the site;
/// and a raw CR, LF or non-ASCII character cannot go into a `Location` header at all. So:
/// visible ASCII only as written; and as written and after each round of percent-decoding
/// (until nothing changes, at most three rounds), one `/` not followed by another `/` or `\`,
/// with no control character or whitespace anywhere.
fn is_local_path(next: &str) -> bool {
    if !next.chars().all(|c| c.is_ascii_graphic()) {
        return false;
    }
    let mut text = next.to_string();
    for _ in 0..3 {
        if !starts_with_one_slash(&text)
            || text.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return false;
        }
        let decoded = percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == text {
            return true;
        }
        text = decoded;
    }
    false
}

/// `/` then anything but a second `/` or `\` (which browsers read as "another host follows").
fn starts_with_one_slash(path: &str) -> bool {
    let mut chars = path.chars();
    chars.next() == Some('/') && !matches!(chars.next(), Some('/' | '\\'))
}

pub async fn login_form(
    State(state): State<ViewerState>,
    Query(query): Query<LoginQuery>,
) -> Response {
    if matches!(state.access, Access::Open { .. }) {
        return Redirect::to("/").into_response();
    }
    render_login(
        LoginPage {
            next: safe_next(query.next.as_deref()),
            failed: false,
            retry_after: None,
        },
        StatusCode::OK,
    )
}

fn render_login(page: LoginPage, status: StatusCode) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => super::pages::failure(e.into()),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<ViewerState>,
    ClientIp(client): ClientIp,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let keys = match &state.access {
        Access::Open { .. } => return Redirect::to(&next).into_response(),
        Access::Login(keys) => keys,
    };
    match keys.admit(form.key.trim(), client, "/login") {
        Ok(()) => {}
        Err(Refusal::WrongKey) => {
            tokio::time::sleep(FAILED_LOGIN_DELAY).await;
            let page = LoginPage {
                next,
                failed: true,
                retry_after: None,
            };
            return render_login(page, StatusCode::UNAUTHORIZED);
        }
        Err(refusal @ Refusal::Throttled { retry_after }) => {
            let page = LoginPage {
                next,
                failed: true,
                retry_after: Some(retry_after.as_secs()),
            };
            let mut response = render_login(page, StatusCode::TOO_MANY_REQUESTS);
            refusal.add_retry_after(&mut response);
            return response;
        }
    }
    let token = state.sessions.create();
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The answer to a state-changing form without this session's CSRF token.
pub fn stale_form() -> Response {
    (
        StatusCode::FORBIDDEN,
        "Stale or missing form token; reload the page and try again.",
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(
    State(state): State<ViewerState>,
    axum::Extension(reader): axum::Extension<Reader>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !reader.csrf_matches(&form.csrf) {
        return stale_form();
    }
    if let Some(token) = session_cookie(&headers) {
        state.sessions.remove(token);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "lang_agent_viewer=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_follow_a_login() {
        for local in [
            "/",
            "/c/x?q=1",
            "/c/a%2Fb",
            "/c/%E4%BD%A0%E5%A5%BD?next=%2F",
            "/?q=a&page=2",
        ] {
            assert_eq!(safe_next(Some(local)), local);
        }
        for hostile in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "evil.example",
            "",
            "/%09/evil.example/",
            "/\t/evil.example/",
            "/%2F/evil.example",
            "/%2f%2fevil.example",
            "/%5Cevil.example",
            "/%252F/evil.example",
            "/%25252F%25252Fevil.example",
            "/c/x\r\nSet-Cookie: a=1",
            "/c/x%0D%0ASet-Cookie:%20a=1",
            "/c/x%00",
            "/c/%20x",
            "/ /evil.example",
            "/c/\u{7f}",
            "/c/你好",
            "/c/%C2%A0x",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn sessions_are_random_and_removable() {
        let sessions = Sessions::new();
        let a = sessions.create();
        let b = sessions.create();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(sessions.csrf_of(&a).is_some());
        assert_ne!(sessions.csrf_of(&a), sessions.csrf_of(&b));
        sessions.remove(&a);
        assert!(sessions.csrf_of(&a).is_none());
        assert!(sessions.csrf_of("made-up").is_none());
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; lang_agent_viewer=tok; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("tok"));
    }
}

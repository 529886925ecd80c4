//! The conversation viewer: server-rendered pages, the original viewer's JSON API and live
//! updates, over this box's store or a fleet's PostgreSQL.
//!
//! `serve` mounts [`router`] on its viewer port with [`Source::from_store`]; `lang-agent
//! viewer` runs it alone (`commands/viewer.rs`). Pages are askama templates (escaped by
//! default) with CSS, JS and icons embedded in the binary, so the viewer works offline and
//! with JavaScript off; the script only adds local times and live updates.
//!
//! Routes: `/` and `/c/{id}` (pages), `/c/{id}/delete` (confirm, then POST with CSRF token),
//! `/c/{id}/download`, `/fragments/*` (HTML pieces for live updates), `/login`, `/logout`,
//! `/api/conversations`, `/api/conversations/{id}/messages`, `/api/events` (SSE),
//! `/assets/*` and `/health`. Everything but `/health`, `/login` and `/assets` needs a login.
//! Given a [`BoxControl`] (`serve` has one, `lang-agent viewer` alone does not), also the box
//! page: `/box` (configuration and prompts), `/box/prompts` (save a prompt, CSRF token) and
//! `/box/try` (a try-it turn, streamed as server-sent events).

mod api;
mod assets;
mod box_control;
mod box_page;
mod box_try;
mod changes;
mod live;
mod model;
mod pages;
mod pg_source;
mod render;
mod session;
mod source;
mod sqlite_source;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::auth::ApiKeys;
use crate::store::StoreError;

pub use box_control::{BoxControl, BoxError, BoxStatus, McpServerView, ProfileView, PromptView};
pub use model::{ConversationSummary, ListFilter, ListPage, Message};
pub use session::Access;
pub use source::Source;

/// The viewer's port unless `--viewer-port` (`serve`) or `--port` (`lang-agent viewer`) says
/// otherwise.
pub const DEFAULT_PORT: u16 = 8590;

/// What went wrong in the viewer.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("watching the database file: {0}")]
    Watch(#[from] notify::Error),
    #[error("page template: {0}")]
    Template(#[from] askama::Error),
    #[error(transparent)]
    Url(#[from] crate::pg::PgUrlError),
    #[error("{} does not exist (is --db or --data-dir right?)", .0.display())]
    NoSuchFile(std::path::PathBuf),
    #[error("{0}")]
    PoolBuild(#[from] deadpool_postgres::BuildError),
    #[error("{0}")]
    Path(std::io::Error),
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Shared by every handler.
#[derive(Clone)]
struct ViewerState {
    source: Source,
    access: Access,
    sessions: Arc<session::Sessions>,
    /// The running box, when the viewer is part of `serve`: the box page is mounted.
    box_control: Option<Arc<dyn BoxControl>>,
}

/// The viewer's routes, ready to be served on their own port.
///
/// `serve` calls `router(Source::from_store(store.clone()), Access::login(keys), box_control)`,
/// or `Access::open()` with `--viewer-open`. Live updates need a tokio runtime only once a
/// browser connects. `box_control`: None leaves out the box page.
pub fn router(source: Source, access: Access, box_control: Option<Arc<dyn BoxControl>>) -> Router {
    let has_box = box_control.is_some();
    let state = ViewerState {
        source,
        access,
        sessions: Arc::new(session::Sessions::new()),
        box_control,
    };
    let mut pages = Router::new()
        .route("/", get(pages::index))
        .route("/c/{id}", get(pages::conversation))
        .route(
            "/c/{id}/delete",
            get(pages::confirm_delete).post(pages::delete),
        )
        .route("/c/{id}/download", get(pages::download))
        .route("/fragments/sidebar", get(pages::sidebar_fragment))
        .route("/fragments/messages/{id}", get(pages::messages_fragment))
        .route("/logout", post(session::logout));
    if has_box {
        pages = pages
            .route("/box", get(box_page::page))
            .route("/box/prompts", post(box_page::save_prompt))
            .route("/box/try", post(box_try::try_turn));
    }
    let pages = pages.route_layer(middleware::from_fn_with_state(
        state.clone(),
        session::require_login_page,
    ));
    let api = Router::new()
        .route("/api/conversations", get(api::conversations))
        .route("/api/conversations/{id}/messages", get(api::messages))
        .route("/api/events", get(live::events))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            session::require_login_api,
        ));
    Router::new()
        .merge(pages)
        .merge(api)
        .route("/login", get(session::login_form).post(session::login))
        .route("/health", get(api::health))
        .route("/assets/{*path}", get(assets::serve))
        .fallback(api::not_found)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// The viewer's access for `serve`: login with the server's API keys, or open with
/// `--viewer-open` (or `--no-auth`, whose keys are open), with a loud warning.
pub fn access_for_serve(keys: &ApiKeys, viewer_open: bool) -> Access {
    if viewer_open || keys.is_open() {
        tracing::warn!(
            "viewer: OPEN, NO LOGIN (--viewer-open or --no-auth). Anyone who can reach the viewer \
             port reads and can delete every conversation. Use only on a trusted LAN."
        );
        Access::open()
    } else {
        Access::login(keys.clone())
    }
}

/// Headers on every answer: only this origin's scripts and styles run, nothing frames the
/// pages, and private pages are never cached by the browser or a proxy.
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
             form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

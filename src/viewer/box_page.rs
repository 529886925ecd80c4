//! The box page: what the running box is configured with (profiles, MCP servers, local tools,
//! config errors), each profile's prompts in an editable form, and the try-it chat's form.
//!
//! Everything shows without JavaScript and saving a prompt is a plain form POST (with the
//! session's CSRF token), so the page works in any browser; only the try-it chat needs the
//! script (`assets/box.js`, served from `/box/try` by [`super::box_try`]). Nothing here sees
//! a credential: [`BoxStatus`] carries the upstream's redacted URL and the name of its key's
//! variable only.

use askama::Template;
use axum::Extension;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::ViewerState;
use super::box_control::{BoxControl, BoxError, BoxStatus};
use super::pages::failure;
use super::render::{path_segment, with_query};
use super::session::{Reader, stale_form};

/// A prompt the reader tried to save and could not, shown beside its form.
struct RefusedSave {
    profile: String,
    prompt: String,
    message: String,
}

#[derive(Template)]
#[template(path = "box.html")]
struct BoxPage {
    status: BoxStatus,
    csrf: String,
    has_session: bool,
    /// "Saved …", after a save.
    notice: Option<String>,
    /// The (profile, prompt) just saved, whose form says so too.
    saved: Option<(String, String)>,
    refused: Option<RefusedSave>,
}

impl BoxPage {
    /// The id of a prompt's form, which a save links back to.
    fn prompt_anchor(&self, profile: &str, prompt: &str) -> String {
        prompt_anchor(profile, prompt)
    }

    /// Whether this prompt's form was the one just saved.
    fn was_saved(&self, profile: &str, prompt: &str) -> bool {
        self.saved
            .as_ref()
            .is_some_and(|(pf, pr)| pf == profile && pr == prompt)
    }

    /// The refusal for this prompt's form, if its save was refused.
    fn refusal_of(&self, profile: &str, prompt: &str) -> Option<&str> {
        self.refused
            .as_ref()
            .filter(|r| r.profile == profile && r.prompt == prompt)
            .map(|r| r.message.as_str())
    }
}

fn prompt_anchor(profile: &str, prompt: &str) -> String {
    format!("prompt-{profile}-{prompt}")
}

/// The box; the routes are mounted only when there is one.
pub(super) fn box_of(state: &ViewerState) -> &dyn BoxControl {
    state
        .box_control
        .as_deref()
        .expect("the box routes are mounted only with a BoxControl")
}

fn render(page: &BoxPage, status: StatusCode) -> Response {
    match page.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => failure(e.into()),
    }
}

/// After a save, which prompt was saved (for the notice).
#[derive(Deserialize, Default)]
pub struct SavedQuery {
    #[serde(default)]
    saved_profile: String,
    #[serde(default)]
    saved_prompt: String,
}

/// `GET /box`.
pub async fn page(
    State(state): State<ViewerState>,
    Extension(reader): Extension<Reader>,
    Query(saved): Query<SavedQuery>,
) -> Response {
    let notice = (!saved.saved_prompt.is_empty()).then(|| {
        format!(
            "Saved {} of profile {}; the previous text is kept as a .bak file.",
            saved.saved_prompt, saved.saved_profile
        )
    });
    let page = BoxPage {
        status: box_of(&state).status(),
        csrf: reader.csrf.clone().unwrap_or_default(),
        has_session: reader.has_session,
        notice,
        saved: Some((saved.saved_profile, saved.saved_prompt)),
        refused: None,
    };
    render(&page, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct PromptForm {
    #[serde(default)]
    profile: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /box/prompts`: saves one prompt, then back to the page (303) with a notice; a
/// refused text comes back in its form with the reason (400).
pub async fn save_prompt(
    State(state): State<ViewerState>,
    Extension(reader): Extension<Reader>,
    Form(form): Form<PromptForm>,
) -> Response {
    if !reader.csrf_matches(&form.csrf) {
        return stale_form();
    }
    // Browsers send textarea lines as CRLF; the file keeps the operator's plain newlines.
    let text = form.text.replace("\r\n", "\n");
    let control = box_of(&state);
    let error = match control.save_prompt(&form.profile, &form.prompt, &text) {
        Ok(()) => {
            let query = serde_urlencoded::to_string([
                ("saved_profile", form.profile.as_str()),
                ("saved_prompt", form.prompt.as_str()),
            ])
            .unwrap_or_default();
            let anchor = prompt_anchor(&form.profile, &form.prompt);
            let target = format!("{}#{}", with_query("/box", &query), path_segment(&anchor));
            return Redirect::to(&target).into_response();
        }
        Err(e) => e,
    };
    let code = match &error {
        BoxError::Io(e) if e.kind() != std::io::ErrorKind::InvalidInput => {
            tracing::error!("box page: saving {}/{}: {e}", form.profile, form.prompt);
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let mut status = control.status();
    // The refused text stays in its form, so the reader's edit is not lost.
    for profile in status
        .profiles
        .iter_mut()
        .filter(|p| p.name == form.profile)
    {
        for prompt in profile.prompts.iter_mut().filter(|p| p.name == form.prompt) {
            prompt.text = text.clone();
        }
    }
    let page = BoxPage {
        status,
        csrf: reader.csrf.clone().unwrap_or_default(),
        has_session: reader.has_session,
        notice: None,
        saved: None,
        refused: Some(RefusedSave {
            profile: form.profile,
            prompt: form.prompt,
            message: error.to_string(),
        }),
    };
    render(&page, code)
}

//! The HTML pages: the conversation list with filters, one conversation as a chat, delete
//! confirmation, JSON download, and the HTML fragments the script swaps in on live updates.
//!
//! Every page is complete without JavaScript: filters are a GET form, paging and delete are
//! links and forms. Text reaches the templates as plain strings and askama escapes it.

use askama::Template;
use axum::Extension;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::api::ApiMessage;
use super::model::ListFilter;
use super::render::{
    ConversationRow, MessageBubble, conversation_href, conversation_row, message_bubble,
    path_segment, with_query,
};
use super::session::{CsrfForm, Reader, stale_form};
use super::{ViewerError, ViewerState};

/// Conversations per page of the list.
pub const PAGE_SIZE: u64 = 50;

/// The list's filters as they travel in URLs (all text, so a half-filled form never fails).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct ListParams {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    q: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    device: String,
    #[serde(default, rename = "box", skip_serializing_if = "String::is_empty")]
    box_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    to: String,
    /// The reader's UTC offset in minutes as JavaScript gives it (UTC − local), so dates mean
    /// the reader's days; without the script, days are UTC days.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    tz: String,
    /// `1`: also list stateless conversations of one exchange (helper calls), hidden by
    /// default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    stateless: String,
    #[serde(default, skip_serializing)]
    page: String,
    /// Fragments only: the conversation open beside the list.
    #[serde(default, skip_serializing)]
    selected: String,
}

impl ListParams {
    /// The filters as a query string (without the page), for links that keep them.
    fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    fn page(&self) -> u64 {
        self.page.trim().parse::<u64>().unwrap_or(1).max(1)
    }

    fn is_filtered(&self) -> bool {
        [&self.q, &self.device, &self.box_id, &self.from, &self.to]
            .iter()
            .any(|v| !v.trim().is_empty())
            || self.one_shot_stateless()
    }

    fn one_shot_stateless(&self) -> bool {
        matches!(self.stateless.trim(), "1" | "on" | "true")
    }

    fn filter(&self) -> ListFilter {
        let nonempty = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let offset_minutes = self
            .tz
            .trim()
            .parse::<i64>()
            .unwrap_or(0)
            .clamp(-14 * 60, 14 * 60);
        let day_start = |text: &str| {
            NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .ok()
                .map(|d| {
                    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
                        + Duration::minutes(offset_minutes)
                })
        };
        ListFilter {
            search: nonempty(&self.q),
            device: nonempty(&self.device),
            box_id: nonempty(&self.box_id),
            updated_from: day_start(&self.from),
            updated_before: day_start(&self.to).map(|t| t + Duration::days(1)),
            one_shot_stateless: self.one_shot_stateless(),
            offset: (self.page() - 1) * PAGE_SIZE,
            limit: PAGE_SIZE,
        }
    }
}

/// A choice in a filter's drop-down.
pub struct Choice {
    value: String,
    selected: bool,
}

/// The filter form as filled in.
struct FilterForm {
    q: String,
    from: String,
    to: String,
    tz: String,
    devices: Vec<Choice>,
    boxes: Vec<Choice>,
    /// One-exchange stateless conversations are listed too.
    one_shot_stateless: bool,
    active: bool,
    /// Something besides the search box is set, so the filter drawer starts open.
    secondary: bool,
}

/// The list beside every page, and the sidebar fragment.
struct SidebarList {
    rows: Vec<ConversationRow>,
    range_text: String,
    newer_href: Option<String>,
    older_href: Option<String>,
    filtered: bool,
}

/// One conversation, open in the main pane.
struct OpenConversation {
    id: String,
    title: String,
    box_badge: Option<String>,
    device: Option<String>,
    message_count: usize,
    href: String,
    delete_href: String,
    download_href: String,
    fragment_href: String,
    last_seq: i64,
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    filters: FilterForm,
    list: SidebarList,
    filter_qs: String,
    csrf: String,
    has_session: bool,
    /// The viewer is part of a running box: link its box page.
    has_box: bool,
    conversation: Option<OpenConversation>,
    messages: Vec<MessageBubble>,
    confirm_delete: bool,
}

#[derive(Template)]
#[template(path = "sidebar_list.html")]
struct SidebarFragment {
    list: SidebarList,
}

#[derive(Template)]
#[template(path = "messages.html")]
struct MessagesFragment {
    messages: Vec<MessageBubble>,
}

/// A 500 for a failure, with the reason in the log rather than on the page.
pub fn failure(e: ViewerError) -> Response {
    tracing::error!("viewer: {e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "The viewer could not read the conversation log; see the server log.",
    )
        .into_response()
}

fn html(template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => failure(e.into()),
    }
}

/// The list for `params`, with drop-down choices and paging links relative to `base`.
async fn sidebar(
    state: &ViewerState,
    params: &ListParams,
    base: &str,
    selected: Option<&str>,
) -> Result<(FilterForm, SidebarList), ViewerError> {
    let filter = params.filter();
    let (page, devices, boxes) = futures::try_join!(
        state.source.list(&filter),
        state.source.devices(),
        state.source.boxes(),
    )?;
    let filter_qs = params.query();
    let rows = page
        .conversations
        .iter()
        .map(|c| conversation_row(c, &boxes, &filter_qs, selected))
        .collect::<Vec<_>>();
    let page_no = params.page();
    let page_href = |n: u64| {
        let mut query = filter_qs.clone();
        if n > 1 {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&format!("page={n}"));
        }
        with_query(base, &query)
    };
    let shown_to = filter.offset + rows.len() as u64;
    let range_text = match page.total {
        0 => String::new(),
        total if rows.is_empty() => format!("{total} conversations"),
        total => format!("{}–{} of {total}", filter.offset + 1, shown_to),
    };
    let list = SidebarList {
        newer_href: (page_no > 1).then(|| page_href(page_no - 1)),
        older_href: (shown_to < page.total).then(|| page_href(page_no + 1)),
        rows,
        range_text,
        filtered: params.is_filtered(),
    };
    let choices = |values: Vec<String>, current: &str| {
        values
            .into_iter()
            .map(|value| Choice {
                selected: value == current,
                value,
            })
            .collect()
    };
    let form = FilterForm {
        q: params.q.clone(),
        from: params.from.clone(),
        to: params.to.clone(),
        tz: params.tz.clone(),
        devices: choices(devices, params.device.trim()),
        boxes: choices(boxes, params.box_id.trim()),
        one_shot_stateless: params.one_shot_stateless(),
        active: params.is_filtered(),
        secondary: [&params.device, &params.box_id, &params.from, &params.to]
            .iter()
            .any(|v| !v.trim().is_empty())
            || params.one_shot_stateless(),
    };
    Ok((form, list))
}

/// `GET /`: the list, nothing open.
pub async fn index(
    State(state): State<ViewerState>,
    Extension(reader): Extension<Reader>,
    Query(params): Query<ListParams>,
) -> Response {
    match sidebar(&state, &params, "/", None).await {
        Ok((filters, list)) => html(&IndexPage {
            filters,
            list,
            filter_qs: params.query(),
            csrf: reader.csrf.clone().unwrap_or_default(),
            has_session: reader.has_session,
            has_box: state.box_control.is_some(),
            conversation: None,
            messages: Vec::new(),
            confirm_delete: false,
        }),
        Err(e) => failure(e),
    }
}

async fn conversation_page(
    state: &ViewerState,
    reader: &Reader,
    params: &ListParams,
    id: &str,
    confirm_delete: bool,
) -> Response {
    let base = format!("/c/{}", path_segment(id));
    let (side, messages) = futures::join!(
        sidebar(state, params, &base, Some(id)),
        state.source.messages(id, 0)
    );
    let ((filters, list), messages) = match (side, messages) {
        (Ok(side), Ok(messages)) => (side, messages),
        (Err(e), _) | (_, Err(e)) => return failure(e),
    };
    if messages.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "No such conversation (it may have been deleted).",
        )
            .into_response();
    }
    let filter_qs = params.query();
    let boxes = state.source.boxes().await.unwrap_or_default();
    let search = params.filter().search;
    let row = conversation_row(
        &super::model::ConversationSummary {
            conversation_id: id.to_string(),
            device_id: list
                .rows
                .iter()
                .find(|r| r.id == id)
                .and_then(|r| r.device.clone())
                .or_else(|| super::model::device_from_session_id(id).map(str::to_string)),
            message_count: messages.len() as i64,
            last_updated: messages.last().map(|m| m.created_at).unwrap_or_default(),
            // Only the title and device of this row are shown.
            stateless: false,
            preview: String::new(),
        },
        &boxes,
        &filter_qs,
        None,
    );
    let segment = path_segment(id);
    let open = OpenConversation {
        id: id.to_string(),
        title: row.title,
        box_badge: row.box_badge,
        device: row.device,
        message_count: messages.len(),
        href: conversation_href(id, &filter_qs),
        delete_href: with_query(&format!("/c/{segment}/delete"), &filter_qs),
        download_href: format!("/c/{segment}/download"),
        fragment_href: with_query(&format!("/fragments/messages/{segment}"), &filter_qs),
        last_seq: messages.last().map_or(0, |m| m.sequence_number),
    };
    let bubbles = messages
        .iter()
        .map(|m| message_bubble(m, search.as_deref()))
        .collect();
    html(&IndexPage {
        filters,
        list,
        filter_qs,
        csrf: reader.csrf.clone().unwrap_or_default(),
        has_session: reader.has_session,
        has_box: state.box_control.is_some(),
        conversation: Some(open),
        messages: bubbles,
        confirm_delete,
    })
}

/// `GET /c/{id}`: one conversation as a chat, beside the list.
pub async fn conversation(
    State(state): State<ViewerState>,
    Extension(reader): Extension<Reader>,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
) -> Response {
    conversation_page(&state, &reader, &params, &id, false).await
}

/// `GET /c/{id}/delete`: "are you sure?" (works without JavaScript).
pub async fn confirm_delete(
    State(state): State<ViewerState>,
    Extension(reader): Extension<Reader>,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
) -> Response {
    conversation_page(&state, &reader, &params, &id, true).await
}

/// `POST /c/{id}/delete`: deletes, if the form carries this session's CSRF token.
pub async fn delete(
    State(state): State<ViewerState>,
    Extension(reader): Extension<Reader>,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !reader.csrf_matches(&form.csrf) {
        return stale_form();
    }
    match state.source.delete(&id).await {
        Ok(_) => Redirect::to(&with_query("/", &params.query())).into_response(),
        Err(e) => failure(e),
    }
}

/// `GET /c/{id}/download`: the conversation as a JSON file, messages in the API's shape.
pub async fn download(State(state): State<ViewerState>, Path(id): Path<String>) -> Response {
    let messages = match state.source.messages(&id, 0).await {
        Ok(m) if m.is_empty() => {
            return (StatusCode::NOT_FOUND, "No such conversation.").into_response();
        }
        Ok(m) => m,
        Err(e) => return failure(e),
    };
    let body = serde_json::json!({
        "conversation_id": id,
        "messages": messages.iter().map(ApiMessage::from).collect::<Vec<_>>(),
    });
    let safe_name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut response = axum::Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"conversation-{safe_name}.json\""
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// `GET /fragments/sidebar`: the list alone, for the script to swap in on a live update.
pub async fn sidebar_fragment(
    State(state): State<ViewerState>,
    Query(params): Query<ListParams>,
) -> Response {
    let selected = Some(params.selected.as_str()).filter(|s| !s.is_empty());
    let base = selected.map_or("/".to_string(), |id| format!("/c/{}", path_segment(id)));
    match sidebar(&state, &params, &base, selected).await {
        Ok((_, list)) => html(&SidebarFragment { list }),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
pub struct AfterQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    q: String,
}

/// `GET /fragments/messages/{id}?after=N`: the bubbles after message N, for live updates.
pub async fn messages_fragment(
    State(state): State<ViewerState>,
    Path(id): Path<String>,
    Query(query): Query<AfterQuery>,
) -> Response {
    let search = Some(query.q.trim()).filter(|q| !q.is_empty());
    match state.source.messages(&id, query.after).await {
        Ok(messages) => html(&MessagesFragment {
            messages: messages.iter().map(|m| message_bubble(m, search)).collect(),
        }),
        Err(e) => failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_the_readers_days() {
        let params = ListParams {
            from: "2024-05-01".into(),
            to: "2024-05-01".into(),
            tz: "-480".into(), // UTC+8
            ..Default::default()
        };
        let filter = params.filter();
        assert_eq!(
            filter.updated_from.unwrap().to_rfc3339(),
            "2024-04-30T16:00:00+00:00"
        );
        assert_eq!(
            filter.updated_before.unwrap().to_rfc3339(),
            "2024-05-01T16:00:00+00:00"
        );
    }

    #[test]
    fn filters_survive_in_links_but_the_page_does_not() {
        let params = ListParams {
            q: "a b&c".into(),
            device: "d1".into(),
            page: "3".into(),
            ..Default::default()
        };
        assert_eq!(params.query(), "q=a+b%26c&device=d1");
        let helpers = ListParams {
            stateless: "1".into(),
            page: "2".into(),
            ..Default::default()
        };
        assert_eq!(helpers.query(), "stateless=1");
        assert!(helpers.filter().one_shot_stateless);
        assert!(!ListParams::default().filter().one_shot_stateless);
        assert_eq!(params.filter().offset, 2 * PAGE_SIZE);
        assert_eq!(ListParams::default().filter().offset, 0);
    }
}

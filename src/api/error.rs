//! The API's one error type, and its two renderings.
//!
//! Every failure a client can see is an [`ApiError`]: a kind (which fixes the HTTP status and
//! the protocol's error code) and a message. DashScope clients get
//! `{"code","message","request_id"}` with DashScope's code names; OpenAI clients get
//! `{"error":{"message","type","code"}}`. Handlers pick the rendering, never the status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::agent::turns::TurnError;
use crate::llm::LlmError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidParameter,
    InvalidApiKey,
    NotFound,
    MethodNotAllowed,
    /// The client did not send its request body in time.
    RequestTimeout,
    TooLarge,
    Throttling,
    Interrupted,
    Upstream,
    /// The upstream or the turn's own deadline ran out.
    Timeout,
    /// The box cannot take the turn now (its store cannot write); retrying later may work.
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request parameter at fault, when there is one (OpenAI's `param`).
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            param: None,
        }
    }
    /// The same error, naming the request parameter at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidParameter, message)
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(ErrorKind::InvalidApiKey, "Invalid API-key provided.")
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::InvalidParameter => StatusCode::BAD_REQUEST,
            ErrorKind::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Throttling => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Interrupted => StatusCode::CONFLICT,
            ErrorKind::Upstream => StatusCode::BAD_GATEWAY,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// DashScope's name for the error.
    pub fn dashscope_code(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidParameter => "InvalidParameter",
            ErrorKind::InvalidApiKey => "InvalidApiKey",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::MethodNotAllowed => "MethodNotAllowed",
            ErrorKind::RequestTimeout => "RequestTimeOut",
            ErrorKind::TooLarge => "RequestTooLarge",
            ErrorKind::Throttling => "Throttling",
            ErrorKind::Interrupted => "RequestInterrupted",
            ErrorKind::Timeout => "RequestTimeOut",
            ErrorKind::Unavailable => "ServiceUnavailable",
            ErrorKind::Upstream | ErrorKind::Internal => "InternalError",
        }
    }

    /// OpenAI's `type` and `code` for the error.
    fn openai_type_and_code(&self) -> (&'static str, &'static str) {
        match self.kind {
            ErrorKind::InvalidParameter => ("invalid_request_error", "invalid_parameter"),
            ErrorKind::InvalidApiKey => ("invalid_request_error", "invalid_api_key"),
            ErrorKind::NotFound => ("invalid_request_error", "not_found"),
            ErrorKind::MethodNotAllowed => ("invalid_request_error", "method_not_allowed"),
            ErrorKind::RequestTimeout => ("invalid_request_error", "request_timeout"),
            ErrorKind::TooLarge => ("invalid_request_error", "request_too_large"),
            ErrorKind::Throttling => ("rate_limit_error", "rate_limit_exceeded"),
            ErrorKind::Interrupted => ("server_error", "interrupted"),
            ErrorKind::Upstream => ("server_error", "upstream_error"),
            ErrorKind::Timeout => ("timeout_error", "timeout"),
            ErrorKind::Unavailable => ("server_error", "service_unavailable"),
            ErrorKind::Internal => ("server_error", "internal_error"),
        }
    }

    pub fn dashscope_body(&self, request_id: &str) -> serde_json::Value {
        json!({"code": self.dashscope_code(), "message": self.message, "request_id": request_id})
    }

    pub fn openai_body(&self) -> serde_json::Value {
        let (kind, code) = self.openai_type_and_code();
        let mut body = json!({"error": {"message": self.message, "type": kind, "code": code}});
        if let Some(param) = &self.param {
            body["error"]["param"] = json!(param);
        }
        body
    }

    pub fn into_dashscope(self, request_id: &str) -> Response {
        (self.status(), Json(self.dashscope_body(request_id))).into_response()
    }

    pub fn into_openai(self) -> Response {
        let mut body = self.openai_body();
        if self.kind == ErrorKind::InvalidApiKey {
            // OpenAI's own wording, which clients and their docs match on.
            body["error"]["message"] = "Incorrect API key provided.".into();
        }
        (self.status(), Json(body)).into_response()
    }
}

impl From<&TurnError> for ApiError {
    fn from(error: &TurnError) -> ApiError {
        match error {
            TurnError::Model(llm) => {
                let kind = match llm {
                    LlmError::Status { status: 429, .. } => ErrorKind::Throttling,
                    LlmError::Timeout => ErrorKind::Timeout,
                    _ => ErrorKind::Upstream,
                };
                ApiError::new(kind, llm.to_string())
            }
            TurnError::Timeout { .. } => ApiError::new(ErrorKind::Timeout, error.to_string()),
            TurnError::Store(_) => ApiError::new(ErrorKind::Unavailable, error.to_string()),
            TurnError::Interrupted | TurnError::ClientStalled { .. } => {
                ApiError::new(ErrorKind::Interrupted, error.to_string())
            }
            TurnError::Aborted => ApiError::new(ErrorKind::Internal, error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_protocol_shapes() {
        let e = ApiError::unauthorized();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            e.dashscope_body("r1"),
            json!({"code":"InvalidApiKey","message":"Invalid API-key provided.","request_id":"r1"})
        );
        assert_eq!(e.openai_body()["error"]["code"], "invalid_api_key");
    }

    #[test]
    fn upstream_throttling_stays_throttling() {
        let e = ApiError::from(&TurnError::Model(LlmError::Status {
            status: 429,
            message: "slow down".into(),
        }));
        assert_eq!(
            (e.status(), e.dashscope_code()),
            (StatusCode::TOO_MANY_REQUESTS, "Throttling")
        );
        let e = ApiError::from(&TurnError::Model(LlmError::Unreachable("refused".into())));
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn timeouts_are_504_and_store_failures_503_in_both_shapes() {
        for e in [
            ApiError::from(&TurnError::Model(LlmError::Timeout)),
            ApiError::from(&TurnError::Timeout {
                after: std::time::Duration::from_secs(120),
            }),
        ] {
            assert_eq!(
                (e.status(), e.dashscope_code()),
                (StatusCode::GATEWAY_TIMEOUT, "RequestTimeOut")
            );
            assert_eq!(
                e.openai_body()["error"],
                json!({"message": e.message, "type": "timeout_error", "code": "timeout"})
            );
        }
        let e = ApiError::from(&TurnError::Store("the data disk is full".into()));
        assert_eq!(
            (e.status(), e.dashscope_code()),
            (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        );
        assert!(e.message.contains("the data disk is full"), "{}", e.message);
        assert_eq!(
            (
                &e.openai_body()["error"]["type"],
                &e.openai_body()["error"]["code"]
            ),
            (&json!("server_error"), &json!("service_unavailable"))
        );
    }
}

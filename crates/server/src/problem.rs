//! The one place that maps errors to HTTP status codes and RFC 9457 problem documents.
//!
//! Internal details (database messages, I/O errors) go to the log with the request id; the client
//! gets a generic detail and the request id to quote.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mayfly_domain::decide::Step;
use mayfly_store::StoreError;
use serde_json::{Value, json};

tokio::task_local! {
    /// Id of the request being served, set by the API's request id middleware.
    pub static CURRENT_REQUEST_ID: String;
}

/// Returns the id of the request being served, or a new one outside a request.
pub fn current_request_id() -> String {
    CURRENT_REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| crate::clock::new_request_id())
}

/// Content type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error returned to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body or a parameter is malformed or fails validation.
    #[error("{detail}")]
    Invalid {
        detail: String,
        field: Option<String>,
        value: Option<String>,
    },
    /// Authentication is missing or wrong (admin API).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's role does not allow the operation.
    #[error("{0}")]
    Forbidden(String),
    /// The named resource does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    /// The change conflicts with existing state.
    #[error("{detail}")]
    Conflict {
        detail: String,
        referrers: Vec<(String, String)>,
    },
    /// The body is larger than the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// A credential request was denied. Only the step and request id reach the caller.
    #[error("credential request denied at step {step}")]
    Denied { step: Step, request_id: String },
    /// Storage is unavailable; the operation did not happen.
    #[error("storage unavailable")]
    Unavailable { request_id: String },
    /// An unexpected failure, logged with its detail.
    #[error("internal error")]
    Internal { request_id: String },
}

impl ApiError {
    pub fn invalid(field: &str, value: &str, reason: &str) -> ApiError {
        let detail = if value.is_empty() {
            format!("{field}: {reason}")
        } else {
            format!("{field} {value:?}: {reason}")
        };
        ApiError::Invalid {
            detail,
            field: Some(field.to_string()),
            value: Some(value.to_string()),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            detail: detail.into(),
            field: None,
            value: None,
        }
    }

    /// Maps a store error, logging the detail of failures the client must not see. `context`
    /// names the operation in the log; the request id is the one of the request being served.
    pub fn from_store(error: StoreError, context: &str) -> ApiError {
        let request_id = current_request_id();
        let request_id = request_id.as_str();
        match error {
            StoreError::NotFound { kind, name } => ApiError::NotFound { kind, name },
            StoreError::ReferencedBy {
                kind,
                name,
                mut referrers,
            } => {
                referrers.sort();
                referrers.dedup();
                let list: Vec<String> = referrers
                    .iter()
                    .map(|r| format!("{} {:?}", r.kind, r.name))
                    .collect();
                ApiError::Conflict {
                    detail: format!(
                        "{kind} {name:?} is referenced by {}; change or delete those first",
                        list.join(", ")
                    ),
                    referrers: referrers.into_iter().map(|r| (r.kind, r.name)).collect(),
                }
            }
            StoreError::DanglingReference {
                kind,
                name,
                ref_kind,
                ref_name,
            } => ApiError::Invalid {
                detail: format!(
                    "{kind} {name:?} refers to {ref_kind} {ref_name:?}, which does not exist"
                ),
                field: None,
                value: Some(ref_name),
            },
            StoreError::AlreadyExists { kind, name } => ApiError::Conflict {
                detail: format!("{kind} {name:?} already exists"),
                referrers: Vec::new(),
            },
            other => {
                tracing::error!(request_id, context, error = %other, "store operation failed");
                ApiError::Unavailable {
                    request_id: request_id.to_string(),
                }
            }
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Denied {
                step: Step::Evidence,
                ..
            } => StatusCode::UNAUTHORIZED,
            ApiError::Denied {
                step: Step::Audit, ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Denied { .. } => StatusCode::FORBIDDEN,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid-request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound { .. } => "not-found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::TooLarge { .. } => "body-too-large",
            ApiError::Denied { .. } => "credential-denied",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal { .. } => "internal",
        }
    }

    /// Builds the problem document.
    pub fn to_problem(&self) -> Value {
        let status = self.status();
        let mut problem = json!({
            "type": format!("urn:mayfly:problem:{}", self.slug()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        match self {
            ApiError::Invalid { field, value, .. } => {
                if let Some(field) = field {
                    problem["field"] = json!(field);
                }
                if let Some(value) = value {
                    problem["value"] = json!(value);
                }
            }
            ApiError::Conflict { referrers, .. } if !referrers.is_empty() => {
                let list: Vec<Value> = referrers
                    .iter()
                    .map(|(kind, name)| json!({"kind": kind, "name": name}))
                    .collect();
                problem["referrers"] = Value::Array(list);
            }
            ApiError::Denied { step, request_id } => {
                problem["step"] = json!(step.as_str());
                problem["request_id"] = json!(request_id);
            }
            ApiError::Unavailable { request_id } | ApiError::Internal { request_id } => {
                problem["request_id"] = json!(request_id);
            }
            _ => {}
        }
        problem
    }
}

/// The reason an admin token, join token or agent credential was rejected, put into the response's
/// extensions so the API's logging middleware can log it with the route and source address.
#[derive(Debug, Clone)]
pub struct RejectedCredential(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = self.to_problem().to_string();
        let rejected = match &self {
            ApiError::Unauthorized(reason) => Some(RejectedCredential(reason.clone())),
            _ => None,
        };
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(rejected) = rejected {
            response.extensions_mut().insert(rejected);
        }
        response
    }
}

/// Maps axum's JSON extractor rejections to problems that quote serde's message (which names
/// the field and the line and column).
pub fn json_rejection(
    rejection: axum::extract::rejection::JsonRejection,
    limit: usize,
) -> ApiError {
    use axum::extract::rejection::JsonRejection;
    match rejection {
        JsonRejection::BytesRejection(inner) if inner.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge { limit }
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
            "the request body must be JSON with Content-Type: application/json",
        ),
        other => ApiError::bad_request(format!("invalid JSON body: {}", other.body_text())),
    }
}

/// Maps a raw body rejection to 413 when the body is over the limit, and to 400 otherwise.
pub fn bytes_rejection(
    rejection: axum::extract::rejection::BytesRejection,
    limit: usize,
) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge { limit }
    } else {
        ApiError::bad_request(format!(
            "reading the request body failed: {}",
            rejection.body_text()
        ))
    }
}

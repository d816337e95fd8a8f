//! Errors of API calls, including the server's RFC 9457 problem documents.

use serde::Deserialize;
use serde_json::Value;

use crate::output::clean_text;

/// A resource named in a problem, such as one that still references the resource to delete.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Referrer {
    pub kind: String,
    pub name: String,
}

/// An `application/problem+json` error body. Every field is optional so that a partial document
/// still yields the parts it has.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: Option<String>,
    pub title: Option<String>,
    pub status: Option<u16>,
    pub detail: Option<String>,
    /// The request field at fault.
    pub field: Option<String>,
    /// The rejected value.
    pub value: Option<Value>,
    /// Resources that reference the one a request tried to delete (409 responses).
    pub referrers: Vec<Referrer>,
    /// The id the server logged the request under, for the operator to look up.
    pub request_id: Option<String>,
    /// The failing step of a denied credential request.
    pub step: Option<String>,
}

impl Problem {
    /// Returns the most specific message: `detail`, else `title`, else the status, cleaned of
    /// control characters.
    pub fn message(&self) -> String {
        let text = match (&self.detail, &self.title, self.status) {
            (Some(detail), _, _) if !detail.is_empty() => detail.clone(),
            (_, Some(title), _) if !title.is_empty() => title.clone(),
            (_, _, Some(status)) => format!("request failed with HTTP status {status}"),
            _ => "request failed".to_string(),
        };
        clean_text(&text)
    }

    /// Lines that follow the `error:` line: referrers, then the request id.
    pub fn context_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for referrer in &self.referrers {
            lines.push(format!(
                "  referenced by {} {:?}",
                clean_text(&referrer.kind),
                clean_text(&referrer.name)
            ));
        }
        if let Some(request_id) = &self.request_id {
            lines.push(format!("  request id: {}", clean_text(request_id)));
        }
        lines
    }
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server address is not an http:// or https:// URL.
    #[error(
        "invalid server address {address:?}: expected an http:// or https:// URL such as http://127.0.0.1:8750; check --addr or MAYFLY_ADDR"
    )]
    InvalidAddress { address: String },
    /// A name given on the command line would change the request path instead of naming a
    /// resource in it.
    #[error("invalid name {value:?}: a name must not be empty, \".\" or \"..\"")]
    InvalidPathSegment { value: String },
    /// The `--ca-file` could not be read or contains no PEM certificate.
    #[error("invalid CA file {path}: {reason}; check --ca-file or MAYFLY_CACERT")]
    CaFile { path: String, reason: String },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {reason}")]
    ClientSetup { reason: String },
    /// No connection could be made: refused, unresolvable host or failed TLS handshake.
    #[error(
        "cannot connect to the mayfly server at {address}: {reason}; check MAYFLY_ADDR (or --addr) and that the server is running"
    )]
    Connect { address: String, reason: String },
    /// The TLS handshake failed on the server's certificate.
    #[error(
        "TLS connection to the mayfly server at {address} failed: {reason}; if the server uses a private CA, pass its certificate with --ca-file or MAYFLY_CACERT"
    )]
    Tls { address: String, reason: String },
    /// The server did not respond in time.
    #[error("request to the mayfly server at {address} timed out after {seconds}s")]
    Timeout { address: String, seconds: u64 },
    /// The request failed after the connection was made.
    #[error("request to the mayfly server at {address} failed: {reason}")]
    Request { address: String, reason: String },
    /// The server responded with a problem document.
    #[error("{}", problem.message())]
    Problem { status: u16, problem: Box<Problem> },
    /// The server responded with an error status but no problem document.
    #[error("server returned HTTP status {status}: {body}")]
    UnexpectedStatus { status: u16, body: String },
    /// A success response did not hold valid JSON.
    #[error("invalid JSON in the server's response: {reason}")]
    InvalidJson { reason: String },
}

/// A response before decoding: its status and body, from HTTP or from the workload socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The `x-request-id` response header, used when a problem document lacks `request_id`.
    pub request_id: Option<String>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Decodes a success body as JSON (an empty body is `null`), or an error status as
    /// [`ApiError::Problem`] when the body is a problem document.
    pub fn into_json(self) -> Result<Value, ApiError> {
        if (200..300).contains(&self.status) {
            if self.body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&self.body).map_err(|error| ApiError::InvalidJson {
                reason: error.to_string(),
            });
        }

        match serde_json::from_slice::<Problem>(&self.body) {
            Ok(mut problem) if problem.detail.is_some() || problem.title.is_some() => {
                if problem.request_id.is_none() {
                    problem.request_id = self.request_id;
                }
                Err(ApiError::Problem {
                    status: self.status,
                    problem: Box::new(problem),
                })
            }
            _ => Err(ApiError::UnexpectedStatus {
                status: self.status,
                body: body_excerpt(&self.body),
            }),
        }
    }
}

/// Returns the first 200 characters of a body, cleaned for printing.
fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut excerpt: String = text.trim().chars().take(200).collect();
    if text.trim().chars().count() > 200 {
        excerpt.push_str("...");
    }
    if excerpt.is_empty() {
        return "(empty body)".to_string();
    }
    clean_text(&excerpt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> RawResponse {
        RawResponse {
            status,
            request_id: Some("from-header".to_string()),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn request_id_header_fills_missing_field() {
        let body = r#"{"title":"Bad Request","status":400,"detail":"invalid name"}"#;
        let Err(ApiError::Problem { problem, .. }) = response(400, body).into_json() else {
            panic!("expected a problem");
        };
        assert_eq!(problem.request_id.as_deref(), Some("from-header"));
    }

    #[test]
    fn success_body_decodes() {
        let value = response(200, r#"{"items":[]}"#).into_json();
        assert_eq!(value.ok(), Some(serde_json::json!({"items": []})));
        assert_eq!(response(204, "").into_json().ok(), Some(Value::Null));
    }

    #[test]
    fn conflict_problem_keeps_referrers() {
        let body = r#"{"type":"about:blank","title":"Conflict","status":409,
            "detail":"server_workload \"api\" is referenced by 1 resource",
            "referrers":[{"kind":"access_policy","name":"a-to-api"}],"request_id":"req-1"}"#;
        let Err(ApiError::Problem { status, problem }) = response(409, body).into_json() else {
            panic!("expected a problem");
        };
        assert_eq!(status, 409);
        assert_eq!(
            problem.message(),
            "server_workload \"api\" is referenced by 1 resource"
        );
        assert_eq!(
            problem.context_lines(),
            vec![
                "  referenced by access_policy \"a-to-api\"".to_string(),
                "  request id: req-1".to_string()
            ]
        );
    }

    #[test]
    fn denial_problem_keeps_step() {
        let body =
            r#"{"title":"Forbidden","status":403,"step":"access_policy","request_id":"r-9"}"#;
        let Err(ApiError::Problem { problem, .. }) = response(403, body).into_json() else {
            panic!("expected a problem");
        };
        assert_eq!(problem.step.as_deref(), Some("access_policy"));
        assert_eq!(problem.message(), "Forbidden");
    }

    #[test]
    fn error_without_problem_shows_body_excerpt() {
        let error = response(502, "<html>Bad Gateway</html>").into_json();
        assert!(
            matches!(&error, Err(ApiError::UnexpectedStatus { status: 502, body }) if body == "<html>Bad Gateway</html>")
        );
        let error = response(500, "").into_json();
        assert!(
            matches!(&error, Err(ApiError::UnexpectedStatus { body, .. }) if body == "(empty body)")
        );
    }

    #[test]
    fn invalid_success_json_is_an_error() {
        assert!(matches!(
            response(200, "not json").into_json(),
            Err(ApiError::InvalidJson { .. })
        ));
    }

    #[test]
    fn terminal_escape_in_problem_detail_is_neutralized() {
        let problem = Problem {
            detail: Some("bad\u{1b}]0;owned\u{7}".to_string()),
            ..Problem::default()
        };
        assert!(!problem.message().contains('\u{1b}'));
    }
}

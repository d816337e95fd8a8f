//! The HTTP credential endpoint on the agent's second Unix socket: `POST /v1/credentials` with
//! `{"server_workload": NAME}` or `{"target": {"host", "port"}}`, as on the server's workload
//! socket. The agent attests the caller as on the Workload API socket, sends the request with the
//! attributes to `POST /v1/agents/credentials`, and returns the server's response unchanged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mayfly_server::evidence::unix::{ExecutableHasher, attest};
use mayfly_server::http::{ListenError, UnixPeer, bind_unix, serve_unix};
use mayfly_server::problem::bytes_rejection;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{ClientError, ServerClient};
use crate::identity::Identity;

/// Largest request body the endpoint reads, in bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Maximum length of a server workload name or target host that the agent forwards, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// The endpoint's state: the client and credential for the server, and the executable hasher.
pub struct CredentialSocket {
    pub client: ServerClient,
    pub identity: Arc<Identity>,
    pub hasher: Arc<ExecutableHasher>,
}

/// Binds `path` (replacing a socket left by an earlier run) and serves the endpoint on it.
pub fn serve(path: &Path, socket: CredentialSocket) -> Result<JoinHandle<()>, ListenError> {
    let listener = bind_unix(path)?;
    let router = Router::new()
        .route("/v1/credentials", post(credential))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(socket));
    Ok(tokio::spawn(async move {
        // The sender lives as long as the task, so the socket is served until the task stops.
        let (_keep_open, shutdown) = watch::channel(false);
        serve_unix(listener, router, shutdown).await;
    }))
}

async fn credential(
    State(socket): State<Arc<CredentialSocket>>,
    ConnectInfo(UnixPeer(peer)): ConnectInfo<UnixPeer>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return bytes_rejection(rejection, MAX_BODY_BYTES).into_response(),
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request @ Value::Object(_)) => request,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "the body must be a JSON object such as {\"server_workload\": NAME}",
                None,
            );
        }
    };
    if let Err(detail) = check_request(&request) {
        return problem(StatusCode::BAD_REQUEST, "invalid-request", &detail, None);
    }
    let hasher = Arc::clone(&socket.hasher);
    let attested = tokio::task::spawn_blocking(move || attest(peer, &hasher)).await;
    let attributes: BTreeMap<String, Vec<String>> = match attested {
        Ok(Ok(attributes)) => attributes,
        Ok(Err(error)) => {
            return problem(
                StatusCode::UNAUTHORIZED,
                "credential-denied",
                &format!("attestation of the calling process failed: {error}"),
                Some("evidence"),
            );
        }
        Err(error) => {
            tracing::error!(error = %error, "the attestation task failed");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the attestation of the calling process failed inside the agent",
                None,
            );
        }
    };
    let (credential, _) = socket.identity.credential().await;
    match socket
        .client
        .credential(&credential, &attributes, &request)
        .await
    {
        Ok(forwarded) => {
            let status = StatusCode::from_u16(forwarded.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = (status, forwarded.body.clone()).into_response();
            if let Some(value) = forwarded
                .content_type
                .as_deref()
                .and_then(|value| HeaderValue::from_str(value).ok())
            {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(ClientError::Unauthorized { detail, .. }) => {
            socket
                .identity
                .credential_rejected(&socket.client, &detail)
                .await;
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server does not accept this agent: it may have been evicted",
                None,
            )
        }
        Err(error) => {
            tracing::warn!(error = %error, "forwarding a credential request failed");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the agent cannot reach the server",
                None,
            )
        }
    }
}

/// Checks the fields, types and names of a credential request before it is sent to the server.
/// The server's errors would name the fields of the agent's wrapped request, not the client's.
fn check_request(request: &Value) -> Result<(), String> {
    let Value::Object(fields) = request else {
        return Err("the body must be a JSON object".to_string());
    };
    for (name, value) in fields {
        match name.as_str() {
            "server_workload" => check_name("server_workload", value)?,
            "target" => check_target(value)?,
            other => {
                return Err(format!(
                    "unknown field {other:?} in the request body: expected server_workload or target"
                ));
            }
        }
    }
    Ok(())
}

fn check_target(target: &Value) -> Result<(), String> {
    let Value::Object(fields) = target else {
        return Err(
            "target must be an object such as {\"host\": HOST, \"port\": PORT}".to_string(),
        );
    };
    for (name, value) in fields {
        match name.as_str() {
            "host" => check_name("target.host", value)?,
            "port" => {
                if !value
                    .as_u64()
                    .is_some_and(|port| (1..=65535).contains(&port))
                {
                    return Err(format!(
                        "target.port {value}: must be an integer between 1 and 65535"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "unknown field {other:?} in target: expected host and port"
                ));
            }
        }
    }
    Ok(())
}

/// Rejects a name that is not a string, is over `MAX_NAME_BYTES` or contains control characters.
fn check_name(field: &str, value: &Value) -> Result<(), String> {
    let Some(text) = value.as_str() else {
        return Err(format!("{field} {value}: must be a string"));
    };
    if text.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{field} is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{field} {text:?} contains a control character"));
    }
    Ok(())
}

async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid-request",
        "method not allowed: /v1/credentials accepts only POST",
        None,
    )
}

async fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        "the agent's HTTP socket serves only POST /v1/credentials",
        None,
    )
}

/// A problem document (RFC 9457) in the same shape as the server's.
fn problem(status: StatusCode, slug: &str, detail: &str, step: Option<&str>) -> Response {
    let mut document = json!({
        "type": format!("urn:mayfly:problem:{slug}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(step) = step {
        document["step"] = json!(step);
    }
    let mut response = (status, document.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

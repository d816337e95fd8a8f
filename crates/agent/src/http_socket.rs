//! The HTTP credential endpoint on the agent's second Unix socket: `POST /v1/credentials` with
//! `{"server_workload": NAME}` or `{"target": {"host", "port"}}`, as on the server's workload
//! socket. The agent attests the caller as on the Workload API socket, sends the request with the
//! attributes to `POST /v1/agents/credentials`, and returns the server's response unchanged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mayfly_server::evidence::unix::{ExecutableHasher, attest};
use mayfly_server::http::{ListenError, UnixPeer, bind_unix, serve_unix};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{ClientError, ServerClient};
use crate::identity::Identity;

/// Largest request body the endpoint reads, in bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

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
    body: Bytes,
) -> Response {
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

//! The HTTP API: routes, thin handlers, and the request id on every response.

mod admin;
pub mod agents;
pub use admin::{
    new_admin_token as new_admin_token_for_bootstrap, token_event as admin_token_event,
};
pub use resources::{ApplyBody, apply_config};
mod audit;
mod incident;
mod keys;
mod proxy;
mod public;
mod resources;
mod x509;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::timeout::RequestBodyDeadlineLayer;

use crate::problem::RejectedCredential;
use crate::state::SharedState;

/// Header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Time a client has to send the whole request body once its headers are read. Without it a
/// client that stops sending keeps its connection and handler task forever.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the router of the TCP listener.
pub fn router(state: SharedState) -> Router {
    let limit = state.settings.max_body_bytes;
    Router::new()
        .route("/healthz", get(public::healthz))
        .route("/readyz", get(public::readyz))
        .route("/metrics", get(public::metrics))
        .route("/.well-known/openid-configuration", get(public::discovery))
        .route("/.well-known/jwks.json", get(public::jwks))
        .route("/.well-known/spiffe-bundle", get(x509::spiffe_bundle))
        .route("/v1/x509-bundle", get(x509::x509_bundle))
        .route("/v1/x509-authorities", get(x509::list))
        .route("/v1/x509-authorities/rotate", post(x509::rotate))
        .route("/v1/credentials", post(public::credentials_http))
        .route("/v1/apply", post(resources::apply))
        .route(
            "/v1/server-workloads/{name}/disable",
            post(resources::disable),
        )
        .route(
            "/v1/server-workloads/{name}/enable",
            post(resources::enable),
        )
        .route("/v1/audit/events", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/alerts", get(audit::alerts))
        .route("/v1/alerts/test", post(audit::test_rule))
        .route("/v1/alerts/{id}/acknowledge", post(audit::acknowledge))
        .route("/v1/incidents/report", get(incident::report))
        .route("/v1/keys", get(keys::list))
        .route("/v1/keys/rotate", post(keys::rotate))
        .route("/v1/keys/{kid}/taint", post(keys::taint))
        .route("/v1/keys/{kid}/revoke", post(keys::revoke))
        .route("/v1/admin-tokens", get(admin::list).post(admin::create))
        .route(
            "/v1/admin-tokens/{name}",
            axum::routing::delete(admin::revoke),
        )
        .route("/v1/agent-tokens", post(agents::create_token))
        .route("/v1/agents", get(agents::list))
        .route("/v1/agents/join", post(agents::join))
        .route("/v1/agents/renew", post(agents::renew))
        .route("/v1/agents/jwt-svids", post(agents::jwt_svid))
        .route("/v1/agents/x509-svids", post(agents::x509_svid))
        .route("/v1/agents/credentials", post(agents::credential))
        .route("/v1/agents/targets", get(proxy::targets))
        .route("/v1/agents/injection-events", post(proxy::injection_events))
        .route("/v1/agents/{name}/evict", post(agents::evict))
        .route("/v1/{kind}", get(resources::list))
        .route(
            "/v1/{kind}/{name}",
            get(resources::get_one)
                .put(resources::put)
                .delete(resources::delete),
        )
        .fallback(public::not_found)
        .layer(middleware::from_fn(plain_errors_as_problems))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            log_rejected_credentials,
        ))
        .layer(middleware::from_fn(request_id))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyDeadlineLayer::new(BODY_READ_TIMEOUT))
        .with_state(state)
}

/// Builds the router of the workload socket: only credential requests and health.
pub fn workload_router(state: SharedState) -> Router {
    let limit = state.settings.max_body_bytes;
    Router::new()
        .route("/healthz", get(public::healthz))
        .route("/v1/credentials", post(public::credentials_unix))
        .fallback(public::not_found)
        .layer(middleware::from_fn(plain_errors_as_problems))
        .layer(middleware::from_fn(request_id))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyDeadlineLayer::new(BODY_READ_TIMEOUT))
        .with_state(state)
}

/// Request id of the current request, put into request extensions by the middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = crate::clock::new_request_id();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = crate::problem::CURRENT_REQUEST_ID
        .scope(id.clone(), next.run(request))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Logs one warning for each request whose admin token, join token or agent credential was
/// rejected, with the route, the source address and the reason. The token itself is never logged.
async fn log_rejected_credentials(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let route = shorten_route(request.uri().path());
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| client_ip(&state, *peer, request.headers()).to_string());
    let response = next.run(request).await;
    if let Some(RejectedCredential(reason)) = response.extensions().get::<RejectedCredential>() {
        let request_id = crate::problem::current_request_id();
        let source = source.as_deref().unwrap_or("-");
        tracing::warn!(%method, route = %route, source, request_id, reason = %reason, "request with a rejected credential");
        metrics::counter!("mayfly_rejected_credentials_total").increment(1);
    }
    response
}

/// Cuts a request path, which the client chose, to 128 characters for the log.
fn shorten_route(route: &str) -> String {
    match route.char_indices().nth(128) {
        Some((end, _)) => format!("{}...", &route[..end]),
        None => route.to_string(),
    }
}

/// Turns the plain-text error responses that axum's extractors and router produce (an undecodable
/// path parameter, a wrong method, a bad query string) into problem documents like every other
/// error of the API.
async fn plain_errors_as_problems(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| {
            value
                .as_bytes()
                .starts_with(crate::problem::PROBLEM_JSON.as_bytes())
        });
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }

    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let problem = serde_json::json!({
        "type": "urn:mayfly:problem:invalid-request",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut rebuilt = Response::from_parts(parts, axum::body::Body::from(problem.to_string()));
    rebuilt.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(crate::problem::PROBLEM_JSON),
    );
    rebuilt
        .headers_mut()
        .remove(axum::http::header::CONTENT_LENGTH);
    rebuilt
}

/// Returns the client address, believing `X-Forwarded-For` only from trusted proxies.
pub fn client_ip(
    state: &SharedState,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
) -> std::net::IpAddr {
    let peer_ip = mayfly_domain::conditions::canonical_ip(peer.ip());
    let trusted = state
        .settings
        .trusted_proxies
        .iter()
        .any(|network| network.contains(&peer_ip));
    if !trusted {
        return peer_ip;
    }
    let values = headers.get_all("x-forwarded-for");
    if values.iter().next().is_none() {
        // The proxy sent the request on its own behalf.
        return peer_ip;
    }
    // The rightmost address not added by a trusted proxy is the client. An entry that is not an
    // address leaves the client unknown: it gets the unspecified address, which no allowlist
    // short of 0.0.0.0/0 contains, rather than the proxy's own address.
    let forwarded = values
        .iter()
        .map(|value| value.to_str().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(",");
    for candidate in forwarded.rsplit(',') {
        let Some(address) = parse_forwarded_address(candidate) else {
            return std::net::IpAddr::from([0, 0, 0, 0]);
        };
        let address = mayfly_domain::conditions::canonical_ip(address);
        if !state
            .settings
            .trusted_proxies
            .iter()
            .any(|network| network.contains(&address))
        {
            return address;
        }
    }
    peer_ip
}

/// Parses one `X-Forwarded-For` entry: an IP address, optionally with a port as some proxies
/// write it (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn parse_forwarded_address(entry: &str) -> Option<std::net::IpAddr> {
    let entry = entry.trim();
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|address| address.ip()))
}

/// Connection info of the TCP listener (plain or TLS).
pub type PeerAddr = ConnectInfo<SocketAddr>;

/// State extractor shorthand.
pub type AppState = State<SharedState>;

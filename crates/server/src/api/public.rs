//! Unauthenticated routes: health, metrics, discovery, JWKS and credential requests.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Extension};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, PeerAddr, RequestId, client_ip};
use crate::credentials::{self, Call, CredentialRequest, Evidence};
use crate::http::UnixPeer;
use crate::problem::{ApiError, json_rejection};

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(state: AppState) -> Response {
    let store_ok = state.store.ping().await.is_ok();
    let has_key = state
        .keys
        .current()
        .active(mayfly_crypto::signing::Algorithm::ES256)
        .is_some();
    let ready = state.is_ready() && store_ok && has_key;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": ready, "store": store_ok, "signing_key": has_key})),
    )
        .into_response()
}

pub async fn metrics(state: AppState) -> Response {
    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

pub async fn discovery(state: AppState) -> Response {
    let issuer = &state.issuer;
    let document = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256", "PS256"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti"],
    });
    let mut response = Json(document).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    response
}

pub async fn jwks(state: AppState) -> Response {
    let body = state.keys.current().jwks_body.clone();
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound {
        kind: "route".to_string(),
        name: "this path".to_string(),
    }
}

pub async fn credentials_http(
    state: AppState,
    ConnectInfo(peer): PeerAddr,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Json<CredentialRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) =
        body.map_err(|rejection| json_rejection(rejection, state.settings.max_body_bytes))?;
    let evidence = match headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    {
        Some(value) => match value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            Some(token) => Evidence::Bearer(token.trim().to_string()),
            None => Evidence::None,
        },
        None => Evidence::None,
    };
    let call = Call {
        request_id,
        evidence,
        source_ip: client_ip(&state, peer, &headers),
        transport: "http",
    };
    let response = credentials::handle(&state, call, request).await?;
    Ok(no_store(Json(response).into_response()))
}

pub async fn credentials_unix(
    state: AppState,
    ConnectInfo(peer): ConnectInfo<UnixPeer>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Result<Json<CredentialRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) =
        body.map_err(|rejection| json_rejection(rejection, state.settings.max_body_bytes))?;
    let call = Call {
        request_id,
        evidence: Evidence::Unix(peer.0),
        // A request over the Unix socket counts as coming from the local host.
        source_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        transport: "unix",
    };
    let response = credentials::handle(&state, call, request).await?;
    Ok(no_store(Json(response).into_response()))
}

/// Credentials must not be cached by any intermediary.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

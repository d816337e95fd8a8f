//! The SPIFFE trust domain bundle, the X.509 bundle for agents, and X.509 CA listing and rotation.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::auth::Admin;
use crate::clock;
use crate::problem::ApiError;
use crate::x509_ca::{BUNDLE_REFRESH_HINT_SECONDS, CaError};

fn map_error(error: CaError) -> ApiError {
    match error {
        CaError::WrongState { .. } => ApiError::Conflict {
            detail: error.to_string(),
            referrers: Vec::new(),
        },
        CaError::Store(error) => ApiError::from_store(error, "x509-authorities"),
        other => {
            let request_id = crate::problem::current_request_id();
            tracing::error!(request_id, error = %other, "X.509 CA operation failed");
            ApiError::Internal { request_id }
        }
    }
}

/// `GET /.well-known/spiffe-bundle`: the SPIFFE trust domain bundle, a JWK set with the X.509 CAs
/// (`use: x509-svid`, certificate in `x5c`) and the JWT signing keys (`use: jwt-svid`).
pub async fn spiffe_bundle(state: AppState) -> Result<Response, ApiError> {
    let jwks = state.keys.current().jwks_body.clone();
    let bundle = state.x509.spiffe_bundle(&jwks).await.map_err(map_error)?;
    let mut response = Json(bundle).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("max-age={BUNDLE_REFRESH_HINT_SECONDS}")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    Ok(response)
}

/// `GET /v1/x509-bundle`: the published X.509 CA certificates as PEM, and which one signs, so
/// that agents notice a rotation.
pub async fn x509_bundle(state: AppState) -> Response {
    let set = state.x509.current();
    let body = json!({
        "trust_domain": state.trust_domain.to_string(),
        "active_authority": set.active_id,
        "certificates_pem": state.x509.bundle_pem(),
    });
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /v1/x509-authorities`: every X.509 CA with its state and certificate.
pub async fn list(state: AppState, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let authorities = state.x509.list().await.map_err(map_error)?;
    Ok(Json(json!({"x509_authorities": authorities})))
}

/// `POST /v1/x509-authorities/rotate`: prepares a new CA that signs once its publication period
/// (`x509_ca_publish_ahead`) is over.
pub async fn rotate(state: AppState, admin: Admin) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let authority = state
        .x509
        .rotate(clock::now(), &admin.actor())
        .await
        .map_err(map_error)?;
    tracing::info!(x509_authority = %authority.id, actor = %admin.actor(), "X.509 CA rotation requested");
    Ok(Json(json!({"x509_authority": authority})))
}

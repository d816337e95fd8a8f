//! Signing key listing, rotation, taint and revocation.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::BytesRejection;
use mayfly_crypto::signing::Algorithm;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::auth::Admin;
use crate::clock;
use crate::keys::KeyError;
use crate::problem::{ApiError, bytes_rejection};

fn map_error(error: KeyError) -> ApiError {
    match error {
        KeyError::NotFound(kid) => ApiError::NotFound {
            kind: "signing_key".to_string(),
            name: kid,
        },
        KeyError::WrongState { .. } => ApiError::Conflict {
            detail: error.to_string(),
            referrers: Vec::new(),
        },
        KeyError::Store(error) => ApiError::from_store(error, "keys"),
        other => {
            let request_id = crate::problem::current_request_id();
            tracing::error!(request_id, error = %other, "signing key operation failed");
            ApiError::Internal { request_id }
        }
    }
}

pub async fn list(state: AppState, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let keys = state.keys.list().await.map_err(map_error)?;
    Ok(Json(json!({"keys": keys})))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    #[serde(default)]
    algorithm: Option<String>,
}

pub async fn rotate(
    state: AppState,
    admin: Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let body =
        body.map_err(|rejection| bytes_rejection(rejection, state.settings.max_body_bytes))?;
    let body: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))?
    };
    let algorithm = match body.algorithm.as_deref() {
        None => Algorithm::ES256,
        Some(text) => Algorithm::parse(text)
            .ok()
            .ok_or_else(|| ApiError::invalid("algorithm", text, "must be ES256, RS256 or PS256"))?,
    };
    let key = state
        .keys
        .rotate(algorithm, clock::now(), &admin.actor())
        .await
        .map_err(map_error)?;
    Ok(Json(json!({"key": key})))
}

pub async fn taint(
    state: AppState,
    admin: Admin,
    Path(kid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let key = state
        .keys
        .taint(&kid, clock::now(), &admin.actor())
        .await
        .map_err(map_error)?;
    tracing::warn!(kid = %kid, actor = %admin.actor(), "signing key tainted");
    Ok(Json(json!({"key": key})))
}

pub async fn revoke(
    state: AppState,
    admin: Admin,
    Path(kid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let key = state
        .keys
        .revoke(&kid, clock::now(), &admin.actor())
        .await
        .map_err(map_error)?;
    tracing::warn!(kid = %kid, actor = %admin.actor(), "signing key revoked");
    Ok(Json(json!({"key": key})))
}

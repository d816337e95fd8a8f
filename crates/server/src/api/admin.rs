//! Admin tokens: create (the token is shown once), list, revoke.

use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::JsonRejection;
use mayfly_crypto::token::{generate_token, hash_token};
use mayfly_domain::audit::{AuditKind, NewAuditEvent};
use mayfly_domain::resources::validate_name;
use mayfly_store::AdminTokenRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::auth::{Admin, Role};
use crate::clock;
use crate::problem::{ApiError, json_rejection};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    role: String,
}

pub async fn create(
    state: AppState,
    admin: Admin,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let Json(body) =
        body.map_err(|rejection| json_rejection(rejection, state.settings.max_body_bytes))?;
    validate_name("name", &body.name)
        .map_err(|error| ApiError::invalid(&error.field, &error.value, &error.reason))?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::invalid("role", &body.role, "must be admin or auditor"))?;

    let (record, token) = new_admin_token(&body.name, role)?;
    let audit = token_event(&admin.actor(), "create", &record);
    state
        .store
        .insert_admin_token(&record, vec![audit])
        .await
        .map_err(|e| ApiError::from_store(e, "admin-token"))?;
    Ok(Json(json!({
        "name": record.name,
        "role": record.role,
        "token": token.expose(),
        "created_at": record.created_at.to_string(),
    })))
}

pub async fn list(state: AppState, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let records = state
        .store
        .list_admin_tokens()
        .await
        .map_err(|e| ApiError::from_store(e, "admin-token"))?;
    let items: Vec<Value> = records
        .iter()
        .map(|record| {
            json!({
                "name": record.name,
                "role": record.role,
                "created_at": record.created_at.to_string(),
                "revoked_at": record.revoked_at.map(|t| t.to_string()),
            })
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

pub async fn revoke(
    state: AppState,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let records = state
        .store
        .list_admin_tokens()
        .await
        .map_err(|e| ApiError::from_store(e, "admin-token"))?;
    let record = records
        .iter()
        .find(|record| record.name == name && record.revoked_at.is_none())
        .ok_or_else(|| ApiError::NotFound {
            kind: "admin_token".to_string(),
            name: name.clone(),
        })?;
    let audit = token_event(&admin.actor(), "revoke", record);
    let revoked = state
        .store
        .revoke_admin_token(&record.id, clock::now(), vec![audit])
        .await
        .map_err(|e| ApiError::from_store(e, "admin-token"))?;
    Ok(Json(json!({"name": name, "revoked": revoked})))
}

/// Makes a new admin token and the record that stores only its hash.
pub fn new_admin_token(
    name: &str,
    role: Role,
) -> Result<(AdminTokenRecord, mayfly_crypto::token::SecretString), ApiError> {
    let token = generate_token("mfy_admin_").map_err(|error| {
        let request_id = crate::problem::current_request_id();
        tracing::error!(request_id, error = %error, "generating an admin token failed");
        ApiError::Internal { request_id }
    })?;
    let record = AdminTokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        role: role.as_str().to_string(),
        token_hash: hash_token(token.expose()),
        created_at: clock::now(),
        revoked_at: None,
    };
    Ok((record, token))
}

/// Audit event for an admin token change; it names the token, never its value.
pub fn token_event(actor: &str, action: &str, record: &AdminTokenRecord) -> NewAuditEvent {
    NewAuditEvent::new(
        clock::new_event_id(),
        clock::now(),
        AuditKind::AdminTokenChange,
        json!({"actor": actor, "action": action, "name": record.name, "role": record.role}),
    )
}

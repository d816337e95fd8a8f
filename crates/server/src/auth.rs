//! Admin authentication: bearer tokens checked against their stored hashes, and roles.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use mayfly_crypto::token::hash_token;
use serde::{Deserialize, Serialize};

use crate::problem::ApiError;
use crate::state::SharedState;

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Read configuration, audit events and alerts; never write.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// An authenticated admin caller.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The token's name, recorded as the actor of changes.
    pub name: String,
    pub role: Role,
}

impl Admin {
    /// Returns the actor string of audit events, such as `admin-token:ops`.
    pub fn actor(&self) -> String {
        format!("admin-token:{}", self.name)
    }

    /// Rejects callers whose role cannot write.
    pub fn require_write(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Auditor => Err(ApiError::Forbidden(format!(
                "admin token {:?} has the auditor role, which can read but not change anything",
                self.name
            ))),
        }
    }
}

impl FromRequestParts<SharedState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized(
                "missing Authorization header: send Authorization: Bearer <admin token>"
                    .to_string(),
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "the Authorization header must be Bearer <admin token>".to_string(),
                )
            })?;

        let record = state
            .store
            .find_active_admin_token_by_hash(&hash_token(token))
            .await
            .map_err(|error| ApiError::from_store(error, "admin token lookup"))?;
        let Some(record) = record.filter(|record| record.revoked_at.is_none()) else {
            return Err(ApiError::Unauthorized(
                "the admin token is unknown or revoked".to_string(),
            ));
        };
        let role = Role::parse(&record.role).unwrap_or(Role::Auditor);
        Ok(Admin {
            name: record.name,
            role,
        })
    }
}

//! Signing keys: inserts, listing and compare-and-set state updates.

use mayfly_domain::audit::{AuditEvent, NewAuditEvent};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::audit::append_in;
use super::codec::{
    db_error, finish, from_json_text, from_micros, from_optional_micros, is_unique_violation,
    to_micros,
};
use crate::error::StoreError;
use crate::model::{REMOVED_KEY_STATE, SigningKeyRecord};

/// Inserts `key` and appends `audit` in one transaction.
pub(super) async fn insert(
    pool: &SqlitePool,
    key: &SigningKeyRecord,
    audit: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = insert_in(&mut tx, key, audit).await;
    finish(tx, result).await
}

/// Returns every key, oldest first.
pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<SigningKeyRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT kid, algorithm, state, public_jwk, encrypted_private_key, created_at_us, \
         activates_at_us, retired_at_us, remove_after_us FROM signing_keys \
         ORDER BY created_at_us, kid",
    )
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.iter().map(decode_key).collect()
}

/// Updates `key` when its stored state is `expected_state`; see `Store::update_signing_key`.
pub(super) async fn update(
    pool: &SqlitePool,
    key: &SigningKeyRecord,
    expected_state: &str,
    audit: Vec<NewAuditEvent>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = update_in(&mut tx, key, expected_state, audit).await;
    finish(tx, result).await
}

async fn insert_in(
    conn: &mut SqliteConnection,
    key: &SigningKeyRecord,
    audit: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, state, public_jwk, encrypted_private_key, \
         created_at_us, activates_at_us, retired_at_us, remove_after_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&key.kid)
    .bind(&key.algorithm)
    .bind(&key.state)
    .bind(key.public_jwk.to_string())
    .bind(private_key_to_store(key))
    .bind(to_micros(key.created_at))
    .bind(key.activates_at.map(to_micros))
    .bind(key.retired_at.map(to_micros))
    .bind(key.remove_after.map(to_micros))
    .execute(&mut *conn)
    .await;

    match inserted {
        Ok(_) => {}
        Err(err) if is_unique_violation(&err) => {
            return Err(StoreError::AlreadyExists {
                kind: "signing key".to_string(),
                name: key.kid.clone(),
            });
        }
        Err(err) => return Err(db_error(err)),
    }

    append_in(conn, audit).await
}

async fn update_in(
    conn: &mut SqliteConnection,
    key: &SigningKeyRecord,
    expected_state: &str,
    audit: Vec<NewAuditEvent>,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE signing_keys SET state = $1, encrypted_private_key = $2, \
         activates_at_us = $3, retired_at_us = $4, remove_after_us = $5 \
         WHERE kid = $6 AND state = $7",
    )
    .bind(&key.state)
    .bind(private_key_to_store(key))
    .bind(key.activates_at.map(to_micros))
    .bind(key.retired_at.map(to_micros))
    .bind(key.remove_after.map(to_micros))
    .bind(&key.kid)
    .bind(expected_state)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;

    if updated.rows_affected() == 0 {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM signing_keys WHERE kid = $1")
            .bind(&key.kid)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                kind: "signing key".to_string(),
                name: key.kid.clone(),
            });
        }
        return Ok(false);
    }

    append_in(conn, audit).await?;
    Ok(true)
}

/// Returns the encrypted private key to write: none once the key is removed.
fn private_key_to_store(key: &SigningKeyRecord) -> Option<&[u8]> {
    if key.state == REMOVED_KEY_STATE {
        return None;
    }
    key.encrypted_private_key.as_deref()
}

fn decode_key(row: &SqliteRow) -> Result<SigningKeyRecord, StoreError> {
    let public_jwk: String = row.try_get("public_jwk").map_err(db_error)?;
    let created_at: i64 = row.try_get("created_at_us").map_err(db_error)?;
    let activates_at: Option<i64> = row.try_get("activates_at_us").map_err(db_error)?;
    let retired_at: Option<i64> = row.try_get("retired_at_us").map_err(db_error)?;
    let remove_after: Option<i64> = row.try_get("remove_after_us").map_err(db_error)?;

    Ok(SigningKeyRecord {
        kid: row.try_get("kid").map_err(db_error)?,
        algorithm: row.try_get("algorithm").map_err(db_error)?,
        state: row.try_get("state").map_err(db_error)?,
        public_jwk: from_json_text("signing_keys.public_jwk", &public_jwk)?,
        encrypted_private_key: row.try_get("encrypted_private_key").map_err(db_error)?,
        created_at: from_micros("signing_keys.created_at_us", created_at)?,
        activates_at: from_optional_micros("signing_keys.activates_at_us", activates_at)?,
        retired_at: from_optional_micros("signing_keys.retired_at_us", retired_at)?,
        remove_after: from_optional_micros("signing_keys.remove_after_us", remove_after)?,
    })
}

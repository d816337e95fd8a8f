//! Admin tokens, stored as hashes: inserts, lookups and revocation.

use jiff::Timestamp;
use mayfly_domain::audit::{AuditEvent, NewAuditEvent};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::audit::append_in;
use super::codec::{
    db_error, finish, from_micros, from_optional_micros, is_unique_violation, to_micros,
};
use crate::error::StoreError;
use crate::model::AdminTokenRecord;

/// Expands to the admin token SELECT statement followed by `$tail`.
macro_rules! select_token {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, role, token_hash, created_at_us, revoked_at_us FROM admin_tokens",
            $tail
        )
    };
}

/// Inserts `token` and appends `audit` in one transaction.
pub(super) async fn insert(
    pool: &SqlitePool,
    token: &AdminTokenRecord,
    audit: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = insert_in(&mut tx, token, audit).await;
    finish(tx, result).await
}

/// Returns the unrevoked token with hash `token_hash`.
pub(super) async fn find_active_by_hash(
    pool: &SqlitePool,
    token_hash: &str,
) -> Result<Option<AdminTokenRecord>, StoreError> {
    let row = sqlx::query(select_token!(
        " WHERE token_hash = $1 AND revoked_at_us IS NULL"
    ))
    .bind(token_hash)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    row.as_ref().map(decode_token).transpose()
}

/// Returns every token, oldest first.
pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<AdminTokenRecord>, StoreError> {
    let rows = sqlx::query(select_token!(" ORDER BY created_at_us, id"))
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    rows.iter().map(decode_token).collect()
}

/// Revokes the unrevoked token with id, or else name, `id_or_name`.
pub(super) async fn revoke(
    pool: &SqlitePool,
    id_or_name: &str,
    now: Timestamp,
    audit: Vec<NewAuditEvent>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = revoke_in(&mut tx, id_or_name, now, audit).await;
    finish(tx, result).await
}

async fn insert_in(
    conn: &mut SqliteConnection,
    token: &AdminTokenRecord,
    audit: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO admin_tokens (id, name, role, token_hash, created_at_us, revoked_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&token.id)
    .bind(&token.name)
    .bind(&token.role)
    .bind(&token.token_hash)
    .bind(to_micros(token.created_at))
    .bind(token.revoked_at.map(to_micros))
    .execute(&mut *conn)
    .await;

    match inserted {
        Ok(_) => {}
        // The id, the hash and the active name are all unique; the message names the token by
        // id and name, never by hash.
        Err(err) if is_unique_violation(&err) => {
            return Err(StoreError::AlreadyExists {
                kind: "admin token".to_string(),
                name: format!("{} ({})", token.name, token.id),
            });
        }
        Err(err) => return Err(db_error(err)),
    }

    append_in(conn, audit).await
}

async fn revoke_in(
    conn: &mut SqliteConnection,
    id_or_name: &str,
    now: Timestamp,
    audit: Vec<NewAuditEvent>,
) -> Result<bool, StoreError> {
    let now = to_micros(now);

    let mut revoked = sqlx::query(
        "UPDATE admin_tokens SET revoked_at_us = $1 WHERE id = $2 AND revoked_at_us IS NULL",
    )
    .bind(now)
    .bind(id_or_name)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?
    .rows_affected();

    if revoked == 0 {
        revoked = sqlx::query(
            "UPDATE admin_tokens SET revoked_at_us = $1 WHERE name = $2 AND revoked_at_us IS NULL",
        )
        .bind(now)
        .bind(id_or_name)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?
        .rows_affected();
    }

    if revoked == 0 {
        return Ok(false);
    }
    append_in(conn, audit).await?;
    Ok(true)
}

fn decode_token(row: &SqliteRow) -> Result<AdminTokenRecord, StoreError> {
    let created_at: i64 = row.try_get("created_at_us").map_err(db_error)?;
    let revoked_at: Option<i64> = row.try_get("revoked_at_us").map_err(db_error)?;

    Ok(AdminTokenRecord {
        id: row.try_get("id").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        role: row.try_get("role").map_err(db_error)?,
        token_hash: row.try_get("token_hash").map_err(db_error)?,
        created_at: from_micros("admin_tokens.created_at_us", created_at)?,
        revoked_at: from_optional_micros("admin_tokens.revoked_at_us", revoked_at)?,
    })
}

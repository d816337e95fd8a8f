//! X.509 CAs: inserts, listing and compare-and-set state updates.

use mayfly_domain::audit::{AuditEvent, NewAuditEvent};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::audit::append_in;
use super::codec::{
    db_error, finish, from_micros, from_optional_micros, is_unique_violation, to_micros,
};
use crate::error::StoreError;
use crate::model::{REMOVED_KEY_STATE, X509AuthorityRecord};

/// Inserts `authority` and appends `audit` in one transaction.
pub(super) async fn insert(
    pool: &SqlitePool,
    authority: &X509AuthorityRecord,
    audit: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = insert_in(&mut tx, authority, audit).await;
    finish(tx, result).await
}

/// Returns every CA, oldest first.
pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<X509AuthorityRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, trust_domain, state, certificate_der, encrypted_private_key, created_at_us, \
         not_after_us, activates_at_us, retired_at_us, remove_after_us FROM x509_authorities \
         ORDER BY created_at_us, id",
    )
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.iter().map(decode).collect()
}

/// Updates `authority` when its stored state is `expected_state`; see
/// `Store::update_x509_authority`.
pub(super) async fn update(
    pool: &SqlitePool,
    authority: &X509AuthorityRecord,
    expected_state: &str,
    audit: Vec<NewAuditEvent>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = update_in(&mut tx, authority, expected_state, audit).await;
    finish(tx, result).await
}

async fn insert_in(
    conn: &mut SqliteConnection,
    authority: &X509AuthorityRecord,
    audit: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO x509_authorities (id, trust_domain, state, certificate_der, \
         encrypted_private_key, created_at_us, not_after_us, activates_at_us, retired_at_us, \
         remove_after_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&authority.id)
    .bind(&authority.trust_domain)
    .bind(&authority.state)
    .bind(&authority.certificate_der)
    .bind(private_key_to_store(authority))
    .bind(to_micros(authority.created_at))
    .bind(to_micros(authority.not_after))
    .bind(authority.activates_at.map(to_micros))
    .bind(authority.retired_at.map(to_micros))
    .bind(authority.remove_after.map(to_micros))
    .execute(&mut *conn)
    .await;

    match inserted {
        Ok(_) => {}
        Err(err) if is_unique_violation(&err) => {
            return Err(StoreError::AlreadyExists {
                kind: "x509 authority".to_string(),
                name: authority.id.clone(),
            });
        }
        Err(err) => return Err(db_error(err)),
    }

    append_in(conn, audit).await
}

async fn update_in(
    conn: &mut SqliteConnection,
    authority: &X509AuthorityRecord,
    expected_state: &str,
    audit: Vec<NewAuditEvent>,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE x509_authorities SET state = $1, encrypted_private_key = $2, \
         activates_at_us = $3, retired_at_us = $4, remove_after_us = $5 \
         WHERE id = $6 AND state = $7",
    )
    .bind(&authority.state)
    .bind(private_key_to_store(authority))
    .bind(authority.activates_at.map(to_micros))
    .bind(authority.retired_at.map(to_micros))
    .bind(authority.remove_after.map(to_micros))
    .bind(&authority.id)
    .bind(expected_state)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;

    if updated.rows_affected() == 0 {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM x509_authorities WHERE id = $1")
                .bind(&authority.id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                kind: "x509 authority".to_string(),
                name: authority.id.clone(),
            });
        }
        return Ok(false);
    }

    append_in(conn, audit).await?;
    Ok(true)
}

/// Returns the encrypted private key to write: none once the CA is removed.
fn private_key_to_store(authority: &X509AuthorityRecord) -> Option<&[u8]> {
    if authority.state == REMOVED_KEY_STATE {
        return None;
    }
    authority.encrypted_private_key.as_deref()
}

fn decode(row: &SqliteRow) -> Result<X509AuthorityRecord, StoreError> {
    let created_at: i64 = row.try_get("created_at_us").map_err(db_error)?;
    let not_after: i64 = row.try_get("not_after_us").map_err(db_error)?;
    let activates_at: Option<i64> = row.try_get("activates_at_us").map_err(db_error)?;
    let retired_at: Option<i64> = row.try_get("retired_at_us").map_err(db_error)?;
    let remove_after: Option<i64> = row.try_get("remove_after_us").map_err(db_error)?;

    Ok(X509AuthorityRecord {
        id: row.try_get("id").map_err(db_error)?,
        trust_domain: row.try_get("trust_domain").map_err(db_error)?,
        state: row.try_get("state").map_err(db_error)?,
        certificate_der: row.try_get("certificate_der").map_err(db_error)?,
        encrypted_private_key: row.try_get("encrypted_private_key").map_err(db_error)?,
        created_at: from_micros("x509_authorities.created_at_us", created_at)?,
        not_after: from_micros("x509_authorities.not_after_us", not_after)?,
        activates_at: from_optional_micros("x509_authorities.activates_at_us", activates_at)?,
        retired_at: from_optional_micros("x509_authorities.retired_at_us", retired_at)?,
        remove_after: from_optional_micros("x509_authorities.remove_after_us", remove_after)?,
    })
}

//! Configuration resources: reads, and change sets applied in one transaction.

use mayfly_domain::audit::AuditEvent;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::audit::append_in;
use super::codec::{db_error, finish, from_json_text, from_micros, to_micros};
use crate::error::StoreError;
use crate::model::{ChangeSet, ResourcePut, ResourceRecord, ResourceRef};

/// Expands to the resource SELECT statement followed by `$tail`.
macro_rules! select_resource {
    ($tail:literal) => {
        concat!(
            "SELECT kind, name, spec, enabled, created_at_us, updated_at_us FROM resources",
            $tail
        )
    };
}

/// Returns one resource.
pub(super) async fn get(
    pool: &SqlitePool,
    kind: &str,
    name: &str,
) -> Result<Option<ResourceRecord>, StoreError> {
    let row = sqlx::query(select_resource!(" WHERE kind = $1 AND name = $2"))
        .bind(kind)
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
    row.as_ref().map(decode_resource).transpose()
}

/// Returns the resources of `kind`, or of every kind when `kind` is `None`.
pub(super) async fn list(
    pool: &SqlitePool,
    kind: Option<&str>,
) -> Result<Vec<ResourceRecord>, StoreError> {
    let rows = match kind {
        Some(kind) => {
            sqlx::query(select_resource!(" WHERE kind = $1 ORDER BY name"))
                .bind(kind)
                .fetch_all(pool)
                .await
        }
        None => {
            sqlx::query(select_resource!(" ORDER BY kind, name"))
                .fetch_all(pool)
                .await
        }
    }
    .map_err(db_error)?;
    rows.iter().map(decode_resource).collect()
}

/// Returns the configuration version counter.
pub(super) async fn config_version(pool: &SqlitePool) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
        .fetch_one(pool)
        .await
        .map_err(db_error)
}

/// Applies `change` in one immediate transaction; see `Store::commit`.
pub(super) async fn commit(
    pool: &SqlitePool,
    change: ChangeSet,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = apply(&mut tx, change).await;
    finish(tx, result).await
}

async fn apply(
    conn: &mut SqliteConnection,
    change: ChangeSet,
) -> Result<Vec<AuditEvent>, StoreError> {
    let now = to_micros(change.now);

    for put in &change.puts {
        upsert(conn, put, now).await?;
        replace_refs(conn, put).await?;
    }

    for target in &change.deletes {
        let deleted = sqlx::query("DELETE FROM resources WHERE kind = $1 AND name = $2")
            .bind(&target.kind)
            .bind(&target.name)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        if deleted.rows_affected() == 0 {
            return Err(not_found(target));
        }
    }

    for (target, enabled) in &change.set_enabled {
        let updated = sqlx::query(
            "UPDATE resources SET enabled = $1, updated_at_us = $2 WHERE kind = $3 AND name = $4",
        )
        .bind(enabled)
        .bind(now)
        .bind(&target.kind)
        .bind(&target.name)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            return Err(not_found(target));
        }
    }

    for target in &change.deletes {
        check_unreferenced(conn, target).await?;
    }
    for put in &change.puts {
        check_refs_resolve(conn, put).await?;
    }

    if change.changes_resources() {
        sqlx::query("UPDATE config_version SET version = version + 1 WHERE id = 1")
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }

    append_in(conn, change.audit).await
}

/// Inserts the resource, or replaces the spec of an existing one while keeping its
/// `created_at` and `enabled`.
async fn upsert(
    conn: &mut SqliteConnection,
    put: &ResourcePut,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO resources (kind, name, spec, enabled, created_at_us, updated_at_us) \
         VALUES ($1, $2, $3, TRUE, $4, $4) \
         ON CONFLICT (kind, name) DO UPDATE \
         SET spec = excluded.spec, updated_at_us = excluded.updated_at_us",
    )
    .bind(&put.kind)
    .bind(&put.name)
    .bind(put.spec.to_string())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn replace_refs(conn: &mut SqliteConnection, put: &ResourcePut) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM resource_refs WHERE from_kind = $1 AND from_name = $2")
        .bind(&put.kind)
        .bind(&put.name)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;

    for target in &put.refs {
        sqlx::query(
            "INSERT INTO resource_refs (from_kind, from_name, to_kind, to_name) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&put.kind)
        .bind(&put.name)
        .bind(&target.kind)
        .bind(&target.name)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

/// Fails with `ReferencedBy` when anything still references the deleted resource `target`.
async fn check_unreferenced(
    conn: &mut SqliteConnection,
    target: &ResourceRef,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT from_kind, from_name FROM resource_refs \
         WHERE to_kind = $1 AND to_name = $2 ORDER BY from_kind, from_name",
    )
    .bind(&target.kind)
    .bind(&target.name)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    if rows.is_empty() {
        return Ok(());
    }

    let referrers = rows
        .iter()
        .map(|row| {
            Ok(ResourceRef {
                kind: row.try_get("from_kind").map_err(db_error)?,
                name: row.try_get("from_name").map_err(db_error)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Err(StoreError::ReferencedBy {
        kind: target.kind.clone(),
        name: target.name.clone(),
        referrers,
    })
}

/// Fails with `DanglingReference` on the first reference of `put` whose target is missing.
async fn check_refs_resolve(
    conn: &mut SqliteConnection,
    put: &ResourcePut,
) -> Result<(), StoreError> {
    for target in &put.refs {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM resources WHERE kind = $1 AND name = $2")
                .bind(&target.kind)
                .bind(&target.name)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
        if found.is_none() {
            return Err(StoreError::DanglingReference {
                kind: put.kind.clone(),
                name: put.name.clone(),
                ref_kind: target.kind.clone(),
                ref_name: target.name.clone(),
            });
        }
    }
    Ok(())
}

fn not_found(target: &ResourceRef) -> StoreError {
    StoreError::NotFound {
        kind: target.kind.clone(),
        name: target.name.clone(),
    }
}

fn decode_resource(row: &SqliteRow) -> Result<ResourceRecord, StoreError> {
    let spec: String = row.try_get("spec").map_err(db_error)?;
    let created_at: i64 = row.try_get("created_at_us").map_err(db_error)?;
    let updated_at: i64 = row.try_get("updated_at_us").map_err(db_error)?;

    Ok(ResourceRecord {
        kind: row.try_get("kind").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        spec: from_json_text("resources.spec", &spec)?,
        enabled: row.try_get("enabled").map_err(db_error)?,
        created_at: from_micros("resources.created_at_us", created_at)?,
        updated_at: from_micros("resources.updated_at_us", updated_at)?,
    })
}

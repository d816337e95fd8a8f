//! Audit checkpoints and the retention purge that deletes up to one of them.

use jiff::Timestamp;
use mayfly_domain::audit::Checkpoint;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::codec::{
    db_error, finish, from_micros, is_unique_violation, to_exact_micros, to_micros_ceil,
};
use crate::error::StoreError;
use crate::model::PurgeOutcome;

/// Stores `checkpoint` after checking it against the stored event at its `seq`.
pub(super) async fn insert(pool: &SqlitePool, checkpoint: &Checkpoint) -> Result<(), StoreError> {
    let time_us = to_exact_micros("checkpoint time", checkpoint.time)?;

    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = insert_in(&mut tx, checkpoint, time_us).await;
    finish(tx, result).await
}

/// Returns every checkpoint, oldest first.
pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<Checkpoint>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, head_hash, time_us, signature FROM audit_checkpoints ORDER BY seq ASC",
    )
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.iter().map(decode_checkpoint).collect()
}

/// Returns up to `limit` checkpoints with a `seq` above `seq`, oldest first.
pub(super) async fn after(
    pool: &SqlitePool,
    seq: i64,
    limit: u32,
) -> Result<Vec<Checkpoint>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, head_hash, time_us, signature FROM audit_checkpoints \
         WHERE seq > $1 ORDER BY seq ASC LIMIT $2",
    )
    .bind(seq)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.iter().map(decode_checkpoint).collect()
}

/// Returns the checkpoint with the highest `seq`.
pub(super) async fn latest(pool: &SqlitePool) -> Result<Option<Checkpoint>, StoreError> {
    let row = sqlx::query(
        "SELECT seq, head_hash, time_us, signature FROM audit_checkpoints \
         ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    row.as_ref().map(decode_checkpoint).transpose()
}

/// Deletes events up to the newest checkpoint older than `cutoff`; see
/// `Store::purge_audit_before`.
pub(super) async fn purge_before(
    pool: &SqlitePool,
    cutoff: Timestamp,
    undelivered_from: Option<i64>,
) -> Result<PurgeOutcome, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = purge_in(&mut tx, cutoff, undelivered_from).await;
    let outcome = finish(tx, result).await?;

    if outcome.deleted > 0 {
        tracing::info!(
            deleted = outcome.deleted,
            deleted_checkpoints = outcome.deleted_checkpoints,
            kept_from_seq = outcome.kept_from_seq,
            "purged audit events older than the retention cutoff"
        );
    }
    Ok(outcome)
}

async fn insert_in(
    conn: &mut SqliteConnection,
    checkpoint: &Checkpoint,
    time_us: i64,
) -> Result<(), StoreError> {
    let stored_hash: Option<String> =
        sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = $1")
            .bind(checkpoint.seq)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;

    match stored_hash {
        None => {
            return Err(StoreError::InvalidCheckpoint {
                seq: checkpoint.seq,
                reason: "no stored audit event has this sequence number".to_string(),
            });
        }
        Some(hash) if hash != checkpoint.head_hash => {
            return Err(StoreError::InvalidCheckpoint {
                seq: checkpoint.seq,
                reason: format!(
                    "head_hash {} differs from the stored event hash {hash}",
                    checkpoint.head_hash
                ),
            });
        }
        Some(_) => {}
    }

    let inserted = sqlx::query(
        "INSERT INTO audit_checkpoints (seq, head_hash, time_us, signature) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(checkpoint.seq)
    .bind(&checkpoint.head_hash)
    .bind(time_us)
    .bind(&checkpoint.signature)
    .execute(&mut *conn)
    .await;

    match inserted {
        Ok(_) => Ok(()),
        Err(err) if is_unique_violation(&err) => Err(StoreError::AlreadyExists {
            kind: "checkpoint".to_string(),
            name: checkpoint.seq.to_string(),
        }),
        Err(err) => Err(db_error(err)),
    }
}

async fn purge_in(
    conn: &mut SqliteConnection,
    cutoff: Timestamp,
    undelivered_from: Option<i64>,
) -> Result<PurgeOutcome, StoreError> {
    // The join skips checkpoints whose event an earlier purge deleted, so the anchor of the
    // last purge is never picked again.
    let anchor: Option<i64> = sqlx::query_scalar(
        "SELECT c.seq FROM audit_checkpoints c JOIN audit_events e ON e.seq = c.seq \
         WHERE e.time_us < $1 AND c.seq < $2 ORDER BY c.seq DESC LIMIT 1",
    )
    .bind(to_micros_ceil(cutoff))
    .bind(undelivered_from.unwrap_or(i64::MAX))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;

    let Some(anchor) = anchor else {
        return Ok(PurgeOutcome::default());
    };

    let deleted = sqlx::query("DELETE FROM audit_events WHERE seq <= $1")
        .bind(anchor)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?
        .rows_affected();
    let deleted_checkpoints = sqlx::query("DELETE FROM audit_checkpoints WHERE seq < $1")
        .bind(anchor)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?
        .rows_affected();

    Ok(PurgeOutcome {
        deleted,
        deleted_checkpoints,
        kept_from_seq: Some(anchor.saturating_add(1)),
    })
}

fn decode_checkpoint(row: &SqliteRow) -> Result<Checkpoint, StoreError> {
    let time_us: i64 = row.try_get("time_us").map_err(db_error)?;
    Ok(Checkpoint {
        seq: row.try_get("seq").map_err(db_error)?,
        head_hash: row.try_get("head_hash").map_err(db_error)?,
        time: from_micros("audit_checkpoints.time_us", time_us)?,
        signature: row.try_get("signature").map_err(db_error)?,
    })
}

//! Delivery cursors of log streams.

use jiff::Timestamp;
use sqlx::{Row, SqlitePool};

use super::codec::{db_error, from_micros, to_micros};
use crate::error::StoreError;
use crate::model::StreamCursor;

/// Returns the cursor of the stream `name`.
pub(super) async fn get(pool: &SqlitePool, name: &str) -> Result<Option<StreamCursor>, StoreError> {
    let row = sqlx::query(
        "SELECT name, delivered_seq, checkpoint_seq, updated_at_us FROM log_stream_cursors WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    row.as_ref().map(decode).transpose()
}

/// Returns every cursor, sorted by stream name.
pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<StreamCursor>, StoreError> {
    let rows = sqlx::query(
        "SELECT name, delivered_seq, checkpoint_seq, updated_at_us FROM log_stream_cursors ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.iter().map(decode).collect()
}

/// Moves the cursor forward; each sequence number keeps the larger of its stored and new value.
pub(super) async fn advance(
    pool: &SqlitePool,
    name: &str,
    delivered_seq: i64,
    checkpoint_seq: i64,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO log_stream_cursors (name, delivered_seq, checkpoint_seq, updated_at_us) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET \
           delivered_seq = MAX(delivered_seq, excluded.delivered_seq), \
           checkpoint_seq = MAX(checkpoint_seq, excluded.checkpoint_seq), \
           updated_at_us = excluded.updated_at_us",
    )
    .bind(name)
    .bind(delivered_seq)
    .bind(checkpoint_seq)
    .bind(to_micros(now))
    .execute(pool)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Deletes the cursor of the stream `name`; returns whether it existed.
pub(super) async fn delete(pool: &SqlitePool, name: &str) -> Result<bool, StoreError> {
    let result = sqlx::query("DELETE FROM log_stream_cursors WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected() > 0)
}

fn decode(row: &sqlx::sqlite::SqliteRow) -> Result<StreamCursor, StoreError> {
    Ok(StreamCursor {
        name: row.try_get("name").map_err(db_error)?,
        delivered_seq: row.try_get("delivered_seq").map_err(db_error)?,
        checkpoint_seq: row.try_get("checkpoint_seq").map_err(db_error)?,
        updated_at: from_micros(
            "updated_at_us",
            row.try_get("updated_at_us").map_err(db_error)?,
        )?,
    })
}

//! Conversions between store types and SQLite column values, and driver error mapping.

use jiff::Timestamp;
use sqlx::Sqlite;
use sqlx::Transaction;

use crate::error::StoreError;

/// Returns `time` as integer Unix microseconds, dropping sub-microsecond digits.
pub(super) fn to_micros(time: Timestamp) -> i64 {
    time.as_microsecond()
}

/// Returns `time` as integer Unix microseconds, rounded up when it has sub-microsecond digits.
/// Used for time bounds, so that `time_us >= bound` matches exactly the events at or after
/// `time`.
pub(super) fn to_micros_ceil(time: Timestamp) -> i64 {
    let micros = time.as_microsecond();
    if time.subsec_nanosecond() % 1000 > 0 {
        micros.saturating_add(1)
    } else {
        micros
    }
}

/// Returns `time` as integer Unix microseconds, or an error naming `field` when it has
/// sub-microsecond digits that storing would lose.
pub(super) fn to_exact_micros(field: &'static str, time: Timestamp) -> Result<i64, StoreError> {
    if time.subsec_nanosecond() % 1000 != 0 {
        return Err(StoreError::SubMicrosecondTime { field, value: time });
    }
    Ok(time.as_microsecond())
}

/// Decodes a microsecond column named `column`.
pub(super) fn from_micros(column: &str, micros: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(micros)
        .map_err(|err| StoreError::Corrupt(format!("{column} {micros} is out of range: {err}")))
}

/// Decodes an optional microsecond column named `column`.
pub(super) fn from_optional_micros(
    column: &str,
    micros: Option<i64>,
) -> Result<Option<Timestamp>, StoreError> {
    micros.map(|value| from_micros(column, value)).transpose()
}

/// Decodes a JSON TEXT column named `column`.
pub(super) fn from_json_text<T: serde::de::DeserializeOwned>(
    column: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|err| StoreError::Corrupt(format!("{column} is not valid JSON: {err}")))
}

/// Maps a driver error to `StoreError::Database`, keeping the driver's message for logs.
pub(super) fn db_error(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::ColumnDecode { index, source } => {
            StoreError::Corrupt(format!("column {index} failed to decode: {source}"))
        }
        other => StoreError::Database(other.to_string()),
    }
}

/// Returns whether `err` is a UNIQUE or PRIMARY KEY constraint violation.
pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

/// Commits `tx` when `result` is `Ok`, and rolls it back otherwise.
pub(super) async fn finish<T>(
    tx: Transaction<'static, Sqlite>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(db_error)?;
            Ok(value)
        }
        Err(err) => {
            // The caller needs the original error; a failed rollback is only logged.
            if let Err(rollback_err) = tx.rollback().await {
                tracing::warn!(error = %rollback_err, "rollback of a failed write transaction failed");
            }
            Err(err)
        }
    }
}

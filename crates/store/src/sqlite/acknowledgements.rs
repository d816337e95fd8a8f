//! Acknowledgements of fired alerts.

use jiff::Timestamp;
use mayfly_domain::audit::NewAuditEvent;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::audit::append_in;
use super::codec::{db_error, finish, from_micros, to_micros};
use crate::error::StoreError;
use crate::model::AlertAcknowledgement;

/// Acknowledges the alert `alert_id`; see `Store::acknowledge_alert`.
pub(super) async fn acknowledge(
    pool: &SqlitePool,
    alert_id: &str,
    actor: &str,
    now: Timestamp,
    audit: Vec<NewAuditEvent>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = acknowledge_in(&mut tx, alert_id, actor, now, audit).await;
    finish(tx, result).await
}

async fn acknowledge_in(
    conn: &mut SqliteConnection,
    alert_id: &str,
    actor: &str,
    now: Timestamp,
    audit: Vec<NewAuditEvent>,
) -> Result<bool, StoreError> {
    let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM audit_events WHERE id = $1")
        .bind(alert_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    if kind.as_deref() != Some("alert") {
        return Err(StoreError::NotFound {
            kind: "alert".to_string(),
            name: alert_id.to_string(),
        });
    }

    let inserted = sqlx::query(
        "INSERT INTO alert_acknowledgements (alert_id, actor, acknowledged_at_us) VALUES ($1, $2, $3) \
         ON CONFLICT (alert_id) DO NOTHING",
    )
    .bind(alert_id)
    .bind(actor)
    .bind(to_micros(now))
    .execute(&mut *conn)
    .await
    .map_err(db_error)?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    append_in(conn, audit).await?;
    Ok(true)
}

/// Returns the acknowledgements of the alerts among `alert_ids`.
pub(super) async fn list(
    pool: &SqlitePool,
    alert_ids: &[String],
) -> Result<Vec<AlertAcknowledgement>, StoreError> {
    let mut found = Vec::new();
    // One query per id keeps the SQL static; callers pass at most one page of alerts.
    for alert_id in alert_ids {
        let row = sqlx::query("SELECT alert_id, actor, acknowledged_at_us FROM alert_acknowledgements WHERE alert_id = $1")
            .bind(alert_id)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
        if let Some(row) = row {
            found.push(AlertAcknowledgement {
                alert_id: row.try_get("alert_id").map_err(db_error)?,
                actor: row.try_get("actor").map_err(db_error)?,
                acknowledged_at: from_micros(
                    "acknowledged_at_us",
                    row.try_get("acknowledged_at_us").map_err(db_error)?,
                )?,
            });
        }
    }
    Ok(found)
}

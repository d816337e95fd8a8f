//! The alert evaluator. It reads audit events in sequence order after its durable cursor and
//! feeds them to the configured alert rules. Each alert is written as an audit event of kind
//! `alert`, so alerts reach the log streams like every other event.
//!
//! NOTE: the rules' windows live in memory. After a restart the evaluator resumes from its
//! cursor with empty windows, so failures counted before the restart do not add to those after.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mayfly_domain::alerts::AlertEngine;
use mayfly_domain::audit::{AuditKind, NewAuditEvent};
use mayfly_store::{AuditFilter, StoreError};
use serde_json::Value;

use crate::clock;
use crate::state::SharedState;

/// Name of the evaluator's cursor among the log stream cursors. Stream names are DNS labels, so
/// they cannot take this one.
const CURSOR: &str = "@alert-rules";
/// Events read per step.
const BATCH: u32 = 500;
/// How often the evaluator looks for new events when it has read them all.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Runs the evaluator until the process ends.
pub async fn run(state: SharedState) {
    let mut engine = AlertEngine::default();
    let mut failing = false;
    loop {
        match step(&state, &mut engine).await {
            Ok(read) => {
                if failing {
                    tracing::info!("alert evaluation recovered");
                    failing = false;
                }
                if read < BATCH as usize {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(error = %error, "alert evaluation failed; retrying");
                    failing = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Evaluates one batch of events; returns how many were read.
async fn step(
    state: &Arc<crate::state::AppState>,
    engine: &mut AlertEngine,
) -> Result<usize, StoreError> {
    let delivered = match state.store.get_stream_cursor(CURSOR).await? {
        Some(cursor) => cursor.delivered_seq,
        None => {
            // A new evaluator starts at the chain head: rules judge what happens from now on.
            let head = state.store.audit_head().await?.map_or(0, |(seq, _)| seq);
            state
                .store
                .advance_stream_cursor(CURSOR, head, 0, clock::now())
                .await?;
            head
        }
    };
    let events = state.store.audit_range(delivered + 1, BATCH).await?;
    let Some(last) = events.last() else {
        return Ok(0);
    };
    let last_seq = last.seq;

    let snapshot = state.config();
    let rules: Vec<_> = snapshot.config.alert_rules.values().cloned().collect();
    let mut fired = Vec::new();
    for event in &events {
        for alert in engine.observe(&rules, event) {
            let mut record = NewAuditEvent::new(
                clock::new_event_id(),
                clock::now(),
                AuditKind::Alert,
                alert.detail(),
            );
            record.client_workload = alert.client_workload.clone();
            record.server_workload = alert.server_workload.clone();
            tracing::warn!(rule = %alert.rule, key = %alert.key, message = %alert.message, "alert raised");
            fired.push(record);
        }
    }

    // The alerts and the cursor are written one after the other, so after a crash in between
    // the same events are evaluated again. The alerts they raised then are already stored
    // after the cursor, and are not written twice: each alert keeps one id.
    if !fired.is_empty() {
        let stored = stored_alerts_after(state, delivered).await?;
        fired.retain(|record| !stored.contains(&alert_identity(&record.detail)));
    }
    if !fired.is_empty() {
        state.store.append_audit(fired).await?;
    }
    state
        .store
        .advance_stream_cursor(CURSOR, last_seq, 0, clock::now())
        .await?;
    Ok(events.len())
}

/// Alert events read at most when looking for alerts already raised after the cursor.
const MAX_STORED_ALERTS: u32 = 10_000;

/// Returns the rule, key and trigger event of the alerts stored after `delivered`.
async fn stored_alerts_after(
    state: &crate::state::AppState,
    delivered: i64,
) -> Result<BTreeSet<(String, String, String)>, StoreError> {
    let filter = AuditFilter {
        kind: Some(AuditKind::Alert),
        after_seq: Some(delivered),
        limit: MAX_STORED_ALERTS,
        descending: false,
        ..AuditFilter::default()
    };
    let alerts = state.store.list_audit(&filter).await?;
    Ok(alerts
        .iter()
        .map(|alert| alert_identity(&alert.event.detail))
        .collect())
}

/// Identifies an alert by its rule, key and trigger event id.
fn alert_identity(detail: &Value) -> (String, String, String) {
    let text = |field: &str| {
        detail
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (text("rule"), text("key"), text("trigger_id"))
}

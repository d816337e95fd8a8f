//! The task that delivers one notification target: find the alerts after the cursor that name
//! the target, send each one with a timeout, then move the cursor past it. Failures back off
//! exponentially with jitter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mayfly_domain::audit::{AuditEvent, AuditKind};
use mayfly_domain::notification::NotificationTarget;
use mayfly_store::{AuditFilter, Store, StoreError};
use serde_json::{Value, json};

use super::webhook::{NotifyError, WebhookClient};
use super::{TargetState, TargetStatus, cursor_name, lock};
use crate::clock;
use crate::keys::KeyRing;
use crate::log_streams::RetryPolicy;

/// How often a caught-up target looks for new alerts.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Alert events read per step.
const BATCH: u32 = 100;
/// Alert events counted at most when computing a target's lag.
const MAX_PENDING_SCAN: u32 = 10_000;

/// Shared by every target task.
pub struct SendContext {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyRing>,
    pub retry: RetryPolicy,
}

/// The failure of one delivery step.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// Reading alerts or writing the cursor failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The receiver did not accept an alert.
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

/// Runs the target until the task is aborted.
pub async fn run(
    context: Arc<SendContext>,
    target: NotificationTarget,
    status: Arc<Mutex<TargetStatus>>,
) {
    let name = target.name.clone();
    let mut failures: u32 = 0;
    let mut client: Option<WebhookClient> = None;
    loop {
        match step(&context, &target, &status, &mut client).await {
            Ok(at_head) => {
                if failures > 0 {
                    tracing::info!(target_name = %name, failures, "notification delivery recovered");
                }
                failures = 0;
                {
                    let mut current = lock(&status);
                    current.state = if at_head {
                        TargetState::CaughtUp
                    } else {
                        TargetState::Delivering
                    };
                    current.failing_since = None;
                    current.last_error = None;
                }
                if at_head {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let message = error.to_string();
                if failures == 1 {
                    tracing::warn!(target_name = %name, error = %message, "notification delivery failed; retrying with backoff");
                } else {
                    tracing::debug!(target_name = %name, error = %message, failures, "notification delivery failed again");
                }
                metrics::counter!("mayfly_notification_failures_total", "target" => name.clone())
                    .increment(1);
                let delivered_seq = {
                    let mut current = lock(&status);
                    current.state = TargetState::Failing;
                    current.failing_since.get_or_insert_with(clock::now);
                    current.last_error = Some(message);
                    current.delivered_seq
                };
                if let Ok(pending) =
                    pending_alerts(context.store.as_ref(), &name, delivered_seq).await
                {
                    metrics::gauge!("mayfly_notification_lag_alerts", "target" => name.clone())
                        .set(pending as f64);
                }
                // A client that failed is built again, so a broken connection is not reused.
                client = None;
                tokio::time::sleep(context.retry.delay(failures)).await;
            }
        }
    }
}

/// Sends the alerts after the cursor that name the target, oldest first. Returns whether the
/// target reached the chain head as it was when the step began.
async fn step(
    context: &SendContext,
    target: &NotificationTarget,
    status: &Mutex<TargetStatus>,
    client: &mut Option<WebhookClient>,
) -> Result<bool, StepError> {
    let store = context.store.as_ref();
    let cursor = cursor_name(&target.name);
    let delivered = match store.get_stream_cursor(&cursor).await? {
        Some(position) => position.delivered_seq,
        None => {
            // The configuration write that created the target normally sets the cursor. Without
            // one (a crash right after that write), the target starts at the chain head.
            let head = store.audit_head().await?.map_or(0, |(seq, _)| seq);
            store
                .advance_stream_cursor(&cursor, head, 0, clock::now())
                .await?;
            head
        }
    };
    lock(status).delivered_seq = delivered;

    let head = store.audit_head().await?.map_or(0, |(seq, _)| seq);
    if head <= delivered {
        metrics::gauge!("mayfly_notification_lag_alerts", "target" => target.name.clone()).set(0.0);
        return Ok(true);
    }
    let filter = AuditFilter {
        kind: Some(AuditKind::Alert),
        after_seq: Some(delivered),
        before_seq: Some(head + 1),
        limit: BATCH,
        descending: false,
        ..AuditFilter::default()
    };
    let alerts = store.list_audit(&filter).await?;
    let full = alerts.len() == BATCH as usize;

    for alert in alerts.iter().filter(|alert| notifies(alert, &target.name)) {
        {
            let mut current = lock(status);
            if current.state != TargetState::Failing {
                current.state = TargetState::Delivering;
            }
        }
        if client.is_none() {
            *client = Some(WebhookClient::new(target, context.keys.kek())?);
        }
        if let Some(webhook) = client.as_ref() {
            webhook
                .send(&alert.event.id, &alert_document(alert, &target.name))
                .await?;
        }
        store
            .advance_stream_cursor(&cursor, alert.seq, 0, clock::now())
            .await?;
        metrics::counter!("mayfly_notifications_delivered_total", "target" => target.name.clone())
            .increment(1);
        let mut current = lock(status);
        current.delivered_seq = alert.seq;
        current.delivered_alerts += 1;
        current.last_delivery_at = Some(clock::now());
    }

    // Alerts for other targets and every other event up to the head need nothing more.
    let done = if full {
        alerts.last().map_or(delivered, |alert| alert.seq)
    } else {
        head
    };
    store
        .advance_stream_cursor(&cursor, done, 0, clock::now())
        .await?;
    lock(status).delivered_seq = done;
    let pending = if full {
        pending_alerts(store, &target.name, done).await?
    } else {
        0
    };
    metrics::gauge!("mayfly_notification_lag_alerts", "target" => target.name.clone())
        .set(pending as f64);
    Ok(!full)
}

/// Tells whether `event` is an alert whose rule named the target `name` when it fired.
fn notifies(event: &AuditEvent, name: &str) -> bool {
    event.event.kind == AuditKind::Alert
        && event
            .event
            .detail
            .get("notify")
            .and_then(Value::as_array)
            .is_some_and(|targets| targets.iter().any(|target| target.as_str() == Some(name)))
}

/// Counts the alerts after `delivered_seq` that name the target `name` (at most the alerts
/// among the next 10,000 alert events).
pub async fn pending_alerts(
    store: &dyn Store,
    name: &str,
    delivered_seq: i64,
) -> Result<u64, StoreError> {
    let filter = AuditFilter {
        kind: Some(AuditKind::Alert),
        after_seq: Some(delivered_seq),
        limit: MAX_PENDING_SCAN,
        descending: false,
        ..AuditFilter::default()
    };
    let alerts = store.list_audit(&filter).await?;
    Ok(alerts.iter().filter(|alert| notifies(alert, name)).count() as u64)
}

/// Returns the JSON document a target receives for the alert `event`.
pub fn alert_document(event: &AuditEvent, target: &str) -> Value {
    let detail = &event.event.detail;
    json!({
        "alert_id": event.event.id,
        "seq": event.seq,
        "time": event.event.time.to_string(),
        "rule": detail.get("rule"),
        "rule_kind": detail.get("rule_kind"),
        "severity": detail.get("severity"),
        "summary": detail.get("message"),
        "subject": detail.get("key"),
        "client_workload": event.event.client_workload,
        "server_workload": event.event.server_workload,
        "trigger": {"event_id": detail.get("trigger_id"), "seq": detail.get("trigger_seq")},
        "target": target,
    })
}

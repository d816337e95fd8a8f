//! Delivery of fired alerts to notification targets: one task per configured target sends each
//! alert whose rule named the target in `notify`, as one JSON document.
//!
//! A target's durable cursor is the audit sequence number up to which it has handled every
//! alert. A task sends one alert and waits for the receiver to accept it, bounded by the
//! target's timeout. Only then does it move the cursor. So delivery is at least once and in
//! sequence order, and an alert sent again after a failure or a restart carries the same
//! `alert_id`. The tasks
//! read from the store, never from the request path, so a slow, hung or failing receiver delays
//! only its own target.
//!
//! A new target's cursor starts at the audit event that created it, so alerts that fired before
//! the target existed are not sent to it.

mod sender;
mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use mayfly_domain::config::Config;
use mayfly_domain::notification::NotificationTarget;
use mayfly_store::{Store, StoreError};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::keys::KeyRing;
use crate::log_streams::RetryPolicy;

pub use sender::{alert_document, pending_alerts};

/// Returns the name of the cursor of target `name` among the stored delivery cursors. Resource
/// names are DNS labels, so no log stream can take it.
pub fn cursor_name(name: &str) -> String {
    format!("@notification-target/{name}")
}

/// The activity of a target's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// The task started and has not finished its first pass yet.
    Starting,
    /// Sending alerts that are waiting.
    Delivering,
    /// Every alert for the target has been delivered.
    CaughtUp,
    /// The last send failed; the task retries with backoff.
    Failing,
}

/// A target's delivery state as the API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub state: TargetState,
    /// Audit sequence number up to which every alert for the target has been handled.
    pub delivered_seq: i64,
    /// Alerts delivered since the server started.
    pub delivered_alerts: u64,
    pub last_delivery_at: Option<Timestamp>,
    /// When the current run of failures began.
    pub failing_since: Option<Timestamp>,
    pub last_error: Option<String>,
}

struct Running {
    spec: NotificationTarget,
    status: Arc<Mutex<TargetStatus>>,
    task: JoinHandle<()>,
}

/// Starts, restarts and stops the target tasks so that they match the configuration.
pub struct NotificationManager {
    store: Arc<dyn Store>,
    context: Arc<sender::SendContext>,
    running: Mutex<BTreeMap<String, Running>>,
}

impl NotificationManager {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<KeyRing>,
        retry: RetryPolicy,
    ) -> NotificationManager {
        let context = Arc::new(sender::SendContext {
            store: store.clone(),
            keys,
            retry,
        });
        NotificationManager {
            store,
            context,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts a task for each new target, restarts the tasks of changed targets, and stops those
    /// of deleted targets, deleting their cursors.
    pub async fn reconcile(&self, config: &Config) {
        let mut removed = Vec::new();
        {
            let mut running = lock(&self.running);
            running.retain(|name, target| {
                let keep = config
                    .notification_targets
                    .get(name)
                    .is_some_and(|spec| *spec == target.spec);
                if !keep {
                    target.task.abort();
                    if !config.notification_targets.contains_key(name) {
                        removed.push(name.clone());
                    }
                }
                keep
            });
            for (name, spec) in &config.notification_targets {
                if running.contains_key(name) {
                    continue;
                }
                let status = Arc::new(Mutex::new(TargetStatus {
                    state: TargetState::Starting,
                    delivered_seq: 0,
                    delivered_alerts: 0,
                    last_delivery_at: None,
                    failing_since: None,
                    last_error: None,
                }));
                let task = tokio::spawn(sender::run(
                    self.context.clone(),
                    spec.clone(),
                    status.clone(),
                ));
                tracing::info!(target_name = %name, kind = spec.kind.as_str(), "notification target started");
                running.insert(
                    name.clone(),
                    Running {
                        spec: spec.clone(),
                        status,
                        task,
                    },
                );
            }
        }
        for name in removed {
            tracing::info!(target_name = %name, "notification target stopped and its cursor deleted");
            if let Err(error) = self.store.delete_stream_cursor(&cursor_name(&name)).await {
                tracing::warn!(target_name = %name, error = %error, "deleting the cursor of a removed notification target failed");
            }
        }
    }

    /// Returns the status of the target `name`, when its task runs.
    pub fn status(&self, name: &str) -> Option<TargetStatus> {
        lock(&self.running)
            .get(name)
            .map(|target| lock(&target.status).clone())
    }

    /// Returns the lowest sequence number that some configured target has not handled yet, for
    /// the retention purge; `None` when no target is configured.
    pub async fn undelivered_from(&self, config: &Config) -> Result<Option<i64>, StoreError> {
        let mut lowest: Option<i64> = None;
        for name in config.notification_targets.keys() {
            let next = match self.store.get_stream_cursor(&cursor_name(name)).await? {
                Some(cursor) => cursor.delivered_seq + 1,
                // A target whose task has not set its cursor yet spares everything.
                None => 1,
            };
            lowest = Some(lowest.map_or(next, |current| current.min(next)));
        }
        Ok(lowest)
    }

    /// Stops every task.
    pub fn stop(&self) {
        for target in lock(&self.running).values() {
            target.task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

//! Log stream shipping: one task per configured stream delivers audit events and signed
//! checkpoints from the store to the stream's destination.
//!
//! Each task reads from the store, never from the request path, so a slow, hung or failing
//! destination delays only its own stream: credential issuance and the other streams go on.
//! A task sends a batch, waits for the destination to accept it (bounded by the stream's
//! timeout), and only then moves the stream's durable cursor. Delivery is therefore at least
//! once and in sequence order; a batch sent again after a failure or a restart carries the same
//! event ids.

mod destination;
mod file;
mod http;
mod nats;
pub mod secrets;
mod shipper;
mod syslog;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use mayfly_domain::config::Config;
use mayfly_domain::log_stream::LogStream;
use mayfly_store::{Store, StoreError};
use serde::Serialize;
use tokio::task::JoinHandle;

pub use shipper::RetryPolicy;

/// The activity of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// The task started and has not finished its first delivery yet.
    Starting,
    /// Delivering a backlog.
    Delivering,
    /// Every stored event has been delivered.
    CaughtUp,
    /// The last send failed; the task retries with backoff.
    Failing,
}

/// A stream's state as the API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub state: StreamState,
    /// Highest audit sequence number delivered or skipped by the filter.
    pub delivered_seq: i64,
    /// Records (events and checkpoints) delivered since the server started.
    pub delivered_records: u64,
    pub last_delivery_at: Option<Timestamp>,
    /// When the current run of failures began.
    pub failing_since: Option<Timestamp>,
    pub last_error: Option<String>,
}

impl StreamStatus {
    fn starting(delivered_seq: i64) -> StreamStatus {
        StreamStatus {
            state: StreamState::Starting,
            delivered_seq,
            delivered_records: 0,
            last_delivery_at: None,
            failing_since: None,
            last_error: None,
        }
    }
}

struct Running {
    spec: LogStream,
    status: Arc<Mutex<StreamStatus>>,
    task: JoinHandle<()>,
}

/// Starts, restarts and stops the shipper tasks so that they match the configuration.
pub struct StreamManager {
    store: Arc<dyn Store>,
    context: Arc<shipper::ShipContext>,
    running: Mutex<BTreeMap<String, Running>>,
}

impl StreamManager {
    pub fn new(store: Arc<dyn Store>, retry: RetryPolicy) -> StreamManager {
        let context = Arc::new(shipper::ShipContext::new(store.clone(), retry));
        StreamManager {
            store,
            context,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts a task for each new stream, restarts the tasks of changed streams, and stops those
    /// of deleted streams, deleting their cursors.
    pub async fn reconcile(&self, config: &Config) {
        let mut removed = Vec::new();
        {
            let mut running = lock(&self.running);
            running.retain(|name, stream| {
                let keep = config
                    .log_streams
                    .get(name)
                    .is_some_and(|spec| *spec == stream.spec);
                if !keep {
                    stream.task.abort();
                    if !config.log_streams.contains_key(name) {
                        removed.push(name.clone());
                    }
                }
                keep
            });
            for (name, spec) in &config.log_streams {
                if running.contains_key(name) {
                    continue;
                }
                let status = Arc::new(Mutex::new(StreamStatus::starting(0)));
                let task = tokio::spawn(shipper::run(
                    self.context.clone(),
                    spec.clone(),
                    status.clone(),
                ));
                tracing::info!(stream = %name, kind = spec.kind.as_str(), "log stream started");
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
            tracing::info!(stream = %name, "log stream stopped and its cursor deleted");
            if let Err(error) = self.store.delete_stream_cursor(&name).await {
                tracing::warn!(stream = %name, error = %error, "deleting the cursor of a removed log stream failed");
            }
        }
    }

    /// Returns the status of the stream `name`, when it runs.
    pub fn status(&self, name: &str) -> Option<StreamStatus> {
        lock(&self.running)
            .get(name)
            .map(|stream| lock(&stream.status).clone())
    }

    /// Returns the lowest sequence number that some configured stream has not delivered yet, for
    /// the retention purge; `None` when no stream is configured.
    pub async fn undelivered_from(&self, config: &Config) -> Result<Option<i64>, StoreError> {
        if config.log_streams.is_empty() {
            return Ok(None);
        }
        let cursors: BTreeMap<String, i64> = self
            .store
            .list_stream_cursors()
            .await?
            .into_iter()
            .map(|cursor| (cursor.name, cursor.delivered_seq))
            .collect();
        let lowest = config
            .log_streams
            .keys()
            .map(|name| cursors.get(name).map_or(1, |delivered| delivered + 1))
            .min();
        Ok(lowest)
    }

    /// Stops every task.
    pub fn stop(&self) {
        for stream in lock(&self.running).values() {
            stream.task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

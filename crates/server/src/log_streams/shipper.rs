//! The task that delivers one stream: read a batch after the cursor, filter and render it,
//! send it with a timeout, then move the cursor. Failures back off exponentially with jitter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mayfly_domain::audit::{AuditEvent, Checkpoint};
use mayfly_domain::log_format::{self, Product, Record};
use mayfly_domain::log_stream::{LogStream, StreamFormat, StreamKind};
use mayfly_store::{Store, StoreError};

use super::destination::{self, DeliveryError, Destination, Item};
use super::{StreamState, StreamStatus, lock};
use crate::clock;

/// How often a caught-up stream looks for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Backoff between failed sends: `initial`, doubled after each failure up to `max`, each wait
/// drawn at random between half and all of it, so that many streams do not retry in step. A
/// stream failing for `alert_after` raises an alert.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub alert_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            alert_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Returns the wait after the `failures`-th failure in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let full = self.initial.saturating_mul(1u32 << exponent).min(self.max);
        let jitter = f64::from(random_u32()) / f64::from(u32::MAX);
        full.mul_f64(0.5 + 0.5 * jitter)
    }
}

/// Shared by every shipper task.
pub struct ShipContext {
    store: Arc<dyn Store>,
    retry: RetryPolicy,
    product: Product,
    hostname: String,
}

impl ShipContext {
    pub fn new(store: Arc<dyn Store>, retry: RetryPolicy) -> ShipContext {
        let product = Product {
            name: "Mayfly".to_string(),
            vendor: "Mayfly".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        ShipContext {
            store,
            retry,
            product,
            hostname: hostname(),
        }
    }
}

/// The stream's progress: what it delivered so far.
#[derive(Debug, Clone, Copy)]
struct Position {
    delivered_seq: i64,
    checkpoint_seq: i64,
}

/// One batch read from the store.
struct Batch {
    items: Vec<Item>,
    next: Position,
    /// Whether the batch ends at the chain head (nothing more to read).
    at_head: bool,
}

/// Runs the stream until the task is aborted.
pub async fn run(context: Arc<ShipContext>, stream: LogStream, status: Arc<Mutex<StreamStatus>>) {
    let name = stream.name.clone();
    let mut failures: u32 = 0;
    let mut failing_since: Option<std::time::Instant> = None;
    let mut alerted = false;
    let mut position = None;
    let mut destination: Option<Box<dyn Destination>> = None;
    // The status starts from the durable cursor, so a stream that fails right after a restart
    // reports its true lag.
    if let Ok(Some(cursor)) = context.store.get_stream_cursor(&name).await {
        lock(&status).delivered_seq = cursor.delivered_seq;
    }

    loop {
        let step = deliver_once(&context, &stream, &mut position, &mut destination).await;
        match step {
            Ok(Some((delivered, next, at_head))) => {
                if failures > 0 {
                    tracing::info!(stream = %name, failures, "log stream delivery recovered");
                }
                failures = 0;
                failing_since = None;
                alerted = false;
                {
                    let mut current = lock(&status);
                    current.state = if at_head {
                        StreamState::CaughtUp
                    } else {
                        StreamState::Delivering
                    };
                    current.delivered_seq = next.delivered_seq;
                    current.failing_since = None;
                    current.last_error = None;
                    if delivered > 0 {
                        current.delivered_records += delivered as u64;
                        current.last_delivery_at = Some(clock::now());
                    }
                }
                if delivered > 0 {
                    metrics::counter!("mayfly_log_stream_records_delivered_total", "stream" => name.clone()).increment(delivered as u64);
                }
                if at_head {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
            Ok(None) => {
                lock(&status).state = StreamState::CaughtUp;
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let message = error.to_string();
                if failures == 1 {
                    tracing::warn!(stream = %name, error = %message, "log stream delivery failed; retrying with backoff");
                } else {
                    tracing::debug!(stream = %name, error = %message, failures, "log stream delivery failed again");
                }
                metrics::counter!("mayfly_log_stream_failures_total", "stream" => name.clone())
                    .increment(1);
                let delivered_seq = {
                    let mut current = lock(&status);
                    current.state = StreamState::Failing;
                    current.failing_since.get_or_insert_with(clock::now);
                    current.last_error = Some(message);
                    current.delivered_seq
                };
                // The lag keeps growing while the stream fails, and the metric shows it.
                if let Ok(head) = context.store.audit_head().await {
                    let head = head.map_or(0, |(seq, _)| seq);
                    metrics::gauge!("mayfly_log_stream_lag_events", "stream" => name.clone())
                        .set((head - delivered_seq).max(0) as f64);
                }
                let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                if !alerted && since.elapsed() >= context.retry.alert_after {
                    alerted = raise_failure_alert(&context, &name, since.elapsed(), &error).await;
                }
                // A destination that failed is built again, so a broken connection is not reused.
                destination = None;
                tokio::time::sleep(context.retry.delay(failures)).await;
            }
        }
    }
}

/// Writes the alert of a stream that kept failing; returns whether it was written.
async fn raise_failure_alert(
    context: &ShipContext,
    name: &str,
    failing_for: Duration,
    error: &StepError,
) -> bool {
    let message = format!(
        "log stream {name} has been failing for {}s: {error}",
        failing_for.as_secs()
    );
    let detail = serde_json::json!({
        "rule": "log-stream-failing",
        "rule_kind": "log_stream_failing",
        "key": format!("log_stream={name}"),
        "message": message,
    });
    let alert = mayfly_domain::audit::NewAuditEvent::new(
        clock::new_event_id(),
        clock::now(),
        mayfly_domain::audit::AuditKind::Alert,
        detail,
    );
    match context.store.append_audit(vec![alert]).await {
        Ok(_) => {
            tracing::warn!(stream = %name, failing_seconds = failing_for.as_secs(), "log stream failing alert raised");
            true
        }
        Err(store_error) => {
            tracing::warn!(stream = %name, error = %store_error, "writing the log stream failing alert failed; retrying");
            false
        }
    }
}

/// The failure of one delivery step.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// Reading events or writing the cursor failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The destination did not accept the batch.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// Delivers one batch. Returns the number of records sent, the new position and whether the
/// stream reached the head, or `None` when there was nothing new.
async fn deliver_once(
    context: &ShipContext,
    stream: &LogStream,
    position: &mut Option<Position>,
    destination: &mut Option<Box<dyn Destination>>,
) -> Result<Option<(usize, Position, bool)>, StepError> {
    let current = match *position {
        Some(current) => current,
        None => {
            let cursor = context.store.get_stream_cursor(&stream.name).await?;
            let loaded = cursor.map_or(
                Position {
                    delivered_seq: 0,
                    checkpoint_seq: 0,
                },
                |cursor| Position {
                    delivered_seq: cursor.delivered_seq,
                    checkpoint_seq: cursor.checkpoint_seq,
                },
            );
            *position = Some(loaded);
            loaded
        }
    };

    let batch = read_batch(context, stream, current).await?;
    if batch.next.delivered_seq == current.delivered_seq
        && batch.next.checkpoint_seq == current.checkpoint_seq
    {
        return Ok(None);
    }

    if !batch.items.is_empty() {
        if destination.is_none() {
            *destination = Some(destination::build(stream)?);
        }
        if let Some(target) = destination.as_mut() {
            let timeout = stream.send_timeout();
            match tokio::time::timeout(timeout.as_duration(), target.send(&batch.items)).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(DeliveryError::Timeout {
                        seconds: timeout.as_secs(),
                    }
                    .into());
                }
            }
        }
    }

    context
        .store
        .advance_stream_cursor(
            &stream.name,
            batch.next.delivered_seq,
            batch.next.checkpoint_seq,
            clock::now(),
        )
        .await?;
    *position = Some(batch.next);
    let head = context.store.audit_head().await?.map_or(0, |(seq, _)| seq);
    metrics::gauge!("mayfly_log_stream_lag_events", "stream" => stream.name.clone())
        .set((head - batch.next.delivered_seq).max(0) as f64);
    Ok(Some((batch.items.len(), batch.next, batch.at_head)))
}

/// Reads the events after the cursor and the checkpoints they complete, filters and renders
/// them in sequence order (a checkpoint right after the event it covers).
async fn read_batch(
    context: &ShipContext,
    stream: &LogStream,
    current: Position,
) -> Result<Batch, StoreError> {
    let limit = stream.batch();
    let events = context
        .store
        .audit_range(current.delivered_seq + 1, limit)
        .await?;
    let at_head = events.len() < limit as usize;
    let delivered_seq = events
        .last()
        .map_or(current.delivered_seq, |event| event.seq);

    let checkpoints: Vec<Checkpoint> = context
        .store
        .checkpoints_after(current.checkpoint_seq, limit)
        .await?
        .into_iter()
        .filter(|checkpoint| checkpoint.seq <= delivered_seq)
        .collect();
    let checkpoint_seq = checkpoints
        .last()
        .map_or(current.checkpoint_seq, |checkpoint| checkpoint.seq);

    let selected: Vec<&AuditEvent> = events
        .iter()
        .filter(|event| stream.filter.matches(event))
        .collect();
    let mut records: Vec<Record<'_>> = selected.into_iter().map(Record::Event).collect();
    records.extend(checkpoints.iter().map(Record::Checkpoint));
    records.sort_by_key(|record| (record.seq(), matches!(record, Record::Checkpoint(_))));

    let items = records
        .into_iter()
        .map(|record| render(context, stream, record))
        .collect();
    Ok(Batch {
        items,
        next: Position {
            delivered_seq,
            checkpoint_seq,
        },
        at_head,
    })
}

fn render(context: &ShipContext, stream: &LogStream, record: Record<'_>) -> Item {
    let payload = log_format::render(stream.format, record, &context.product);
    let line = if stream.kind == StreamKind::Syslog {
        log_format::render_syslog(record, &payload, &context.hostname)
    } else {
        payload
    };
    Item {
        id: record.id(),
        time: record.time(),
        line,
        is_json: stream.format != StreamFormat::Cef,
    }
}

/// Returns this machine's host name, or `-` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "-".to_string())
}

/// Returns a random number for backoff jitter; not for anything secret.
fn random_u32() -> u32 {
    (uuid::Uuid::new_v4().as_u128() >> 64) as u32
}

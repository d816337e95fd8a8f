//! The durable audit log: group commit of credential events, signed checkpoints, the retention
//! purge, and chain verification.
//!
//! Credential requests hand their event to one writer task and wait for its reply. The writer
//! appends everything that queued up while the previous batch was being written in one
//! transaction (group commit), so one fsync covers many requests and each request still gets its
//! response only after its event is durable.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use mayfly_crypto::checkpoint::{sign_checkpoint, verify_checkpoint};
use mayfly_crypto::signing::Algorithm;
use mayfly_domain::audit::{AuditEvent, Checkpoint, GENESIS_HASH, NewAuditEvent, chain_hash};
use mayfly_store::{Store, StoreError};
use serde::Serialize;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::clock;
use crate::keys::KeyRing;

/// Most events written in one transaction.
const MAX_BATCH: usize = 512;
/// Requests that may wait for the writer before new ones are turned away.
const QUEUE_DEPTH: usize = 8192;
/// Events read per page while verifying the chain.
const VERIFY_PAGE_SIZE: u32 = 1000;

/// Why an audit write failed. The credential that depended on it is not released.
#[derive(Debug, thiserror::Error)]
pub enum AuditWriteError {
    /// The store rejected or failed the write.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer task has stopped (the server is shutting down).
    #[error("the audit writer has stopped")]
    Stopped,
}

struct Pending {
    event: NewAuditEvent,
    reply: oneshot::Sender<Result<AuditEvent, AuditWriteError>>,
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Pending>,
}

impl AuditWriter {
    /// Starts the writer on a thread of its own. On the shared runtime it would wait behind every
    /// runnable request task at each of its awaits, and since all waiting requests depend on it,
    /// that delay would set the pace of the whole server.
    pub fn start(
        store: Arc<dyn Store>,
        checkpoints: Arc<Checkpointer>,
    ) -> std::io::Result<AuditWriter> {
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("mayfly-audit".to_string())
            .spawn(move || runtime.block_on(run_writer(store, checkpoints, receiver)))?;
        Ok(AuditWriter { queue })
    }

    /// Appends one event and returns it once it is durable.
    pub async fn write(&self, event: NewAuditEvent) -> Result<AuditEvent, AuditWriteError> {
        let (reply, response) = oneshot::channel();
        self.queue
            .send(Pending { event, reply })
            .await
            .map_err(|_| AuditWriteError::Stopped)?;
        response.await.map_err(|_| AuditWriteError::Stopped)?
    }
}

async fn run_writer(
    store: Arc<dyn Store>,
    checkpoints: Arc<Checkpointer>,
    mut receiver: mpsc::Receiver<Pending>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }

        let events: Vec<NewAuditEvent> = batch
            .iter_mut()
            .map(|pending| std::mem::replace(&mut pending.event, placeholder_event()))
            .collect();
        match store.append_audit(events).await {
            Ok(stored) => {
                let appended = stored.len();
                for (pending, event) in batch.drain(..).zip(stored) {
                    let _ = pending.reply.send(Ok(event));
                }
                checkpoints.note_appended(appended).await;
            }
            Err(error) => {
                tracing::error!(error = %error, events = batch.len(), "audit write failed; the credentials of this batch are withheld");
                let message = error.to_string();
                for pending in batch.drain(..) {
                    let _ = pending
                        .reply
                        .send(Err(AuditWriteError::Store(StoreError::Database(
                            message.clone(),
                        ))));
                }
            }
        }
    }
}

/// Stands in for an event moved out of its `Pending` into the batch.
fn placeholder_event() -> NewAuditEvent {
    NewAuditEvent::new(
        String::new(),
        Timestamp::UNIX_EPOCH,
        mayfly_domain::audit::AuditKind::CredentialRequest,
        serde_json::Value::Null,
    )
}

/// Writes signed checkpoints every N events or T seconds.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    keys: Arc<KeyRing>,
    every_events: usize,
    since_last: Mutex<usize>,
}

impl Checkpointer {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<KeyRing>,
        every_events: usize,
    ) -> Arc<Checkpointer> {
        Arc::new(Checkpointer {
            store,
            keys,
            every_events,
            since_last: Mutex::new(0),
        })
    }

    async fn note_appended(&self, count: usize) {
        let due = {
            let mut since_last = self.since_last.lock().await;
            *since_last += count;
            *since_last >= self.every_events
        };
        if due && let Err(error) = self.checkpoint().await {
            tracing::warn!(error = %error, "writing an audit checkpoint failed; retrying at the next interval");
        }
    }

    /// Signs and stores a checkpoint at the chain head, unless the head is already anchored.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let mut since_last = self.since_last.lock().await;
        let Some((seq, head_hash)) = self.store.audit_head().await? else {
            return Ok(None);
        };
        let latest = self.store.latest_checkpoint().await?;
        if latest
            .as_ref()
            .is_some_and(|checkpoint| checkpoint.seq >= seq)
        {
            *since_last = 0;
            return Ok(None);
        }

        let time = clock::now();
        let keys = self.keys.current();
        let Some(key) = keys.active(Algorithm::ES256) else {
            return Err(StoreError::Database(
                "no active ES256 key to sign the checkpoint".to_string(),
            ));
        };
        let signature =
            sign_checkpoint(key, seq, &head_hash, &time.to_string()).map_err(|error| {
                StoreError::Database(format!("signing the checkpoint failed: {error}"))
            })?;
        let checkpoint = Checkpoint {
            seq,
            head_hash,
            time,
            signature,
        };
        match self.store.insert_checkpoint(&checkpoint).await {
            Ok(()) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(error) => return Err(error),
        }
        *since_last = 0;
        tracing::debug!(seq, "audit checkpoint written");
        Ok(Some(checkpoint))
    }
}

/// Runs the periodic checkpoint until the process ends.
pub async fn run_checkpoint_timer(checkpoints: Arc<Checkpointer>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Err(error) = checkpoints.checkpoint().await {
            tracing::warn!(error = %error, "writing an audit checkpoint failed");
        }
    }
}

/// Runs the retention purge once an hour (and once at start) until the process ends.
pub async fn run_purge(state: crate::state::SharedState, retention_days: u32) {
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    loop {
        ticker.tick().await;
        if let Err(error) = purge_once(&state, retention_days).await {
            tracing::warn!(error = %error, "audit retention purge failed");
        }
    }
}

/// Deletes events older than the retention, sparing every event that a log stream or a
/// notification target has not handled yet.
pub async fn purge_once(
    state: &crate::state::AppState,
    retention_days: u32,
) -> Result<mayfly_store::PurgeOutcome, StoreError> {
    let cutoff = retention_cutoff(clock::now(), retention_days);
    let config = state.config();
    let streams = state.streams.undelivered_from(&config.config).await?;
    let targets = state.notifications.undelivered_from(&config.config).await?;
    let undelivered_from = match (streams, targets) {
        (Some(stream), Some(target)) => Some(stream.min(target)),
        (stream, target) => stream.or(target),
    };
    let outcome = state
        .store
        .purge_audit_before(cutoff, undelivered_from)
        .await?;
    if outcome.deleted > 0 {
        tracing::info!(deleted = outcome.deleted, kept_from_seq = ?outcome.kept_from_seq, ?undelivered_from, retention_days, "purged old audit events");
    }
    Ok(outcome)
}

/// The result of checking the audit chain.
#[derive(Debug, Clone, Serialize, Default)]
pub struct VerifyReport {
    pub ok: bool,
    pub events_checked: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub checkpoints_checked: u64,
    /// Highest sequence number covered by a valid signed checkpoint.
    pub last_anchored_seq: Option<i64>,
    /// Events after the last checkpoint: intact so far, but not yet signed.
    pub unanchored: u64,
    pub problems: Vec<Problem>,
}

/// One broken link of the chain.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub seq: i64,
    pub problem: String,
}

/// Checks the hash chain and the checkpoint signatures, reporting every problem found.
pub async fn verify(store: &dyn Store, keys: &KeyRing) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let public_keys = keys.current().all_public.clone();
    let checkpoints = store.list_checkpoints().await?;
    let mut valid_checkpoints: Vec<&Checkpoint> = Vec::new();

    for checkpoint in &checkpoints {
        report.checkpoints_checked += 1;
        match verify_checkpoint(&checkpoint.signature, &public_keys) {
            Ok(payload) if payload.seq == checkpoint.seq && payload.head_hash == checkpoint.head_hash => {
                valid_checkpoints.push(checkpoint);
            }
            Ok(_) => report.problems.push(Problem {
                seq: checkpoint.seq,
                problem: format!("checkpoint at event {}: the signed content differs from the stored checkpoint (edited)", checkpoint.seq),
            }),
            Err(error) => report.problems.push(Problem {
                seq: checkpoint.seq,
                problem: format!("checkpoint at event {}: invalid signature: {error}", checkpoint.seq),
            }),
        }
    }

    let mut previous: Option<(i64, String)> = None;
    let mut next_seq = 0;
    let mut page_size = VERIFY_PAGE_SIZE;
    loop {
        let page = match store.audit_range(next_seq, page_size).await {
            Ok(page) => page,
            // A row that does not decode fails its whole page: read one event at a time to
            // reach it, then report it and stop, because the chain cannot be followed past it.
            Err(StoreError::Corrupt(_)) if page_size > 1 => {
                page_size = 1;
                continue;
            }
            Err(StoreError::Corrupt(reason)) => {
                let seq = previous
                    .as_ref()
                    .map_or(1, |(seq, _)| seq.saturating_add(1));
                report.problems.push(Problem {
                    seq,
                    problem: format!("the stored event after event {} cannot be read, so verification stopped there: {reason}", seq - 1),
                });
                break;
            }
            Err(error) => return Err(error),
        };
        let Some(last_seq) = page.last().map(|event| event.seq) else {
            break;
        };
        for event in &page {
            check_event(event, previous.as_ref(), &valid_checkpoints, &mut report);
            report.events_checked += 1;
            report.first_seq.get_or_insert(event.seq);
            report.last_seq = Some(event.seq);
            previous = Some((event.seq, event.hash.clone()));
        }
        // A crafted row at the largest sequence number ends the chain instead of wrapping.
        let Some(following) = last_seq.checked_add(1) else {
            break;
        };
        next_seq = following;
    }

    for checkpoint in &valid_checkpoints {
        if report.last_seq.is_some_and(|last| checkpoint.seq > last) {
            report.problems.push(Problem {
                seq: checkpoint.seq,
                problem: format!("checkpoint at event {} is past the last stored event: events were deleted from the end", checkpoint.seq),
            });
        }
    }

    report.last_anchored_seq = valid_checkpoints
        .iter()
        .map(|checkpoint| checkpoint.seq)
        .max();
    if let Some(last) = report.last_seq {
        let anchored = report.last_anchored_seq.unwrap_or(0);
        report.unanchored = u64::try_from(last - anchored.min(last)).unwrap_or(0);
    }
    report.problems.sort_by_key(|problem| problem.seq);
    report.ok = report.problems.is_empty();
    Ok(report)
}

fn check_event(
    event: &AuditEvent,
    previous: Option<&(i64, String)>,
    checkpoints: &[&Checkpoint],
    report: &mut VerifyReport,
) {
    let problem = |report: &mut VerifyReport, text: String| {
        report.problems.push(Problem {
            seq: event.seq,
            problem: text,
        })
    };

    let expected_prev = match previous {
        Some((seq, hash)) => {
            if event.seq != seq + 1 {
                let missing = if event.seq == seq + 2 {
                    format!("event {} is missing (deleted)", seq + 1)
                } else {
                    format!(
                        "events {} to {} are missing (deleted)",
                        seq + 1,
                        event.seq - 1
                    )
                };
                // Reported at the first missing sequence number, like a deletion from the end.
                report.problems.push(Problem {
                    seq: seq + 1,
                    problem: missing,
                });
            }
            Some(hash.clone())
        }
        None if event.seq == 1 => Some(GENESIS_HASH.to_string()),
        None => {
            // The first remaining event after a purge: a signed checkpoint must anchor it.
            let anchor = checkpoints
                .iter()
                .find(|checkpoint| checkpoint.seq == event.seq - 1);
            match anchor {
                Some(checkpoint) => Some(checkpoint.head_hash.clone()),
                None => {
                    problem(
                        report,
                        format!(
                            "events before {} are missing and no signed checkpoint anchors event {} (deleted)",
                            event.seq, event.seq
                        ),
                    );
                    None
                }
            }
        }
    };

    let recomputed = chain_hash(&event.prev_hash, event.seq, &event.event);
    if recomputed != event.hash {
        problem(
            report,
            format!(
                "event {}: its content does not match its hash (edited)",
                event.seq
            ),
        );
    } else if let Some(expected) = expected_prev
        && expected != event.prev_hash
        && previous.is_none_or(|(seq, _)| event.seq == seq + 1)
    {
        problem(
            report,
            format!(
                "event {}: prev_hash does not match the hash of the event before it (reordered or replaced)",
                event.seq
            ),
        );
    }

    if let Some(checkpoint) = checkpoints
        .iter()
        .find(|checkpoint| checkpoint.seq == event.seq)
        && checkpoint.head_hash != event.hash
    {
        problem(
            report,
            format!(
                "event {}: its hash differs from the one its signed checkpoint recorded (edited or replaced)",
                event.seq
            ),
        );
    }
}

/// Returns the time of the oldest event a retention of `days` keeps.
pub fn retention_cutoff(now: Timestamp, days: u32) -> Timestamp {
    now - jiff::SignedDuration::from_hours(24 * i64::from(days))
}

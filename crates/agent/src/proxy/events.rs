//! Injection events: every credential the proxy injects is recorded, spooled to a file in the
//! data directory and posted to the server (`POST /v1/agents/injection-events`) in batches,
//! where each event joins the audit log.
//!
//! An event is appended to the spool file before the request is forwarded, and removed only
//! after the server accepted its batch, so events survive an agent restart and a server outage.
//! A batch whose response was lost is sent again, so the server may record an event twice; the
//! `event_id` identifies the copies. When the spool contains `max_spooled` events, new events are
//! dropped and each drop is counted and logged.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};

use crate::client::ServerClient;
use crate::identity::Identity;

/// Name of the spool file in the data directory: one JSON event per line.
pub const SPOOL_FILE: &str = "injection-events.jsonl";

/// Maximum number of events in one batch; the server accepts at most 100.
const MAX_BATCH: usize = 100;

/// First wait after a failed batch; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The facts of one injection, without the credential or any query value.
pub struct InjectionRecord<'a> {
    pub attributes: &'a BTreeMap<String, Vec<String>>,
    pub host: &'a str,
    pub port: u16,
    pub method: &'a str,
    /// The request path without its query string.
    pub path: &'a str,
    pub server_workload: &'a str,
    pub credential_request_id: &'a str,
    pub mode: &'a str,
    pub spiffe_id: &'a str,
}

/// The spool and the sender's queue.
pub struct InjectionEvents {
    path: PathBuf,
    max_spooled: usize,
    pending: Mutex<VecDeque<Value>>,
    wake: Notify,
    dropped: AtomicU64,
}

impl InjectionEvents {
    /// Opens the spool in `data_dir`, loading the events a previous run did not deliver.
    pub fn open(data_dir: &Path, max_spooled: usize) -> Result<InjectionEvents, String> {
        let path = data_dir.join(SPOOL_FILE);
        let mut pending = VecDeque::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (number, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Value>(line) {
                        Ok(event) => pending.push_back(event),
                        // A line cut short by a crash in the middle of an append.
                        Err(error) => {
                            tracing::warn!(spool = %path.display(), line = number + 1, error = %error, "skipping an unreadable injection event in the spool")
                        }
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(format!("{}: {error}", path.display())),
        }
        if !pending.is_empty() {
            tracing::info!(
                events = pending.len(),
                "injection events from an earlier run are waiting to be sent"
            );
        }
        Ok(InjectionEvents {
            path,
            max_spooled: max_spooled.max(1),
            pending: Mutex::new(pending),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Returns the number of events not yet accepted by the server.
    pub async fn pending(&self) -> usize {
        self.pending.lock().await.len()
    }

    /// Returns the number of events dropped because the spool was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spools one event for sending.
    pub async fn record(&self, record: InjectionRecord<'_>) {
        let event = json!({
            "id": format!("{:032x}", rand::random::<u128>()),
            "time": Timestamp::now().to_string(),
            "attributes": record.attributes,
            "host": record.host,
            "port": record.port,
            "method": record.method,
            "path": record.path,
            "server_workload": record.server_workload,
            "credential_request_id": record.credential_request_id,
            "mode": record.mode,
            "spiffe_id": record.spiffe_id,
        });
        let mut pending = self.pending.lock().await;
        if pending.len() >= self.max_spooled {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // The first drop and every 1,000th after it are logged, so a long outage does not
            // flood the log.
            if dropped == 1 || dropped.is_multiple_of(1000) {
                tracing::error!(dropped_total = dropped, max_spooled = self.max_spooled, host = %record.host, server_workload = %record.server_workload, "injection event spool is full: dropping injection events until the server accepts the spooled ones");
            }
            return;
        }
        if let Err(error) = append_line(&self.path, &event) {
            tracing::error!(spool = %self.path.display(), error = %error, "writing an injection event to the spool failed; it is kept in memory only");
        }
        pending.push_back(event);
        drop(pending);
        self.wake.notify_one();
    }

    /// Sends spooled events in batches forever, backing off after failures.
    pub async fn send_forever(self: Arc<Self>, client: ServerClient, identity: Arc<Identity>) {
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        loop {
            let batch: Vec<Value> = {
                let pending = self.pending.lock().await;
                pending.iter().take(MAX_BATCH).cloned().collect()
            };
            if batch.is_empty() {
                // Also wake up now and then, in case a notification came before the wait.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
                continue;
            }
            let (credential, _) = identity.credential().await;
            match client.injection_events(&credential, &batch).await {
                Ok(_) => {
                    if failing {
                        tracing::info!("sending injection events recovered");
                    }
                    failing = false;
                    backoff = FIRST_BACKOFF;
                    let mut pending = self.pending.lock().await;
                    for _ in 0..batch.len() {
                        pending.pop_front();
                    }
                    if let Err(error) = rewrite(&self.path, &pending) {
                        tracing::error!(spool = %self.path.display(), error = %error, "rewriting the injection event spool failed; sent events may be sent again after a restart");
                    }
                }
                Err(error) => {
                    if failing {
                        tracing::debug!(error = %error, events = batch.len(), "sending injection events failed again");
                    } else {
                        tracing::warn!(error = %error, events = batch.len(), "sending injection events failed; retrying with backoff");
                    }
                    failing = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

fn append_line(path: &Path, event: &Value) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mut line = event.to_string();
    line.push('\n');
    file.write_all(line.as_bytes())
}

/// Replaces the spool with `pending`, through a temporary file renamed into place.
fn rewrite(path: &Path, pending: &VecDeque<Value>) -> std::io::Result<()> {
    let temporary = path.with_extension("jsonl.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    let mut text = String::new();
    for event in pending {
        text.push_str(&event.to_string());
        text.push('\n');
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record<'a>(attributes: &'a BTreeMap<String, Vec<String>>) -> InjectionRecord<'a> {
        InjectionRecord {
            attributes,
            host: "payments.example",
            port: 443,
            method: "GET",
            path: "/v1/balance",
            server_workload: "payments",
            credential_request_id: "req-1",
            mode: "headers",
            spiffe_id: "spiffe://mayfly.local/web",
        }
    }

    #[tokio::test]
    async fn spooled_events_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let attributes = BTreeMap::from([("uid".to_string(), vec!["1000".to_string()])]);
        let events = InjectionEvents::open(dir.path(), 10).unwrap();
        events.record(record(&attributes)).await;
        events.record(record(&attributes)).await;
        drop(events);
        let reopened = InjectionEvents::open(dir.path(), 10).unwrap();
        assert_eq!(reopened.pending().await, 2);
    }

    #[tokio::test]
    async fn full_spool_counts_drops() {
        let dir = tempfile::tempdir().unwrap();
        let attributes = BTreeMap::from([("uid".to_string(), vec!["1000".to_string()])]);
        let events = InjectionEvents::open(dir.path(), 2).unwrap();
        for _ in 0..5 {
            events.record(record(&attributes)).await;
        }
        assert_eq!(events.pending().await, 2);
        assert_eq!(events.dropped(), 3);
    }
}

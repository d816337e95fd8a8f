//! Audit events and the hash chain that links them.
//!
//! Every event is hashed together with its sequence number and the hash of the event before it:
//! `hash = SHA-256(prev_hash || "\n" || seq || "\n" || canonical JSON of the event)`. Editing,
//! deleting or reordering a stored event therefore breaks the chain at that event. The canonical
//! JSON form is `serde_json`'s compact output of a `serde_json::Value`, whose objects keep their
//! keys sorted.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the very first event of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The kind of fact an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A credential decision, granted or denied.
    CredentialRequest,
    /// A change to a configuration resource, including enabling and disabling a server workload.
    ConfigChange,
    /// A signing key or an X.509 CA changed state: generated, activated, retired, removed,
    /// tainted or revoked.
    KeyChange,
    /// An admin token was created or revoked.
    AdminTokenChange,
    /// An agent join token was created, an agent joined, or an agent was evicted.
    AgentChange,
    /// An alert rule fired.
    Alert,
    /// An agent's proxy injected a credential into a request to a server workload.
    CredentialInjection,
}

impl AuditKind {
    pub const ALL: [AuditKind; 7] = [
        AuditKind::CredentialRequest,
        AuditKind::ConfigChange,
        AuditKind::KeyChange,
        AuditKind::AdminTokenChange,
        AuditKind::AgentChange,
        AuditKind::Alert,
        AuditKind::CredentialInjection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::CredentialRequest => "credential_request",
            AuditKind::ConfigChange => "config_change",
            AuditKind::KeyChange => "key_change",
            AuditKind::AdminTokenChange => "admin_token_change",
            AuditKind::AgentChange => "agent_change",
            AuditKind::Alert => "alert",
            AuditKind::CredentialInjection => "credential_injection",
        }
    }

    pub fn parse(value: &str) -> Option<AuditKind> {
        AuditKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
    }
}

/// The outcome of a credential decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }

    pub fn parse(value: &str) -> Option<Outcome> {
        match value {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

/// An audit event before the store gives it a sequence number and a place in the chain.
///
/// The fields are declared in alphabetical order, so serializing the struct directly yields the
/// canonical form (sorted keys) without building a `serde_json::Value` first. A test checks that
/// both forms agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_workload: Option<String>,
    /// Everything else the event records; its shape depends on `kind`. Never contains a secret.
    pub detail: serde_json::Value,
    /// Unique event id (a UUID), kept when the event is shipped again so receivers can drop
    /// duplicates.
    pub id: String,
    pub kind: AuditKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_workload: Option<String>,
    /// When the decision or change happened, truncated to whole microseconds so that the stored
    /// form and the hashed form agree.
    pub time: Timestamp,
}

impl NewAuditEvent {
    /// Builds an event with `time` truncated to microseconds.
    pub fn new(id: String, time: Timestamp, kind: AuditKind, detail: serde_json::Value) -> Self {
        NewAuditEvent {
            client_workload: None,
            detail,
            id,
            kind,
            outcome: None,
            server_workload: None,
            time: truncate_to_micros(time),
        }
    }

    /// Returns the canonical JSON form that the chain hash covers: compact, keys sorted at every
    /// level.
    pub fn canonical_json(&self) -> String {
        // `detail` objects keep sorted keys because serde_json's map is a BTreeMap (the
        // `preserve_order` feature is off), and the struct's own fields are declared sorted.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reports whether `detail` contains a floating-point number anywhere. Such numbers may not
    /// survive a parse and re-serialize unchanged, so stores check their round trip.
    pub fn has_float(&self) -> bool {
        fn walk(value: &serde_json::Value) -> bool {
            match value {
                serde_json::Value::Number(number) => number.is_f64(),
                serde_json::Value::Array(items) => items.iter().any(walk),
                serde_json::Value::Object(map) => map.values().any(walk),
                _ => false,
            }
        }
        walk(&self.detail)
    }
}

/// An audit event as stored: sequence number and chain hashes included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: i64,
    #[serde(flatten)]
    pub event: NewAuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// Computes the chain hash of the event stored at `seq` after an event whose hash is `prev_hash`.
pub fn chain_hash(prev_hash: &str, seq: i64, event: &NewAuditEvent) -> String {
    chain_hash_of_json(prev_hash, seq, &event.canonical_json())
}

/// Computes the same hash as [`chain_hash`] from the event's canonical JSON, for callers that
/// already hold it.
pub fn chain_hash_of_json(prev_hash: &str, seq: i64, canonical_json: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(seq.to_string().as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical_json.as_bytes());
    hex::encode(hasher.finalize())
}

/// A signed statement that the chain up to `seq` ends in `head_hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub head_hash: String,
    pub time: Timestamp,
    /// Compact JWS over the checkpoint's JSON payload `{"seq","head_hash","time"}`, signed by the
    /// server's active signing key; its header names the key.
    pub signature: String,
}

/// Drops sub-microsecond digits, since stores keep microseconds.
pub fn truncate_to_micros(time: Timestamp) -> Timestamp {
    let micros = time.as_microsecond();
    Timestamp::from_microsecond(micros).unwrap_or(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_has_sorted_keys() {
        let mut event = NewAuditEvent::new(
            "id-1".to_string(),
            Timestamp::from_microsecond(1_800_000_000_123_456).unwrap_or(Timestamp::UNIX_EPOCH),
            AuditKind::CredentialRequest,
            serde_json::json!({"zeta": 1, "alpha": {"y": true, "b": [2, "x"]}}),
        );
        event.outcome = Some(Outcome::Failure);
        event.server_workload = Some("api".to_string());
        event.client_workload = Some("billing".to_string());
        let through_value = serde_json::to_value(&event)
            .map(|value| value.to_string())
            .unwrap_or_default();
        assert_eq!(event.canonical_json(), through_value);
    }

    #[test]
    fn finds_floats_in_detail() {
        let time = Timestamp::UNIX_EPOCH;
        let plain = NewAuditEvent::new(
            "a".into(),
            time,
            AuditKind::ConfigChange,
            serde_json::json!({"n": [1, 2]}),
        );
        let float = NewAuditEvent::new(
            "b".into(),
            time,
            AuditKind::ConfigChange,
            serde_json::json!({"n": [{"x": 1.5}]}),
        );
        assert!(!plain.has_float());
        assert!(float.has_float());
    }
}

//! Records that pass through the `Store` trait.

use std::fmt;

use jiff::Timestamp;
use mayfly_domain::audit::{AuditKind, NewAuditEvent, Outcome};
use serde::{Deserialize, Serialize};

/// A stored configuration resource. The store treats `spec` as an opaque JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    pub kind: String,
    pub name: String,
    pub spec: serde_json::Value,
    /// Whether the resource is enabled. Only server workloads are disabled in practice, but the
    /// flag exists on every record.
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The address of a resource: its kind and its name, unique per kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceRef {
    pub kind: String,
    pub name: String,
}

impl ResourceRef {
    /// Builds a reference from a kind and a name.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        ResourceRef {
            kind: kind.into(),
            name: name.into(),
        }
    }
}

/// A resource to insert or replace.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePut {
    pub kind: String,
    pub name: String,
    pub spec: serde_json::Value,
    /// The resources this one references. They replace the references stored before, and each
    /// must exist once the change set is applied.
    pub refs: Vec<ResourceRef>,
}

/// Everything one configuration change writes, applied in a single transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeSet {
    pub puts: Vec<ResourcePut>,
    pub deletes: Vec<ResourceRef>,
    /// Resources to enable (`true`) or disable (`false`), normally server workloads.
    pub set_enabled: Vec<(ResourceRef, bool)>,
    /// Audit events appended to the chain in the same transaction.
    pub audit: Vec<NewAuditEvent>,
    /// The time written to `created_at` and `updated_at`, truncated to microseconds.
    pub now: Timestamp,
}

impl ChangeSet {
    /// Builds an empty change set stamped with `now`.
    pub fn new(now: Timestamp) -> Self {
        ChangeSet {
            puts: Vec::new(),
            deletes: Vec::new(),
            set_enabled: Vec::new(),
            audit: Vec::new(),
            now,
        }
    }

    /// Returns whether the change set writes any resource, which is when a commit bumps the
    /// configuration version.
    pub fn changes_resources(&self) -> bool {
        !(self.puts.is_empty() && self.deletes.is_empty() && self.set_enabled.is_empty())
    }
}

/// The default number of events that `list_audit` returns.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;

/// A query over the audit log. Every field that is set must match.
///
/// The default lists the newest `DEFAULT_AUDIT_LIMIT` events first, as `audit list` shows them.
/// To page, pass the last `seq` of a page as `before_seq` when descending, or as `after_seq`
/// when ascending. Both bounds may be set at once.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditFilter {
    pub server_workload: Option<String>,
    pub client_workload: Option<String>,
    pub outcome: Option<Outcome>,
    pub kind: Option<AuditKind>,
    /// Inclusive lower bound on the event time.
    pub since: Option<Timestamp>,
    /// Exclusive upper bound on the event time.
    pub until: Option<Timestamp>,
    /// Only events with a greater sequence number.
    pub after_seq: Option<i64>,
    /// Only events with a smaller sequence number.
    pub before_seq: Option<i64>,
    /// Maximum number of events returned; 0 returns none.
    pub limit: u32,
    /// Newest first when `true` (the default), oldest first when `false`.
    pub descending: bool,
}

impl Default for AuditFilter {
    fn default() -> Self {
        AuditFilter {
            server_workload: None,
            client_workload: None,
            outcome: None,
            kind: None,
            since: None,
            until: None,
            after_seq: None,
            before_seq: None,
            limit: DEFAULT_AUDIT_LIMIT,
            descending: true,
        }
    }
}

/// The result of a retention purge: what it deleted and where the remaining chain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeOutcome {
    /// Number of audit events deleted.
    pub deleted: u64,
    /// Number of checkpoints deleted. The checkpoint that anchors the remaining chain is kept.
    pub deleted_checkpoints: u64,
    /// Sequence number the remaining chain starts from (the anchoring checkpoint's `seq` plus
    /// one), or `None` when nothing was deleted.
    pub kept_from_seq: Option<i64>,
}

/// A signing key and where it is in its rotation.
///
/// `state` is one of `prepared`, `active`, `retired`, `tainted`, `revoked` or `removed`; the
/// store keeps it as text and does not check transitions.
#[derive(Clone, PartialEq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub algorithm: String,
    pub state: String,
    /// The public key as a JWK. Kept after removal, since verifying old checkpoints needs it.
    pub public_jwk: serde_json::Value,
    /// The private key, encrypted by the crypto crate; `None` once the key is removed.
    pub encrypted_private_key: Option<Vec<u8>>,
    pub created_at: Timestamp,
    pub activates_at: Option<Timestamp>,
    pub retired_at: Option<Timestamp>,
    pub remove_after: Option<Timestamp>,
}

impl fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let private_key = match &self.encrypted_private_key {
            Some(bytes) => format!("<{} encrypted bytes>", bytes.len()),
            None => "<none>".to_string(),
        };

        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("state", &self.state)
            .field("public_jwk", &self.public_jwk)
            .field("encrypted_private_key", &private_key)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .field("remove_after", &self.remove_after)
            .finish()
    }
}

/// The state a signing key or X.509 CA has once removed: the store then drops its encrypted
/// private key.
pub const REMOVED_KEY_STATE: &str = "removed";

/// A SPIFFE X.509 CA of a trust domain: its certificate and its sealed private key. It moves
/// through the same states as a signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct X509AuthorityRecord {
    pub id: String,
    pub trust_domain: String,
    /// `prepared`, `active`, `retired`, `tainted`, `revoked` or `removed`.
    pub state: String,
    /// The self-signed CA certificate, DER.
    pub certificate_der: Vec<u8>,
    /// The private key, encrypted by the crypto crate; `None` once the CA is removed.
    pub encrypted_private_key: Option<Vec<u8>>,
    pub created_at: Timestamp,
    /// The certificate's `notAfter`.
    pub not_after: Timestamp,
    pub activates_at: Option<Timestamp>,
    pub retired_at: Option<Timestamp>,
    pub remove_after: Option<Timestamp>,
}

impl fmt::Debug for X509AuthorityRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let private_key = match &self.encrypted_private_key {
            Some(bytes) => format!("<{} encrypted bytes>", bytes.len()),
            None => "<none>".to_string(),
        };

        f.debug_struct("X509AuthorityRecord")
            .field("id", &self.id)
            .field("trust_domain", &self.trust_domain)
            .field("state", &self.state)
            .field(
                "certificate_der",
                &format!("<{} bytes>", self.certificate_der.len()),
            )
            .field("encrypted_private_key", &private_key)
            .field("created_at", &self.created_at)
            .field("not_after", &self.not_after)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .field("remove_after", &self.remove_after)
            .finish()
    }
}

/// An admin token, known to the store only by the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenRecord {
    pub id: String,
    /// A label chosen by the operator, unique among tokens that are not revoked.
    pub name: String,
    /// `admin` or `auditor`.
    pub role: String,
    /// Hash of the token secret, as computed by the server.
    pub token_hash: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A one-time token that admits the agent `agent`, known to the store only by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentJoinTokenRecord {
    pub id: String,
    /// The name the agent gets when it joins with this token.
    pub agent: String,
    /// Hash of the token secret, as computed by the server.
    pub token_hash: String,
    pub created_at: Timestamp,
    /// The token cannot be used from this time on.
    pub expires_at: Timestamp,
    /// When an agent joined with the token. `Store::redeem_agent_join_token` uses a token at most
    /// once.
    pub used_at: Option<Timestamp>,
    /// When the token was revoked, which evicting its agent does.
    pub revoked_at: Option<Timestamp>,
}

/// An agent known to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// The name chosen by the operator when creating the join token, unique among agents.
    pub name: String,
    /// Hash of the agent's current credential; `None` once the agent is evicted.
    pub credential_hash: Option<String>,
    pub credential_expires_at: Option<Timestamp>,
    /// When the agent last joined with a join token.
    pub joined_at: Timestamp,
    /// When the agent last received a credential, by joining or by renewing.
    pub renewed_at: Timestamp,
    pub evicted_at: Option<Timestamp>,
}

/// The credential an agent receives when it joins or renews, known to the store by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCredentialHash {
    pub hash: String,
    pub expires_at: Timestamp,
}

/// How far a log stream has delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCursor {
    /// The log stream's name.
    pub name: String,
    /// Highest audit sequence number delivered or skipped by the stream's filter.
    pub delivered_seq: i64,
    /// Highest sequence number of a checkpoint delivered.
    pub checkpoint_seq: i64,
    pub updated_at: Timestamp,
}

/// An operator's acknowledgement of a fired alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertAcknowledgement {
    /// Id of the alert's audit event.
    pub alert_id: String,
    pub actor: String,
    pub acknowledged_at: Timestamp,
}

//! The error type of every store operation.

use std::path::PathBuf;

use crate::model::ResourceRef;

/// An error from a store operation. A failed write never leaves part of its changes behind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A resource to delete or to enable or disable does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },

    /// After the change, a resource would reference a resource that does not exist. Names the
    /// first such reference found, in the order of the change set's puts.
    #[error("{kind} {name:?} references {ref_kind} {ref_name:?}, which does not exist")]
    DanglingReference {
        kind: String,
        name: String,
        ref_kind: String,
        ref_name: String,
    },

    /// A resource to delete is still referenced after the change. `referrers` lists every
    /// resource that references it, sorted by kind and name.
    #[error("{kind} {name:?} is still referenced by {}", format_refs(referrers))]
    ReferencedBy {
        kind: String,
        name: String,
        referrers: Vec<ResourceRef>,
    },

    /// A record with the same unique key already exists: a signing key `kid`, an admin token id
    /// or the name of an admin token that is not revoked, or a checkpoint sequence number.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },

    /// An audit event's `id` is already in the log. Nothing of the batch was appended.
    #[error("audit event id {id:?} already exists in the audit log")]
    DuplicateAuditEvent { id: String },

    /// An audit event could not be turned into a stable canonical JSON form, so a hash over it
    /// would not verify after being read back.
    #[error("audit event {id:?} has no stable canonical JSON form: {reason}")]
    UnstableAuditEvent { id: String, reason: String },

    /// A checkpoint does not match the stored chain: its sequence number is not in the log, or
    /// its `head_hash` differs from the hash of the event at that sequence number.
    #[error("checkpoint at seq {seq} does not match the audit chain: {reason}")]
    InvalidCheckpoint { seq: i64, reason: String },

    /// A timestamp has digits below one microsecond, which the store cannot keep. The value is
    /// rejected rather than truncated where something signed covers it.
    #[error(
        "{field} {value} has sub-microsecond digits; truncate it with \
         mayfly_domain::audit::truncate_to_micros before signing"
    )]
    SubMicrosecondTime {
        field: &'static str,
        value: jiff::Timestamp,
    },

    /// The database file or its directory could not be prepared.
    #[error("failed to prepare database path {path}: {reason}")]
    Path { path: PathBuf, reason: String },

    /// The schema migrations failed to apply.
    #[error("database migration failed: {0}")]
    Migration(String),

    /// The database driver reported an error. The message is for logs only, and the server
    /// never shows it to a client.
    #[error("database error: {0}")]
    Database(String),

    /// A stored row failed to decode.
    #[error("corrupt row in the store: {0}")]
    Corrupt(String),
}

fn format_refs(refs: &[ResourceRef]) -> String {
    let parts: Vec<String> = refs
        .iter()
        .map(|r| format!("{} {:?}", r.kind, r.name))
        .collect();
    parts.join(", ")
}

#![forbid(unsafe_code)]
//! Mayfly's storage: configuration resources, the hash-chained audit log and its checkpoints,
//! signing keys, admin tokens, agents and server metadata.
//!
//! The server talks to storage only through the [`Store`] trait, used as `Arc<dyn Store>`.
//! [`SqliteStore`] keeps everything in one SQLite file. Every backend must pass the checks in
//! the `conformance` module (cargo feature `conformance`).

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod model;
mod sqlite;
mod store;

pub use error::StoreError;
pub use jiff::Timestamp;
pub use model::{
    AdminTokenRecord, AgentCredentialHash, AgentJoinTokenRecord, AgentRecord, AlertAcknowledgement,
    AuditFilter, ChangeSet, DEFAULT_AUDIT_LIMIT, PurgeOutcome, REMOVED_KEY_STATE, ResourcePut,
    ResourceRecord, ResourceRef, SigningKeyRecord, StreamCursor, X509AuthorityRecord,
};
pub use sqlite::{READ_CONNECTIONS, SqliteStore};
pub use store::Store;

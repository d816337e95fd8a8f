//! The `Store` trait that every storage backend implements.

use async_trait::async_trait;
use jiff::Timestamp;
use mayfly_domain::audit::{AuditEvent, Checkpoint, NewAuditEvent};

use crate::error::StoreError;
use crate::model::{
    AdminTokenRecord, AgentCredentialHash, AgentJoinTokenRecord, AgentRecord, AlertAcknowledgement,
    AuditFilter, ChangeSet, PurgeOutcome, ResourceRecord, SigningKeyRecord, StreamCursor,
    X509AuthorityRecord,
};

/// Durable storage for configuration resources, the audit log, signing keys, X.509 CAs, admin
/// tokens and server metadata. Used as `Arc<dyn Store>`.
///
/// Every method that takes audit events appends them to the hash chain in the same transaction
/// as its other writes, so a change and its audit events are stored together or not at all.
/// Methods that write return only after the transaction is durable.
#[async_trait]
pub trait Store: Send + Sync {
    /// Runs a trivial query to check that the database is reachable, for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes every connection. Calls made afterwards fail with `StoreError::Database`.
    async fn close(&self);

    // Resources.

    /// Returns the resource `kind`/`name`, or `None` when it does not exist.
    async fn get_resource(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<ResourceRecord>, StoreError>;

    /// Returns every resource of `kind`, sorted by name.
    async fn list_resources(&self, kind: &str) -> Result<Vec<ResourceRecord>, StoreError>;

    /// Returns every resource, sorted by kind and then name.
    async fn list_all_resources(&self) -> Result<Vec<ResourceRecord>, StoreError>;

    /// Applies a change set in one transaction and returns the audit events it appended.
    ///
    /// The steps run in this order. Each put inserts a record or replaces its `spec` and its
    /// outgoing references. An existing record keeps its `created_at` and `enabled`, and a new
    /// one starts enabled. Deletes remove records together with their outgoing references, and
    /// `set_enabled` sets the flags. Then every deleted resource must be unreferenced and every
    /// reference of a put must resolve. Finally the configuration version is bumped when any
    /// resource was written, and the audit events are appended.
    ///
    /// # Errors
    ///
    /// Any error rolls back the whole change, audit events included.
    /// - `NotFound`: a resource to delete, enable or disable is missing.
    /// - `ReferencedBy`: a deleted resource is still referenced. The error lists all referrers.
    /// - `DanglingReference`: a reference names a resource that does not exist afterwards.
    async fn commit(&self, change: ChangeSet) -> Result<Vec<AuditEvent>, StoreError>;

    /// Returns the configuration version: the number of commits that wrote a resource. Server
    /// replicas poll it to notice changes made through another replica.
    async fn config_version(&self) -> Result<i64, StoreError>;

    // Audit log.

    /// Appends a batch of events to the chain in one transaction and returns them as stored.
    ///
    /// Sequence numbers continue from the chain head without gaps. Each event's `prev_hash` is
    /// the hash of the event before it (`GENESIS_HASH` before seq 1) and its `hash` is
    /// `chain_hash(prev_hash, seq, event)`. An event read back later yields the same canonical
    /// JSON, so the hash verifies. An empty batch appends nothing.
    async fn append_audit(&self, events: Vec<NewAuditEvent>)
    -> Result<Vec<AuditEvent>, StoreError>;

    /// Returns the events that match `filter`, ordered by sequence number in the direction
    /// that `filter.descending` selects.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;

    /// Returns up to `limit` events with `seq >= from_seq`, oldest first, for verification.
    async fn audit_range(&self, from_seq: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError>;

    /// Returns the sequence number and hash of the last event ever appended, or `None` when the
    /// chain is empty. A purge does not move the head, even when it deletes every event.
    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError>;

    /// Stores a checkpoint.
    ///
    /// # Errors
    ///
    /// `InvalidCheckpoint` when no stored event has the checkpoint's `seq` or that event's
    /// hash differs from `head_hash`. `AlreadyExists` when a checkpoint with that `seq` exists.
    /// `SubMicrosecondTime` when `time` has sub-microsecond digits, because the signature
    /// covers the time and the store must keep it exactly.
    async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// Returns every stored checkpoint, oldest first.
    async fn list_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;

    /// Returns the checkpoint with the highest sequence number.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// Deletes audit events older than `cutoff`, but only up to a checkpoint, so that the
    /// remaining chain still verifies.
    ///
    /// The anchor is the newest checkpoint whose own event is older than `cutoff` and, when
    /// `undelivered_from` is set, has a sequence number below it. Events up to and including
    /// the anchor's `seq` are deleted, and so are the checkpoints before the anchor. The anchor
    /// itself is kept because its `head_hash` is the `prev_hash` of the first remaining event.
    /// Without such a checkpoint nothing is deleted. Event times come from the callers, so an
    /// event appended shortly before the anchor's event may be a little newer than `cutoff`.
    /// Such an event is deleted with the rest.
    ///
    /// `undelivered_from` is the lowest sequence number that some log stream has not delivered
    /// yet, and no event at or after it is deleted. `None` sets no such bound.
    async fn purge_audit_before(
        &self,
        cutoff: Timestamp,
        undelivered_from: Option<i64>,
    ) -> Result<PurgeOutcome, StoreError>;

    /// Returns up to `limit` checkpoints whose `seq` is above `seq`, oldest first.
    async fn checkpoints_after(&self, seq: i64, limit: u32) -> Result<Vec<Checkpoint>, StoreError>;

    // Log stream cursors.

    /// Returns the delivery cursor of the log stream `name`, or `None` when it never
    /// delivered anything.
    async fn get_stream_cursor(&self, name: &str) -> Result<Option<StreamCursor>, StoreError>;

    /// Returns every log stream cursor, sorted by stream name.
    async fn list_stream_cursors(&self) -> Result<Vec<StreamCursor>, StoreError>;

    /// Records that the stream `name` delivered every event up to `delivered_seq` and every
    /// checkpoint up to `checkpoint_seq`. A cursor never moves back: each stored value is
    /// replaced only by a larger one, so a late write from a stale task cannot cause events to
    /// be delivered twice more or skipped.
    async fn advance_stream_cursor(
        &self,
        name: &str,
        delivered_seq: i64,
        checkpoint_seq: i64,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Deletes the cursor of the stream `name`, when the stream itself is deleted. Returns
    /// whether a cursor existed.
    async fn delete_stream_cursor(&self, name: &str) -> Result<bool, StoreError>;

    // Alert acknowledgements.

    /// Records that `actor` acknowledged the alert whose audit event id is `alert_id`, and
    /// appends `audit` in the same transaction. Returns `false`, writing nothing, when the alert
    /// was already acknowledged.
    ///
    /// # Errors
    ///
    /// `NotFound` when no stored audit event of kind `alert` has that id.
    async fn acknowledge_alert(
        &self,
        alert_id: &str,
        actor: &str,
        now: Timestamp,
        audit: Vec<NewAuditEvent>,
    ) -> Result<bool, StoreError>;

    /// Returns the acknowledgements of the alerts among `alert_ids`, in no particular order.
    async fn alert_acknowledgements(
        &self,
        alert_ids: &[String],
    ) -> Result<Vec<AlertAcknowledgement>, StoreError>;

    // Signing keys.

    /// Inserts a new signing key and appends `audit` in the same transaction.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when a key with the same `kid` exists.
    async fn insert_signing_key(
        &self,
        key: &SigningKeyRecord,
        audit: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Returns every signing key in every state, including removed ones, sorted by creation
    /// time and then `kid`.
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;

    /// Replaces the state, timestamps and encrypted private key of the key `key.kid`, but only
    /// while its stored state is `expected_state` (compare and set, so that two replicas cannot
    /// both rotate). Appends `audit` only when the update happened. `algorithm`, `public_jwk`
    /// and `created_at` never change. Moving to `removed` also drops the encrypted private key,
    /// whatever `key` holds.
    ///
    /// Returns `false`, writing nothing, when the stored state differs from `expected_state`.
    ///
    /// # Errors
    ///
    /// `NotFound` when no key has that `kid`.
    async fn update_signing_key(
        &self,
        key: &SigningKeyRecord,
        expected_state: &str,
        audit: Vec<NewAuditEvent>,
    ) -> Result<bool, StoreError>;

    // X.509 CAs.

    /// Inserts a new X.509 CA and appends `audit` in the same transaction.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when a CA with the same `id` exists.
    async fn insert_x509_authority(
        &self,
        authority: &X509AuthorityRecord,
        audit: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Returns every X.509 CA in every state, removed ones included, sorted by creation time
    /// and then `id`.
    async fn list_x509_authorities(&self) -> Result<Vec<X509AuthorityRecord>, StoreError>;

    /// Replaces the state, timestamps and encrypted private key of the CA `authority.id`, but
    /// only while its stored state is `expected_state` (compare and set, as for signing keys).
    /// Appends `audit` only when the update happened. `trust_domain`, `certificate_der`,
    /// `created_at` and `not_after` never change. Moving to `removed` also drops the encrypted
    /// private key, whatever `authority` holds.
    ///
    /// Returns `false`, writing nothing, when the stored state differs from `expected_state`.
    ///
    /// # Errors
    ///
    /// `NotFound` when no CA has that `id`.
    async fn update_x509_authority(
        &self,
        authority: &X509AuthorityRecord,
        expected_state: &str,
        audit: Vec<NewAuditEvent>,
    ) -> Result<bool, StoreError>;

    // Admin tokens.

    /// Inserts an admin token and appends `audit` in the same transaction.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when the id, the token hash, or the name of a token that is not revoked
    /// is taken.
    async fn insert_admin_token(
        &self,
        token: &AdminTokenRecord,
        audit: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Returns the token whose hash is `token_hash`, unless it is revoked: a revoked token is
    /// reported as `None`, like an unknown one.
    async fn find_active_admin_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<AdminTokenRecord>, StoreError>;

    /// Returns every admin token, revoked ones included, sorted by creation time and then id.
    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError>;

    /// Revokes the unrevoked token whose id is `id_or_name` or, when none has that id, the
    /// unrevoked token with that name. Appends `audit` only when a token was revoked.
    ///
    /// Returns `false` when no token that is not already revoked matches.
    async fn revoke_admin_token(
        &self,
        id_or_name: &str,
        now: Timestamp,
        audit: Vec<NewAuditEvent>,
    ) -> Result<bool, StoreError>;

    // Agents.

    /// Inserts an agent join token and appends `audit` in the same transaction.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when the id or the token hash is taken.
    async fn insert_agent_join_token(
        &self,
        token: &AgentJoinTokenRecord,
        audit: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Returns the join token whose hash is `token_hash`, used, revoked and expired ones included.
    async fn find_agent_join_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<AgentJoinTokenRecord>, StoreError>;

    /// Marks the join token `token_hash` used and stores `credential` as its agent's current
    /// credential, creating the agent or replacing its credential and lifting its eviction.
    /// Appends `audit` in the same transaction.
    ///
    /// Returns `None`, writing nothing, unless the token exists, is unused, unrevoked and expires
    /// after `now`. So two agents racing with one token cannot both join.
    async fn redeem_agent_join_token(
        &self,
        token_hash: &str,
        now: Timestamp,
        credential: &AgentCredentialHash,
        audit: Vec<NewAuditEvent>,
    ) -> Result<Option<AgentRecord>, StoreError>;

    /// Returns the agent whose current credential has hash `credential_hash`, unless the agent
    /// is evicted. The record carries the expiry, which the caller checks.
    async fn find_agent_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<AgentRecord>, StoreError>;

    /// Replaces the agent's credential `old_hash` with `new`. Returns `false`, writing nothing,
    /// unless `old_hash` is the agent's current credential, it expires after `now` and the agent
    /// is not evicted.
    async fn renew_agent_credential(
        &self,
        name: &str,
        old_hash: &str,
        new: &AgentCredentialHash,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Returns every agent, evicted ones included, sorted by name.
    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;

    /// Evicts the agent `name`: drops its credential and revokes its unused join tokens.
    /// Appends `audit` only when something changed.
    ///
    /// Returns `false` when there was neither an agent that is not already evicted nor an unused
    /// join token for that name.
    async fn evict_agent(
        &self,
        name: &str,
        now: Timestamp,
        audit: Vec<NewAuditEvent>,
    ) -> Result<bool, StoreError>;

    // Metadata.

    /// Returns the metadata value stored under `key`.
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Stores `value` under `key`, replacing any earlier value.
    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
}

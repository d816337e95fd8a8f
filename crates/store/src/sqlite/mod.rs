//! The SQLite implementation of `Store`: one database file in the server's data directory.
//!
//! Every connection runs in WAL mode with `synchronous=FULL`, so a committed transaction is on
//! disk before the call returns, and with foreign keys on and a 5 second busy timeout. Writes
//! go through a pool of exactly one connection, since SQLite allows one writer at a time
//! anyway. Reads use a separate pool of `READ_CONNECTIONS` connections, which WAL lets read
//! while a write is in progress. The read connections set `query_only`, so a write sent to
//! them by mistake fails.

mod acknowledgements;
mod agents;
mod audit;
mod authorities;
mod checkpoints;
mod codec;
mod cursors;
mod keys;
mod open;
mod resources;
mod tokens;

use async_trait::async_trait;
use jiff::Timestamp;
use mayfly_domain::audit::{AuditEvent, Checkpoint, NewAuditEvent};
use sqlx::SqlitePool;

use crate::error::StoreError;
use crate::model::{
    AdminTokenRecord, AgentCredentialHash, AgentJoinTokenRecord, AgentRecord, AlertAcknowledgement,
    AuditFilter, ChangeSet, PurgeOutcome, ResourceRecord, SigningKeyRecord, StreamCursor,
    X509AuthorityRecord,
};
use crate::store::Store;
use codec::db_error;

pub use open::READ_CONNECTIONS;

/// A `Store` kept in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The only connection that writes.
    writer: SqlitePool,
    /// Connections for reads outside write transactions.
    readers: SqlitePool,
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    async fn get_resource(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<ResourceRecord>, StoreError> {
        resources::get(&self.readers, kind, name).await
    }

    async fn list_resources(&self, kind: &str) -> Result<Vec<ResourceRecord>, StoreError> {
        resources::list(&self.readers, Some(kind)).await
    }

    async fn list_all_resources(&self) -> Result<Vec<ResourceRecord>, StoreError> {
        resources::list(&self.readers, None).await
    }

    async fn commit(&self, change: ChangeSet) -> Result<Vec<AuditEvent>, StoreError> {
        resources::commit(&self.writer, change).await
    }

    async fn config_version(&self) -> Result<i64, StoreError> {
        resources::config_version(&self.readers).await
    }

    async fn append_audit(
        &self,
        events: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        audit::append(&self.writer, events).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        audit::list(&self.readers, filter).await
    }

    async fn audit_range(&self, from_seq: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        audit::range(&self.readers, from_seq, limit).await
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        audit::head(&self.readers).await
    }

    async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        checkpoints::insert(&self.writer, checkpoint).await
    }

    async fn list_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        checkpoints::list(&self.readers).await
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        checkpoints::latest(&self.readers).await
    }

    async fn purge_audit_before(
        &self,
        cutoff: Timestamp,
        undelivered_from: Option<i64>,
    ) -> Result<PurgeOutcome, StoreError> {
        checkpoints::purge_before(&self.writer, cutoff, undelivered_from).await
    }

    async fn checkpoints_after(&self, seq: i64, limit: u32) -> Result<Vec<Checkpoint>, StoreError> {
        checkpoints::after(&self.readers, seq, limit).await
    }

    async fn get_stream_cursor(&self, name: &str) -> Result<Option<StreamCursor>, StoreError> {
        cursors::get(&self.readers, name).await
    }

    async fn list_stream_cursors(&self) -> Result<Vec<StreamCursor>, StoreError> {
        cursors::list(&self.readers).await
    }

    async fn advance_stream_cursor(
        &self,
        name: &str,
        delivered_seq: i64,
        checkpoint_seq: i64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        cursors::advance(&self.writer, name, delivered_seq, checkpoint_seq, now).await
    }

    async fn delete_stream_cursor(&self, name: &str) -> Result<bool, StoreError> {
        cursors::delete(&self.writer, name).await
    }

    async fn acknowledge_alert(
        &self,
        alert_id: &str,
        actor: &str,
        now: Timestamp,
        audit: Vec<NewAuditEvent>,
    ) -> Result<bool, StoreError> {
        acknowledgements::acknowledge(&self.writer, alert_id, actor, now, audit).await
    }

    async fn alert_acknowledgements(
        &self,
        alert_ids: &[String],
    ) -> Result<Vec<AlertAcknowledgement>, StoreError> {
        acknowledgements::list(&self.readers, alert_ids).await
    }

    async fn insert_signing_key(
        &self,
        key: &SigningKeyRecord,
        audit: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        keys::insert(&self.writer, key, audit).await
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        keys::list(&self.readers).await
    }

    async fn update_signing_key(
        &self,
        key: &SigningKeyRecord,
        expected_state: &str,
        audit: Vec<NewAuditEvent>,
    ) -> Result<bool, StoreError> {
        keys::update(&self.writer, key, expected_state, audit).await
    }

    async fn insert_x509_authority(
        &self,
        authority: &X509AuthorityRecord,
        audit: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        authorities::insert(&self.writer, authority, audit).await
    }

    async fn list_x509_authorities(&self) -> Result<Vec<X509AuthorityRecord>, StoreError> {
        authorities::list(&self.readers).await
    }

    async fn update_x509_authority(
        &self,
        authority: &X509AuthorityRecord,
        expected_state: &str,
        audit: Vec<NewAuditEvent>,
    ) -> Result<bool, StoreError> {
        authorities::update(&self.writer, authority, expected_state, audit).await
    }

    async fn insert_admin_token(
        &self,
        token: &AdminTokenRecord,
        audit: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        tokens::insert(&self.writer, token, audit).await
    }

    async fn find_active_admin_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        tokens::find_active_by_hash(&self.readers, token_hash).await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        tokens::list(&self.readers).await
    }

    async fn revoke_admin_token(
        &self,
        id_or_name: &str,
        now: Timestamp,
        audit: Vec<NewAuditEvent>,
    ) -> Result<bool, StoreError> {
        tokens::revoke(&self.writer, id_or_name, now, audit).await
    }

    async fn insert_agent_join_token(
        &self,
        token: &AgentJoinTokenRecord,
        audit: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        agents::insert_join_token(&self.writer, token, audit).await
    }

    async fn find_agent_join_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<AgentJoinTokenRecord>, StoreError> {
        agents::find_join_token(&self.readers, token_hash).await
    }

    async fn redeem_agent_join_token(
        &self,
        token_hash: &str,
        now: Timestamp,
        credential: &AgentCredentialHash,
        audit: Vec<NewAuditEvent>,
    ) -> Result<Option<AgentRecord>, StoreError> {
        agents::redeem_join_token(&self.writer, token_hash, now, credential, audit).await
    }

    async fn find_agent_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<AgentRecord>, StoreError> {
        agents::find_by_credential(&self.readers, credential_hash).await
    }

    async fn renew_agent_credential(
        &self,
        name: &str,
        old_hash: &str,
        new: &AgentCredentialHash,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        agents::renew(&self.writer, name, old_hash, new, now).await
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        agents::list(&self.readers).await
    }

    async fn evict_agent(
        &self,
        name: &str,
        now: Timestamp,
        audit: Vec<NewAuditEvent>,
    ) -> Result<bool, StoreError> {
        agents::evict(&self.writer, name, now, audit).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

//! Behaviour that every `Store` backend must show, as one async check per behaviour.
//!
//! A backend's test file calls each check on a fresh, empty store (a new database per check),
//! for example `conformance::resource_round_trip(&store).await`. A check panics with a message
//! on the first behaviour that differs from the contract of `Store`. Checks that need
//! concurrency take an `Arc<dyn Store>`; `data_survives_reopen` takes a function that opens the
//! same database again.

// A check is a test: a failed step must abort it with a message, as `assert!` does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agents;
mod audit;
mod authorities;
mod cursors;
mod keys;
mod purge;
mod reopen;
mod resources;

use jiff::Timestamp;
use mayfly_domain::audit::{
    AuditEvent, AuditKind, Checkpoint, GENESIS_HASH, NewAuditEvent, Outcome, chain_hash,
};

use crate::store::Store;

pub use agents::{
    agent_join_token_is_single_use, evicted_agent_loses_credential, expired_agent_secrets_rejected,
};
pub use audit::{
    audit_chain_verifies, audit_filters_and_paging, audit_json_round_trips_exactly,
    checkpoints_round_trip, concurrent_appends_are_gapless, forged_checkpoint_rejected,
    replayed_audit_id_rejected,
};
pub use authorities::{
    removed_x509_authority_keeps_certificate, x509_authority_race_cannot_double_rotate,
    x509_authority_round_trip,
};
pub use cursors::{
    alert_acknowledged_once, checkpoints_after_pages, stale_cursor_write_cannot_move_back,
    stream_cursor_round_trip,
};
pub use keys::{
    admin_token_lookup_and_revocation, meta_round_trip, ping_succeeds,
    removed_key_keeps_public_jwk, replica_race_cannot_double_rotate, signing_key_round_trip,
};
pub use purge::{
    purge_keeps_chain_anchored, purge_of_whole_chain_keeps_head, purge_spares_undelivered_events,
    purge_without_checkpoint_deletes_nothing,
};
pub use reopen::data_survives_reopen;
pub use resources::{
    change_set_is_atomic, config_version_counts_resource_commits,
    dangling_reference_writes_nothing, missing_targets_not_found, put_keeps_enabled,
    referenced_delete_names_all_referrers, replaced_refs_release_targets, resource_round_trip,
    update_keeps_created_at,
};

/// Returns a fixed time `seconds` after 2027-01-15T08:00:00Z, so checks do not read the clock.
fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("test time is in range")
}

/// Builds an event of `kind` at `time` with a fresh id.
fn event(kind: AuditKind, time: Timestamp) -> NewAuditEvent {
    NewAuditEvent::new(
        uuid::Uuid::now_v7().to_string(),
        time,
        kind,
        serde_json::json!({"actor": "conformance", "note": "checked by the store suite"}),
    )
}

/// Builds a credential decision between `client` and `server` at `time`.
fn credential_event(
    time: Timestamp,
    server: &str,
    client: &str,
    outcome: Outcome,
) -> NewAuditEvent {
    let mut event = event(AuditKind::CredentialRequest, time);
    event.server_workload = Some(server.to_string());
    event.client_workload = Some(client.to_string());
    event.outcome = Some(outcome);
    event
}

/// Builds a checkpoint of the stored event `event`, with a placeholder signature.
fn checkpoint_of(event: &AuditEvent, time: Timestamp) -> Checkpoint {
    Checkpoint {
        seq: event.seq,
        head_hash: event.hash.clone(),
        time,
        signature: format!("signature-over-{}", event.seq),
    }
}

/// Reads the whole stored chain in pages and checks every link and hash, starting after
/// `anchor` (or from seq 1 with the genesis hash). Returns the events read.
async fn verify_chain(store: &dyn Store, anchor: Option<&Checkpoint>) -> Vec<AuditEvent> {
    let (mut next_seq, mut prev_hash) = match anchor {
        Some(checkpoint) => (checkpoint.seq + 1, checkpoint.head_hash.clone()),
        None => (1, GENESIS_HASH.to_string()),
    };

    let mut read = Vec::new();
    loop {
        let page = store.audit_range(next_seq, 7).await.expect("audit_range");
        if page.is_empty() {
            break;
        }
        for stored in page {
            assert_eq!(stored.seq, next_seq, "sequence numbers must have no gap");
            assert_eq!(
                stored.prev_hash, prev_hash,
                "prev_hash of seq {}",
                stored.seq
            );
            assert_eq!(
                stored.hash,
                chain_hash(&prev_hash, stored.seq, &stored.event),
                "hash of seq {} must verify",
                stored.seq
            );
            next_seq += 1;
            prev_hash = stored.hash.clone();
            read.push(stored);
        }
    }

    let head = store.audit_head().await.expect("audit_head");
    if let Some(last) = read.last() {
        assert_eq!(
            head,
            Some((last.seq, last.hash.clone())),
            "head is the last event"
        );
    }
    read
}

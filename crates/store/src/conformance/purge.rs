//! Checks of the retention purge: it deletes only up to a checkpoint, so the rest verifies.

use mayfly_domain::audit::{AuditEvent, AuditKind, Checkpoint, NewAuditEvent};

use super::{at, checkpoint_of, event, verify_chain};
use crate::model::PurgeOutcome;
use crate::store::Store;

/// Appends `count` events, the one at index `i` dated `at(i * 10)`, and returns them.
async fn append_dated(store: &dyn Store, count: i64) -> Vec<AuditEvent> {
    let events: Vec<NewAuditEvent> = (0..count)
        .map(|i| event(AuditKind::CredentialRequest, at(i * 10)))
        .collect();
    store.append_audit(events).await.expect("append")
}

/// Stores a checkpoint of each event at the given sequence numbers and returns them.
async fn checkpoint_at(store: &dyn Store, events: &[AuditEvent], seqs: &[i64]) -> Vec<Checkpoint> {
    let mut checkpoints = Vec::new();
    for &seq in seqs {
        let stored = &events[(seq - 1) as usize];
        let checkpoint = checkpoint_of(stored, at(1_000 + seq));
        store
            .insert_checkpoint(&checkpoint)
            .await
            .expect("insert checkpoint");
        checkpoints.push(checkpoint);
    }
    checkpoints
}

/// Checks that purges delete up to the newest checkpoint whose event is older than the
/// cutoff and keep that checkpoint. The rest must verify from it and keep growing.
pub async fn purge_keeps_chain_anchored(store: &dyn Store) {
    let events = append_dated(store, 10).await;
    let checkpoints = checkpoint_at(store, &events, &[3, 6, 9]).await;
    let (cp6, cp9) = (checkpoints[1].clone(), checkpoints[2].clone());

    // The event of seq 6 is dated exactly at the cutoff, which is not older, so seq 3 anchors.
    let first = store.purge_audit_before(at(50), None).await.expect("purge");
    assert_eq!(
        first,
        PurgeOutcome {
            deleted: 3,
            deleted_checkpoints: 0,
            kept_from_seq: Some(4),
        }
    );
    verify_chain(store, Some(&checkpoints[0])).await;

    let second = store.purge_audit_before(at(70), None).await.expect("purge");
    assert_eq!(
        second,
        PurgeOutcome {
            deleted: 3,
            deleted_checkpoints: 1,
            kept_from_seq: Some(7),
        }
    );
    assert_eq!(
        store.list_checkpoints().await.expect("list"),
        vec![cp6.clone(), cp9]
    );

    let remaining = verify_chain(store, Some(&cp6)).await;
    assert_eq!(
        remaining.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [7, 8, 9, 10]
    );
    assert_eq!(
        remaining[0].prev_hash, cp6.head_hash,
        "the kept checkpoint anchors the chain"
    );
    assert_eq!(store.audit_range(1, 100).await.expect("range")[0].seq, 7);

    let again = store.purge_audit_before(at(70), None).await.expect("purge");
    assert_eq!(
        again,
        PurgeOutcome::default(),
        "a repeated purge deletes nothing more"
    );

    let next = store
        .append_audit(vec![event(AuditKind::ConfigChange, at(200))])
        .await
        .expect("append after purge");
    assert_eq!(next[0].seq, 11);
    assert_eq!(verify_chain(store, Some(&cp6)).await.len(), 5);
}

/// Checks that a purge anchored at the newest event deletes every event but keeps the head,
/// so the next event continues the chain instead of starting again at seq 1.
pub async fn purge_of_whole_chain_keeps_head(store: &dyn Store) {
    let events = append_dated(store, 4).await;
    let checkpoints = checkpoint_at(store, &events, &[4]).await;

    let outcome = store
        .purge_audit_before(at(10_000), None)
        .await
        .expect("purge");
    assert_eq!(outcome.deleted, 4);
    assert_eq!(outcome.kept_from_seq, Some(5));
    assert!(store.audit_range(1, 100).await.expect("range").is_empty());
    assert_eq!(
        store.audit_head().await.expect("head"),
        Some((4, events[3].hash.clone()))
    );

    let next = store
        .append_audit(vec![event(AuditKind::CredentialRequest, at(20_000))])
        .await
        .expect("append");
    assert_eq!(next[0].seq, 5);
    assert_eq!(next[0].prev_hash, events[3].hash);
    assert_eq!(verify_chain(store, Some(&checkpoints[0])).await.len(), 1);
}

/// Checks that nothing is deleted without a checkpoint older than the cutoff.
pub async fn purge_without_checkpoint_deletes_nothing(store: &dyn Store) {
    let events = append_dated(store, 5).await;

    let outcome = store
        .purge_audit_before(at(100_000), None)
        .await
        .expect("purge");
    assert_eq!(outcome, PurgeOutcome::default());
    assert_eq!(verify_chain(store, None).await, events);

    // The only checkpoint's event is dated at the cutoff, so it is not older.
    checkpoint_at(store, &events, &[5]).await;
    let outcome = store.purge_audit_before(at(40), None).await.expect("purge");
    assert_eq!(outcome, PurgeOutcome::default());
    assert_eq!(verify_chain(store, None).await, events);
}

/// Checks that no event at or after `undelivered_from` is deleted, so a log stream that lags
/// behind still finds every event it has to ship.
pub async fn purge_spares_undelivered_events(store: &dyn Store) {
    let events = append_dated(store, 8).await;
    let checkpoints = checkpoint_at(store, &events, &[3, 6]).await;

    let outcome = store
        .purge_audit_before(at(10_000), Some(6))
        .await
        .expect("purge");
    assert_eq!(outcome.deleted, 3, "seq 6 is undelivered, so seq 3 anchors");
    assert_eq!(outcome.kept_from_seq, Some(4));

    let outcome = store
        .purge_audit_before(at(10_000), Some(4))
        .await
        .expect("purge");
    assert_eq!(outcome, PurgeOutcome::default());
    let remaining = verify_chain(store, Some(&checkpoints[0])).await;
    assert_eq!(remaining.first().map(|e| e.seq), Some(4));

    let outcome = store
        .purge_audit_before(at(10_000), None)
        .await
        .expect("purge");
    assert_eq!(outcome.kept_from_seq, Some(7));
}

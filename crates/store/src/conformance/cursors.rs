//! Checks of log stream cursors, of reading checkpoints after a sequence number, and of alert
//! acknowledgements.

use mayfly_domain::audit::{AuditKind, NewAuditEvent};

use super::{at, checkpoint_of, event};
use crate::store::Store;

/// Checks that a cursor is stored per stream, read back, listed and deleted.
pub async fn stream_cursor_round_trip(store: &dyn Store) {
    assert_eq!(store.get_stream_cursor("siem").await.expect("get"), None);

    store
        .advance_stream_cursor("siem", 5, 3, at(1))
        .await
        .expect("advance");
    store
        .advance_stream_cursor("archive", 2, 0, at(2))
        .await
        .expect("advance");

    let siem = store
        .get_stream_cursor("siem")
        .await
        .expect("get")
        .expect("cursor exists");
    assert_eq!(
        (siem.delivered_seq, siem.checkpoint_seq, siem.updated_at),
        (5, 3, at(1))
    );
    let names: Vec<String> = store
        .list_stream_cursors()
        .await
        .expect("list")
        .into_iter()
        .map(|cursor| cursor.name)
        .collect();
    assert_eq!(names, ["archive", "siem"]);

    assert!(store.delete_stream_cursor("siem").await.expect("delete"));
    assert!(
        !store
            .delete_stream_cursor("siem")
            .await
            .expect("delete again")
    );
    assert_eq!(store.get_stream_cursor("siem").await.expect("get"), None);
}

/// Checks that a stale, smaller write cannot move a cursor back, because the stream would then
/// deliver events again or let the purge delete events it has not delivered.
pub async fn stale_cursor_write_cannot_move_back(store: &dyn Store) {
    store
        .advance_stream_cursor("siem", 10, 4, at(1))
        .await
        .expect("advance");
    store
        .advance_stream_cursor("siem", 7, 2, at(2))
        .await
        .expect("stale advance");

    let cursor = store
        .get_stream_cursor("siem")
        .await
        .expect("get")
        .expect("cursor exists");
    assert_eq!((cursor.delivered_seq, cursor.checkpoint_seq), (10, 4));

    store
        .advance_stream_cursor("siem", 12, 4, at(3))
        .await
        .expect("advance");
    let cursor = store
        .get_stream_cursor("siem")
        .await
        .expect("get")
        .expect("cursor exists");
    assert_eq!(cursor.delivered_seq, 12);
}

/// Checks that `checkpoints_after` returns checkpoints above a sequence number, oldest first,
/// at most `limit` of them.
pub async fn checkpoints_after_pages(store: &dyn Store) {
    let events: Vec<NewAuditEvent> = (0..6)
        .map(|i| event(AuditKind::ConfigChange, at(i)))
        .collect();
    let stored = store.append_audit(events).await.expect("append");
    for index in [1, 3, 5] {
        store
            .insert_checkpoint(&checkpoint_of(&stored[index], at(100)))
            .await
            .expect("checkpoint");
    }

    let seqs = |checkpoints: Vec<mayfly_domain::audit::Checkpoint>| {
        checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>()
    };
    assert_eq!(
        seqs(store.checkpoints_after(0, 10).await.expect("after 0")),
        [2, 4, 6]
    );
    assert_eq!(
        seqs(store.checkpoints_after(2, 10).await.expect("after 2")),
        [4, 6]
    );
    assert_eq!(
        seqs(store.checkpoints_after(0, 2).await.expect("limit 2")),
        [2, 4]
    );
    assert!(
        store
            .checkpoints_after(6, 10)
            .await
            .expect("after 6")
            .is_empty()
    );
}

/// Checks that an alert is acknowledged once, with its audit event in the same transaction,
/// and that only stored alerts can be acknowledged.
pub async fn alert_acknowledged_once(store: &dyn Store) {
    let alert = event(AuditKind::Alert, at(1));
    let change = event(AuditKind::ConfigChange, at(2));
    let stored = store
        .append_audit(vec![alert.clone(), change.clone()])
        .await
        .expect("append");
    let head_before = stored.last().expect("appended").seq;

    let audit = vec![event(AuditKind::ConfigChange, at(3))];
    assert!(
        store
            .acknowledge_alert(&alert.id, "admin-token:ops", at(3), audit)
            .await
            .expect("acknowledge")
    );
    let again = vec![event(AuditKind::ConfigChange, at(4))];
    assert!(
        !store
            .acknowledge_alert(&alert.id, "admin-token:other", at(4), again)
            .await
            .expect("acknowledge again")
    );

    let head = store
        .audit_head()
        .await
        .expect("head")
        .expect("events exist")
        .0;
    assert_eq!(
        head,
        head_before + 1,
        "only the first acknowledgement appends its audit event"
    );

    let found = store
        .alert_acknowledgements(&[alert.id.clone(), change.id.clone()])
        .await
        .expect("list");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].alert_id, alert.id);
    assert_eq!(found[0].actor, "admin-token:ops");
    assert_eq!(found[0].acknowledged_at, at(3));

    let not_alert = store
        .acknowledge_alert(&change.id, "admin-token:ops", at(5), Vec::new())
        .await;
    assert!(
        matches!(not_alert, Err(crate::StoreError::NotFound { .. })),
        "{not_alert:?}"
    );
    let unknown = store
        .acknowledge_alert("no-such-alert", "admin-token:ops", at(5), Vec::new())
        .await;
    assert!(
        matches!(unknown, Err(crate::StoreError::NotFound { .. })),
        "{unknown:?}"
    );
}

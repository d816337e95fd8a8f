//! Checks of the audit chain, its queries and checkpoints.

use std::sync::Arc;

use jiff::Timestamp;
use mayfly_domain::audit::{
    AuditEvent, AuditKind, GENESIS_HASH, NewAuditEvent, Outcome, chain_hash,
};
use serde_json::json;

use super::{at, checkpoint_of, credential_event, event, verify_chain};
use crate::error::StoreError;
use crate::model::{AuditFilter, ChangeSet};
use crate::store::Store;

/// Checks that batches of several sizes and a change set's events form one gapless chain
/// whose hashes verify, and that reading back returns the events `append_audit` returned.
pub async fn audit_chain_verifies(store: &dyn Store) {
    assert_eq!(
        store.audit_head().await.expect("head"),
        None,
        "a new store has no head"
    );

    let mut appended = Vec::new();
    for (batch, size) in [1_i64, 5, 0, 3].into_iter().enumerate() {
        let events: Vec<NewAuditEvent> = (0..size)
            .map(|i| event(AuditKind::CredentialRequest, at(batch as i64 * 10 + i)))
            .collect();
        let stored = store.append_audit(events.clone()).await.expect("append");
        let returned: Vec<&NewAuditEvent> = stored.iter().map(|e| &e.event).collect();
        assert_eq!(
            returned,
            events.iter().collect::<Vec<_>>(),
            "events are returned as given"
        );
        appended.extend(stored);
    }

    let mut change = ChangeSet::new(at(100));
    change.audit = vec![event(AuditKind::ConfigChange, at(100))];
    appended.extend(store.commit(change).await.expect("commit"));

    let seqs: Vec<i64> = appended.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(appended[0].prev_hash, GENESIS_HASH);
    for pair in appended.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "seq {} links to its predecessor",
            pair[1].seq
        );
    }

    let read = verify_chain(store, None).await;
    assert_eq!(read, appended);
    assert_eq!(
        store.audit_head().await.expect("head"),
        Some((10, appended[9].hash.clone()))
    );

    let middle = store.audit_range(4, 2).await.expect("range");
    assert_eq!(middle.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    assert!(store.audit_range(11, 5).await.expect("range").is_empty());
}

/// Checks that details with floats, large integers, escapes and non-ASCII text, and a time
/// with nanoseconds, read back to the same canonical JSON, so the hash still verifies.
pub async fn audit_json_round_trips_exactly(store: &dyn Store) {
    let mut tricky = event(AuditKind::ConfigChange, at(0));
    tricky.time = Timestamp::new(1_800_000_000, 123_456_789).expect("time");
    // serde_json 1.0.154's default parser reads 123456789.12345679 back as a different f64,
    // so this event's JSON changes on its first round trip.
    tricky.detail = json!({
        "floats": [0.1, 1.0 / 3.0, 1e-7, 2.2250738585072014e-308, 1.7976931348623157e308,
                   5e-324, 123_456_789.123_456_79, -0.0, 6.02214076e23],
        "integers": [i64::MIN, u64::MAX, 0, -1],
        "text": "caf\u{e9} \u{2713} \u{1F600} \u{7} \n\t\"quoted\" \\ </script>",
        "nested": {"z": [], "a": {"b": null, "a": true}},
    });
    let plain = credential_event(at(1), "payments", "billing", Outcome::Success);

    let appended = store
        .append_audit(vec![tricky.clone(), plain])
        .await
        .expect("append");
    let read = verify_chain(store, None).await;
    assert_eq!(read, appended);
    assert_eq!(
        read[0].event.canonical_json(),
        appended[0].event.canonical_json()
    );
    assert_eq!(
        read[0].event.time, tricky.time,
        "the event time keeps its nanoseconds"
    );
    assert_eq!(read[0].event.detail["text"], tricky.detail["text"]);
    assert_eq!(read[0].event.detail["integers"], tricky.detail["integers"]);
}

/// Checks that appending an event id already in the log fails and appends nothing of the
/// batch, so a replayed event cannot be stored twice or make receivers drop another event.
pub async fn replayed_audit_id_rejected(store: &dyn Store) {
    let original = event(AuditKind::CredentialRequest, at(0));
    store
        .append_audit(vec![original.clone()])
        .await
        .expect("append");
    let head = store.audit_head().await.expect("head");

    let fresh = event(AuditKind::CredentialRequest, at(1));
    let result = store.append_audit(vec![fresh, original.clone()]).await;
    match result {
        Err(StoreError::DuplicateAuditEvent { id }) => assert_eq!(id, original.id),
        other => panic!("expected DuplicateAuditEvent, got {other:?}"),
    }

    let twin = event(AuditKind::CredentialRequest, at(2));
    let result = store.append_audit(vec![twin.clone(), twin]).await;
    assert!(
        matches!(result, Err(StoreError::DuplicateAuditEvent { .. })),
        "a duplicate inside one batch is rejected too, got {result:?}"
    );

    assert_eq!(store.audit_head().await.expect("head"), head);
    assert_eq!(verify_chain(store, None).await.len(), 1);
}

/// Checks that many tasks appending at once get sequence numbers forming one gapless chain.
pub async fn concurrent_appends_are_gapless(store: Arc<dyn Store>) {
    const TASKS: i64 = 16;
    const ROUNDS: i64 = 8;

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut stored = Vec::new();
            for round in 0..ROUNDS {
                let batch: Vec<NewAuditEvent> = (0..=(round % 3))
                    .map(|_| event(AuditKind::CredentialRequest, at(task * 100 + round)))
                    .collect();
                let appended = store.append_audit(batch.clone()).await.expect("append");
                assert_eq!(appended.len(), batch.len());
                for pair in appended.windows(2) {
                    assert_eq!(pair[1].seq, pair[0].seq + 1, "a batch is contiguous");
                }
                stored.extend(appended);
            }
            stored
        });
    }

    let mut all: Vec<AuditEvent> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.expect("append task"));
    }
    all.sort_by_key(|e| e.seq);

    let total = all.len() as i64;
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let read = verify_chain(store.as_ref(), None).await;
    assert_eq!(read, all, "the log holds exactly what the tasks were told");
}

/// Checks that each filter field narrows the result, that both orders page without gaps or
/// repeats, and that the default lists the newest events first.
pub async fn audit_filters_and_paging(store: &dyn Store) {
    let mut events = Vec::new();
    for i in 0..12 {
        let server = if i % 2 == 0 { "payments" } else { "billing" };
        let client = if i % 3 == 0 { "ci" } else { "batch" };
        let outcome = if i % 2 == 1 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        events.push(credential_event(at(i * 10), server, client, outcome));
    }
    events.push(event(AuditKind::ConfigChange, at(120)));
    events.push(event(AuditKind::KeyChange, at(130)));
    let all = store.append_audit(events).await.expect("append");

    let seqs = |filter: AuditFilter| async move {
        let found = store.list_audit(&filter).await.expect("list_audit");
        found.iter().map(|e| e.seq).collect::<Vec<i64>>()
    };
    let expected = |keep: &dyn Fn(&AuditEvent) -> bool, descending: bool| {
        let mut seqs: Vec<i64> = all.iter().filter(|e| keep(e)).map(|e| e.seq).collect();
        if descending {
            seqs.reverse();
        }
        seqs
    };

    let newest_first = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(newest_first.first(), all.last(), "newest first by default");
    assert_eq!(newest_first.len(), all.len());

    let by_server = AuditFilter {
        server_workload: Some("payments".to_string()),
        ..AuditFilter::default()
    };
    let payments = |e: &AuditEvent| e.event.server_workload.as_deref() == Some("payments");
    assert_eq!(seqs(by_server).await, expected(&payments, true));

    let by_client_outcome = AuditFilter {
        client_workload: Some("ci".to_string()),
        outcome: Some(Outcome::Failure),
        descending: false,
        ..AuditFilter::default()
    };
    let ci_failures = |e: &AuditEvent| {
        e.event.client_workload.as_deref() == Some("ci")
            && e.event.outcome == Some(Outcome::Failure)
    };
    assert_eq!(seqs(by_client_outcome).await, expected(&ci_failures, false));
    assert_eq!(
        expected(&ci_failures, false),
        [4, 10],
        "the events of i = 3 and i = 9"
    );

    let by_kind = AuditFilter {
        kind: Some(AuditKind::ConfigChange),
        ..AuditFilter::default()
    };
    assert_eq!(seqs(by_kind).await, [13]);

    let window = AuditFilter {
        since: Some(at(30)),
        until: Some(at(70)),
        descending: false,
        ..AuditFilter::default()
    };
    assert_eq!(
        seqs(window).await,
        [4, 5, 6, 7],
        "since is inclusive, until exclusive"
    );

    let nothing = AuditFilter {
        limit: 0,
        ..AuditFilter::default()
    };
    assert!(seqs(nothing).await.is_empty(), "limit 0 returns no events");

    let between = AuditFilter {
        after_seq: Some(3),
        before_seq: Some(7),
        descending: false,
        ..AuditFilter::default()
    };
    assert_eq!(seqs(between).await, [4, 5, 6]);

    // Descending pages with before_seq.
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = seqs(AuditFilter {
            before_seq: cursor,
            limit: 4,
            ..AuditFilter::default()
        })
        .await;
        let Some(&last) = page.last() else { break };
        cursor = Some(last);
        paged.extend(page);
    }
    assert_eq!(paged, expected(&|_: &AuditEvent| true, true));

    // Ascending pages with after_seq, combined with a filter.
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = seqs(AuditFilter {
            server_workload: Some("payments".to_string()),
            after_seq: cursor,
            limit: 2,
            descending: false,
            ..AuditFilter::default()
        })
        .await;
        let Some(&last) = page.last() else { break };
        cursor = Some(last);
        paged.extend(page);
    }
    assert_eq!(paged, expected(&payments, false));
}

/// Checks that checkpoints read back unchanged, oldest first, and that the latest is the one
/// with the highest seq.
pub async fn checkpoints_round_trip(store: &dyn Store) {
    assert_eq!(store.latest_checkpoint().await.expect("latest"), None);

    let events: Vec<NewAuditEvent> = (0..5)
        .map(|i| event(AuditKind::CredentialRequest, at(i)))
        .collect();
    let appended = store.append_audit(events).await.expect("append");

    let later = checkpoint_of(&appended[3], at(60));
    let earlier = checkpoint_of(&appended[1], at(30));
    store.insert_checkpoint(&later).await.expect("insert seq 4");
    store
        .insert_checkpoint(&earlier)
        .await
        .expect("insert seq 2");

    let listed = store.list_checkpoints().await.expect("list");
    assert_eq!(listed, vec![earlier, later.clone()]);
    assert_eq!(
        store.latest_checkpoint().await.expect("latest"),
        Some(later.clone())
    );

    let result = store.insert_checkpoint(&later).await;
    assert!(
        matches!(result, Err(StoreError::AlreadyExists { .. })),
        "a second checkpoint at the same seq is rejected, got {result:?}"
    );
}

/// Checks that a checkpoint whose head hash or sequence number does not match the stored
/// chain is rejected, so a forged checkpoint cannot vouch for a rewritten chain.
pub async fn forged_checkpoint_rejected(store: &dyn Store) {
    let events: Vec<NewAuditEvent> = (0..3)
        .map(|i| event(AuditKind::CredentialRequest, at(i)))
        .collect();
    let appended = store.append_audit(events).await.expect("append");

    let mut wrong_hash = checkpoint_of(&appended[1], at(10));
    wrong_hash.head_hash = chain_hash(GENESIS_HASH, 2, &appended[1].event);
    let mut future_seq = checkpoint_of(&appended[2], at(10));
    future_seq.seq = 4;
    let mut zero_seq = checkpoint_of(&appended[0], at(10));
    zero_seq.seq = 0;

    for forged in [wrong_hash, future_seq, zero_seq] {
        let result = store.insert_checkpoint(&forged).await;
        assert!(
            matches!(result, Err(StoreError::InvalidCheckpoint { seq, .. }) if seq == forged.seq),
            "checkpoint at seq {} must be rejected, got {result:?}",
            forged.seq
        );
    }

    let mut nanos = checkpoint_of(&appended[2], at(10));
    nanos.time = Timestamp::new(1_800_000_010, 500).expect("time");
    let result = store.insert_checkpoint(&nanos).await;
    assert!(
        matches!(result, Err(StoreError::SubMicrosecondTime { .. })),
        "a signed time the store cannot keep exactly is rejected, got {result:?}"
    );

    assert!(store.list_checkpoints().await.expect("list").is_empty());
}

//! Checks of X.509 CAs.

use mayfly_domain::audit::AuditKind;

use super::{at, event, verify_chain};
use crate::error::StoreError;
use crate::model::{REMOVED_KEY_STATE, X509AuthorityRecord};
use crate::store::Store;

fn authority(id: &str, state: &str, created_second: i64) -> X509AuthorityRecord {
    X509AuthorityRecord {
        id: id.to_string(),
        trust_domain: "prod.example.com".to_string(),
        state: state.to_string(),
        certificate_der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        encrypted_private_key: Some(vec![0xde, 0xad, 0xbe, 0xef]),
        created_at: at(created_second),
        not_after: at(created_second + 30 * 86_400),
        activates_at: Some(at(created_second + 3_600)),
        retired_at: None,
        remove_after: None,
    }
}

/// Checks that CAs read back unchanged, oldest first, and that inserting an existing `id` fails
/// without appending its audit events.
pub async fn x509_authority_round_trip(store: &dyn Store) {
    let second = authority("ca-2", "prepared", 20);
    let first = authority("ca-1", "active", 10);
    store
        .insert_x509_authority(&second, vec![event(AuditKind::KeyChange, at(20))])
        .await
        .expect("insert second");
    store
        .insert_x509_authority(&first, vec![])
        .await
        .expect("insert first");
    assert_eq!(
        store.list_x509_authorities().await.expect("list"),
        vec![first.clone(), second]
    );

    let result = store
        .insert_x509_authority(&first, vec![event(AuditKind::KeyChange, at(30))])
        .await;
    assert!(
        matches!(result, Err(StoreError::AlreadyExists { .. })),
        "a second CA with the same id is rejected, got {result:?}"
    );
    assert_eq!(
        verify_chain(store, None).await.len(),
        1,
        "the failed insert appended nothing"
    );
}

/// Checks that two replicas moving the same CA out of one state cannot both succeed, that a
/// stale update fails, and that an unknown id is `NotFound`.
pub async fn x509_authority_race_cannot_double_rotate(store: &dyn Store) {
    let prepared = authority("ca-1", "prepared", 0);
    store
        .insert_x509_authority(&prepared, vec![])
        .await
        .expect("insert");

    let mut activated = prepared.clone();
    activated.state = "active".to_string();
    let mut tainted = prepared.clone();
    tainted.state = "tainted".to_string();
    let (first, second) = tokio::join!(
        store.update_x509_authority(
            &activated,
            "prepared",
            vec![event(AuditKind::KeyChange, at(1))]
        ),
        store.update_x509_authority(
            &tainted,
            "prepared",
            vec![event(AuditKind::KeyChange, at(1))]
        ),
    );
    let (first, second) = (first.expect("first update"), second.expect("second update"));
    assert!(
        first ^ second,
        "exactly one update wins, got {first} and {second}"
    );
    let winner = if first { &activated } else { &tainted };
    assert_eq!(
        store.list_x509_authorities().await.expect("list"),
        vec![winner.clone()]
    );
    assert_eq!(
        verify_chain(store, None).await.len(),
        1,
        "only the winner's audit event"
    );

    let stale = store
        .update_x509_authority(&activated, "prepared", vec![])
        .await
        .expect("stale update");
    assert!(!stale, "an update from a state the CA has left fails");

    let mut unknown = prepared;
    unknown.id = "ca-unknown".to_string();
    let result = store
        .update_x509_authority(&unknown, "prepared", vec![])
        .await;
    assert!(
        matches!(result, Err(StoreError::NotFound { .. })),
        "expected NotFound, got {result:?}"
    );
}

/// Checks that removing a CA drops its encrypted private key but keeps its certificate, and that
/// an update never changes the certificate or its validity.
pub async fn removed_x509_authority_keeps_certificate(store: &dyn Store) {
    let retired = X509AuthorityRecord {
        retired_at: Some(at(100)),
        remove_after: Some(at(200)),
        ..authority("ca-1", "retired", 0)
    };
    store
        .insert_x509_authority(&retired, vec![])
        .await
        .expect("insert");

    // The caller forgets to clear the private key and changes fields that are fixed.
    let mut removed = retired.clone();
    removed.state = REMOVED_KEY_STATE.to_string();
    removed.certificate_der = vec![0x00];
    removed.not_after = at(1);
    let updated = store
        .update_x509_authority(&removed, "retired", vec![])
        .await
        .expect("remove");
    assert!(updated);

    let stored = store.list_x509_authorities().await.expect("list");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].state, REMOVED_KEY_STATE);
    assert_eq!(
        stored[0].encrypted_private_key, None,
        "the private key is gone"
    );
    assert_eq!(stored[0].certificate_der, retired.certificate_der);
    assert_eq!(stored[0].not_after, retired.not_after);
}

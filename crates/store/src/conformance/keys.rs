//! Checks of signing keys, admin tokens, metadata and readiness.

use mayfly_domain::audit::AuditKind;
use serde_json::json;

use super::{at, event, verify_chain};
use crate::error::StoreError;
use crate::model::{AdminTokenRecord, REMOVED_KEY_STATE, SigningKeyRecord};
use crate::store::Store;

fn key(kid: &str, state: &str, created_second: i64) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_string(),
        algorithm: "ES256".to_string(),
        state: state.to_string(),
        public_jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": "AQ", "y": "Ag"}),
        encrypted_private_key: Some(vec![0xde, 0xad, 0xbe, 0xef]),
        created_at: at(created_second),
        activates_at: Some(at(created_second + 3_600)),
        retired_at: None,
        remove_after: None,
    }
}

fn token(id: &str, name: &str, hash: &str, created_second: i64) -> AdminTokenRecord {
    AdminTokenRecord {
        id: id.to_string(),
        name: name.to_string(),
        role: "admin".to_string(),
        token_hash: hash.to_string(),
        created_at: at(created_second),
        revoked_at: None,
    }
}

/// Checks that keys read back unchanged, oldest first, and that inserting an existing `kid`
/// fails without appending its audit events.
pub async fn signing_key_round_trip(store: &dyn Store) {
    let second = key("key-2", "prepared", 20);
    let first = key("key-1", "active", 10);

    let appended = store
        .insert_signing_key(&second, vec![event(AuditKind::KeyChange, at(20))])
        .await
        .expect("insert key-2");
    assert_eq!(appended.len(), 1);
    assert_eq!(appended[0].event.kind, AuditKind::KeyChange);
    store
        .insert_signing_key(&first, vec![])
        .await
        .expect("insert key-1");

    assert_eq!(
        store.list_signing_keys().await.expect("list"),
        vec![first.clone(), second]
    );

    let result = store
        .insert_signing_key(&first, vec![event(AuditKind::KeyChange, at(30))])
        .await;
    assert!(
        matches!(result, Err(StoreError::AlreadyExists { .. })),
        "a second key with the same kid is rejected, got {result:?}"
    );
    assert_eq!(
        verify_chain(store, None).await.len(),
        1,
        "the failed insert appended nothing"
    );
}

/// Checks that two replicas moving the same key out of one state cannot both succeed, and
/// that the loser writes neither the key nor its audit event.
pub async fn replica_race_cannot_double_rotate(store: &dyn Store) {
    let prepared = key("key-1", "prepared", 0);
    store
        .insert_signing_key(&prepared, vec![])
        .await
        .expect("insert");

    let mut activated = prepared.clone();
    activated.state = "active".to_string();
    let mut tainted = prepared.clone();
    tainted.state = "tainted".to_string();

    let (first, second) = tokio::join!(
        store.update_signing_key(
            &activated,
            "prepared",
            vec![event(AuditKind::KeyChange, at(1))]
        ),
        store.update_signing_key(
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
        store.list_signing_keys().await.expect("list"),
        vec![winner.clone()]
    );
    assert_eq!(
        verify_chain(store, None).await.len(),
        1,
        "only the winner's audit event"
    );

    let stale = store
        .update_signing_key(
            &activated,
            "prepared",
            vec![event(AuditKind::KeyChange, at(2))],
        )
        .await
        .expect("stale update");
    assert!(!stale, "an update from a state the key has left fails");

    let mut unknown = prepared;
    unknown.kid = "key-unknown".to_string();
    let result = store.update_signing_key(&unknown, "prepared", vec![]).await;
    assert!(
        matches!(result, Err(StoreError::NotFound { .. })),
        "expected NotFound, got {result:?}"
    );
}

/// Checks that removing a key drops its encrypted private key but keeps its public JWK.
pub async fn removed_key_keeps_public_jwk(store: &dyn Store) {
    let retired = SigningKeyRecord {
        retired_at: Some(at(100)),
        remove_after: Some(at(200)),
        ..key("key-1", "retired", 0)
    };
    store
        .insert_signing_key(&retired, vec![])
        .await
        .expect("insert");

    // The caller forgets to clear the private key; the store drops it anyway.
    let mut removed = retired.clone();
    removed.state = REMOVED_KEY_STATE.to_string();
    removed.public_jwk = json!({"kty": "EC", "changed": true});
    let updated = store
        .update_signing_key(&removed, "retired", vec![])
        .await
        .expect("remove");
    assert!(updated);

    let stored = store.list_signing_keys().await.expect("list");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].state, REMOVED_KEY_STATE);
    assert_eq!(
        stored[0].encrypted_private_key, None,
        "the private key is gone"
    );
    assert_eq!(
        stored[0].public_jwk, retired.public_jwk,
        "the public JWK never changes"
    );
    assert_eq!(stored[0].created_at, retired.created_at);
    assert_eq!(stored[0].remove_after, retired.remove_after);
}

/// Checks that a token is found by hash until it is revoked by id or by name. Also checks
/// that a revoked token's name can be reused and that only writes that happened are audited.
pub async fn admin_token_lookup_and_revocation(store: &dyn Store) {
    let ops = token("id-ops", "ops", "hash-ops", 0);
    let ci = token("id-ci", "ci", "hash-ci", 1);
    store
        .insert_admin_token(&ops, vec![event(AuditKind::AdminTokenChange, at(0))])
        .await
        .expect("insert ops");
    store
        .insert_admin_token(&ci, vec![event(AuditKind::AdminTokenChange, at(1))])
        .await
        .expect("insert ci");

    let found = store
        .find_active_admin_token_by_hash("hash-ops")
        .await
        .expect("find");
    assert_eq!(found, Some(ops.clone()));
    let unknown = store
        .find_active_admin_token_by_hash("hash-nobody")
        .await
        .expect("find");
    assert_eq!(unknown, None);

    let duplicate_name = token("id-ops-2", "ops", "hash-ops-2", 2);
    let result = store.insert_admin_token(&duplicate_name, vec![]).await;
    assert!(
        matches!(result, Err(StoreError::AlreadyExists { .. })),
        "an active name is unique, got {result:?}"
    );
    let duplicate_hash = token("id-other", "other", "hash-ci", 2);
    let result = store.insert_admin_token(&duplicate_hash, vec![]).await;
    assert!(
        matches!(result, Err(StoreError::AlreadyExists { .. })),
        "a token hash is unique, got {result:?}"
    );

    let revoked = store
        .revoke_admin_token(
            "ops",
            at(10),
            vec![event(AuditKind::AdminTokenChange, at(10))],
        )
        .await
        .expect("revoke by name");
    assert!(revoked);
    let found = store
        .find_active_admin_token_by_hash("hash-ops")
        .await
        .expect("find");
    assert_eq!(found, None, "a revoked token no longer authenticates");

    let again = store
        .revoke_admin_token(
            "ops",
            at(11),
            vec![event(AuditKind::AdminTokenChange, at(11))],
        )
        .await
        .expect("revoke again");
    assert!(!again, "nothing left to revoke");

    let by_id = store
        .revoke_admin_token("id-ci", at(12), vec![])
        .await
        .expect("revoke by id");
    assert!(by_id);

    let reused = token("id-ops-2", "ops", "hash-ops-2", 20);
    store
        .insert_admin_token(&reused, vec![])
        .await
        .expect("name reused after revocation");

    let listed = store.list_admin_tokens().await.expect("list");
    let revoked_at: Vec<(&str, Option<jiff::Timestamp>)> = listed
        .iter()
        .map(|t| (t.id.as_str(), t.revoked_at))
        .collect();
    assert_eq!(
        revoked_at,
        [
            ("id-ops", Some(at(10))),
            ("id-ci", Some(at(12))),
            ("id-ops-2", None)
        ]
    );
    assert_eq!(
        verify_chain(store, None).await.len(),
        3,
        "two inserts and one revocation"
    );
}

/// Checks that metadata values are stored, replaced and read back by key.
pub async fn meta_round_trip(store: &dyn Store) {
    assert_eq!(store.get_meta("trust_domain").await.expect("get"), None);

    store
        .set_meta("trust_domain", "prod.example.com")
        .await
        .expect("set");
    store
        .set_meta("kek_fingerprint", "sha256:abc")
        .await
        .expect("set");
    store
        .set_meta("trust_domain", "mayfly.local")
        .await
        .expect("replace");

    let trust_domain = store.get_meta("trust_domain").await.expect("get");
    assert_eq!(trust_domain.as_deref(), Some("mayfly.local"));
    let fingerprint = store.get_meta("kek_fingerprint").await.expect("get");
    assert_eq!(fingerprint.as_deref(), Some("sha256:abc"));
}

/// Checks that a healthy store passes the readiness check.
pub async fn ping_succeeds(store: &dyn Store) {
    store.ping().await.expect("ping");
}

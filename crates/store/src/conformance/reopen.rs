//! Check that everything written survives closing the store and opening it again.

use std::future::Future;
use std::sync::Arc;

use mayfly_domain::audit::{AuditKind, Outcome};
use serde_json::json;

use super::{at, checkpoint_of, credential_event, event, verify_chain};
use crate::model::{AdminTokenRecord, ChangeSet, ResourcePut, ResourceRef, SigningKeyRecord};
use crate::store::Store;

/// Writes one record of every kind, closes the store, opens the same database with `open`
/// and checks that everything reads back the same and the chain continues from its head.
pub async fn data_survives_reopen<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let store = open().await;

    let mut change = ChangeSet::new(at(0));
    change.puts = vec![
        ResourcePut {
            kind: "server_workload".to_string(),
            name: "payments".to_string(),
            spec: json!({"host": "pay.internal", "port": 443}),
            refs: vec![],
        },
        ResourcePut {
            kind: "access_policy".to_string(),
            name: "p".to_string(),
            spec: json!({}),
            refs: vec![ResourceRef::new("server_workload", "payments")],
        },
    ];
    change.set_enabled = vec![(ResourceRef::new("server_workload", "payments"), false)];
    change.audit = vec![event(AuditKind::ConfigChange, at(0))];
    store.commit(change).await.expect("commit");

    let appended = store
        .append_audit(vec![credential_event(
            at(1),
            "payments",
            "billing",
            Outcome::Failure,
        )])
        .await
        .expect("append");
    let checkpoint = checkpoint_of(&appended[0], at(2));
    store
        .insert_checkpoint(&checkpoint)
        .await
        .expect("checkpoint");

    let key = SigningKeyRecord {
        kid: "key-1".to_string(),
        algorithm: "ES256".to_string(),
        state: "active".to_string(),
        public_jwk: json!({"kty": "EC", "kid": "key-1"}),
        encrypted_private_key: Some(vec![1, 2, 3]),
        created_at: at(3),
        activates_at: Some(at(3)),
        retired_at: None,
        remove_after: None,
    };
    store.insert_signing_key(&key, vec![]).await.expect("key");
    let token = AdminTokenRecord {
        id: "id-1".to_string(),
        name: "ops".to_string(),
        role: "auditor".to_string(),
        token_hash: "hash-1".to_string(),
        created_at: at(4),
        revoked_at: None,
    };
    store
        .insert_admin_token(&token, vec![])
        .await
        .expect("token");
    store
        .set_meta("trust_domain", "mayfly.local")
        .await
        .expect("meta");

    let resources = store.list_all_resources().await.expect("resources");
    let version = store.config_version().await.expect("version");
    let chain = verify_chain(store.as_ref(), None).await;

    store.close().await;
    drop(store);
    let store = open().await;

    assert_eq!(
        store.list_all_resources().await.expect("resources"),
        resources
    );
    assert_eq!(store.config_version().await.expect("version"), version);
    assert_eq!(verify_chain(store.as_ref(), None).await, chain);
    assert_eq!(
        store.list_checkpoints().await.expect("checkpoints"),
        vec![checkpoint]
    );
    assert_eq!(store.list_signing_keys().await.expect("keys"), vec![key]);
    assert_eq!(
        store.list_admin_tokens().await.expect("tokens"),
        vec![token]
    );
    let trust_domain = store.get_meta("trust_domain").await.expect("meta");
    assert_eq!(trust_domain.as_deref(), Some("mayfly.local"));

    let next = store
        .append_audit(vec![event(AuditKind::KeyChange, at(5))])
        .await
        .expect("append after reopen");
    assert_eq!(next[0].seq, 3);
    assert_eq!(next[0].prev_hash, chain[1].hash);

    store.close().await;
}

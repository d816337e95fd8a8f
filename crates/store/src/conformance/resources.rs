//! Checks of resources, references, change sets and the configuration version.

use mayfly_domain::audit::AuditKind;
use serde_json::json;

use super::{at, event};
use crate::error::StoreError;
use crate::model::{ChangeSet, ResourcePut, ResourceRef};
use crate::store::Store;

fn put(kind: &str, name: &str, spec: serde_json::Value, refs: &[(&str, &str)]) -> ResourcePut {
    ResourcePut {
        kind: kind.to_string(),
        name: name.to_string(),
        spec,
        refs: refs
            .iter()
            .map(|(kind, name)| ResourceRef::new(*kind, *name))
            .collect(),
    }
}

fn puts(now_seconds: i64, puts: Vec<ResourcePut>) -> ChangeSet {
    let mut change = ChangeSet::new(at(now_seconds));
    change.puts = puts;
    change
}

/// Checks that resources of two kinds read back one by one, by kind and all at once.
pub async fn resource_round_trip(store: &dyn Store) {
    let change = puts(
        0,
        vec![
            put(
                "server_workload",
                "payments",
                json!({"host": "pay.internal", "port": 443}),
                &[],
            ),
            put(
                "server_workload",
                "billing",
                json!({"host": "bill.internal"}),
                &[],
            ),
            put(
                "client_workload",
                "ci",
                json!({"identities": [{"sub": "repo:x"}]}),
                &[],
            ),
        ],
    );
    store.commit(change).await.expect("commit");

    let payments = store
        .get_resource("server_workload", "payments")
        .await
        .expect("get")
        .expect("payments exists");
    assert_eq!(payments.kind, "server_workload");
    assert_eq!(payments.name, "payments");
    assert_eq!(payments.spec, json!({"host": "pay.internal", "port": 443}));
    assert!(payments.enabled, "new resources start enabled");
    assert_eq!(payments.created_at, at(0));
    assert_eq!(payments.updated_at, at(0));

    let missing = store
        .get_resource("server_workload", "ci")
        .await
        .expect("get");
    assert_eq!(missing, None, "names are scoped by kind");

    let servers = store.list_resources("server_workload").await.expect("list");
    let names: Vec<&str> = servers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["billing", "payments"], "sorted by name");

    let all = store.list_all_resources().await.expect("list all");
    let keys: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r.kind.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("client_workload", "ci"),
            ("server_workload", "billing"),
            ("server_workload", "payments")
        ],
        "sorted by kind, then name"
    );
    assert!(
        store
            .list_resources("log_stream")
            .await
            .expect("list")
            .is_empty()
    );
}

/// Checks that replacing a resource's spec keeps its creation time and moves its update time.
pub async fn update_keeps_created_at(store: &dyn Store) {
    let first = puts(10, vec![put("trust_provider", "ci", json!({"v": 1}), &[])]);
    store.commit(first).await.expect("first commit");

    let second = puts(20, vec![put("trust_provider", "ci", json!({"v": 2}), &[])]);
    store.commit(second).await.expect("second commit");

    let record = store
        .get_resource("trust_provider", "ci")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.spec, json!({"v": 2}));
    assert_eq!(record.created_at, at(10));
    assert_eq!(record.updated_at, at(20));
}

/// Checks that a put keeps a disabled resource disabled, so `apply` cannot undo the incident
/// switch.
pub async fn put_keeps_enabled(store: &dyn Store) {
    let target = ResourceRef::new("server_workload", "payments");
    store
        .commit(puts(
            0,
            vec![put("server_workload", "payments", json!({"v": 1}), &[])],
        ))
        .await
        .expect("create");

    let mut disable = ChangeSet::new(at(1));
    disable.set_enabled = vec![(target.clone(), false)];
    store.commit(disable).await.expect("disable");

    store
        .commit(puts(
            2,
            vec![put("server_workload", "payments", json!({"v": 2}), &[])],
        ))
        .await
        .expect("update");
    let record = store
        .get_resource("server_workload", "payments")
        .await
        .expect("get");
    let record = record.expect("exists");
    assert!(!record.enabled, "a put keeps the resource disabled");
    assert_eq!(record.spec, json!({"v": 2}));

    let mut enable = ChangeSet::new(at(3));
    enable.set_enabled = vec![(target, true)];
    store.commit(enable).await.expect("enable");
    let record = store
        .get_resource("server_workload", "payments")
        .await
        .expect("get");
    assert!(record.expect("exists").enabled);
}

/// Checks that a reference to a missing resource fails the commit, and that neither the
/// resource nor the change's audit event is written.
pub async fn dangling_reference_writes_nothing(store: &dyn Store) {
    let version_before = store.config_version().await.expect("version");

    let mut change = puts(
        0,
        vec![
            put("credential_provider", "jwt", json!({}), &[]),
            put(
                "access_policy",
                "billing-to-payments",
                json!({}),
                &[
                    ("credential_provider", "jwt"),
                    ("server_workload", "payments"),
                    ("client_workload", "billing"),
                ],
            ),
        ],
    );
    change.audit = vec![event(AuditKind::ConfigChange, at(0))];

    let result = store.commit(change).await;
    match result {
        Err(StoreError::DanglingReference {
            kind,
            name,
            ref_kind,
            ref_name,
        }) => {
            assert_eq!(
                (kind.as_str(), name.as_str()),
                ("access_policy", "billing-to-payments")
            );
            assert_eq!(
                (ref_kind.as_str(), ref_name.as_str()),
                ("server_workload", "payments"),
                "names the first missing reference"
            );
        }
        other => panic!("expected DanglingReference, got {other:?}"),
    }

    assert_eq!(store.list_all_resources().await.expect("list"), vec![]);
    assert_eq!(
        store.audit_head().await.expect("head"),
        None,
        "no audit event appended"
    );
    assert_eq!(
        store.config_version().await.expect("version"),
        version_before
    );
}

/// Checks that deleting a resource that others reference fails and names every referrer.
pub async fn referenced_delete_names_all_referrers(store: &dyn Store) {
    let setup = puts(
        0,
        vec![
            put("server_workload", "payments", json!({}), &[]),
            put("client_workload", "billing", json!({}), &[]),
            put("credential_provider", "jwt", json!({}), &[]),
            put(
                "access_policy",
                "p2",
                json!({}),
                &[
                    ("server_workload", "payments"),
                    ("client_workload", "billing"),
                ],
            ),
            put(
                "access_policy",
                "p1",
                json!({}),
                &[
                    ("server_workload", "payments"),
                    ("credential_provider", "jwt"),
                ],
            ),
            put(
                "alert_rule",
                "payments-changes",
                json!({}),
                &[("server_workload", "payments")],
            ),
        ],
    );
    store.commit(setup).await.expect("setup");

    let mut delete = ChangeSet::new(at(1));
    delete.deletes = vec![ResourceRef::new("server_workload", "payments")];
    delete.audit = vec![event(AuditKind::ConfigChange, at(1))];
    let head_before = store.audit_head().await.expect("head");

    match store.commit(delete).await {
        Err(StoreError::ReferencedBy {
            kind,
            name,
            referrers,
        }) => {
            assert_eq!(
                (kind.as_str(), name.as_str()),
                ("server_workload", "payments")
            );
            assert_eq!(
                referrers,
                vec![
                    ResourceRef::new("access_policy", "p1"),
                    ResourceRef::new("access_policy", "p2"),
                    ResourceRef::new("alert_rule", "payments-changes"),
                ]
            );
        }
        other => panic!("expected ReferencedBy, got {other:?}"),
    }
    let still_there = store
        .get_resource("server_workload", "payments")
        .await
        .expect("get");
    assert!(still_there.is_some(), "the referenced resource is kept");
    assert_eq!(store.audit_head().await.expect("head"), head_before);

    // Deleting the referrers in the same change set releases the target.
    let mut delete_all = ChangeSet::new(at(2));
    delete_all.deletes = vec![
        ResourceRef::new("server_workload", "payments"),
        ResourceRef::new("access_policy", "p1"),
        ResourceRef::new("access_policy", "p2"),
        ResourceRef::new("alert_rule", "payments-changes"),
    ];
    store
        .commit(delete_all)
        .await
        .expect("delete with referrers");
    let deleted = store
        .get_resource("server_workload", "payments")
        .await
        .expect("get");
    assert_eq!(deleted, None);
}

/// Checks that a failure late in a change set undoes its earlier puts, deletes and flags.
pub async fn change_set_is_atomic(store: &dyn Store) {
    let setup = puts(
        0,
        vec![
            put("server_workload", "payments", json!({"v": 1}), &[]),
            put("server_workload", "billing", json!({"v": 1}), &[]),
        ],
    );
    store.commit(setup).await.expect("setup");
    let version_before = store.config_version().await.expect("version");
    let listing_before = store.list_all_resources().await.expect("list");

    // Fails on the last step: a reference check after every write has been applied.
    let mut failing = puts(
        5,
        vec![
            put("server_workload", "payments", json!({"v": 2}), &[]),
            put(
                "access_policy",
                "broken",
                json!({}),
                &[("client_workload", "missing")],
            ),
        ],
    );
    failing.deletes = vec![ResourceRef::new("server_workload", "billing")];
    failing.set_enabled = vec![(ResourceRef::new("server_workload", "payments"), false)];
    failing.audit = vec![event(AuditKind::ConfigChange, at(5))];
    let result = store.commit(failing).await;
    assert!(
        matches!(result, Err(StoreError::DanglingReference { .. })),
        "expected DanglingReference, got {result:?}"
    );

    // Fails in the middle: a delete of a missing resource after a successful put.
    let mut failing = puts(6, vec![put("server_workload", "new", json!({}), &[])]);
    failing.deletes = vec![ResourceRef::new("server_workload", "never-existed")];
    let result = store.commit(failing).await;
    assert!(
        matches!(result, Err(StoreError::NotFound { .. })),
        "expected NotFound, got {result:?}"
    );

    assert_eq!(
        store.list_all_resources().await.expect("list"),
        listing_before
    );
    assert_eq!(
        store.config_version().await.expect("version"),
        version_before
    );
    assert_eq!(store.audit_head().await.expect("head"), None);
}

/// Checks that deleting, enabling or disabling a missing resource fails with `NotFound`.
pub async fn missing_targets_not_found(store: &dyn Store) {
    let mut delete = ChangeSet::new(at(0));
    delete.deletes = vec![ResourceRef::new("server_workload", "ghost")];
    match store.commit(delete).await {
        Err(StoreError::NotFound { kind, name }) => {
            assert_eq!((kind.as_str(), name.as_str()), ("server_workload", "ghost"));
        }
        other => panic!("expected NotFound for delete, got {other:?}"),
    }

    let mut disable = ChangeSet::new(at(0));
    disable.set_enabled = vec![(ResourceRef::new("server_workload", "ghost"), false)];
    match store.commit(disable).await {
        Err(StoreError::NotFound { kind, name }) => {
            assert_eq!((kind.as_str(), name.as_str()), ("server_workload", "ghost"));
        }
        other => panic!("expected NotFound for disable, got {other:?}"),
    }
}

/// Checks that every commit that writes a resource bumps the version by one, and that
/// audit-only and failed commits leave it unchanged.
pub async fn config_version_counts_resource_commits(store: &dyn Store) {
    let start = store.config_version().await.expect("version");

    store
        .commit(puts(
            0,
            vec![
                put("server_workload", "a", json!({}), &[]),
                put("server_workload", "b", json!({}), &[]),
            ],
        ))
        .await
        .expect("put");
    assert_eq!(store.config_version().await.expect("version"), start + 1);

    let mut disable = ChangeSet::new(at(1));
    disable.set_enabled = vec![(ResourceRef::new("server_workload", "a"), false)];
    store.commit(disable).await.expect("disable");
    assert_eq!(store.config_version().await.expect("version"), start + 2);

    let mut audit_only = ChangeSet::new(at(2));
    audit_only.audit = vec![event(AuditKind::ConfigChange, at(2))];
    let appended = store.commit(audit_only).await.expect("audit only");
    assert_eq!(
        appended.len(),
        1,
        "an audit-only change set still appends its events"
    );
    assert_eq!(store.config_version().await.expect("version"), start + 2);

    let mut failing = ChangeSet::new(at(3));
    failing.deletes = vec![ResourceRef::new("server_workload", "missing")];
    assert!(store.commit(failing).await.is_err());
    assert_eq!(store.config_version().await.expect("version"), start + 2);

    let mut delete = ChangeSet::new(at(4));
    delete.deletes = vec![ResourceRef::new("server_workload", "b")];
    store.commit(delete).await.expect("delete");
    assert_eq!(store.config_version().await.expect("version"), start + 3);
}

/// Checks that a put replaces the resource's references and a delete drops its own, so the
/// old targets can then be deleted.
pub async fn replaced_refs_release_targets(store: &dyn Store) {
    let setup = puts(
        0,
        vec![
            put("server_workload", "old", json!({}), &[]),
            put("server_workload", "new", json!({}), &[]),
            put(
                "access_policy",
                "p",
                json!({}),
                &[("server_workload", "old")],
            ),
            put("alert_rule", "r", json!({}), &[("server_workload", "new")]),
        ],
    );
    store.commit(setup).await.expect("setup");

    let repoint = puts(
        1,
        vec![put(
            "access_policy",
            "p",
            json!({}),
            &[("server_workload", "new")],
        )],
    );
    store.commit(repoint).await.expect("repoint");

    let mut delete_old = ChangeSet::new(at(2));
    delete_old.deletes = vec![ResourceRef::new("server_workload", "old")];
    store
        .commit(delete_old)
        .await
        .expect("old is no longer referenced");

    let mut delete_rule = ChangeSet::new(at(3));
    delete_rule.deletes = vec![ResourceRef::new("alert_rule", "r")];
    store.commit(delete_rule).await.expect("delete rule");

    let mut delete_new = ChangeSet::new(at(4));
    delete_new.deletes = vec![ResourceRef::new("server_workload", "new")];
    match store.commit(delete_new).await {
        Err(StoreError::ReferencedBy { referrers, .. }) => {
            assert_eq!(
                referrers,
                vec![ResourceRef::new("access_policy", "p")],
                "the deleted rule's reference is gone"
            );
        }
        other => panic!("expected ReferencedBy, got {other:?}"),
    }
}

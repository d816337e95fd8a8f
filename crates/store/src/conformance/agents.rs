//! Checks for agents and their one-time join tokens.

use mayfly_domain::audit::AuditKind;

use super::{at, event};
use crate::model::{AgentCredentialHash, AgentJoinTokenRecord};
use crate::store::Store;

fn join_token(agent: &str, hash: &str, expires_after: i64) -> AgentJoinTokenRecord {
    AgentJoinTokenRecord {
        id: uuid::Uuid::now_v7().to_string(),
        agent: agent.to_string(),
        token_hash: hash.to_string(),
        created_at: at(0),
        expires_at: at(expires_after),
        used_at: None,
        revoked_at: None,
    }
}

fn credential(hash: &str, expires: i64) -> AgentCredentialHash {
    AgentCredentialHash {
        hash: hash.to_string(),
        expires_at: at(expires),
    }
}

/// Checks that a join token admits its agent once, and that only the current credential renews.
pub async fn agent_join_token_is_single_use(store: &dyn Store) {
    store
        .insert_agent_join_token(
            &join_token("web-1", "join-1", 600),
            vec![event(AuditKind::AgentChange, at(0))],
        )
        .await
        .unwrap();

    let agent = store
        .redeem_agent_join_token(
            "join-1",
            at(10),
            &credential("cred-1", 3600),
            vec![event(AuditKind::AgentChange, at(10))],
        )
        .await
        .unwrap()
        .expect("an unused join token admits its agent");
    assert_eq!(agent.name, "web-1");
    assert_eq!(agent.credential_hash.as_deref(), Some("cred-1"));

    let replay = store
        .redeem_agent_join_token("join-1", at(11), &credential("cred-x", 3600), vec![])
        .await
        .unwrap();
    assert!(replay.is_none(), "a used join token must not admit twice");
    let used = store
        .find_agent_join_token("join-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.used_at, Some(at(10)));

    let found = store.find_agent_by_credential("cred-1").await.unwrap();
    assert_eq!(found.map(|agent| agent.name).as_deref(), Some("web-1"));

    let renewed = store
        .renew_agent_credential("web-1", "cred-1", &credential("cred-2", 7200), at(20))
        .await
        .unwrap();
    assert!(renewed);
    assert!(
        store
            .find_agent_by_credential("cred-1")
            .await
            .unwrap()
            .is_none()
    );
    let stale = store
        .renew_agent_credential("web-1", "cred-1", &credential("cred-3", 7200), at(21))
        .await
        .unwrap();
    assert!(!stale, "a replaced credential must not renew");
}

/// Checks that an expired join token admits no agent and an expired credential does not renew.
pub async fn expired_agent_secrets_rejected(store: &dyn Store) {
    store
        .insert_agent_join_token(&join_token("web-1", "join-1", 60), vec![])
        .await
        .unwrap();
    let late = store
        .redeem_agent_join_token("join-1", at(60), &credential("cred-1", 3600), vec![])
        .await
        .unwrap();
    assert!(late.is_none(), "an expired join token must not admit");

    store
        .insert_agent_join_token(&join_token("web-1", "join-2", 600), vec![])
        .await
        .unwrap();
    store
        .redeem_agent_join_token("join-2", at(1), &credential("cred-2", 100), vec![])
        .await
        .unwrap()
        .unwrap();
    let renewed = store
        .renew_agent_credential("web-1", "cred-2", &credential("cred-3", 200), at(100))
        .await
        .unwrap();
    assert!(!renewed, "an expired credential must not renew");
}

/// Checks that eviction drops the credential and revokes unused join tokens, and that a new join
/// token admits the agent again.
pub async fn evicted_agent_loses_credential(store: &dyn Store) {
    store
        .insert_agent_join_token(&join_token("web-1", "join-1", 600), vec![])
        .await
        .unwrap();
    store
        .redeem_agent_join_token("join-1", at(1), &credential("cred-1", 3600), vec![])
        .await
        .unwrap()
        .unwrap();
    store
        .insert_agent_join_token(&join_token("web-1", "join-2", 600), vec![])
        .await
        .unwrap();

    let evicted = store
        .evict_agent("web-1", at(5), vec![event(AuditKind::AgentChange, at(5))])
        .await
        .unwrap();
    assert!(evicted);
    assert!(
        store
            .find_agent_by_credential("cred-1")
            .await
            .unwrap()
            .is_none()
    );
    let renewed = store
        .renew_agent_credential("web-1", "cred-1", &credential("cred-2", 3600), at(6))
        .await
        .unwrap();
    assert!(!renewed, "an evicted agent must not renew");
    let pending = store
        .redeem_agent_join_token("join-2", at(6), &credential("cred-3", 3600), vec![])
        .await
        .unwrap();
    assert!(
        pending.is_none(),
        "a join token made before the eviction must not re-admit"
    );

    let agents = store.list_agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].evicted_at, Some(at(5)));
    assert!(!store.evict_agent("web-1", at(7), vec![]).await.unwrap());

    store
        .insert_agent_join_token(&join_token("web-1", "join-3", 600), vec![])
        .await
        .unwrap();
    let back = store
        .redeem_agent_join_token("join-3", at(8), &credential("cred-4", 3600), vec![])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.evicted_at, None);
}

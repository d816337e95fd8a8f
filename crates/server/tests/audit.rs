//! The audit log: one event per credential request and per change, queries with filters and
//! paging, failing closed when the store is gone, chain verification against edits, deletions
//! and reordering made behind the server's back, and the retention purge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestIssuer, TestServer, basic_config};
use mayfly_domain::audit::{NewAuditEvent, chain_hash};
use serde_json::{Value, json};
use sqlx::Row;
use tempfile::TempDir;

const ADMIN: &str = "admin-token:bootstrap";

/// Requests a credential for `server_workload` with an evidence token whose `sub` is `sub`;
/// returns status and body.
async fn request(
    server: &TestServer,
    issuer: &TestIssuer,
    sub: &str,
    server_workload: &str,
) -> (u16, Value) {
    let evidence = issuer.token(json!({"sub": sub}));
    server
        .credential_with_token(&evidence, json!({"server_workload": server_workload}))
        .await
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .collect()
}

/// Returns the report of `GET /v1/audit/verify` after checking the response status.
async fn verify(server: &TestServer) -> Value {
    let (status, report) = server.get("/v1/audit/verify").await;
    assert_eq!(status, 200, "{report}");
    report
}

/// Returns the report's problems as (seq, text) pairs.
fn problems(report: &Value) -> Vec<(i64, String)> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| {
            (
                problem["seq"].as_i64().unwrap(),
                problem["problem"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What is recorded

#[tokio::test]
async fn each_credential_request_writes_one_event() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;

    let mut request_ids = Vec::new();
    for sub in [
        "repo:acme/billing",
        "repo:acme/intruder",
        "repo:acme/billing",
        "repo:acme/billing",
        "repo:acme/intruder",
    ] {
        let (status, body) = request(&server, &issuer, sub, "payments").await;
        assert!(status == 200 || status == 403, "{status} {body}");
        request_ids.push(body["request_id"].as_str().unwrap().to_string());
    }

    let mut events = server.audit_events("kind=credential_request").await;
    events.reverse();
    assert_eq!(events.len(), 5);
    let seqs = seqs(&events);
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "sequence numbers {seqs:?} have a gap");
    }
    let recorded: Vec<&str> = events
        .iter()
        .map(|event| event["detail"]["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(recorded, request_ids);
    let outcomes: Vec<&str> = events
        .iter()
        .map(|event| event["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["success", "failure", "success", "success", "failure"]
    );
}

#[tokio::test]
async fn configuration_changes_are_audited_with_actor() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let (status, body) = server
        .post("/v1/server-workloads/payments/disable", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    let events = server.audit_events("kind=config_change").await;

    let mut changes: Vec<(String, String, String)> = events
        .iter()
        .map(|event| {
            assert_eq!(event["detail"]["actor"], ADMIN, "{event}");
            let detail = &event["detail"];
            let field = |name: &str| detail[name].as_str().unwrap().to_string();
            (
                field("action"),
                field("resource_kind"),
                field("resource_name"),
            )
        })
        .collect();
    changes.sort();
    let expected = [
        ("create", "access_policy", "billing-payments"),
        ("create", "client_workload", "billing"),
        ("create", "credential_provider", "payments-jwt"),
        ("create", "server_workload", "payments"),
        ("create", "trust_provider", "ci"),
        ("disable", "server_workload", "payments"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, k, n)| (a.to_string(), k.to_string(), n.to_string()))
        .collect();
    assert_eq!(changes, expected);
    let disable = &events[0];
    assert_eq!(disable["detail"]["before"], json!({"enabled": true}));
    assert_eq!(disable["detail"]["after"], json!({"enabled": false}));
    assert_eq!(disable["server_workload"], "payments");
}

#[tokio::test]
async fn key_and_admin_token_changes_are_audited() {
    let server = TestServer::start().await;

    let (status, rotated) = server.post("/v1/keys/rotate", json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let (status, created) = server
        .post(
            "/v1/admin-tokens",
            json!({"name": "reader", "role": "auditor"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let (status, body) = server
        .admin(reqwest::Method::DELETE, "/v1/admin-tokens/reader", None)
        .await;
    assert_eq!(status, 200, "{body}");

    let key_events = server.audit_events("kind=key_change").await;
    let newest = &key_events[0]["detail"];
    assert_eq!(newest["action"], "generate");
    assert_eq!(newest["kid"], rotated["key"]["kid"]);
    assert_eq!(newest["actor"], ADMIN);

    let token_events = server.audit_events("kind=admin_token_change").await;
    let actions: Vec<(&str, &str, &str)> = token_events
        .iter()
        .map(|event| {
            let detail = &event["detail"];
            (
                detail["action"].as_str().unwrap(),
                detail["name"].as_str().unwrap(),
                detail["actor"].as_str().unwrap(),
            )
        })
        .collect();
    // The bootstrap token is created by the server itself at first start.
    assert_eq!(
        actions,
        [
            ("revoke", "reader", ADMIN),
            ("create", "reader", ADMIN),
            ("create", "bootstrap", "system")
        ]
    );
    let secret = created["token"].as_str().unwrap();
    let everything = server.audit_events("limit=1000").await;
    assert!(
        !Value::Array(everything).to_string().contains(secret),
        "an audit event contains an admin token"
    );
}

// ---------------------------------------------------------------------------------------------
// Queries

/// Starts a server with two clients and two server workloads and makes five requests in this
/// order: billing→payments, billing→ledger, reports→payments (granted), reports→ledger (no
/// policy), intruder→payments (no client workload). Returns the seqs of their events in order.
async fn server_with_mixed_requests() -> (TestServer, TestIssuer, Vec<i64>) {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let yaml = format!(
        "trust_providers:\n{}\
client_workloads:\n\
  - {{name: billing, identities: [{{trust_provider: ci, match: {{sub: \"repo:acme/billing\"}}}}]}}\n\
  - {{name: reports, identities: [{{trust_provider: ci, match: {{sub: \"repo:acme/reports\"}}}}]}}\n\
server_workloads:\n\
  - {{name: payments, host: payments.example, port: 443}}\n\
  - {{name: ledger, host: ledger.example, port: 443}}\n\
credential_providers:\n  - {{name: payments-jwt, kind: jwt_svid, audience: [payments], ttl: 5m}}\n\
access_policies:\n\
  - {{name: billing-payments, client_workload: billing, server_workload: payments, credential_provider: payments-jwt, trust_providers: [ci]}}\n\
  - {{name: billing-ledger, client_workload: billing, server_workload: ledger, credential_provider: payments-jwt, trust_providers: [ci]}}\n\
  - {{name: reports-payments, client_workload: reports, server_workload: payments, credential_provider: payments-jwt, trust_providers: [ci]}}\n",
        issuer.trust_provider_yaml("ci")
    );
    server.apply(&yaml).await;

    let requests = [
        ("repo:acme/billing", "payments", 200),
        ("repo:acme/billing", "ledger", 200),
        ("repo:acme/reports", "payments", 200),
        ("repo:acme/reports", "ledger", 403),
        ("repo:acme/intruder", "payments", 403),
    ];
    for (sub, target, expected) in requests {
        let (status, body) = request(&server, &issuer, sub, target).await;
        assert_eq!(status, expected, "{sub} -> {target}: {body}");
    }
    let mut events = seqs(&server.audit_events("kind=credential_request").await);
    events.reverse();
    assert_eq!(events.len(), 5);
    (server, issuer, events)
}

async fn query_seqs(server: &TestServer, query: &str) -> Vec<i64> {
    seqs(&server.audit_events(query).await)
}

#[tokio::test]
async fn audit_filters_select_exact_events() {
    let (server, _issuer, r) = server_with_mixed_requests().await;
    let config_payments = query_seqs(&server, "kind=config_change&server_workload=payments").await;
    assert_eq!(config_payments.len(), 1, "one change created payments");

    // The intruder's request (r[4]) fails at client_workload but still names payments.
    assert_eq!(
        query_seqs(&server, "server_workload=payments").await,
        [r[4], r[2], r[0], config_payments[0]]
    );
    assert_eq!(
        query_seqs(&server, "kind=credential_request&server_workload=ledger").await,
        [r[3], r[1]]
    );
    assert_eq!(
        query_seqs(&server, "client_workload=billing").await,
        [r[1], r[0]]
    );
    assert_eq!(
        query_seqs(&server, "client_workload=reports").await,
        [r[3], r[2]]
    );
    assert_eq!(query_seqs(&server, "outcome=failure").await, [r[4], r[3]]);
    assert_eq!(
        query_seqs(&server, "outcome=success").await,
        [r[2], r[1], r[0]]
    );
    assert_eq!(
        query_seqs(&server, "client_workload=reports&outcome=failure").await,
        [r[3]]
    );
    assert_eq!(
        query_seqs(&server, "kind=credential_request").await,
        [r[4], r[3], r[2], r[1], r[0]]
    );
    assert_eq!(query_seqs(&server, "kind=config_change").await.len(), 9);
}

#[tokio::test]
async fn audit_time_range_is_half_open() {
    let (server, _issuer, r) = server_with_mixed_requests().await;
    let events = server.audit_events("kind=credential_request").await;
    let time_of = |seq: i64| {
        let event = events.iter().find(|event| event["seq"] == seq).unwrap();
        event["time"].as_str().unwrap().to_string()
    };
    let (since, until) = (time_of(r[1]), time_of(r[3]));

    let query = format!("kind=credential_request&since={since}&until={until}");
    assert_eq!(query_seqs(&server, &query).await, [r[2], r[1]]);
    let query = format!("kind=credential_request&since={until}");
    assert_eq!(query_seqs(&server, &query).await, [r[4], r[3]]);
    let query = format!("kind=credential_request&until={since}");
    assert_eq!(query_seqs(&server, &query).await, [r[0]]);
}

#[tokio::test]
async fn audit_paging_returns_each_event_once() {
    let (server, _issuer, r) = server_with_mixed_requests().await;

    let (status, first) = server
        .get("/v1/audit/events?kind=credential_request&limit=2")
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(seqs(first["events"].as_array().unwrap()), [r[4], r[3]]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a full page has a cursor")
        .to_string();

    let (status, second) = server
        .get(&format!(
            "/v1/audit/events?kind=credential_request&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(seqs(second["events"].as_array().unwrap()), [r[2], r[1]]);
    let cursor = second["next_cursor"]
        .as_str()
        .expect("a full page has a cursor")
        .to_string();

    let (status, last) = server
        .get(&format!(
            "/v1/audit/events?kind=credential_request&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(seqs(last["events"].as_array().unwrap()), [r[0]]);
    assert_eq!(last["next_cursor"], Value::Null);
}

#[tokio::test]
async fn invalid_audit_filters_are_rejected_naming_field() {
    let server = TestServer::start().await;
    let cases = [
        ("outcome=maybe", "outcome"),
        ("kind=login", "kind"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("cursor=abc", "cursor"),
        ("cursor=0", "cursor"),
    ];
    for (query, field) in cases {
        let (status, body) = server.get(&format!("/v1/audit/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }

    for (query, field) in [("limit=ten", "limit"), ("colour=red", "colour")] {
        let (status, body) = server.get(&format!("/v1/audit/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(field),
            "{query}: {body}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Failing closed

#[tokio::test]
async fn unwritable_audit_log_withholds_credential() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let (status, body) = request(&server, &issuer, "repo:acme/billing", "payments").await;
    assert_eq!(status, 200, "{body}");

    server.running().state.store.close().await;
    let (status, body) = request(&server, &issuer, "repo:acme/billing", "payments").await;

    assert_eq!(status, 503, "{body}");
    assert_eq!(body["step"], "audit");
    assert!(body.get("token").is_none(), "{body}");
    assert!(body.get("presentation").is_none(), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Verification

#[tokio::test]
async fn fresh_audit_log_verifies() {
    let server = TestServer::start().await;

    let report = verify(&server).await;

    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(problems(&report), []);
    let last = report["last_seq"].as_i64().unwrap();
    assert_eq!(report["first_seq"], 1);
    assert_eq!(report["events_checked"], last);
    assert_eq!(report["last_anchored_seq"], Value::Null);
    assert_eq!(report["unanchored"], last);
}

#[tokio::test]
async fn checkpoint_anchors_events() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    request(&server, &issuer, "repo:acme/billing", "payments").await;

    let checkpoint = server
        .running()
        .state
        .checkpoints
        .checkpoint()
        .await
        .unwrap()
        .expect("a new checkpoint");
    let report = verify(&server).await;

    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["last_seq"], checkpoint.seq);
    assert_eq!(report["last_anchored_seq"], checkpoint.seq);
    assert_eq!(report["unanchored"], 0);
    assert_eq!(report["checkpoints_checked"], 1);

    request(&server, &issuer, "repo:acme/billing", "payments").await;
    let report = verify(&server).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["unanchored"], 1);
}

/// A stopped server's data directory with a checkpointed chain, and the seq of an event in the
/// middle of it that has at least two events after it.
struct Stopped {
    dir: TempDir,
    target: i64,
}

/// Makes four credential requests, writes a checkpoint and stops the server.
async fn stopped_server_with_events() -> Stopped {
    let mut server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    for _ in 0..4 {
        let (status, body) = request(&server, &issuer, "repo:acme/billing", "payments").await;
        assert_eq!(status, 200, "{body}");
    }
    server
        .running()
        .state
        .checkpoints
        .checkpoint()
        .await
        .unwrap()
        .expect("a new checkpoint");
    let mut credential_events = seqs(&server.audit_events("kind=credential_request").await);
    credential_events.reverse();
    assert_eq!(verify(&server).await["ok"], true);
    server.stop().await;

    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    Stopped {
        dir,
        target: credential_events[1],
    }
}

/// Copies a stopped server's data directory, so each tampering works on its own copy.
fn copy_data(stopped: &Stopped) -> TempDir {
    let copy = tempfile::tempdir().unwrap();
    let (from, to) = (stopped.dir.path().join("data"), copy.path().join("data"));
    std::fs::create_dir(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    copy
}

async fn open_database(copy: &TempDir) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(copy.path().join("data").join("mayfly.db"));
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap()
}

/// Starts a server on a tampered copy and returns its verification report.
async fn verify_copy(copy: &TempDir) -> Value {
    let data_dir = copy.path().join("data");
    let mut server = TestServer::start_with(|settings| settings.data_dir = data_dir).await;
    let report = verify(&server).await;
    server.stop().await;
    report
}

async fn event_json(connection: &mut sqlx::SqliteConnection, seq: i64) -> (String, String) {
    let row = sqlx::query("SELECT event_json, prev_hash FROM audit_events WHERE seq = ?")
        .bind(seq)
        .fetch_one(&mut *connection)
        .await
        .unwrap();
    (row.get("event_json"), row.get("prev_hash"))
}

#[tokio::test]
async fn edited_audit_event_is_detected() {
    let stopped = stopped_server_with_events().await;
    let copy = copy_data(&stopped);
    let mut database = open_database(&copy).await;
    let (json, _) = event_json(&mut database, stopped.target).await;
    let edited = json.replace("\"outcome\":\"success\"", "\"outcome\":\"failure\"");
    assert_ne!(edited, json);
    sqlx::query("UPDATE audit_events SET event_json = ?, outcome = 'failure' WHERE seq = ?")
        .bind(&edited)
        .bind(stopped.target)
        .execute(&mut database)
        .await
        .unwrap();
    drop(database);

    let report = verify_copy(&copy).await;

    assert_eq!(report["ok"], false, "{report}");
    let seq = stopped.target;
    assert_eq!(
        problems(&report),
        [(
            seq,
            format!("event {seq}: its content does not match its hash (edited)")
        )]
    );
}

#[tokio::test]
async fn deleted_audit_event_is_detected() {
    let stopped = stopped_server_with_events().await;
    let copy = copy_data(&stopped);
    let mut database = open_database(&copy).await;
    sqlx::query("DELETE FROM audit_events WHERE seq = ?")
        .bind(stopped.target)
        .execute(&mut database)
        .await
        .unwrap();
    drop(database);

    let report = verify_copy(&copy).await;

    assert_eq!(report["ok"], false, "{report}");
    let seq = stopped.target;
    assert_eq!(
        problems(&report),
        [(seq, format!("event {seq} is missing (deleted)"))]
    );
}

/// Swaps the event JSON of rows `seq` and `seq + 1`. With `rehash`, each row's hash is
/// recomputed from its own stored `prev_hash`, so that each row looks intact on its own. Anyone
/// with write access can do this, because the hash rule is public and takes no key.
async fn swap_events(copy: &TempDir, seq: i64, rehash: bool) {
    let mut database = open_database(copy).await;
    let (first, first_prev) = event_json(&mut database, seq).await;
    let (second, second_prev) = event_json(&mut database, seq + 1).await;
    // The ids are unique, so move them aside before the rows trade places.
    sqlx::query("UPDATE audit_events SET id = id || '-moving' WHERE seq IN (?, ?)")
        .bind(seq)
        .bind(seq + 1)
        .execute(&mut database)
        .await
        .unwrap();
    for (target, json, prev_hash) in [(seq, &second, &first_prev), (seq + 1, &first, &second_prev)]
    {
        // A whole row moves: the hashed JSON and the columns that queries filter on.
        let event: NewAuditEvent = serde_json::from_str(json).unwrap();
        let hash = rehash.then(|| chain_hash(prev_hash, target, &event));
        sqlx::query(
            "UPDATE audit_events SET event_json = ?, id = ?, time_us = ?, kind = ?, outcome = ?, \
             server_workload = ?, client_workload = ?, hash = coalesce(?, hash) WHERE seq = ?",
        )
        .bind(json)
        .bind(&event.id)
        .bind(event.time.as_microsecond() as i64)
        .bind(event.kind.as_str())
        .bind(event.outcome.map(|outcome| outcome.as_str()))
        .bind(&event.server_workload)
        .bind(&event.client_workload)
        .bind(hash)
        .bind(target)
        .execute(&mut database)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn reordered_audit_events_are_detected() {
    let stopped = stopped_server_with_events().await;
    let copy = copy_data(&stopped);
    swap_events(&copy, stopped.target, true).await;

    let report = verify_copy(&copy).await;

    assert_eq!(report["ok"], false, "{report}");
    let seq = stopped.target;
    let reordered = |at: i64| {
        (
            at,
            format!(
                "event {at}: prev_hash does not match the hash of the event before it (reordered or replaced)"
            ),
        )
    };
    assert_eq!(problems(&report), [reordered(seq + 1), reordered(seq + 2)]);
}

#[tokio::test]
async fn swapped_audit_event_contents_are_detected() {
    let stopped = stopped_server_with_events().await;
    let copy = copy_data(&stopped);
    swap_events(&copy, stopped.target, false).await;

    let report = verify_copy(&copy).await;

    assert_eq!(report["ok"], false, "{report}");
    let seq = stopped.target;
    let edited = |at: i64| {
        (
            at,
            format!("event {at}: its content does not match its hash (edited)"),
        )
    };
    assert_eq!(problems(&report), [edited(seq), edited(seq + 1)]);
}

// ---------------------------------------------------------------------------------------------
// Retention

#[tokio::test]
async fn retention_purge_keeps_chain_verifiable() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    for _ in 0..3 {
        request(&server, &issuer, "repo:acme/billing", "payments").await;
    }
    let state = server.running().state.clone();
    let checkpoint = state
        .checkpoints
        .checkpoint()
        .await
        .unwrap()
        .expect("a new checkpoint");
    for _ in 0..2 {
        request(&server, &issuer, "repo:acme/billing", "payments").await;
    }

    let cutoff = mayfly_server::clock::now() + jiff::SignedDuration::from_secs(1);
    let outcome = state.store.purge_audit_before(cutoff, None).await.unwrap();

    assert_eq!(outcome.deleted, u64::try_from(checkpoint.seq).unwrap());
    assert_eq!(outcome.kept_from_seq, Some(checkpoint.seq + 1));
    let report = verify(&server).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["first_seq"], checkpoint.seq + 1);
    assert_eq!(report["last_seq"], checkpoint.seq + 2);
    assert_eq!(report["last_anchored_seq"], checkpoint.seq);
    assert_eq!(report["unanchored"], 2);
    let remaining = query_seqs(&server, "limit=1000").await;
    assert_eq!(remaining, [checkpoint.seq + 2, checkpoint.seq + 1]);
}

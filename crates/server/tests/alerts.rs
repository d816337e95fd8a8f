//! Alert rules evaluated by a running server: alerts are audit events, are listed by
//! `GET /v1/alerts` and reach the log streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{TestIssuer, TestServer, basic_config};
use mayfly_domain::audit::{AuditKind, NewAuditEvent, Outcome};
use serde_json::{Value, json};

/// A server workload without any policy, so billing's requests for it fail at the policy step.
const LEDGER: &str = "server_workloads:\n  - {name: ledger, host: ledger.example, port: 443}\n";

async fn deny_ledger(server: &TestServer, issuer: &TestIssuer, count: usize) {
    for _ in 0..count {
        let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
        let (status, body) = server
            .credential_with_token(&evidence, json!({"server_workload": "ledger"}))
            .await;
        assert_eq!(status, 403, "{body}");
    }
}

/// Waits until the alert evaluator has read every stored event, then returns the alerts.
async fn settled_alerts(server: &TestServer) -> Vec<Value> {
    let store = server.running().state.store.clone();
    let started = Instant::now();
    loop {
        let head = store.audit_head().await.unwrap().map_or(0, |(seq, _)| seq);
        let cursor = store
            .get_stream_cursor("@alert-rules")
            .await
            .unwrap()
            .map_or(-1, |cursor| cursor.delivered_seq);
        if cursor >= head {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the evaluator did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = server.get("/v1/alerts").await;
    assert_eq!(status, 200, "{body}");
    body["alerts"].as_array().unwrap().clone()
}

fn config_with_rules(issuer: &TestIssuer, rules: &str) -> String {
    let base = basic_config(issuer).replace("server_workloads:\n", LEDGER);
    if rules.is_empty() {
        return base;
    }
    format!("{base}alert_rules:\n{rules}")
}

#[tokio::test]
async fn failed_requests_rule_fires_above_threshold_once() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server
        .apply(&config_with_rules(
            &issuer,
            "  - {name: failed-requests, kind: failed_requests, threshold: 5, window: 10m}\n",
        ))
        .await;

    deny_ledger(&server, &issuer, 4).await;
    assert!(
        settled_alerts(&server).await.is_empty(),
        "just below the threshold"
    );
    deny_ledger(&server, &issuer, 1).await;
    assert!(settled_alerts(&server).await.is_empty(), "at the threshold");

    deny_ledger(&server, &issuer, 1).await;
    let alerts = settled_alerts(&server).await;
    let mut keys: Vec<&str> = alerts
        .iter()
        .map(|alert| alert["key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["client_workload=billing", "server_workload=ledger"],
        "just above the threshold"
    );
    assert!(
        alerts
            .iter()
            .all(|alert| alert["rule"] == "failed-requests")
    );

    deny_ledger(&server, &issuer, 5).await;
    assert_eq!(
        settled_alerts(&server).await.len(),
        2,
        "suppressed: one incident, one alert per key"
    );

    let stored = server.audit_events("kind=alert").await;
    assert_eq!(stored.len(), 2);

    // Acknowledging is recorded once, audited, and shown in the list.
    let id = alerts[0]["id"].as_str().unwrap().to_string();
    assert_eq!(alerts[0]["acknowledged"], json!(false));
    let (status, body) = server
        .post(&format!("/v1/alerts/{id}/acknowledge"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], json!(true));
    let (_, again) = server
        .post(&format!("/v1/alerts/{id}/acknowledge"), json!({}))
        .await;
    assert_eq!(again["changed"], json!(false));
    let listed = settled_alerts(&server).await;
    let acknowledged = listed
        .iter()
        .find(|alert| alert["id"] == json!(id))
        .unwrap();
    assert_eq!(acknowledged["acknowledged"], json!(true));
    assert_eq!(acknowledged["acknowledged_by"], "admin-token:bootstrap");
    let changes = server.audit_events("kind=config_change").await;
    assert_eq!(changes[0]["detail"]["action"], "acknowledge");
    assert_eq!(changes[0]["detail"]["resource_name"], json!(id));
    let (status, _) = server
        .post(
            &format!(
                "/v1/alerts/{}/acknowledge",
                changes[0]["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "only alerts can be acknowledged");
    let (status, verify) = server.get("/v1/audit/verify").await;
    assert_eq!(status, 200);
    assert_eq!(verify["ok"], json!(true), "{verify}");
}

#[tokio::test]
async fn config_change_alert_reaches_streams() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let path = server.dir.path().join("alerts.jsonl");
    let stream = format!(
        "log_streams:\n  - {{name: alerts, kind: file, path: \"{}\", filter: {{kinds: [alert]}}}}\n",
        path.display()
    );
    // The workloads are created first, and the evaluator reads their creation before the rule
    // exists, since it judges each event against the rules in force when it reads it.
    server
        .apply(&format!("{}{stream}", config_with_rules(&issuer, "")))
        .await;
    assert!(settled_alerts(&server).await.is_empty());
    server
        .apply(&format!(
            "{}{stream}",
            config_with_rules(
                &issuer,
                "  - {name: workload-changes, kind: config_change}\n"
            )
        ))
        .await;
    assert!(
        settled_alerts(&server).await.is_empty(),
        "adding the rule changed no server workload"
    );

    let (status, body) = server
        .post("/v1/server-workloads/payments/disable", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let alerts = settled_alerts(&server).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["server_workload"], "payments");
    assert!(
        alerts[0]["message"].as_str().unwrap().contains("disable"),
        "{}",
        alerts[0]
    );

    let started = Instant::now();
    let shipped = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break serde_json::from_str::<Value>(line).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the alert did not reach the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shipped["kind"], "alert");
    assert_eq!(shipped["id"], alerts[0]["id"]);
}

#[tokio::test]
async fn off_hours_rule_fires_outside_business_hours() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    // Business hours that exclude the current UTC hour: from two to three hours from now.
    let hour = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .hour();
    let (start, end) = ((hour + 2) % 24, (hour + 3) % 24);
    let rule = format!(
        "  - {{name: after-hours, kind: off_hours, timezone: UTC, schedule: [{{days: [mon, tue, wed, thu, fri, sat, sun], start: \"{start:02}:00\", end: \"{end:02}:00\"}}]}}\n"
    );
    server.apply(&config_with_rules(&issuer, &rule)).await;

    let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
    let (status, body) = server
        .credential_with_token(&evidence, json!({"server_workload": "payments"}))
        .await;
    assert_eq!(status, 200, "{body}");

    let alerts = settled_alerts(&server).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["rule_kind"], "off_hours");
    assert_eq!(alerts[0]["client_workload"], "billing");
}

#[tokio::test]
async fn invalid_rule_names_the_field() {
    let server = TestServer::start().await;
    let (status, body) = server
        .admin(
            reqwest::Method::PUT,
            "/v1/alert-rules/bad",
            Some(json!({"kind": "config_change", "threshold": 3})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "threshold", "{body}");
}

#[tokio::test]
async fn rule_test_replays_past_events_without_writing() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&config_with_rules(&issuer, "")).await;
    deny_ledger(&server, &issuer, 7).await;

    let since = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
    let rule = json!({"name": "strict", "kind": "failed_requests", "threshold": 3});
    let (status, body) = server
        .post("/v1/alerts/test", json!({"rule": rule, "since": since}))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut keys: Vec<&str> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alert| alert["key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["client_workload=billing", "server_workload=ledger"]);
    assert_eq!(
        body["alerts"][0]["trigger_seq"], body["alerts"][1]["trigger_seq"],
        "the 4th failure fires both keys"
    );

    let lenient = json!({"name": "lenient", "kind": "failed_requests", "threshold": 7});
    let (_, body) = server
        .post("/v1/alerts/test", json!({"rule": lenient, "since": since}))
        .await;
    assert!(
        body["alerts"].as_array().unwrap().is_empty(),
        "7 failures are not more than 7"
    );

    assert!(
        settled_alerts(&server).await.is_empty(),
        "a test writes no alert"
    );
    let (status, body) = server
        .post(
            "/v1/alerts/test",
            json!({"name": "missing", "since": since}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn incident_report_gathers_clients_failures_changes_alerts() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let hour = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .hour();
    let (start, end) = ((hour + 2) % 24, (hour + 3) % 24);
    let rule = format!(
        "  - {{name: after-hours, kind: off_hours, timezone: UTC, schedule: [{{days: [mon, tue, wed, thu, fri, sat, sun], start: \"{start:02}:00\", end: \"{end:02}:00\"}}]}}\n"
    );
    let since = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
    server.apply(&config_with_rules(&issuer, &rule)).await;

    let request = || async {
        let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
        server
            .credential_with_token(&evidence, json!({"server_workload": "payments"}))
            .await
            .0
    };
    assert_eq!(request().await, 200);
    assert_eq!(
        server
            .post("/v1/server-workloads/payments/disable", json!({}))
            .await
            .0,
        200
    );
    assert_eq!(request().await, 403);
    assert_eq!(
        server
            .post("/v1/server-workloads/payments/enable", json!({}))
            .await
            .0,
        200
    );
    assert_eq!(request().await, 200);
    settled_alerts(&server).await;

    let (status, report) = server
        .get(&format!(
            "/v1/incidents/report?server_workload=payments&since={since}"
        ))
        .await;
    assert_eq!(status, 200, "{report}");
    let clients = report["client_workloads"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{report}");
    assert_eq!(clients[0]["client_workload"], "billing");
    assert_eq!(clients[0]["credentials"], json!(2));
    assert_eq!(clients[0]["failures"], json!(1));
    assert_eq!(clients[0]["off_hours_requests"], json!(3));
    assert_eq!(clients[0]["source_ips"], json!(["127.0.0.1"]));
    assert_eq!(report["failures"][0]["step"], "server_workload_enabled");
    assert_eq!(report["credentials"][0]["off_hours"], json!(true));
    assert_eq!(
        report["credentials"][0]["unexpected_location"],
        json!(false)
    );
    assert_eq!(
        report["location_checked"],
        json!(false),
        "no geoip_database"
    );
    assert!(
        report["location_note"]
            .as_str()
            .unwrap()
            .contains("not checked"),
        "{report}"
    );
    assert_eq!(
        report["source_addresses"][0]["source_ip"], "127.0.0.1",
        "{report}"
    );
    assert_eq!(
        report["source_addresses"][0]["off_hours_requests"],
        json!(3),
        "{report}"
    );

    let actions: Vec<&str> = report["config_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["detail"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create", "disable", "enable"]);
    let rules: Vec<&str> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alert| alert["detail"]["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        ["after-hours"],
        "one off-hours alert, the rest suppressed"
    );
}

/// Appends `per_window` successful credential events for billing and payments to each of the
/// fixed one-hour windows `windows`, dated in the past, as history for `rate_spike` rules.
async fn issuance_history(
    server: &TestServer,
    windows: std::ops::RangeInclusive<i64>,
    per_window: i64,
) {
    let mut events = Vec::new();
    for window in windows {
        for index in 0..per_window {
            let time = jiff::Timestamp::from_second(window * 3600 + 600 + index * 60).unwrap();
            let id = format!(
                "00000000-0000-7000-8000-{:06}{:06}",
                window % 1_000_000,
                index
            );
            let mut event = NewAuditEvent::new(
                id,
                time,
                AuditKind::CredentialRequest,
                json!({"source_ip": "127.0.0.1"}),
            );
            event.client_workload = Some("billing".to_string());
            event.server_workload = Some("payments".to_string());
            event.outcome = Some(Outcome::Success);
            events.push(event);
        }
    }
    server
        .running()
        .state
        .store
        .append_audit(events)
        .await
        .unwrap();
}

/// Requests one credential for payments, granted.
async fn grant_payments(server: &TestServer, issuer: &TestIssuer) {
    let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
    let (status, body) = server
        .credential_with_token(&evidence, json!({"server_workload": "payments"}))
        .await;
    assert_eq!(status, 200, "{body}");
}

fn rules_named(alerts: &[Value], rule: &str) -> usize {
    alerts.iter().filter(|alert| alert["rule"] == rule).count()
}

#[tokio::test]
async fn rate_spike_rule_thresholds_on_real_server() {
    // The history lies in whole hours before the current one, so a test that began in the last
    // minute of an hour waits for the next hour and cannot straddle the boundary.
    let second_of_hour = jiff::Timestamp::now().as_second().rem_euclid(3600);
    if second_of_hour >= 3540 {
        tokio::time::sleep(Duration::from_secs(
            u64::try_from(3601 - second_of_hour).unwrap(),
        ))
        .await;
    }
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    // All three rules see the same events. With 3 requests in each of the 3 baseline windows the
    // mean is 3, so 200% of it is 6 requests in the sliding hour.
    let rules = "  - {name: spike, kind: rate_spike, window: 1h, baseline_windows: 3, percent: 200, min_volume: 2}\n  \
                 - {name: spike-volume, kind: rate_spike, window: 1h, baseline_windows: 3, percent: 200, min_volume: 10}\n  \
                 - {name: spike-history, kind: rate_spike, window: 1h, baseline_windows: 5, percent: 200, min_volume: 2}\n";
    server.apply(&config_with_rules(&issuer, rules)).await;
    assert!(settled_alerts(&server).await.is_empty());

    // The sliding window overlaps the current hour and the one before, so the baseline of
    // hour H is hours H-4 to H-2. spike-history needs H-6 to H-2 and has too little history.
    let hour = jiff::Timestamp::now().as_second().div_euclid(3600);
    issuance_history(&server, hour - 4..=hour - 2, 3).await;
    assert!(
        settled_alerts(&server).await.is_empty(),
        "history alone is no spike"
    );

    for _ in 0..5 {
        grant_payments(&server, &issuer).await;
    }
    assert!(
        settled_alerts(&server).await.is_empty(),
        "5 requests: just below 200%"
    );
    grant_payments(&server, &issuer).await;
    assert!(
        settled_alerts(&server).await.is_empty(),
        "6 requests: exactly 200%"
    );

    grant_payments(&server, &issuer).await;
    let alerts = settled_alerts(&server).await;
    assert_eq!(
        rules_named(&alerts, "spike"),
        1,
        "7 requests: just above 200%: {alerts:?}"
    );
    assert_eq!(
        alerts.len(),
        1,
        "spike-volume is below its min_volume and spike-history lacks history: {alerts:?}"
    );
    assert_eq!(alerts[0]["rule_kind"], "rate_spike");
    assert_eq!(alerts[0]["key"], "server_workload=payments");
    assert!(
        alerts[0]["message"]
            .as_str()
            .unwrap()
            .contains("7 credentials"),
        "{}",
        alerts[0]
    );

    grant_payments(&server, &issuer).await;
    grant_payments(&server, &issuer).await;
    let alerts = settled_alerts(&server).await;
    assert_eq!(
        rules_named(&alerts, "spike"),
        1,
        "suppressed: one incident, one alert"
    );
    assert_eq!(
        rules_named(&alerts, "spike-volume"),
        0,
        "9 requests: just below min_volume 10"
    );

    grant_payments(&server, &issuer).await;
    let alerts = settled_alerts(&server).await;
    assert_eq!(
        rules_named(&alerts, "spike-volume"),
        1,
        "10 requests: at min_volume"
    );
    assert_eq!(rules_named(&alerts, "spike"), 1);
    assert_eq!(
        rules_named(&alerts, "spike-history"),
        0,
        "never without enough history"
    );
}

#[tokio::test]
async fn unexpected_location_rule_at_network_edge() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    // Requests come from 127.0.0.1: inside 127.0.0.1/32, just outside 127.0.0.2/31.
    server.apply(&config_with_rules(&issuer, "  - {name: inside, kind: unexpected_location, allow_networks: [127.0.0.1/32]}\n  - {name: outside, kind: unexpected_location, allow_networks: [127.0.0.2/31]}\n")).await;

    grant_payments(&server, &issuer).await;
    let alerts = settled_alerts(&server).await;
    assert_eq!(rules_named(&alerts, "inside"), 0, "{alerts:?}");
    assert_eq!(rules_named(&alerts, "outside"), 1, "{alerts:?}");
    assert_eq!(alerts[0]["severity"], "high", "{alerts:?}");
}

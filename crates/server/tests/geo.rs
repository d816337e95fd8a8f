//! Location checks on a running server: the `geo` access condition and the
//! `unexpected_location` alert rule, resolved from a small GeoIP database that the test writes.
//! Requests come from 127.0.0.1, so each one names its source in `X-Forwarded-For` and the
//! server trusts 127.0.0.0/8 as a proxy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestIssuer, TestServer, basic_config};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Documentation networks (RFC 5737), used only as `X-Forwarded-For` values.
const BERLIN: &str = "192.0.2.10";
const CALIFORNIA: &str = "198.51.100.10";
const FRANCE: &str = "203.0.113.10";
/// An address that the test database does not list.
const UNLISTED: &str = "100.64.0.1";

/// Writes the test database with the PyPI package `mmdb-writer`.
fn write_database(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/geo/write_mmdb.py");
    let path = dir.join("test-city.mmdb");
    let output = Command::new("python3")
        .arg(script)
        .arg(&path)
        .args([
            "192.0.2.0/24=DE-BE",
            "198.51.100.0/24=US-CA",
            "203.0.113.0/24=FR",
        ])
        .output()
        .expect("python3 runs; install the packages of tests/requirements.txt");
    assert!(
        output.status.success(),
        "write_mmdb.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

/// Starts a server with the test database, trusting loopback as a proxy.
async fn start_located() -> (TestServer, TestIssuer, TempDir) {
    let database_dir = tempfile::tempdir().unwrap();
    let database = write_database(database_dir.path());
    let server = TestServer::start_with(|settings| {
        settings.geoip_database = Some(database);
        settings.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    (server, TestIssuer::start().await, database_dir)
}

fn with_geo_condition(issuer: &TestIssuer, condition: &str) -> String {
    let base = basic_config(issuer).replace(
        "trust_providers: [ci]}",
        "trust_providers: [ci], access_conditions: [europe]}",
    );
    format!("{base}access_conditions:\n  - {condition}\n")
}

/// Requests a payments credential for billing as if sent from `source`.
async fn request_from(server: &TestServer, issuer: &TestIssuer, source: &str) -> (u16, Value) {
    let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
    let response = server
        .http
        .post(server.url("/v1/credentials"))
        .bearer_auth(evidence)
        .header("x-forwarded-for", source)
        .json(&json!({"server_workload": "payments"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Returns the newest credential request audit event.
async fn last_request_event(server: &TestServer) -> Value {
    let events = server.audit_events("kind=credential_request").await;
    events.first().cloned().expect("a credential request event")
}

#[tokio::test]
async fn geo_condition_allows_listed_country() {
    let (server, issuer, _database) = start_located().await;
    let condition =
        "{name: europe, kind: geo, allow_countries: [DE, FR], allow_subdivisions: [DE-BE]}";
    server.apply(&with_geo_condition(&issuer, condition)).await;

    let (status, body) = request_from(&server, &issuer, BERLIN).await;
    assert_eq!(status, 200, "{body}");
    let event = last_request_event(&server).await;
    assert_eq!(event["outcome"], "success");
    assert_eq!(event["detail"]["source_ip"], BERLIN);
    assert_eq!(event["detail"]["source_country"], "DE");
    assert_eq!(event["detail"]["source_subdivisions"], json!(["DE-BE"]));

    let (status, body) = request_from(&server, &issuer, FRANCE).await;
    assert_eq!(status, 200, "{body}");

    // An IPv4-mapped IPv6 address is looked up as the IPv4 address it carries.
    let (status, body) = request_from(&server, &issuer, "::ffff:192.0.2.10").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn geo_condition_blocks_other_country() {
    let (server, issuer, _database) = start_located().await;
    server
        .apply(&with_geo_condition(
            &issuer,
            "{name: europe, kind: geo, allow_countries: [DE, FR]}",
        ))
        .await;

    let (status, body) = request_from(&server, &issuer, CALIFORNIA).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["step"], "access_condition");
    let event = last_request_event(&server).await;
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["detail"]["step"], "access_condition");
    let reason = event["detail"]["reason"].as_str().unwrap();
    assert!(reason.contains("country US"), "{reason}");
    assert!(reason.contains("\"europe\""), "{reason}");
}

#[tokio::test]
async fn geo_condition_blocks_other_subdivision() {
    let (server, issuer, _database) = start_located().await;
    let condition =
        "{name: europe, kind: geo, allow_countries: [DE, US], allow_subdivisions: [US-NY]}";
    server.apply(&with_geo_condition(&issuer, condition)).await;

    let (status, body) = request_from(&server, &issuer, CALIFORNIA).await;
    assert_eq!(status, 403, "{body}");
    let reason = last_request_event(&server).await["detail"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("US-CA"), "{reason}");
}

#[tokio::test]
async fn geo_condition_unknown_address_fails_closed() {
    let (server, issuer, _database) = start_located().await;
    server
        .apply(&with_geo_condition(
            &issuer,
            "{name: europe, kind: geo, allow_countries: [DE]}",
        ))
        .await;

    for source in [UNLISTED, "127.0.0.1", "2001:db8::1"] {
        let (status, body) = request_from(&server, &issuer, source).await;
        assert_eq!(status, 403, "{source}: {body}");
        assert_eq!(body["step"], "access_condition");
        let event = last_request_event(&server).await;
        assert!(event["detail"].get("source_country").is_none(), "{event}");
        let reason = event["detail"]["reason"].as_str().unwrap();
        assert!(reason.contains("has no known location"), "{reason}");
    }
}

#[tokio::test]
async fn apply_without_database_rejects_geo_condition() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;

    let (status, body) = server
        .try_apply(
            &with_geo_condition(&issuer, "{name: europe, kind: geo, allow_countries: [DE]}"),
            false,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("access_condition \"europe\""), "{detail}");
    assert!(detail.contains("geoip_database"), "{detail}");

    let rule =
        "alert_rules:\n  - {name: where, kind: unexpected_location, allow_countries: [DE]}\n";
    let (status, body) = server
        .try_apply(&format!("{}{rule}", basic_config(&issuer)), false)
        .await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("alert_rule \"where\""), "{detail}");
    assert!(detail.contains("geoip_database"), "{detail}");

    // Nothing was stored by either rejected write.
    let (status, body) = server.get("/v1/access-conditions").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains("europe"), "{body}");

    // A rule with networks only needs no database.
    let rule = "alert_rules:\n  - {name: where, kind: unexpected_location, allow_networks: [10.0.0.0/8]}\n";
    let (status, body) = server
        .try_apply(&format!("{}{rule}", basic_config(&issuer)), false)
        .await;
    assert_eq!(status, 200, "{body}");
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

#[tokio::test]
async fn unexpected_location_rule_fires_for_outside_address() {
    let (server, issuer, _database) = start_located().await;
    let rule = "alert_rules:\n  - {name: where, kind: unexpected_location, allow_networks: [100.64.0.0/10], allow_countries: [DE]}\n";
    server
        .apply(&format!("{}{rule}", basic_config(&issuer)))
        .await;

    for source in [BERLIN, UNLISTED] {
        let (status, body) = request_from(&server, &issuer, source).await;
        assert_eq!(status, 200, "{source}: {body}");
    }
    assert!(
        settled_alerts(&server).await.is_empty(),
        "allowed country and allowed network"
    );

    let (status, body) = request_from(&server, &issuer, FRANCE).await;
    assert_eq!(status, 200, "{body}");
    let alerts = settled_alerts(&server).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule"], "where");
    assert_eq!(alerts[0]["key"], "client_workload=billing");
    let message = alerts[0]["message"].as_str().unwrap();
    assert!(message.contains(FRANCE), "{message}");
    assert!(message.contains("country FR"), "{message}");

    // A second outside request within the suppression period raises no second alert.
    let (status, body) = request_from(&server, &issuer, CALIFORNIA).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(settled_alerts(&server).await.len(), 1);
}

#[tokio::test]
async fn start_fails_with_unreadable_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mmdb");
    let not_a_database = dir.path().join("empty.mmdb");
    std::fs::write(&not_a_database, b"not a maxmind database").unwrap();

    for path in [missing, not_a_database] {
        let settings = mayfly_server::settings::Settings {
            dev: true,
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            geoip_database: Some(path.clone()),
            ..Default::default()
        };
        let error = mayfly_server::start(settings, None)
            .await
            .err()
            .expect("start fails")
            .to_string();
        assert!(error.contains("geoip_database"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
}

#[tokio::test]
async fn incident_report_flags_unexpected_locations() {
    let (server, issuer, _database) = start_located().await;
    let since = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
    server
        .apply(&format!("{}alert_rules:\n  - {{name: where, kind: unexpected_location, allow_countries: [DE]}}\n", basic_config(&issuer)))
        .await;
    for source in [BERLIN, CALIFORNIA, CALIFORNIA, UNLISTED] {
        assert_eq!(request_from(&server, &issuer, source).await.0, 200);
    }

    let (status, report) = server
        .get(&format!(
            "/v1/incidents/report?server_workload=payments&since={since}"
        ))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["location_checked"], json!(true), "{report}");
    assert!(report["location_note"].is_null(), "{report}");
    assert_eq!(report["location_rules"], json!(["where"]));

    let sources = report["source_addresses"].as_array().unwrap();
    let source = |address: &str| {
        sources
            .iter()
            .find(|entry| entry["source_ip"] == address)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let berlin = source(BERLIN);
    assert_eq!(
        berlin["location"],
        json!({"country": "DE", "subdivisions": ["DE-BE"]}),
        "{report}"
    );
    assert_eq!(berlin["unexpected_location_requests"], json!(0), "{report}");
    let california = source(CALIFORNIA);
    assert_eq!(california["location"]["country"], "US", "{report}");
    assert_eq!(california["credentials"], json!(2), "{report}");
    assert_eq!(
        california["unexpected_location_requests"],
        json!(2),
        "{report}"
    );
    assert_eq!(
        california["client_workloads"],
        json!(["billing"]),
        "{report}"
    );
    let unlisted = source(UNLISTED);
    assert!(unlisted["location"].is_null(), "{report}");
    assert_eq!(
        unlisted["unexpected_location_requests"],
        json!(1),
        "{report}"
    );

    let requests = report["credentials"].as_array().unwrap();
    let flagged: Vec<&str> = requests
        .iter()
        .filter(|entry| entry["unexpected_location"] == json!(true))
        .map(|entry| entry["source_ip"].as_str().unwrap())
        .collect();
    assert_eq!(flagged, [CALIFORNIA, CALIFORNIA, UNLISTED], "{report}");
    let reason = requests
        .iter()
        .find(|entry| entry["source_ip"] == UNLISTED)
        .unwrap()["unexpected_location_reasons"][0]
        .clone();
    assert!(
        reason.as_str().unwrap().contains("unknown country"),
        "{reason}"
    );
    assert_eq!(
        report["client_workloads"][0]["unexpected_location_requests"],
        json!(3),
        "{report}"
    );
}

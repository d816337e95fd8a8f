use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::audit::NewAuditEvent;

fn at(seconds: i64) -> Timestamp {
    // 2027-01-15T08:00:00Z, a Friday.
    Timestamp::from_second(1_800_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn rule(yaml: &str) -> AlertRule {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|error| panic_rule(&error.to_string()))
}

fn panic_rule(message: &str) -> AlertRule {
    AlertRule {
        name: format!("invalid: {message}"),
        kind: AlertRuleKind::ConfigChange,
        threshold: None,
        window: None,
        suppression: None,
        timezone: None,
        schedule: Vec::new(),
        percent: None,
        baseline_windows: None,
        min_volume: None,
        allow_networks: Vec::new(),
        allow_countries: Vec::new(),
        server_workloads: Vec::new(),
        severity: None,
        notify: Vec::new(),
    }
}

fn request(seq: i64, time: Timestamp, client: &str, outcome: Outcome) -> AuditEvent {
    let mut event = NewAuditEvent::new(
        format!("id-{seq}"),
        time,
        AuditKind::CredentialRequest,
        json!({}),
    );
    event.client_workload = Some(client.to_string());
    event.server_workload = Some("payments".to_string());
    event.outcome = Some(outcome);
    AuditEvent {
        seq,
        event,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// Feeds `count` failures from `client`, 10 seconds apart from `start`, and returns the alerts.
fn failures(
    engine: &mut AlertEngine,
    rules: &[AlertRule],
    start: i64,
    count: i64,
    client: &str,
) -> Vec<Alert> {
    (0..count)
        .flat_map(|i| {
            engine.observe(
                rules,
                &request(start + i, at(start + i * 10), client, Outcome::Failure),
            )
        })
        .collect()
}

#[test]
fn failed_requests_at_threshold_is_silent() {
    let rules = [rule("{name: failed, kind: failed_requests}")];
    let mut engine = AlertEngine::default();
    assert!(
        failures(&mut engine, &rules, 0, 4, "billing").is_empty(),
        "just below"
    );
    assert!(
        failures(&mut engine, &rules, 4, 1, "billing").is_empty(),
        "exactly 5 is not more than 5"
    );
}

#[test]
fn failed_requests_above_threshold_fires_once() {
    let rules = [rule("{name: failed, kind: failed_requests}")];
    let mut engine = AlertEngine::default();
    let alerts = failures(&mut engine, &rules, 0, 6, "billing");
    let keys: Vec<&str> = alerts.iter().map(|alert| alert.key.as_str()).collect();
    assert_eq!(
        keys,
        ["client_workload=billing", "server_workload=payments"]
    );
    assert_eq!(alerts[0].trigger_seq, 5);

    // The 7th to 20th failure fall in the suppression period: one incident, one alert.
    assert!(failures(&mut engine, &rules, 6, 14, "billing").is_empty());
}

#[test]
fn failed_requests_window_slides_in_event_time() {
    let rules = [rule(
        "{name: failed, kind: failed_requests, threshold: 2, window: 1m}",
    )];
    let mut engine = AlertEngine::default();
    // Three failures 40 seconds apart: never more than two within one minute.
    for (seq, second) in [(1, 0), (2, 40), (3, 80)] {
        assert!(
            engine
                .observe(
                    &rules,
                    &request(seq, at(second), "billing", Outcome::Failure)
                )
                .is_empty()
        );
    }
    // A fourth 10 seconds later makes three within a minute (40 s, 80 s, 90 s).
    let alerts = engine.observe(&rules, &request(4, at(90), "billing", Outcome::Failure));
    assert_eq!(alerts.len(), 2);
}

#[test]
fn failed_requests_ignores_successes_and_other_workloads() {
    let rules = [rule(
        "{name: failed, kind: failed_requests, threshold: 1, server_workloads: [ledger]}",
    )];
    let mut engine = AlertEngine::default();
    assert!(failures(&mut engine, &rules, 0, 5, "billing").is_empty());
    let successes: Vec<Alert> = (0..5)
        .flat_map(|i| engine.observe(&rules, &request(i, at(i), "billing", Outcome::Success)))
        .collect();
    assert!(successes.is_empty());
}

#[test]
fn config_change_of_server_workload_fires_each_time() {
    let rules = [rule("{name: changes, kind: config_change}")];
    let mut engine = AlertEngine::default();
    let change = |seq: i64, kind: &str, action: &str| {
        let detail = json!({"actor": "admin", "action": action, "resource_kind": kind, "resource_name": "payments"});
        AuditEvent {
            seq,
            event: NewAuditEvent::new(format!("c-{seq}"), at(seq), AuditKind::ConfigChange, detail),
            prev_hash: String::new(),
            hash: String::new(),
        }
    };
    assert_eq!(
        engine
            .observe(&rules, &change(1, "server_workload", "disable"))
            .len(),
        1
    );
    assert_eq!(
        engine
            .observe(&rules, &change(2, "server_workload", "enable"))
            .len(),
        1
    );
    assert!(
        engine
            .observe(&rules, &change(3, "client_workload", "update"))
            .is_empty()
    );
}

#[test]
fn off_hours_fires_outside_schedule_only() {
    let yaml = "{name: hours, kind: off_hours, timezone: UTC, schedule: [{days: [mon, tue, wed, thu, fri], start: \"09:00\", end: \"17:00\"}]}";
    let rules = [rule(yaml)];
    let mut engine = AlertEngine::default();
    // 08:59:59 is outside, 09:00 inside, 16:59 inside, 17:00 outside.
    let cases = [
        (1, -1, 1),
        (2, 3600, 0),
        (3, 3600 * 9 - 60, 0),
        (4, 3600 * 9, 1),
    ];
    for (seq, offset, expected) in cases {
        let alerts = engine.observe(
            &rules,
            &request(
                seq,
                at(3600 + offset - 3600),
                &format!("client-{seq}"),
                Outcome::Success,
            ),
        );
        assert_eq!(alerts.len(), expected, "offset {offset}");
    }
}

#[test]
fn off_hours_reason_names_alert_rule() {
    let yaml = "{name: night, kind: off_hours, timezone: UTC, schedule: [{days: [mon, tue, wed, thu, fri], start: \"09:00\", end: \"17:00\"}]}";
    let reason = rule(yaml).outside_business_hours(at(0)).unwrap_or_default();
    assert!(
        reason.contains("outside the business hours of alert rule \"night\""),
        "{reason}"
    );
    assert!(!reason.contains("access condition"), "{reason}");
}

#[test]
fn alert_events_trigger_nothing() {
    let rules = [rule("{name: failed, kind: failed_requests, threshold: 1}")];
    let mut engine = AlertEngine::default();
    let mut event = request(1, at(0), "billing", Outcome::Failure);
    event.event.kind = AuditKind::Alert;
    assert!(engine.observe(&rules, &event).is_empty());
    assert!(engine.observe(&rules, &event).is_empty());
}

#[test]
fn rule_fields_are_checked_per_kind() {
    let cases = [
        ("{name: a, kind: config_change, threshold: 3}", "threshold"),
        (
            "{name: a, kind: failed_requests, threshold: 0}",
            "threshold",
        ),
        ("{name: a, kind: failed_requests, window: 10s}", "window"),
        (
            "{name: a, kind: failed_requests, timezone: UTC}",
            "timezone",
        ),
        (
            "{name: a, kind: off_hours, timezone: Mars/Olympus, schedule: [{days: [mon], start: \"09:00\", end: \"17:00\"}]}",
            "timezone",
        ),
    ];
    for (yaml, field) in cases {
        assert_eq!(
            rule(yaml).validate().map_err(|error| error.field),
            Err(field.to_string()),
            "{yaml}"
        );
    }
    assert_eq!(
        rule("{name: failed-requests, kind: failed_requests, threshold: 5, window: 10m}")
            .validate(),
        Ok(())
    );
}

#[test]
fn failed_requests_of_unknown_caller_count_by_source() {
    let rules = [rule("{name: failed, kind: failed_requests, threshold: 2}")];
    let mut engine = AlertEngine::default();
    let probe = |seq: i64| {
        let event = NewAuditEvent::new(
            format!("p-{seq}"),
            at(seq),
            AuditKind::CredentialRequest,
            json!({"source_ip": "192.0.2.7"}),
        );
        let mut event = AuditEvent {
            seq,
            event,
            prev_hash: String::new(),
            hash: String::new(),
        };
        event.event.outcome = Some(Outcome::Failure);
        event
    };
    assert!(engine.observe(&rules, &probe(1)).is_empty());
    assert!(engine.observe(&rules, &probe(2)).is_empty());
    let alerts = engine.observe(&rules, &probe(3));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].key, "source_ip=192.0.2.7");
}

/// Feeds successful requests for `payments` at the given seconds and returns the alerts.
fn issued(engine: &mut AlertEngine, rules: &[AlertRule], seconds: &[i64]) -> Vec<Alert> {
    seconds
        .iter()
        .flat_map(|second| {
            engine.observe(
                rules,
                &request(*second, at(*second), "billing", Outcome::Success),
            )
        })
        .collect()
}

/// Five requests at minutes 0 to 4 of each of the hours `hours`.
fn steady(hours: std::ops::Range<i64>) -> Vec<i64> {
    hours
        .flat_map(|hour| (0..5).map(move |minute| hour * 3600 + minute * 60))
        .collect()
}

fn spike_rule() -> AlertRule {
    rule(
        "{name: spike, kind: rate_spike, window: 1h, baseline_windows: 3, percent: 200, min_volume: 10}",
    )
}

#[test]
fn rate_spike_needs_history() {
    let rules = [spike_rule()];
    let mut engine = AlertEngine::default();
    let burst: Vec<i64> = (0..50).map(|i| i * 10).collect();
    assert!(
        issued(&mut engine, &rules, &burst).is_empty(),
        "no baseline yet"
    );
}

#[test]
fn rate_spike_fires_just_above_double_baseline() {
    let rules = [spike_rule()];
    let mut engine = AlertEngine::default();
    // 1800000000 is 08:00 UTC, the start of an hour, so each hour is one fixed window.
    assert!(
        issued(&mut engine, &rules, &steady(0..6)).is_empty(),
        "steady traffic"
    );

    // In hour 6 the sliding window holds only this hour's requests: 10 is exactly 200% of
    // the baseline of 5, the 11th is above it.
    let burst: Vec<i64> = (0..10).map(|i| 6 * 3600 + 600 + i * 10).collect();
    assert!(issued(&mut engine, &rules, &burst).is_empty(), "at 200%");
    let alerts = issued(&mut engine, &rules, &[6 * 3600 + 800]);
    assert_eq!(alerts.len(), 1, "above 200%");
    assert_eq!(alerts[0].key, "server_workload=payments");
    assert!(
        alerts[0].message.contains("11 credentials"),
        "{}",
        alerts[0].message
    );
}

#[test]
fn rate_spike_ignores_low_volume() {
    let rules = [spike_rule()];
    let mut engine = AlertEngine::default();
    // One request per hour, then 9 in an hour: nine times the baseline, but below min_volume.
    let quiet: Vec<i64> = (0..6).map(|hour| hour * 3600).collect();
    assert!(issued(&mut engine, &rules, &quiet).is_empty());
    let night: Vec<i64> = (0..9).map(|i| 6 * 3600 + 600 + i * 10).collect();
    assert!(issued(&mut engine, &rules, &night).is_empty());
}

#[test]
fn rate_spike_fields_are_checked() {
    assert_eq!(
        rule("{name: a, kind: rate_spike, percent: 100}")
            .validate()
            .map_err(|error| error.field),
        Err("percent".to_string())
    );
    assert_eq!(
        rule("{name: a, kind: failed_requests, min_volume: 3}")
            .validate()
            .map_err(|error| error.field),
        Err("min_volume".to_string())
    );
    assert_eq!(rule("{name: a, kind: rate_spike}").validate(), Ok(()));
}

fn located(seq: i64, time: Timestamp, source: &str, country: Option<&str>) -> AuditEvent {
    let mut event = request(seq, time, "billing", Outcome::Success);
    event.event.detail = json!({"source_ip": source});
    if let Some(country) = country {
        event.event.detail["source_country"] = json!(country);
    }
    event
}

#[test]
fn unexpected_location_fires_outside_networks_and_countries() {
    let rules = [rule(
        "{name: where, kind: unexpected_location, allow_networks: [10.0.0.0/8], allow_countries: [DE]}",
    )];
    let mut engine = AlertEngine::default();
    assert!(
        engine
            .observe(&rules, &located(1, at(0), "10.1.2.3", Some("US")))
            .is_empty(),
        "allowed network"
    );
    assert!(
        engine
            .observe(&rules, &located(2, at(10), "198.51.100.1", Some("DE")))
            .is_empty(),
        "allowed country"
    );

    let alerts = engine.observe(&rules, &located(3, at(20), "198.51.100.1", Some("US")));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].key, "client_workload=billing");
    assert!(
        alerts[0].message.contains("country US"),
        "{}",
        alerts[0].message
    );

    // Within the suppression period the same client raises nothing more.
    assert!(
        engine
            .observe(&rules, &located(4, at(30), "198.51.100.2", Some("FR")))
            .is_empty()
    );
}

#[test]
fn unexpected_location_unknown_country_fires() {
    let rules = [rule(
        "{name: where, kind: unexpected_location, allow_countries: [DE]}",
    )];
    let mut engine = AlertEngine::default();
    let alerts = engine.observe(&rules, &located(1, at(0), "198.51.100.1", None));
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0].message.contains("unknown country"),
        "{}",
        alerts[0].message
    );
}

#[test]
fn unexpected_location_mapped_ipv6_matches_ipv4_network() {
    let rules = [rule(
        "{name: where, kind: unexpected_location, allow_networks: [10.0.0.0/8]}",
    )];
    let mut engine = AlertEngine::default();
    assert!(
        engine
            .observe(&rules, &located(1, at(0), "::ffff:10.0.0.1", None))
            .is_empty()
    );
}

#[test]
fn unexpected_location_fields_are_checked() {
    let cases = [
        ("{name: a, kind: unexpected_location}", "allow_networks"),
        (
            "{name: a, kind: unexpected_location, allow_countries: [de]}",
            "allow_countries[0]",
        ),
        (
            "{name: a, kind: unexpected_location, allow_countries: [DEU]}",
            "allow_countries[0]",
        ),
        (
            "{name: a, kind: off_hours, timezone: UTC, schedule: [{days: [mon], start: \"09:00\", end: \"17:00\"}], allow_countries: [DE]}",
            "allow_countries",
        ),
        (
            "{name: a, kind: failed_requests, allow_networks: [10.0.0.0/8]}",
            "allow_networks",
        ),
    ];
    for (yaml, field) in cases {
        assert_eq!(
            rule(yaml).validate().map_err(|error| error.field),
            Err(field.to_string()),
            "{yaml}"
        );
    }
    assert!(
        rule("{name: a, kind: unexpected_location, allow_networks: [10.0.0.0/8]}")
            .validate()
            .is_ok()
    );
    assert!(
        !rule("{name: a, kind: unexpected_location, allow_networks: [10.0.0.0/8]}")
            .needs_location()
    );
    assert!(rule("{name: a, kind: unexpected_location, allow_countries: [DE]}").needs_location());
}

#[test]
fn rate_spike_min_volume_boundary() {
    // A baseline of one request per hour; every burst below is far above 200% of it, so only
    // min_volume decides. 4 requests are below min_volume 5, the 5th reaches it.
    let rules = [rule(
        "{name: spike, kind: rate_spike, window: 1h, baseline_windows: 3, percent: 200, min_volume: 5}",
    )];
    let mut engine = AlertEngine::default();
    let quiet: Vec<i64> = (0..6).map(|hour| hour * 3600).collect();
    assert!(issued(&mut engine, &rules, &quiet).is_empty());
    let below: Vec<i64> = (0..3).map(|i| 6 * 3600 + 600 + i * 10).collect();
    assert!(
        issued(&mut engine, &rules, &below).is_empty(),
        "1 to 3 in the window: below min_volume"
    );
    assert!(
        issued(&mut engine, &rules, &[6 * 3600 + 700]).is_empty(),
        "4: just below min_volume"
    );
    assert_eq!(
        issued(&mut engine, &rules, &[6 * 3600 + 710]).len(),
        1,
        "5: at min_volume"
    );
}

#[test]
fn rate_spike_history_boundary() {
    // With baseline_windows 3 the baseline of hour 5 is hours 1 to 3, because the sliding window
    // overlaps hours 4 and 5. History that starts in hour 2 is one window short, and history from
    // hour 1 is just enough.
    let rules = [spike_rule()];
    let burst: Vec<i64> = (0..20).map(|i| 5 * 3600 + 600 + i * 10).collect();

    let mut short = AlertEngine::default();
    assert!(issued(&mut short, &rules, &steady(2..5)).is_empty());
    assert!(
        issued(&mut short, &rules, &burst).is_empty(),
        "one window short of history"
    );

    let mut enough = AlertEngine::default();
    assert!(issued(&mut enough, &rules, &steady(1..5)).is_empty());
    assert_eq!(
        issued(&mut enough, &rules, &burst).len(),
        1,
        "just enough history"
    );
}

#[test]
fn unexpected_location_network_edges() {
    let rules = [rule(
        "{name: where, kind: unexpected_location, allow_networks: [10.0.0.0/8]}",
    )];
    let mut engine = AlertEngine::default();
    assert!(
        engine
            .observe(&rules, &located(1, at(0), "10.0.0.0", None))
            .is_empty(),
        "first address inside"
    );
    assert!(
        engine
            .observe(&rules, &located(2, at(10), "10.255.255.255", None))
            .is_empty(),
        "last address inside"
    );
    assert_eq!(
        engine
            .observe(&rules, &located(3, at(20), "11.0.0.0", None))
            .len(),
        1,
        "first address above"
    );
    let mut other = AlertEngine::default();
    assert_eq!(
        other
            .observe(&rules, &located(4, at(30), "9.255.255.255", None))
            .len(),
        1,
        "last address below"
    );
}

#[test]
fn alert_detail_names_severity_and_targets() {
    let rules = [rule(
        "{name: failed, kind: failed_requests, threshold: 1, notify: [pager, chat]}",
    )];
    let mut engine = AlertEngine::default();
    let alerts = failures(&mut engine, &rules, 0, 2, "billing");
    assert_eq!(alerts.len(), 2);
    let detail = alerts[0].detail();
    assert_eq!(detail["severity"], "high");
    assert_eq!(detail["notify"], json!(["pager", "chat"]));

    let medium = rule("{name: c, kind: config_change}");
    assert_eq!(medium.severity(), Severity::Medium);
    let set = rule("{name: c, kind: config_change, severity: critical}");
    assert_eq!(set.severity(), Severity::Critical);
}

#[test]
fn notify_names_are_checked() {
    let twice = rule("{name: a, kind: config_change, notify: [pager, pager]}");
    assert_eq!(
        twice.validate().map_err(|error| error.field),
        Err("notify[1]".to_string())
    );
    let invalid = rule("{name: a, kind: config_change, notify: [Pager]}");
    assert_eq!(
        invalid.validate().map_err(|error| error.field),
        Err("notify[0]".to_string())
    );
}

#[test]
fn unexpected_location_reason_for_reports() {
    let checked = rule(
        "{name: where, kind: unexpected_location, allow_networks: [10.0.0.0/8], allow_countries: [DE]}",
    );
    assert_eq!(checked.unexpected_location("10.1.1.1", None), None);
    assert_eq!(
        checked.unexpected_location("198.51.100.1", Some("DE")),
        None
    );
    let reason = checked
        .unexpected_location("198.51.100.1", Some("US"))
        .unwrap_or_default();
    assert!(reason.contains("country US"), "{reason}");
    assert!(
        checked
            .unexpected_location("not-an-address", None)
            .is_some()
    );
    let other = rule("{name: c, kind: config_change}");
    assert_eq!(other.unexpected_location("198.51.100.1", None), None);
}

use serde_json::json;

use super::*;

fn list_args() -> ListArgs {
    ListArgs {
        server_workload: None,
        client_workload: None,
        outcome: None,
        kind: None,
        since: None,
        until: None,
        limit: 50,
        cursor: None,
        output: OutputFormat::Table,
    }
}

fn now() -> Timestamp {
    "2026-12-04T12:00:00Z".parse().unwrap()
}

#[test]
fn query_has_only_limit_by_default() {
    let query = list_query(&list_args(), now()).unwrap();
    assert_eq!(query, vec![("limit", "50".to_string())]);
}

#[test]
fn query_converts_relative_since() {
    let args = ListArgs {
        server_workload: Some("payments-api".to_string()),
        outcome: Some(Outcome::Failure),
        kind: Some(EventKind::CredentialRequest),
        since: Some("24h".to_string()),
        until: Some("2026-12-04T11:00:00Z".to_string()),
        cursor: Some("c-17".to_string()),
        ..list_args()
    };

    let query = list_query(&args, now()).unwrap();

    assert_eq!(
        query,
        vec![
            ("server_workload", "payments-api".to_string()),
            ("outcome", "failure".to_string()),
            ("kind", "credential_request".to_string()),
            ("since", "2026-12-03T12:00:00Z".to_string()),
            ("until", "2026-12-04T11:00:00Z".to_string()),
            ("limit", "50".to_string()),
            ("cursor", "c-17".to_string()),
        ]
    );
}

#[test]
fn invalid_since_names_flag() {
    let args = ListArgs {
        since: Some("last week".to_string()),
        ..list_args()
    };
    let message = list_query(&args, now())
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(
        message.starts_with("--since: invalid time \"last week\""),
        "{message}"
    );
}

#[test]
fn failure_reason_shows_step_and_reason() {
    let event = json!({"seq": 7, "kind": "credential_request", "outcome": "failure",
        "client_workload": "billing", "server_workload": "payments-api",
        "detail": {"step": "server_workload_enabled", "reason": "server workload is disabled"}});
    assert_eq!(
        event_reason(&event),
        "server_workload_enabled: server workload is disabled"
    );
}

#[test]
fn config_change_reason_shows_resource_and_actor() {
    let event = json!({"seq": 8, "kind": "config_change",
        "detail": {"action": "update", "resource_kind": "server_workload", "resource_name": "payments-api",
                   "actor": "admin"}});
    assert_eq!(
        event_reason(&event),
        "update server_workload payments-api (by admin)"
    );
}

#[test]
fn success_without_detail_has_dash_reason() {
    let event = json!({"seq": 9, "kind": "credential_request", "outcome": "success", "detail": {}});
    assert_eq!(event_reason(&event), "-");
}

#[test]
fn event_table_shows_client_to_server() {
    let events = vec![
        json!({"seq": 12, "time": "2026-12-04T11:59:00.25Z", "kind": "credential_request", "outcome": "success",
               "client_workload": "demo-client", "server_workload": "demo-api", "detail": {}}),
        json!({"seq": 11, "time": "2026-12-04T11:58:00Z", "kind": "key_change",
               "detail": {"action": "rotate", "kid": "k-2"}}),
    ];

    let rendered = event_table(&events).render();
    let lines: Vec<&str> = rendered.lines().collect();

    assert_eq!(lines.len(), 3, "{rendered}");
    assert!(
        lines[1].starts_with("12   2026-12-04T11:59:00Z"),
        "{rendered}"
    );
    assert!(lines[1].contains("demo-client -> demo-api"), "{rendered}");
    assert!(lines[2].contains("rotate k-2"), "{rendered}");
}

#[test]
fn verification_failure_lists_problems() {
    let report = json!({"ok": false, "events_checked": 40, "first_seq": 1, "last_seq": 40,
        "last_anchored_seq": 30, "unanchored": 10, "checkpoints_checked": 3,
        "problems": [{"seq": 17, "problem": "hash does not match the previous hash and event"}]});

    let text = describe_verification(&report);

    assert!(
        text.starts_with("audit log verification FAILED: 1 problem(s)\n"),
        "{text}"
    );
    assert!(text.contains("  seq 17: hash does not match"), "{text}");
    assert!(
        text.contains("10 event(s) after the last checkpoint"),
        "{text}"
    );
}

#[test]
fn verification_success_has_verdict() {
    let report = json!({"ok": true, "events_checked": 2, "first_seq": 1, "last_seq": 2,
        "last_anchored_seq": null, "unanchored": 2, "checkpoints_checked": 0, "problems": []});

    let text = describe_verification(&report);

    assert!(text.starts_with("audit log verified\n"), "{text}");
    assert!(text.contains("last anchored seq:    -"), "{text}");
}

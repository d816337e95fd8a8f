use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::audit::{AuditEvent, AuditKind, Checkpoint, NewAuditEvent, Outcome};

const HOSTILE: &str = "a|b=c\\d\ne]f\"g\rh \\= x=y |";

fn product() -> Product {
    Product {
        name: "Mayfly".into(),
        vendor: "Mayfly|Inc=".into(),
        version: "0.1.0".into(),
    }
}

fn stored(kind: AuditKind, detail: serde_json::Value) -> AuditEvent {
    let time = Timestamp::from_microsecond(1_800_000_000_123_456).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut event = NewAuditEvent::new("0190e1a2-id".into(), time, kind, detail);
    if kind == AuditKind::CredentialRequest {
        event.outcome = Some(Outcome::Failure);
        event.client_workload = Some(HOSTILE.to_string());
        event.server_workload = Some("payments".to_string());
    }
    AuditEvent {
        seq: 42,
        event,
        prev_hash: "0".repeat(64),
        hash: "ab".repeat(32),
    }
}

fn hostile_request() -> AuditEvent {
    stored(
        AuditKind::CredentialRequest,
        json!({"source_ip": "127.0.0.1", "step": "access_condition", "reason": HOSTILE, "spiffe_id": "spiffe://mayfly.local/x"}),
    )
}

/// Splits a CEF line into its seven header fields and its extension, undoing the escapes.
fn parse_cef(line: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while header.len() < 7 {
        let Some(character) = chars.next() else { break };
        match character {
            '\\' => field.push(chars.next().unwrap_or('\\')),
            '|' => header.push(std::mem::take(&mut field)),
            other => field.push(other),
        }
    }
    let rest: String = chars.collect();

    // An unescaped `=` ends a key, which starts after the last space before it.
    let mut pairs = BTreeMap::new();
    let mut key: Option<String> = None;
    let mut raw = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(character) = chars.next() {
        match character {
            '\\' => {
                raw.push('\\');
                raw.push(chars.next().unwrap_or('\\'));
            }
            '=' => {
                let (value, next_key) = match raw.rfind(' ') {
                    Some(space) => (raw[..space].to_string(), raw[space + 1..].to_string()),
                    None => (String::new(), raw.clone()),
                };
                if let Some(key) = key.take() {
                    pairs.insert(key, unescape_extension(&value));
                }
                key = Some(next_key);
                raw.clear();
            }
            other => raw.push(other),
        }
    }
    if let Some(key) = key {
        pairs.insert(key, unescape_extension(&raw));
    }
    (header, pairs)
}

fn unescape_extension(value: &str) -> String {
    let mut output = String::new();
    let mut chars = value.chars();
    while let Some(character) = chars.next() {
        if character != '\\' {
            output.push(character);
            continue;
        }
        match chars.next() {
            Some('n') => output.push('\n'),
            Some('r') => output.push('\r'),
            Some(other) => output.push(other),
            None => output.push('\\'),
        }
    }
    output
}

#[test]
fn cef_round_trips_hostile_values() {
    let event = hostile_request();
    let line = render_cef(Record::Event(&event), &product());
    assert!(!line.contains('\n'), "{line}");
    assert!(!line.contains('\r'), "{line}");

    let (header, extension) = parse_cef(&line);
    assert_eq!(header[0], "CEF:0");
    assert_eq!(header[1], "Mayfly|Inc=");
    assert_eq!(header[4], "credential_request");
    assert_eq!(header[6], "5");
    assert_eq!(extension.get("suser").map(String::as_str), Some(HOSTILE));
    assert_eq!(extension.get("reason").map(String::as_str), Some(HOSTILE));
    assert_eq!(
        extension.get("externalId").map(String::as_str),
        Some("0190e1a2-id")
    );
    assert_eq!(extension.get("cn1").map(String::as_str), Some("42"));
    assert_eq!(
        extension.get("outcome").map(String::as_str),
        Some("failure")
    );
}

#[test]
fn cef_header_escapes_pipes_and_backslashes() {
    assert_eq!(cef_escape_header("a|b\\c"), "a\\|b\\\\c");
    assert_eq!(cef_escape_extension("a=b\\c\nd"), "a\\=b\\\\c\\nd");
}

/// Parses the structured data element of an RFC 5424 message, undoing the escapes.
fn parse_sd(message: &str) -> BTreeMap<String, String> {
    let start = message.find('[').unwrap_or(0) + 1;
    let mut chars = message[start..].chars();
    let sd_id: String = chars.by_ref().take_while(|c| *c != ' ').collect();
    assert_eq!(sd_id, SYSLOG_SD_ID);
    let mut params = BTreeMap::new();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(character) = chars.next() {
            match character {
                '\\' => value.push(chars.next().unwrap_or('\\')),
                '"' => break,
                other => value.push(other),
            }
        }
        params.insert(name.trim().to_string(), value);
        match chars.next() {
            Some(' ') => continue,
            _ => break,
        }
    }
    params
}

#[test]
fn syslog_round_trips_hostile_values() {
    let event = hostile_request();
    let payload = render(StreamFormat::Json, Record::Event(&event), &product());
    let message = render_syslog(Record::Event(&event), &payload, "host.example");

    assert!(
        message.starts_with(
            "<108>1 2027-01-15T08:00:00.123456Z host.example mayfly - credential_request ["
        ),
        "{message}"
    );
    let params = parse_sd(&message);
    assert_eq!(
        params.get("client_workload").map(String::as_str),
        Some(HOSTILE)
    );
    assert_eq!(params.get("id").map(String::as_str), Some("0190e1a2-id"));
    assert_eq!(params.get("seq").map(String::as_str), Some("42"));

    let msg_start = message.find("] ").map(|index| index + 2).unwrap_or(0);
    let parsed: serde_json::Value = serde_json::from_str(&message[msg_start..]).unwrap_or_default();
    assert_eq!(parsed["client_workload"], json!(HOSTILE));
    assert_eq!(parsed["detail"]["reason"], json!(HOSTILE));
}

#[test]
fn octet_counting_counts_bytes() {
    assert_eq!(octet_counted("héllo"), "6 héllo");
}

#[test]
fn ocsf_credential_request_is_authentication() {
    let event = hostile_request();
    let record = render_ocsf(Record::Event(&event), &product());
    assert_eq!(record["class_uid"], json!(3002));
    assert_eq!(record["category_uid"], json!(3));
    assert_eq!(record["activity_id"], json!(4));
    assert_eq!(record["type_uid"], json!(300204));
    assert_eq!(record["user"]["name"], json!(HOSTILE));
    assert_eq!(record["status_id"], json!(2));
    assert_eq!(record["metadata"]["version"], json!("1.8.0"));
    assert_eq!(record["metadata"]["uid"], json!("0190e1a2-id"));
    assert_eq!(record["time"], json!(1_800_000_000_123_i64));
}

#[test]
fn ocsf_records_have_required_fields_and_type_uid() {
    let disable = stored(
        AuditKind::ConfigChange,
        json!({"actor": "admin", "action": "disable", "resource_kind": "server_workload", "resource_name": "payments"}),
    );
    let create = stored(
        AuditKind::ConfigChange,
        json!({"actor": "admin", "action": "create", "resource_kind": "log_stream", "resource_name": "siem", "after": {"name": "siem"}}),
    );
    let request = hostile_request();
    let checkpoint = Checkpoint {
        seq: 42,
        head_hash: "ab".repeat(32),
        time: Timestamp::UNIX_EPOCH,
        signature: "sig".into(),
    };
    let cases = [
        (Record::Event(&disable), 3004, 9, "entity"),
        (Record::Event(&create), 3004, 1, "entity"),
        (Record::Event(&request), 3002, 4, "user"),
        (Record::Checkpoint(&checkpoint), 0, 99, "metadata"),
    ];
    for (record, class_uid, activity_id, class_field) in cases {
        let value = render_ocsf(record, &product());
        for field in [
            "activity_id",
            "category_uid",
            "class_uid",
            "metadata",
            "severity_id",
            "time",
            "type_uid",
            class_field,
        ] {
            assert!(value.get(field).is_some(), "{field} missing from {value}");
        }
        assert_eq!(value["class_uid"], json!(class_uid));
        assert_eq!(value["activity_id"], json!(activity_id));
        assert_eq!(value["type_uid"], json!(class_uid * 100 + activity_id));
    }
}

#[test]
fn json_keeps_id_and_chain_hash() {
    let event = hostile_request();
    let value: serde_json::Value = serde_json::from_str(&render(
        StreamFormat::Json,
        Record::Event(&event),
        &product(),
    ))
    .unwrap_or_default();
    assert_eq!(value["id"], json!("0190e1a2-id"));
    assert_eq!(value["seq"], json!(42));
    assert_eq!(value["hash"], json!("ab".repeat(32)));
    assert_eq!(value["record_type"], json!("audit_event"));
}

fn injection() -> AuditEvent {
    let mut event = stored(
        AuditKind::CredentialInjection,
        json!({"agent": "web-1", "host": "payments.example", "port": 443, "method": "POST", "path": "/v1/charges", "mode": "headers"}),
    );
    event.event.outcome = Some(Outcome::Success);
    event.event.client_workload = Some("web".to_string());
    event.event.server_workload = Some("payments".to_string());
    event
}

#[test]
fn ocsf_injection_is_http_activity() {
    let event = injection();
    let record = render_ocsf(Record::Event(&event), &product());
    assert_eq!(record["class_uid"], json!(4002));
    assert_eq!(record["category_uid"], json!(4));
    assert_eq!(record["activity_id"], json!(6));
    assert_eq!(record["type_uid"], json!(400206));
    assert_eq!(record["http_request"]["http_method"], json!("POST"));
    assert_eq!(record["http_request"]["url"]["path"], json!("/v1/charges"));
    assert_eq!(
        record["dst_endpoint"]["hostname"],
        json!("payments.example")
    );
    assert_eq!(record["dst_endpoint"]["port"], json!(443));
    assert_eq!(record["dst_endpoint"]["svc_name"], json!("payments"));
    assert_eq!(record["actor"]["user"]["name"], json!("web"));
}

#[test]
fn cef_injection_names_destination() {
    let event = injection();
    let line = render_cef(Record::Event(&event), &product());
    let (header, extension) = parse_cef(&line);
    assert_eq!(header[4], "credential_injection");
    assert_eq!(header[5], "credential injection");
    assert_eq!(
        extension.get("dhost").map(String::as_str),
        Some("payments.example")
    );
    assert_eq!(extension.get("dpt").map(String::as_str), Some("443"));
    assert_eq!(
        extension.get("requestMethod").map(String::as_str),
        Some("POST")
    );
    assert_eq!(
        extension.get("request").map(String::as_str),
        Some("/v1/charges")
    );
}

#[test]
fn syslog_injection_uses_kind_as_msgid() {
    let event = injection();
    let message = render_syslog(Record::Event(&event), "payload", "host-1");
    assert!(message.contains(" credential_injection ["), "{message}");
    assert_eq!(
        parse_sd(&message)
            .get("server_workload")
            .map(String::as_str),
        Some("payments")
    );
}

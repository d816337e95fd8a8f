//! OCSF 1.8.0 records: one per audit event, with the class chosen by the event's kind.
//!
//! - credential requests: Authentication (class 3002, category Identity & Access Management),
//!   activity 4 "Service Ticket Request", since a credential for one service is handed out;
//! - configuration, key and admin token changes: Entity Management (class 3004), with the
//!   activity taken from the change's action (create, update, delete, enable, disable);
//! - alerts: Detection Finding (class 2004, category Findings), activity 1 "Create";
//! - credential injections by an agent's proxy: HTTP Activity (class 4002, category Network
//!   Activity), with the activity taken from the request's method;
//! - checkpoints: Base Event (class 0), activity 99 "Other".
//!
//! Every record has the base event's required fields (`activity_id`, `category_uid`,
//! `class_uid`, `metadata`, `severity_id`, `time`, `type_uid`) and its class's required ones
//! (`user` for Authentication, `entity` for Entity Management, `finding_info` for Detection
//! Finding). `type_uid` is
//! `class_uid * 100 + activity_id`.

use serde_json::{Map, Value, json};

use super::{Product, Record, mayfly_json};
use crate::audit::{AuditEvent, AuditKind, Outcome};

/// The OCSF schema version the records follow.
pub const OCSF_VERSION: &str = "1.8.0";

const AUTHENTICATION: i64 = 3002;
const ENTITY_MANAGEMENT: i64 = 3004;
const BASE_EVENT: i64 = 0;
const DETECTION_FINDING: i64 = 2004;
const HTTP_ACTIVITY: i64 = 4002;
const NETWORK_CATEGORY: i64 = 4;
const FINDINGS_CATEGORY: i64 = 2;
const IDENTITY_CATEGORY: i64 = 3;
const OTHER: i64 = 99;

/// Builds the OCSF record of `record`.
pub fn render_ocsf(record: Record<'_>, product: &Product) -> Value {
    let (class_uid, category_uid, activity_id, mut fields) = match record {
        Record::Event(event) => match event.event.kind {
            AuditKind::CredentialRequest => {
                (AUTHENTICATION, IDENTITY_CATEGORY, 4, authentication(event))
            }
            AuditKind::Alert => (
                DETECTION_FINDING,
                FINDINGS_CATEGORY,
                1,
                detection_finding(event),
            ),
            AuditKind::CredentialInjection => {
                let method = event
                    .event
                    .detail
                    .get("method")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                (
                    HTTP_ACTIVITY,
                    NETWORK_CATEGORY,
                    http_activity(method),
                    http_activity_fields(event),
                )
            }
            AuditKind::ConfigChange
            | AuditKind::KeyChange
            | AuditKind::AdminTokenChange
            | AuditKind::AgentChange => {
                let action = event
                    .event
                    .detail
                    .get("action")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                (
                    ENTITY_MANAGEMENT,
                    IDENTITY_CATEGORY,
                    entity_activity(action),
                    entity_management(event),
                )
            }
        },
        Record::Checkpoint(_) => (BASE_EVENT, 0, OTHER, Map::new()),
    };

    // Failed requests and alerts are what an analyst looks at first.
    let failed = matches!(record, Record::Event(event)
        if event.event.outcome == Some(Outcome::Failure) || event.event.kind == AuditKind::Alert);
    let (severity_id, severity) = if failed {
        (3, "Medium")
    } else {
        (1, "Informational")
    };
    let kind = match record {
        Record::Event(event) => event.event.kind.as_str(),
        Record::Checkpoint(_) => "checkpoint",
    };

    fields.insert("activity_id".into(), json!(activity_id));
    fields.insert("category_uid".into(), json!(category_uid));
    fields.insert("class_uid".into(), json!(class_uid));
    fields.insert("type_uid".into(), json!(class_uid * 100 + activity_id));
    fields.insert("severity_id".into(), json!(severity_id));
    fields.insert("severity".into(), json!(severity));
    fields.insert("time".into(), json!(record.time().as_millisecond()));
    fields.insert("message".into(), json!(format!("mayfly {kind}")));
    fields.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "uid": record.id(),
            "log_name": "audit",
            "product": {"name": product.name, "vendor_name": product.vendor, "version": product.version},
        }),
    );
    // The whole Mayfly record stays available, chain hashes included, for fields OCSF has no
    // attribute for.
    fields.insert("unmapped".into(), mayfly_json(record));
    Value::Object(fields)
}

fn authentication(event: &AuditEvent) -> Map<String, Value> {
    let detail = &event.event.detail;
    let text = |key: &str| detail.get(key).and_then(Value::as_str);
    let mut fields = Map::new();

    let mut user = json!({"name": event.event.client_workload.as_deref().unwrap_or("unknown"), "type_id": OTHER, "type": "workload"});
    if let Some(spiffe_id) = text("spiffe_id") {
        user["uid"] = json!(spiffe_id);
    }
    fields.insert("user".into(), user);

    if let Some(server) = &event.event.server_workload {
        fields.insert("service".into(), json!({"name": server}));
    }
    if let Some(ip) = text("source_ip") {
        fields.insert("src_endpoint".into(), json!({"ip": ip}));
    }
    let (status_id, status) = match event.event.outcome {
        Some(Outcome::Success) => (1, "Success"),
        Some(Outcome::Failure) => (2, "Failure"),
        None => (0, "Unknown"),
    };
    fields.insert("status_id".into(), json!(status_id));
    fields.insert("status".into(), json!(status));
    if let Some(reason) = text("reason") {
        let step = text("step").unwrap_or("unknown");
        fields.insert("status_detail".into(), json!(format!("{step}: {reason}")));
    }
    fields
}

fn detection_finding(event: &AuditEvent) -> Map<String, Value> {
    let detail = &event.event.detail;
    let text = |key: &str| detail.get(key).and_then(Value::as_str).unwrap_or("unknown");
    let mut fields = Map::new();
    fields.insert(
        "finding_info".into(),
        json!({"uid": event.event.id, "title": text("message"), "types": [text("rule_kind")], "analytic": {"name": text("rule"), "type_id": 1, "type": "Rule"}}),
    );
    fields.insert("status_id".into(), json!(1));
    fields.insert("status".into(), json!("New"));
    fields
}

fn entity_management(event: &AuditEvent) -> Map<String, Value> {
    let detail = &event.event.detail;
    let text = |key: &str| detail.get(key).and_then(Value::as_str);
    let (name, entity_type) = match event.event.kind {
        AuditKind::KeyChange => (text("kid").unwrap_or("unknown"), "signing_key"),
        AuditKind::AdminTokenChange => (text("name").unwrap_or("unknown"), "admin_token"),
        AuditKind::AgentChange => (text("agent").unwrap_or("unknown"), "agent"),
        _ => (
            text("resource_name").unwrap_or("unknown"),
            text("resource_kind").unwrap_or("unknown"),
        ),
    };

    let mut fields = Map::new();
    fields.insert("entity".into(), json!({"name": name, "type": entity_type}));
    if let Some(after) = detail.get("after").filter(|after| !after.is_null()) {
        fields.insert(
            "entity_result".into(),
            json!({"name": name, "type": entity_type, "data": after}),
        );
    }
    if let Some(actor) = text("actor") {
        fields.insert("actor".into(), json!({"user": {"name": actor}}));
    }
    fields
}

/// Builds the HTTP Activity fields of a credential injection: the request's method, host, port
/// and path (the agent never sends query values), the server workload and the workload's identity.
fn http_activity_fields(event: &AuditEvent) -> Map<String, Value> {
    let detail = &event.event.detail;
    let text = |key: &str| detail.get(key).and_then(Value::as_str);
    let mut fields = Map::new();

    let mut url = json!({"path": text("path").unwrap_or("/")});
    if let Some(host) = text("host") {
        url["hostname"] = json!(host);
    }
    if let Some(port) = detail.get("port").and_then(Value::as_u64) {
        url["port"] = json!(port);
    }
    fields.insert(
        "http_request".into(),
        json!({"http_method": text("method").unwrap_or("OTHER"), "url": url}),
    );
    let mut destination = json!({});
    if let Some(host) = text("host") {
        destination["hostname"] = json!(host);
    }
    if let Some(port) = detail.get("port").and_then(Value::as_u64) {
        destination["port"] = json!(port);
    }
    if let Some(server) = &event.event.server_workload {
        destination["svc_name"] = json!(server);
    }
    fields.insert("dst_endpoint".into(), destination);
    if let Some(client) = &event.event.client_workload {
        fields.insert(
            "actor".into(),
            json!({"user": {"name": client, "type": "workload"}}),
        );
    }
    fields.insert("status_id".into(), json!(1));
    fields.insert("status".into(), json!("Success"));
    fields
}

/// Maps an HTTP method to an HTTP Activity activity id.
fn http_activity(method: &str) -> i64 {
    match method {
        "CONNECT" => 1,
        "DELETE" => 2,
        "GET" => 3,
        "HEAD" => 4,
        "OPTIONS" => 5,
        "POST" => 6,
        "PUT" => 7,
        "TRACE" => 8,
        "PATCH" => 9,
        _ => OTHER,
    }
}

/// Maps a change's action to an Entity Management activity id.
fn entity_activity(action: &str) -> i64 {
    match action {
        "create" | "generate" => 1,
        "update" | "activate" | "retire" | "taint" => 3,
        "delete" | "remove" | "revoke" => 4,
        "enable" => 8,
        "disable" => 9,
        _ => OTHER,
    }
}

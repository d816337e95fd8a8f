//! ArcSight Common Event Format (CEF) version 0:
//! `CEF:0|vendor|product|version|signature id|name|severity|extension`.
//!
//! Header fields escape `\` and `|` with a backslash. Extension values escape `\` and `=` with a
//! backslash and write line breaks as `\n` and `\r`, so one record is always one line.

use serde_json::Value;

use super::{Product, Record};
use crate::audit::{AuditKind, Outcome};

/// Renders `record` as one CEF line.
pub fn render_cef(record: Record<'_>, product: &Product) -> String {
    let mut extension: Vec<(&str, String)> = vec![
        ("rt", record.time().as_millisecond().to_string()),
        ("externalId", record.id()),
        ("cn1", record.seq().to_string()),
        ("cn1Label", "seq".to_string()),
    ];

    let (signature_id, name, severity) = match record {
        Record::Event(stored) => {
            let event = &stored.event;
            let text = |key: &str| {
                event
                    .detail
                    .get(key)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            if let Some(outcome) = event.outcome {
                extension.push(("outcome", outcome.as_str().to_string()));
            }
            if let Some(client) = &event.client_workload {
                extension.push(("suser", client.clone()));
            }
            if let Some(server) = &event.server_workload {
                extension.push(("cs1", server.clone()));
                extension.push(("cs1Label", "serverWorkload".to_string()));
            }
            if let Some(ip) = text("source_ip") {
                extension.push(("src", ip));
            }
            if let Some(action) = text("action") {
                extension.push(("act", action));
            }
            if let Some(reason) = text("reason") {
                extension.push(("reason", reason));
            }
            if let Some(message) = text("message") {
                extension.push(("msg", message));
            }
            if let Some(actor) = text("actor") {
                extension.push(("duser", actor));
            }
            if event.kind == AuditKind::CredentialInjection {
                if let Some(host) = text("host") {
                    extension.push(("dhost", host));
                }
                if let Some(port) = event.detail.get("port").and_then(Value::as_u64) {
                    extension.push(("dpt", port.to_string()));
                }
                if let Some(method) = text("method") {
                    extension.push(("requestMethod", method));
                }
                if let Some(path) = text("path") {
                    extension.push(("request", path));
                }
            }
            extension.push(("cs2", stored.hash.clone()));
            extension.push(("cs2Label", "chainHash".to_string()));

            let failed = event.outcome == Some(Outcome::Failure);
            let name = match (event.kind, event.outcome) {
                (AuditKind::CredentialRequest, Some(outcome)) => {
                    format!("credential request {}", outcome.as_str())
                }
                (kind, _) => kind.as_str().replace('_', " "),
            };
            let severity = match (event.kind, failed) {
                (AuditKind::Alert, _) => 7,
                (_, true) => 5,
                _ => 3,
            };
            (event.kind.as_str().to_string(), name, severity)
        }
        Record::Checkpoint(checkpoint) => {
            extension.push(("cs2", checkpoint.head_hash.clone()));
            extension.push(("cs2Label", "chainHash".to_string()));
            extension.push(("cs3", checkpoint.signature.clone()));
            extension.push(("cs3Label", "signature".to_string()));
            ("checkpoint".to_string(), "audit checkpoint".to_string(), 1)
        }
    };

    let header = [
        "CEF:0".to_string(),
        cef_escape_header(&product.vendor),
        cef_escape_header(&product.name),
        cef_escape_header(&product.version),
        cef_escape_header(&signature_id),
        cef_escape_header(&name),
        severity.to_string(),
    ]
    .join("|");
    let extension: Vec<String> = extension
        .iter()
        .map(|(key, value)| format!("{key}={}", cef_escape_extension(value)))
        .collect();
    format!("{header}|{}", extension.join(" "))
}

/// Escapes a CEF header field: `\` and `|` get a backslash, and line breaks become spaces,
/// since a header field may not span lines.
pub fn cef_escape_header(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '|' => escaped.push_str("\\|"),
            '\n' | '\r' => escaped.push(' '),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Escapes a CEF extension value: `\` and `=` get a backslash, line breaks become `\n` and
/// `\r`.
pub fn cef_escape_extension(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '=' => escaped.push_str("\\="),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            other => escaped.push(other),
        }
    }
    escaped
}

//! The RFC 5424 syslog message around a rendered record, and RFC 6587 octet-counting framing.
//!
//! The message is `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`, with facility 13
//! (log audit), severity 6 (informational) or 4 (warning, for failed requests and alerts), the
//! event kind as MSGID and the record's id, sequence number and workloads as structured data.

use super::Record;
use crate::audit::{AuditKind, Outcome};

/// The SD-ID of Mayfly's structured data element. 32473 is the private enterprise number that
/// RFC 5612 reserves for documentation; an operator with a number of their own can change it.
pub const SYSLOG_SD_ID: &str = "mayfly@32473";

/// Facility 13, "log audit", in RFC 5424's table of facilities.
const FACILITY_LOG_AUDIT: u8 = 13;

/// Builds the RFC 5424 message carrying `payload` (the rendered record) as MSG.
pub fn render_syslog(record: Record<'_>, payload: &str, hostname: &str) -> String {
    let (severity, msgid) = match record {
        Record::Event(event) => {
            let warning = event.event.outcome == Some(Outcome::Failure)
                || event.event.kind == AuditKind::Alert;
            let severity = if warning { 4 } else { 6 };
            (severity, event.event.kind.as_str())
        }
        Record::Checkpoint(_) => (6, "checkpoint"),
    };
    let priority = u16::from(FACILITY_LOG_AUDIT) * 8 + severity;
    let timestamp = record.time().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();

    let mut params = vec![("id", record.id()), ("seq", record.seq().to_string())];
    if let Record::Event(event) = record {
        if let Some(outcome) = event.event.outcome {
            params.push(("outcome", outcome.as_str().to_string()));
        }
        if let Some(server) = &event.event.server_workload {
            params.push(("server_workload", server.clone()));
        }
        if let Some(client) = &event.event.client_workload {
            params.push(("client_workload", client.clone()));
        }
    }
    let params: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", sd_escape(value)))
        .collect();

    format!(
        "<{priority}>1 {timestamp} {} mayfly - {msgid} [{SYSLOG_SD_ID} {}] {payload}",
        header_token(hostname),
        params.join(" ")
    )
}

/// Escapes an SD-PARAM value as RFC 5424 section 6.3.3 requires: `"`, `\` and `]` get a
/// backslash.
pub fn sd_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        if matches!(character, '"' | '\\' | ']') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Frames a message with octet counting (RFC 6587 section 3.4.1): its length in bytes, a space,
/// then the message.
pub fn octet_counted(message: &str) -> String {
    format!("{} {message}", message.len())
}

/// Makes a header field a valid RFC 5424 token: printable ASCII without spaces, at most 255
/// characters, `-` when empty.
fn header_token(value: &str) -> String {
    let token: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if token.is_empty() {
        "-".to_string()
    } else {
        token
    }
}

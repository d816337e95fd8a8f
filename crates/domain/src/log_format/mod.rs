//! Renders audit events and signed checkpoints in the formats log streams ship: Mayfly JSON,
//! OCSF 1.8.0 and CEF, plus the RFC 5424 syslog envelope around any of them.

mod cef;
mod ocsf;
mod syslog;

pub use cef::{cef_escape_extension, cef_escape_header, render_cef};
pub use ocsf::{OCSF_VERSION, render_ocsf};
pub use syslog::{SYSLOG_SD_ID, octet_counted, render_syslog, sd_escape};

use serde_json::{Value, json};

use crate::audit::{AuditEvent, Checkpoint};
use crate::log_stream::StreamFormat;

/// One thing a log stream ships: an audit event or a signed checkpoint of the chain.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    Event(&'a AuditEvent),
    Checkpoint(&'a Checkpoint),
}

impl Record<'_> {
    /// Returns the record's unique id: the event id, or `checkpoint-<seq>`. A record sent again
    /// carries the same id, so receivers can drop duplicates.
    pub fn id(&self) -> String {
        match self {
            Record::Event(event) => event.event.id.clone(),
            Record::Checkpoint(checkpoint) => format!("checkpoint-{}", checkpoint.seq),
        }
    }

    /// Returns the sequence number of the event, or the last event a checkpoint covers.
    pub fn seq(&self) -> i64 {
        match self {
            Record::Event(event) => event.seq,
            Record::Checkpoint(checkpoint) => checkpoint.seq,
        }
    }

    /// Returns the time of the event or checkpoint.
    pub fn time(&self) -> jiff::Timestamp {
        match self {
            Record::Event(event) => event.event.time,
            Record::Checkpoint(checkpoint) => checkpoint.time,
        }
    }
}

/// The product that produced the records, as OCSF metadata and CEF headers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub name: String,
    pub vendor: String,
    pub version: String,
}

/// Renders `record` in `format` as one line of text without a line break.
pub fn render(format: StreamFormat, record: Record<'_>, product: &Product) -> String {
    match format {
        StreamFormat::Json => mayfly_json(record).to_string(),
        StreamFormat::Ocsf => render_ocsf(record, product).to_string(),
        StreamFormat::Cef => render_cef(record, product),
    }
}

/// Returns Mayfly's JSON form: the stored event with `record_type: audit_event`, or the
/// checkpoint with `record_type: checkpoint`.
pub fn mayfly_json(record: Record<'_>) -> Value {
    match record {
        Record::Event(event) => {
            let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut value {
                map.insert("record_type".into(), json!("audit_event"));
            }
            value
        }
        Record::Checkpoint(checkpoint) => json!({
            "record_type": "checkpoint",
            "id": record.id(),
            "seq": checkpoint.seq,
            "head_hash": checkpoint.head_hash,
            "time": checkpoint.time.to_string(),
            "signature": checkpoint.signature,
        }),
    }
}

#[cfg(test)]
mod tests;

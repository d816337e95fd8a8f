//! The trait every destination implements, and the records it receives.

use async_trait::async_trait;
use jiff::Timestamp;
use mayfly_domain::log_stream::{LogStream, StreamKind};

use super::{
    file::FileDestination, http::HttpDestination, nats::NatsDestination, syslog::SyslogDestination,
};

/// One rendered record, ready to send.
#[derive(Debug, Clone)]
pub struct Item {
    /// The record's unique id, the same on every retry.
    pub id: String,
    pub time: Timestamp,
    /// The record in the stream's format, one line. For syslog streams, the whole RFC 5424
    /// message.
    pub line: String,
    /// Whether `line` is a JSON document (Mayfly JSON or OCSF) rather than text (CEF).
    pub is_json: bool,
}

/// A failed send. The batch is sent again after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Reading or writing a file or socket failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The HTTP request failed before a response arrived.
    #[error("request to {url} failed: {message}")]
    Http { url: String, message: String },
    /// The receiver responded with a status other than 2xx.
    #[error("{url} responded with status {status}: {body}")]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
    /// Connecting to NATS, publishing or the JetStream acknowledgement failed.
    #[error("{0}")]
    Nats(String),
    /// The send took longer than the stream's timeout.
    #[error("the send timed out after {seconds}s")]
    Timeout { seconds: u64 },
    /// The stream's settings cannot work, such as an unreadable CA file.
    #[error("invalid log stream settings: {0}")]
    Settings(String),
}

/// A place that receives batches of records.
#[async_trait]
pub trait Destination: Send {
    /// Sends `items` in order and returns once the destination accepted all of them.
    async fn send(&mut self, items: &[Item]) -> Result<(), DeliveryError>;
}

/// Builds the destination of `stream`.
pub fn build(stream: &LogStream) -> Result<Box<dyn Destination>, DeliveryError> {
    Ok(match stream.kind {
        StreamKind::File => Box::new(FileDestination::new(stream)?),
        StreamKind::Webhook | StreamKind::HttpHec => Box::new(HttpDestination::new(stream)?),
        StreamKind::Syslog => Box::new(SyslogDestination::new(stream)?),
        StreamKind::Nats => Box::new(NatsDestination::new(stream)?),
    })
}

//! The `webhook` and `http_hec` destinations: one HTTP POST per batch.
//!
//! A webhook receives `{"stream": NAME, "records": [...]}`, each record a JSON object (Mayfly
//! JSON or OCSF) or a CEF string, with `Authorization: Bearer <secret>` or the configured header.
//! A Splunk HTTP Event Collector receives its batch form, one JSON object per record back to
//! back, each `{"time": seconds, "host", "source": "mayfly", "sourcetype", "fields", "event"}`
//! where `fields.record_id` is the record's id, with `Authorization: Splunk <token>`. Any 2xx
//! status accepts the batch.

use async_trait::async_trait;
use mayfly_domain::log_stream::{LogStream, StreamKind, WebhookAuth};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::destination::{DeliveryError, Destination, Item};

/// Maximum number of characters of an error response body kept for the stream's status.
const MAX_ERROR_BODY: usize = 200;

pub struct HttpDestination {
    client: reqwest::Client,
    stream: String,
    kind: StreamKind,
    url: String,
    /// Header name and value that carry the secret.
    auth: (String, Zeroizing<String>),
    hostname: String,
    timeout_seconds: u64,
}

impl HttpDestination {
    pub fn new(stream: &LogStream) -> Result<HttpDestination, DeliveryError> {
        let url = stream
            .url
            .clone()
            .ok_or_else(|| DeliveryError::Settings("an HTTP log stream needs a url".to_string()))?;
        let secret = stream
            .secret
            .as_ref()
            .map(|secret| secret.expose().to_string())
            .unwrap_or_default();
        let auth = match (stream.kind, stream.auth.unwrap_or_default(), &stream.header) {
            (StreamKind::HttpHec, _, _) => (
                "authorization".to_string(),
                Zeroizing::new(format!("Splunk {secret}")),
            ),
            (_, WebhookAuth::Header, Some(header)) => (header.clone(), Zeroizing::new(secret)),
            _ => (
                "authorization".to_string(),
                Zeroizing::new(format!("Bearer {secret}")),
            ),
        };
        let client = reqwest::Client::builder()
            .timeout(stream.send_timeout().as_duration())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| {
                DeliveryError::Settings(format!("building the HTTP client failed: {error}"))
            })?;
        Ok(HttpDestination {
            client,
            stream: stream.name.clone(),
            kind: stream.kind,
            url,
            auth,
            hostname: super::shipper::hostname(),
            timeout_seconds: stream.send_timeout().as_secs(),
        })
    }

    fn body(&self, items: &[Item]) -> String {
        let records: Vec<Value> = items.iter().map(record_value).collect();
        if self.kind != StreamKind::HttpHec {
            return json!({"stream": self.stream, "records": records}).to_string();
        }
        let mut body = String::new();
        for (item, record) in items.iter().zip(records) {
            let sourcetype = if item.is_json { "_json" } else { "mayfly:cef" };
            let seconds = item.time.as_microsecond() as f64 / 1_000_000.0;
            let event = json!({
                "time": seconds,
                "host": self.hostname,
                "source": "mayfly",
                "sourcetype": sourcetype,
                "fields": {"record_id": item.id},
                "event": record,
            });
            body.push_str(&event.to_string());
        }
        body
    }
}

/// Returns the error with its causes, such as "error sending request: connection refused",
/// without the URL, which the caller adds.
fn error_chain(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message.replace(
        &format!(
            " for url ({})",
            error.url().map(|url| url.as_str()).unwrap_or_default()
        ),
        "",
    )
}

/// Returns the record as JSON: the parsed document, or the CEF line as a string.
fn record_value(item: &Item) -> Value {
    if item.is_json {
        serde_json::from_str(&item.line).unwrap_or_else(|_| Value::String(item.line.clone()))
    } else {
        Value::String(item.line.clone())
    }
}

#[async_trait]
impl Destination for HttpDestination {
    async fn send(&mut self, items: &[Item]) -> Result<(), DeliveryError> {
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(self.auth.0.as_str(), self.auth.1.as_str())
            .body(self.body(items))
            .send()
            .await
            .map_err(|error| {
                if error.is_timeout() {
                    DeliveryError::Timeout {
                        seconds: self.timeout_seconds,
                    }
                } else {
                    DeliveryError::Http {
                        url: self.url.clone(),
                        message: error_chain(&error),
                    }
                }
            })?;

        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let body: String = text.chars().take(MAX_ERROR_BODY).collect();
        Err(DeliveryError::Rejected {
            url: self.url.clone(),
            status: status.as_u16(),
            body,
        })
    }
}

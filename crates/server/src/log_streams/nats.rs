//! The `nats` destination: each record is published to a JetStream subject and the batch
//! counts as delivered once JetStream acknowledged every message.
//!
//! Every message carries the record's id in the `Nats-Msg-Id` header, so JetStream drops a
//! record sent again within the stream's duplicate window (2 minutes unless the stream sets
//! another). The JetStream stream that captures the subject must exist: without one, the publish
//! fails with "no responders" and the batch is retried.

use async_nats::jetstream;
use async_trait::async_trait;
use mayfly_domain::log_stream::LogStream;

use super::destination::{DeliveryError, Destination, Item};

pub struct NatsDestination {
    address: String,
    subject: String,
    timeout: std::time::Duration,
    context: Option<jetstream::Context>,
}

impl NatsDestination {
    pub fn new(stream: &LogStream) -> Result<NatsDestination, DeliveryError> {
        let address = stream.address.clone().ok_or_else(|| {
            DeliveryError::Settings("a nats log stream needs an address".to_string())
        })?;
        let subject = stream.subject.clone().ok_or_else(|| {
            DeliveryError::Settings("a nats log stream needs a subject".to_string())
        })?;
        Ok(NatsDestination {
            address,
            subject,
            timeout: stream.send_timeout().as_duration(),
            context: None,
        })
    }

    async fn context(&mut self) -> Result<jetstream::Context, DeliveryError> {
        if let Some(context) = &self.context {
            return Ok(context.clone());
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(self.timeout)
            .request_timeout(Some(self.timeout))
            .connect(self.address.as_str())
            .await
            .map_err(|error| self.error("connecting to", error))?;
        let context = jetstream::new(client);
        self.context = Some(context.clone());
        Ok(context)
    }

    fn error(&self, action: &str, error: impl std::fmt::Display) -> DeliveryError {
        DeliveryError::Nats(format!("{action} {} failed: {error}", self.address))
    }
}

#[async_trait]
impl Destination for NatsDestination {
    async fn send(&mut self, items: &[Item]) -> Result<(), DeliveryError> {
        let context = self.context().await?;

        // Publishing first and awaiting the acknowledgements afterwards keeps the batch in one
        // round trip; JetStream stores the messages in publish order.
        let mut acks = Vec::with_capacity(items.len());
        for item in items {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", item.id.as_str());
            let ack = context
                .publish_with_headers(self.subject.clone(), headers, item.line.clone().into())
                .await
                .map_err(|error| {
                    self.error(&format!("publishing to {} on", self.subject), error)
                })?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|error| {
                self.error(
                    &format!("JetStream acknowledgement for {} from", self.subject),
                    error,
                )
            })?;
        }
        Ok(())
    }
}

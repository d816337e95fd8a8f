//! The `webhook` notification target: one HTTP POST per alert, with the alert's JSON document as
//! the body, `X-Mayfly-Alert-Id` set to the alert id, and the secret (when the target has one)
//! in `Authorization: Bearer` or the configured header. Any 2xx status accepts the alert.

use mayfly_crypto::kek::KeyEncryptionKey;
use mayfly_domain::notification::{NotificationTarget, TargetAuth};
use mayfly_domain::resources::ResourceKind;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::secrets;

/// Maximum number of characters of an error response body kept for the target's status.
const MAX_ERROR_BODY: usize = 200;

/// A failed send. The alert is sent again after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
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
    /// The send took longer than the target's timeout.
    #[error("the send to {url} timed out after {seconds}s")]
    Timeout { url: String, seconds: u64 },
    /// The target's settings cannot work, such as a secret that does not open.
    #[error("invalid notification target settings: {0}")]
    Settings(String),
}

pub struct WebhookClient {
    client: reqwest::Client,
    url: String,
    /// Header name and value that carry the secret, when the target has one.
    auth: Option<(String, Zeroizing<String>)>,
    timeout: std::time::Duration,
}

impl WebhookClient {
    pub fn new(
        target: &NotificationTarget,
        kek: &KeyEncryptionKey,
    ) -> Result<WebhookClient, NotifyError> {
        let secret = match (&target.sealed_secret, target.auth.uses_secret()) {
            (Some(sealed), true) => Some(
                secrets::open_of(
                    kek,
                    ResourceKind::NotificationTarget,
                    &target.name,
                    "secret",
                    sealed,
                )
                .map_err(|error| NotifyError::Settings(error.to_string()))?,
            ),
            (None, true) => {
                return Err(NotifyError::Settings(format!(
                    "notification target {:?} has no stored secret",
                    target.name
                )));
            }
            (_, false) => None,
        };
        let auth = match (target.auth, secret, &target.header) {
            (TargetAuth::Bearer, Some(secret), _) => Some((
                "authorization".to_string(),
                Zeroizing::new(format!("Bearer {}", secret.as_str())),
            )),
            (TargetAuth::Header, Some(secret), Some(header)) => Some((header.clone(), secret)),
            _ => None,
        };
        let timeout = target.send_timeout().as_duration();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| {
                NotifyError::Settings(format!("building the HTTP client failed: {error}"))
            })?;
        Ok(WebhookClient {
            client,
            url: target.url.clone(),
            auth,
            timeout,
        })
    }

    /// Posts one alert document and returns once the receiver accepted it.
    pub async fn send(&self, alert_id: &str, document: &Value) -> Result<(), NotifyError> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-mayfly-alert-id", alert_id)
            .body(document.to_string());
        if let Some((name, value)) = &self.auth {
            request = request.header(name.as_str(), value.as_str());
        }
        let timed_out = || NotifyError::Timeout {
            url: self.url.clone(),
            seconds: self.timeout.as_secs(),
        };
        // The client's own timeout bounds the request too. This outer one also covers a
        // connection that stalls in ways the client does not time out.
        let response = match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(error)) if error.is_timeout() => return Err(timed_out()),
            Ok(Err(error)) => {
                return Err(NotifyError::Http {
                    url: self.url.clone(),
                    message: error_chain(&error),
                });
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = tokio::time::timeout(self.timeout, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let body: String = text.chars().take(MAX_ERROR_BODY).collect();
        Err(NotifyError::Rejected {
            url: self.url.clone(),
            status: status.as_u16(),
            body,
        })
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

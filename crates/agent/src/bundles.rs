//! The trust domain's JWT bundle, fetched from the server's JWKS and refreshed periodically, so
//! that FetchJWTBundles streams can send an update when keys rotate.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::client::ServerClient;

/// The current bundle: the trust domain's SPIFFE ID (`spiffe://<trust domain>`) and a JWKS.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtBundle {
    pub trust_domain_id: String,
    pub jwks: Value,
}

/// Converts the server's discovery JWKS into a Workload API bundle: JWT keys with a `kid`
/// only, and without `use`, which the Workload API's bundles leave out.
pub fn bundle_from_jwks(trust_domain: &str, discovery: &Value) -> JwtBundle {
    let keys: Vec<Value> = discovery
        .get("keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter(|key| {
                    key.get("kid")
                        .and_then(Value::as_str)
                        .is_some_and(|kid| !kid.is_empty())
                })
                .filter_map(|key| {
                    let mut key = key.as_object()?.clone();
                    key.remove("use");
                    Some(Value::Object(key))
                })
                .collect()
        })
        .unwrap_or_default();
    JwtBundle {
        trust_domain_id: format!("spiffe://{trust_domain}"),
        jwks: json!({"keys": keys}),
    }
}

/// Fetches the bundle every `interval` and publishes it when it changed. Stream handlers hold
/// receivers of `sender`.
pub async fn refresh_forever(
    client: ServerClient,
    trust_domain: String,
    interval: Duration,
    sender: watch::Sender<Option<JwtBundle>>,
) {
    let mut failing = false;
    loop {
        match client.jwks().await {
            Ok(discovery) => {
                let bundle = bundle_from_jwks(&trust_domain, &discovery);
                sender.send_if_modified(|current| {
                    if current.as_ref() == Some(&bundle) {
                        return false;
                    }
                    tracing::info!(
                        keys = bundle.jwks["keys"].as_array().map_or(0, Vec::len),
                        "JWT bundle updated"
                    );
                    *current = Some(bundle);
                    true
                });
                if failing {
                    tracing::info!("fetching the JWT bundle recovered");
                }
                failing = false;
            }
            Err(error) => {
                if failing {
                    tracing::debug!(error = %error, "fetching the JWT bundle failed again");
                } else {
                    tracing::warn!(error = %error, "fetching the JWT bundle failed; keeping the last one");
                }
                failing = true;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

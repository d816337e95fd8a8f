//! The trust domain's JWT bundle, fetched from the server's JWKS and refreshed periodically, so
//! that FetchJWTBundles streams can send an update when keys rotate.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cache::SvidCache;
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
/// receivers of `sender`. Before a changed bundle is published, cached SVIDs signed by a key
/// that it no longer contains (a revoked key) are dropped, so the next request fetches a new one.
pub async fn refresh_forever(
    client: ServerClient,
    trust_domain: String,
    interval: Duration,
    sender: watch::Sender<Option<JwtBundle>>,
    cache: Arc<SvidCache>,
) {
    let mut failing = false;
    loop {
        match client.jwks().await {
            Ok(discovery) => {
                let bundle = bundle_from_jwks(&trust_domain, &discovery);
                if sender.borrow().as_ref() != Some(&bundle) {
                    drop_svids_of_removed_keys(&bundle, &cache);
                }
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

fn drop_svids_of_removed_keys(bundle: &JwtBundle, cache: &SvidCache) {
    let published: HashSet<String> = bundle.jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|key| key["kid"].as_str().map(str::to_string))
        .collect();
    let dropped = cache.retain_signed_by(&published);
    if dropped > 0 {
        tracing::info!(
            dropped,
            "dropped cached JWT-SVIDs signed by keys that the JWT bundle no longer contains"
        );
    }
}

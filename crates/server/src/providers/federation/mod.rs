//! `federated_token_exchange`: Mayfly signs a JWT-SVID for the calling workload and exchanges it
//! at the target's token service, which validates it through Mayfly's OIDC discovery. The
//! result is cached per (provider, scope set, workload SPIFFE ID).

mod sts;

use std::sync::Arc;

use jiff::Timestamp;
use mayfly_domain::decide::Grant;
use mayfly_domain::federation::{ExchangeForm, FederatedTokenExchangeProvider};
use serde_json::{Map, json};

use super::cache::{CacheKey, CachedToken, Fetch, cached_or_fetch};
use super::oauth::{JWT_BEARER_ASSERTION, Upstream};
use super::{Failure, Issued, mint_svid, upstream_issued};
use crate::clock;
use crate::state::AppState;

/// `grant_type` of an RFC 8693 token exchange.
const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` of a JWT (RFC 8693 section 3).
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Returns the cached credential of the workload, or exchanges a fresh JWT-SVID for one.
pub(super) async fn produce(
    state: &AppState,
    grant: &Grant<'_>,
    provider: &FederatedTokenExchangeProvider,
    _now: Timestamp,
) -> Result<Issued, Failure> {
    let key = CacheKey::new(
        &provider.name,
        provider.scope_set(),
        &grant.spiffe_id,
        provider,
    );
    let request = Arc::new(Exchange {
        provider: provider.clone(),
        spiffe_id: grant.spiffe_id.clone(),
        session_name: provider
            .session_name
            .clone()
            .unwrap_or_else(|| format!("mayfly-{}", grant.client_workload.name)),
        keys: state.keys.clone(),
        issuer: state.issuer.clone(),
        http: state.upstream.http.clone(),
    });
    let fetch: Fetch = Arc::new(move || {
        let request = request.clone();
        Box::pin(async move { request.run().await })
    });
    let (token, cached) = cached_or_fetch(&state.upstream.cache, &key, fetch).await?;
    Ok(issued(provider, &token, cached))
}

/// Everything one exchange needs, owned so that a background renewal can run it again.
struct Exchange {
    provider: FederatedTokenExchangeProvider,
    spiffe_id: String,
    session_name: String,
    keys: Arc<crate::keys::KeyRing>,
    issuer: String,
    http: reqwest::Client,
}

impl Exchange {
    /// Signs a fresh JWT-SVID and exchanges it.
    async fn run(&self) -> Result<CachedToken, Failure> {
        let provider = &self.provider;
        let svid = mint_svid(
            &self.keys,
            &self.issuer,
            &self.spiffe_id,
            &provider.svid_audience,
            provider.svid_ttl,
            provider.algorithm,
            clock::now(),
        )
        .map_err(Failure::from)?;
        let upstream = Upstream {
            http: &self.http,
            url: &provider.token_url,
            timeout: provider.timeout,
        };

        match provider.exchange {
            ExchangeForm::Rfc8693 => {
                let mut form = vec![
                    ("grant_type", TOKEN_EXCHANGE_GRANT.to_string()),
                    ("subject_token", svid.token),
                    ("subject_token_type", JWT_TOKEN_TYPE.to_string()),
                ];
                if let Some(token_type) = &provider.requested_token_type {
                    form.push(("requested_token_type", token_type.clone()));
                }
                if let Some(audience) = &provider.audience {
                    form.push(("audience", audience.clone()));
                }
                if let Some(resource) = &provider.resource {
                    form.push(("resource", resource.clone()));
                }
                self.push_scope_and_extras(&mut form);
                upstream.post_token_form(&form, None).await
            }
            ExchangeForm::ClientAssertion => {
                let mut form = vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", provider.client_id.clone().unwrap_or_default()),
                    ("client_assertion_type", JWT_BEARER_ASSERTION.to_string()),
                    ("client_assertion", svid.token),
                ];
                self.push_scope_and_extras(&mut form);
                upstream.post_token_form(&form, None).await
            }
            ExchangeForm::AwsSts => {
                let form = vec![
                    ("Action", "AssumeRoleWithWebIdentity".to_string()),
                    ("Version", "2011-06-15".to_string()),
                    ("RoleArn", provider.role_arn.clone().unwrap_or_default()),
                    ("RoleSessionName", self.session_name.clone()),
                    (
                        "DurationSeconds",
                        provider.aws_duration().as_secs().to_string(),
                    ),
                    ("WebIdentityToken", svid.token),
                ];
                let now = clock::now();
                let (status, body, sent_at) = upstream.post_form(&form, None).await?;
                sts::parse_response(&provider.token_url, status, body.as_deref(), now, sent_at)
            }
        }
    }

    fn push_scope_and_extras<'a>(&'a self, form: &mut Vec<(&'a str, String)>) {
        let scope = self.provider.scope_set().join(" ");
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        for (name, value) in &self.provider.extra_params {
            form.push((name, value.clone()));
        }
    }
}

fn issued(provider: &FederatedTokenExchangeProvider, token: &CachedToken, cached: bool) -> Issued {
    let mut audit = Map::new();
    audit.insert("token_url".into(), json!(provider.token_url));
    audit.insert("exchange".into(), json!(provider.exchange));
    if provider.exchange == ExchangeForm::AwsSts {
        audit.insert("role_arn".into(), json!(provider.role_arn));
        let access_key_id = token
            .extra
            .iter()
            .find(|(name, _)| *name == "access_key_id")
            .map(|(_, value)| value.to_string());
        audit.insert("access_key_id".into(), json!(access_key_id));
    }
    upstream_issued(provider.credential_type(), token, cached, audit)
}

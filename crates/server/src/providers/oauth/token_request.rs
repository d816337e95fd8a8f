//! One client credentials token request (RFC 6749 section 4.4) and the client authentication it
//! carries: a client secret, or a `private_key_jwt` assertion (RFC 7523 section 2.2).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use mayfly_crypto::jwt_svid::new_jti;
use mayfly_crypto::signing::SigningKey;
use mayfly_domain::duration::Seconds;
use mayfly_domain::oauth::{ClientAuth, OauthClientCredentialsProvider};
use mayfly_domain::resources::MAX_CREDENTIAL_TTL;
use serde::Serialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::providers::Failure;
use crate::providers::cache::CachedToken;

/// Lifetime of a `private_key_jwt` assertion.
pub const ASSERTION_TTL_SECONDS: i64 = 60;
/// Lifetime assumed for an access token whose response has no `expires_in`.
pub const DEFAULT_EXPIRES_IN: u64 = 60;
/// Maximum size of a token endpoint response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// `client_assertion_type` of a JWT client assertion (RFC 7523 section 2.2).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Proof that Mayfly is the client, sent to the token endpoint.
pub enum ClientCredential {
    /// The client secret, for `client_secret_basic` and `client_secret_post`.
    Secret(Zeroizing<String>),
    /// The key that signs a `private_key_jwt` assertion.
    Key(std::sync::Arc<SigningKey>),
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

/// Signs a `private_key_jwt` client assertion: `iss` and `sub` the client id, `aud` the token
/// endpoint (or the configured issuer identifier), a fresh `jti` and a 60-second lifetime.
pub fn sign_assertion(
    key: &SigningKey,
    provider: &OauthClientCredentialsProvider,
    now: Timestamp,
) -> Result<String, String> {
    let iat = now.as_second();
    let claims = AssertionClaims {
        iss: &provider.client_id,
        sub: &provider.client_id,
        aud: provider.assertion_audience(),
        jti: new_jti().map_err(|error| format!("generating an assertion id failed: {error}"))?,
        iat,
        exp: iat + ASSERTION_TTL_SECONDS,
    };
    key.sign_compact(&claims)
        .map_err(|error| format!("signing the client assertion failed: {error}"))
}

/// Sends one token request and reads the access token from the response.
pub async fn request_token(
    http: &reqwest::Client,
    provider: &OauthClientCredentialsProvider,
    credential: &ClientCredential,
    now: Timestamp,
) -> Result<CachedToken, Failure> {
    let scope = provider.scope_set().join(" ");
    let mut form: Vec<(&str, String)> = vec![("grant_type", "client_credentials".to_string())];
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    if let Some(audience) = &provider.audience {
        form.push(("audience", audience.clone()));
    }
    if let Some(resource) = &provider.resource {
        form.push(("resource", resource.clone()));
    }
    for (name, value) in &provider.extra_params {
        form.push((name, value.clone()));
    }

    let mut basic = None;
    match (provider.client_auth, credential) {
        (ClientAuth::ClientSecretBasic, ClientCredential::Secret(secret)) => {
            // RFC 6749 section 2.3.1: both parts are form-encoded before the base64 step.
            let pair = Zeroizing::new(format!(
                "{}:{}",
                form_encode(&provider.client_id),
                form_encode(secret)
            ));
            basic = Some(Zeroizing::new(format!(
                "Basic {}",
                STANDARD.encode(pair.as_bytes())
            )));
        }
        (ClientAuth::ClientSecretPost, ClientCredential::Secret(secret)) => {
            form.push(("client_id", provider.client_id.clone()));
            form.push(("client_secret", secret.to_string()));
        }
        (ClientAuth::PrivateKeyJwt, ClientCredential::Key(key)) => {
            let assertion = sign_assertion(key, provider, now).map_err(Failure::from)?;
            form.push(("client_id", provider.client_id.clone()));
            form.push(("client_assertion_type", JWT_BEARER_ASSERTION.to_string()));
            form.push(("client_assertion", assertion));
        }
        _ => {
            return Err(Failure::from(
                "the client credential does not match client_auth".to_string(),
            ));
        }
    }
    let upstream = Upstream {
        http,
        url: &provider.token_url,
        timeout: provider.timeout,
    };
    upstream
        .post_token_form(&form, basic.as_deref().map(String::as_str))
        .await
}

/// A token service and the timeout of one request to it.
pub struct Upstream<'a> {
    pub http: &'a reqwest::Client,
    pub url: &'a str,
    pub timeout: Seconds,
}

impl Upstream<'_> {
    /// Posts `form` and returns the body, or the failure of a transport error.
    pub async fn post_form(
        &self,
        form: &[(&str, String)],
        authorization: Option<&str>,
    ) -> Result<(reqwest::StatusCode, Option<Vec<u8>>, Instant), Failure> {
        let body = Zeroizing::new(form_body(form));
        let mut request = self
            .http
            .post(self.url)
            .timeout(self.timeout.as_duration())
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let sent_at = Instant::now();
        let response = request
            .body(body.to_string())
            .send()
            .await
            .map_err(|error| transport_failure(self.url, self.timeout, &error))?;
        let status = response.status();
        let bytes = read_limited(response)
            .await
            .map_err(|error| transport_failure(self.url, self.timeout, &error))?;
        Ok((status, bytes, sent_at))
    }

    /// Posts an OAuth token request and reads the access token from a JSON token response
    /// (RFC 6749 section 5.1), or the `error` code of an error response (section 5.2).
    pub async fn post_token_form(
        &self,
        form: &[(&str, String)],
        authorization: Option<&str>,
    ) -> Result<CachedToken, Failure> {
        let now = crate::clock::now();
        let (status, bytes, sent_at) = self.post_form(form, authorization).await?;
        let parsed: Option<Value> = bytes
            .as_deref()
            .and_then(|bytes| serde_json::from_slice(bytes).ok());
        if !status.is_success() {
            let code = parsed
                .as_ref()
                .and_then(|value| value.get("error"))
                .and_then(Value::as_str)
                .map(sanitize_error_code);
            return Err(rejected(self.url, status, code));
        }
        parse_success(self.url, parsed, now, sent_at)
    }
}

/// Builds the failure of a request that the token service rejected with an error status.
pub fn rejected(url: &str, status: reqwest::StatusCode, code: Option<String>) -> Failure {
    let mut failure = Failure::from(match &code {
        Some(code) => format!(
            "token endpoint {url} rejected the request: HTTP {} with error {code:?}",
            status.as_u16()
        ),
        None => format!(
            "token endpoint {url} rejected the request: HTTP {}",
            status.as_u16()
        ),
    });
    failure
        .audit
        .insert("upstream_status".into(), json!(status.as_u16()));
    failure.audit.insert("upstream_error".into(), json!(code));
    failure
}

fn parse_success(
    url: &str,
    parsed: Option<Value>,
    now: Timestamp,
    sent_at: Instant,
) -> Result<CachedToken, Failure> {
    let invalid = |what: &str| {
        Failure::from(format!(
            "token endpoint {url} returned an invalid response: {what}"
        ))
    };
    let parsed = parsed.ok_or_else(|| invalid("not a JSON object"))?;
    let access_token = parsed
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| invalid("access_token missing"))?;
    if !access_token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(invalid(
            "access_token has characters an HTTP header cannot carry",
        ));
    }
    let token_type = parsed
        .get("token_type")
        .and_then(Value::as_str)
        .unwrap_or("Bearer")
        .to_string();
    let expires_in = match parsed.get("expires_in") {
        None | Some(Value::Null) => DEFAULT_EXPIRES_IN,
        Some(value) => value
            .as_u64()
            .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
            .filter(|seconds| *seconds > 0)
            .ok_or_else(|| invalid("expires_in is not a positive number"))?,
    };
    let lifetime = Duration::from_secs(expires_in.min(MAX_CREDENTIAL_TTL.as_secs()));
    let expires_at = now
        .checked_add(jiff::SignedDuration::try_from(lifetime).unwrap_or_default())
        .map_err(|_| invalid("expires_in is out of range"))?;
    Ok(CachedToken {
        access_token: Zeroizing::new(access_token.to_string()),
        extra: Vec::new(),
        token_type,
        scope: parsed
            .get("scope")
            .and_then(Value::as_str)
            .map(str::to_string),
        obtained: sent_at,
        lifetime,
        expires_at,
    })
}

fn transport_failure(url: &str, timeout: Seconds, error: &reqwest::Error) -> Failure {
    let reason = if error.is_timeout() {
        format!("token request to {url} timed out after {timeout}")
    } else if error.is_connect() {
        format!("token endpoint {url} is unreachable: the connection failed")
    } else {
        format!("token request to {url} failed before a response was read")
    };
    let mut failure = Failure::from(reason);
    let kind = if error.is_timeout() {
        "timeout"
    } else {
        "unreachable"
    };
    failure.audit.insert("upstream_error".into(), json!(kind));
    failure
}

/// Reads at most [`MAX_RESPONSE_BYTES`]; a larger body reads as `None`.
async fn read_limited(mut response: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Keeps an upstream `error` code only when it is what RFC 6749 section 5.2 allows (printable
/// ASCII without `"` and `\`), at most 64 characters, so a hostile server cannot write arbitrary
/// text into the audit log.
pub fn sanitize_error_code(code: &str) -> String {
    let valid = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    if valid {
        code.to_string()
    } else {
        "(invalid error code)".to_string()
    }
}

fn form_body(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Encodes `text` as `application/x-www-form-urlencoded`: unreserved bytes stay, a space
/// becomes `+`, every other byte becomes `%XX`.
fn form_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                encoded.push(char::from(byte))
            }
            b' ' => encoded.push('+'),
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encode_escapes_reserved_bytes() {
        assert_eq!(form_encode("a b:c/d%é"), "a+b%3Ac%2Fd%25%C3%A9");
        assert_eq!(form_encode("AZaz09-._*"), "AZaz09-._*");
    }

    #[test]
    fn upstream_error_code_cannot_inject_text() {
        assert_eq!(sanitize_error_code("invalid_client"), "invalid_client");
        assert_eq!(sanitize_error_code("bad\nline"), "(invalid error code)");
        assert_eq!(sanitize_error_code(&"x".repeat(65)), "(invalid error code)");
        assert_eq!(sanitize_error_code("quote\"d"), "(invalid error code)");
    }
}

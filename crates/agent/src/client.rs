//! The agent's HTTP client for the server's agent routes, JWKS and X.509 bundle.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use mayfly_crypto::token::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

/// Errors from calls to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached, or the request timed out.
    #[error("request to {url} failed: {source}{}", certificate_hint(.source))]
    Transport { url: String, source: reqwest::Error },
    /// The server rejected the agent's credential or join token.
    #[error("the server rejected the agent's {what} at {url}: {detail}")]
    Unauthorized {
        what: &'static str,
        url: String,
        detail: String,
    },
    /// The server denied the request (a credential decision, or an invalid request).
    #[error("the server denied {url} with status {status}: {detail}")]
    Denied {
        url: String,
        status: u16,
        detail: String,
    },
    /// The server failed or is not ready.
    #[error("the server answered {url} with status {status}: {detail}")]
    Server {
        url: String,
        status: u16,
        detail: String,
    },
    /// The response body is not what the route returns.
    #[error("invalid response from {url}: {reason}")]
    InvalidResponse { url: String, reason: String },
}

/// Returns a hint to `--server-ca` when `error` comes from a server certificate that does not
/// chain to a trusted CA, and an empty string otherwise.
fn certificate_hint(error: &reqwest::Error) -> &'static str {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = source {
        let text = current.to_string();
        if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
            return "; if the server's certificate is signed by a private CA, pass the CA certificate with --server-ca (server_ca in the settings file, or MAYFLY_CACERT)";
        }
        source = current.source();
    }
    ""
}

/// A credential the server gave the agent when it joined or renewed.
pub struct IssuedAgentCredential {
    pub agent: String,
    pub credential: SecretString,
    pub expires_at: Timestamp,
    pub trust_domain: String,
}

/// A JWT-SVID that the server issued for a process the agent attested.
#[derive(Clone, Deserialize)]
pub struct IssuedSvid {
    pub token: String,
    pub spiffe_id: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for IssuedSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSvid")
            .field("token", &"<redacted>")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The server's response to an X.509-SVID request: the certificates only, since the key pair
/// never left the agent.
#[derive(Debug, Clone, Deserialize)]
pub struct IssuedX509Certificates {
    pub spiffe_id: String,
    /// Standard base64 DER certificates, leaf first.
    pub certificates: Vec<String>,
    /// Id of the CA that signed the leaf.
    pub x509_authority: Option<String>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The trust domain's published X.509 CA certificates, as `GET /v1/x509-bundle` returns them.
#[derive(Debug, Clone, Deserialize)]
pub struct X509BundleBody {
    pub trust_domain: String,
    /// Id of the CA that signs new X.509-SVIDs.
    pub active_authority: Option<String>,
    pub certificates_pem: String,
}

#[derive(Deserialize)]
struct CredentialBody {
    agent: String,
    credential: String,
    expires_at: Timestamp,
    trust_domain: String,
}

/// The server's response to a credential request, kept as it came so that the agent can pass it on
/// unchanged. The body may hold a credential.
pub struct ForwardedResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type` header, when the server sent one.
    pub content_type: Option<String>,
    /// The body: the credential or the problem document.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for ForwardedResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardedResponse")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body", &"<redacted>")
            .finish()
    }
}

impl Drop for ForwardedResponse {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.body);
    }
}

/// Calls the server's agent routes.
#[derive(Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    base: String,
}

impl ServerClient {
    /// Builds a client for the server at `base` (such as `https://mayfly.example:8750`) whose
    /// requests time out after `timeout`. With `server_ca` (PEM certificates), an HTTPS server's
    /// certificate must chain to one of them instead of the system roots.
    pub fn new(
        base: &str,
        timeout: Duration,
        server_ca: Option<&[u8]>,
    ) -> Result<ServerClient, ClientError> {
        let transport_error = |source| ClientError::Transport {
            url: base.to_string(),
            source,
        };
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(pem) = server_ca {
            let certificates =
                reqwest::Certificate::from_pem_bundle(pem).map_err(transport_error)?;
            builder = builder.tls_certs_only(certificates);
        }
        let http = builder.build().map_err(transport_error)?;
        Ok(ServerClient {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// Exchanges a one-time join token for the agent's first credential.
    pub async fn join(
        &self,
        join_token: &SecretString,
    ) -> Result<IssuedAgentCredential, ClientError> {
        let body: CredentialBody = self
            .post("/v1/agents/join", join_token, "join token", &json!({}))
            .await?;
        Ok(credential_from(body))
    }

    /// Exchanges the current credential for a new one.
    pub async fn renew(
        &self,
        credential: &SecretString,
    ) -> Result<IssuedAgentCredential, ClientError> {
        let body: CredentialBody = self
            .post("/v1/agents/renew", credential, "credential", &json!({}))
            .await?;
        Ok(credential_from(body))
    }

    /// Requests a JWT-SVID for the process with `attributes`, for `audiences`.
    pub async fn jwt_svid(
        &self,
        credential: &SecretString,
        attributes: &BTreeMap<String, Vec<String>>,
        audiences: &[String],
    ) -> Result<IssuedSvid, ClientError> {
        let body = json!({"attributes": attributes, "audience": audiences});
        self.post("/v1/agents/jwt-svids", credential, "credential", &body)
            .await
    }

    /// Requests an X.509-SVID for the process with `attributes`, for the public key of the DER
    /// CSR `csr`.
    pub async fn x509_svid(
        &self,
        credential: &SecretString,
        attributes: &BTreeMap<String, Vec<String>>,
        csr: &[u8],
    ) -> Result<IssuedX509Certificates, ClientError> {
        use base64::Engine as _;

        let encoded = base64::engine::general_purpose::STANDARD.encode(csr);
        let body = json!({"attributes": attributes, "csr": encoded});
        self.post("/v1/agents/x509-svids", credential, "credential", &body)
            .await
    }

    /// Fetches the trust domain's published X.509 CA certificates.
    pub async fn x509_bundle(&self) -> Result<X509BundleBody, ClientError> {
        let url = format!("{}/v1/x509-bundle", self.base);
        let response =
            self.http
                .get(&url)
                .send()
                .await
                .map_err(|source| ClientError::Transport {
                    url: url.clone(),
                    source,
                })?;
        read(response, &url, "credential").await
    }

    /// Sends the credential request `request` (the body of `POST /v1/credentials`) of the
    /// process with `attributes`. Any response of the server is returned as it came, except one
    /// that rejects the agent's own credential, which is `ClientError::Unauthorized`.
    pub async fn credential(
        &self,
        credential: &SecretString,
        attributes: &BTreeMap<String, Vec<String>>,
        request: &Value,
    ) -> Result<ForwardedResponse, ClientError> {
        self.credential_request(credential, attributes, request, "workload")
            .await
    }

    async fn credential_request(
        &self,
        credential: &SecretString,
        attributes: &BTreeMap<String, Vec<String>>,
        request: &Value,
        delivery: &str,
    ) -> Result<ForwardedResponse, ClientError> {
        let url = format!("{}/v1/agents/credentials", self.base);
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let response = self
            .http
            .post(&url)
            .bearer_auth(credential.expose())
            .json(&json!({"attributes": attributes, "request": request, "delivery": delivery}))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.map_err(transport)?.to_vec();
        let forwarded = ForwardedResponse {
            status,
            content_type,
            body,
        };
        let problem = serde_json::from_slice::<Value>(&forwarded.body).unwrap_or(Value::Null);
        let problem_type = problem.get("type").and_then(Value::as_str);
        if status == 401 && problem_type != Some("urn:mayfly:problem:credential-denied") {
            let detail = match problem.get("detail").and_then(Value::as_str) {
                Some(detail) => detail.to_string(),
                None => String::from_utf8_lossy(&forwarded.body).into_owned(),
            };
            return Err(ClientError::Unauthorized {
                what: "credential",
                url,
                detail,
            });
        }
        Ok(forwarded)
    }

    /// Requests the credential that the process with `attributes` gets for the server workload at
    /// `host`:`port`, for the proxy to inject. The response is returned as it came, like
    /// [`ServerClient::credential`]'s.
    pub async fn proxy_credential(
        &self,
        credential: &SecretString,
        attributes: &BTreeMap<String, Vec<String>>,
        host: &str,
        port: u16,
    ) -> Result<ForwardedResponse, ClientError> {
        let request = json!({"target": {"host": host, "port": port}});
        self.credential_request(credential, attributes, &request, "proxy")
            .await
    }

    /// Fetches the enabled server workloads' hosts, ports and schemes.
    pub async fn targets(&self, credential: &SecretString) -> Result<Value, ClientError> {
        let url = format!("{}/v1/agents/targets", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(credential.expose())
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        read(response, &url, "credential").await
    }

    /// Posts a batch of injection events.
    pub async fn injection_events(
        &self,
        credential: &SecretString,
        events: &[Value],
    ) -> Result<Value, ClientError> {
        self.post(
            "/v1/agents/injection-events",
            credential,
            "credential",
            &json!({"events": events}),
        )
        .await
    }

    /// Fetches the server's public signing keys.
    pub async fn jwks(&self) -> Result<Value, ClientError> {
        let url = format!("{}/.well-known/jwks.json", self.base);
        let response =
            self.http
                .get(&url)
                .send()
                .await
                .map_err(|source| ClientError::Transport {
                    url: url.clone(),
                    source,
                })?;
        read(response, &url, "credential").await
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        bearer: &SecretString,
        what: &'static str,
        body: &Value,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .bearer_auth(bearer.expose())
            .json(body)
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        read(response, &url, what).await
    }
}

async fn read<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    url: &str,
    what: &'static str,
) -> Result<T, ClientError> {
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
    if (200..300).contains(&status) {
        return serde_json::from_str(&text).map_err(|error| ClientError::InvalidResponse {
            url: url.to_string(),
            reason: error.to_string(),
        });
    }
    let problem = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
    let detail = problem
        .get("detail")
        .and_then(Value::as_str)
        .map_or(text.clone(), str::to_string);
    let is_denial =
        problem.get("type").and_then(Value::as_str) == Some("urn:mayfly:problem:credential-denied");
    let url = url.to_string();
    Err(match status {
        401 if !is_denial => ClientError::Unauthorized { what, url, detail },
        400..=499 => ClientError::Denied {
            url,
            status,
            detail,
        },
        _ => ClientError::Server {
            url,
            status,
            detail,
        },
    })
}

fn credential_from(body: CredentialBody) -> IssuedAgentCredential {
    IssuedAgentCredential {
        agent: body.agent,
        credential: SecretString::new(body.credential),
        expires_at: body.expires_at,
        trust_domain: body.trust_domain,
    }
}

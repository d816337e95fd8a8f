//! The HTTP client of Mayfly's `/v1` API.

mod problem;
pub mod unix_socket;

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;

use crate::secret::Secret;

pub use problem::{ApiError, Problem, RawResponse};

/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole request, response body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one server, sending one bearer token (an admin token or an OIDC evidence token)
/// with every request.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    token: Option<Secret>,
}

impl ApiClient {
    /// Builds a client for `address` (`http://` or `https://`). With `ca_file`, https connections
    /// trust only the certificates in that PEM file.
    pub fn new(
        address: &str,
        ca_file: Option<&Path>,
        token: Option<Secret>,
    ) -> Result<ApiClient, ApiError> {
        let base = parse_address(address)?;

        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mayfly-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            builder = builder.tls_certs_only(read_ca_file(path)?);
        }
        let http = builder.build().map_err(|error| ApiError::ClientSetup {
            reason: error_chain(&error),
        })?;

        Ok(ApiClient { http, base, token })
    }

    /// Returns the server address, for messages.
    pub fn address(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Sends `GET` to the path made of `segments`, with `query` pairs.
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, ApiError> {
        self.send(Method::GET, segments, query, None).await
    }

    /// Sends `POST`, with a JSON body when one is given.
    pub async fn post(&self, segments: &[&str], body: Option<&Value>) -> Result<Value, ApiError> {
        self.send(Method::POST, segments, &[], body).await
    }

    /// Sends `DELETE`.
    pub async fn delete(&self, segments: &[&str]) -> Result<Value, ApiError> {
        self.send(Method::DELETE, segments, &[], None).await
    }

    /// Builds the URL of `segments` below the base address. Each segment is percent-encoded, so
    /// a name holding `/`, `?` or `%` stays one segment, and `.` or `..` is rejected because URL
    /// normalization would drop or resolve it.
    pub fn url(&self, segments: &[&str]) -> Result<Url, ApiError> {
        for segment in segments {
            if segment.is_empty() || *segment == "." || *segment == ".." {
                return Err(ApiError::InvalidPathSegment {
                    value: segment.to_string(),
                });
            }
        }

        let mut url = self.base.clone();
        let mut path = url
            .path_segments_mut()
            .map_err(|()| ApiError::InvalidAddress {
                address: self.base.to_string(),
            })?;
        path.pop_if_empty();
        path.extend(segments);
        drop(path);
        Ok(url)
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = self.url(segments)?;
        let mut request = self
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }

        let response = request
            .send()
            .await
            .map_err(|error| self.transport_error(&error))?;
        let status = response.status().as_u16();
        let request_id = request_id_header(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|error| self.transport_error(&error))?;
        RawResponse {
            status,
            request_id,
            body: body.to_vec(),
        }
        .into_json()
    }

    fn transport_error(&self, error: &reqwest::Error) -> ApiError {
        let address = self.address().to_string();
        if error.is_timeout() {
            return ApiError::Timeout {
                address,
                seconds: REQUEST_TIMEOUT.as_secs(),
            };
        }
        if error.is_connect() {
            // The innermost cause ("Connection refused", a certificate error) is the useful part.
            let reason = root_cause(error);
            // NOTE: reqwest has no error kind for TLS failures, so they are recognized by the
            // rustls message text ("invalid peer certificate: UnknownIssuer").
            if reason.contains("certificate") {
                return ApiError::Tls { address, reason };
            }
            return ApiError::Connect { address, reason };
        }
        ApiError::Request {
            address,
            reason: error_chain(error),
        }
    }
}

/// Returns the `x-request-id` header that the server sets on every response.
pub fn request_id_header(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let value = headers.get("x-request-id")?.to_str().ok()?;
    Some(value.to_string())
}

/// Parses the server address: an http:// or https:// URL with a host and no query or fragment.
pub fn parse_address(address: &str) -> Result<Url, ApiError> {
    let invalid = || ApiError::InvalidAddress {
        address: address.to_string(),
    };
    let url = Url::parse(address.trim()).map_err(|_| invalid())?;
    let supported = matches!(url.scheme(), "http" | "https") && url.host().is_some();
    if !supported || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid());
    }
    Ok(url)
}

fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, ApiError> {
    let ca_error = |reason: String| ApiError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|error| ca_error(error.to_string()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|error| ca_error(error_chain(&error)))?;
    if certificates.is_empty() {
        return Err(ca_error("no PEM certificate found".to_string()));
    }
    Ok(certificates)
}

fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Joins an error with its sources, because reqwest's own message ("error sending request")
/// leaves out the cause, such as "connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;

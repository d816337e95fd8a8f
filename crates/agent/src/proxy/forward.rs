//! Connections from the proxy to destinations, and the responses the proxy makes itself.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Time allowed for the TCP connection to a destination.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of every response the proxy returns.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A request's destination: host, port and whether TLS is spoken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// One client connection's upstream connection, reused across the client's requests while the
/// destination stays the same (HTTP/1.1 keep-alive on both sides).
#[derive(Default)]
pub struct Upstream {
    current: Mutex<Option<(Destination, SendRequest<Incoming>)>>,
}

impl Upstream {
    /// Sends `request` to `destination`, connecting first when there is no open connection to
    /// it. `request`'s URI must be in origin form.
    pub async fn send(
        &self,
        destination: &Destination,
        tls: &Arc<ClientConfig>,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, String> {
        let mut current = self.current.lock().await;
        let reusable = match current.as_mut() {
            Some((open, sender)) if open == destination && !sender.is_closed() => {
                sender.ready().await.is_ok()
            }
            _ => false,
        };
        if !reusable {
            let sender = connect(destination, tls).await?;
            *current = Some((destination.clone(), sender));
        }
        let Some((_, sender)) = current.as_mut() else {
            return Err("no upstream connection".to_string());
        };
        sender
            .send_request(request)
            .await
            .map_err(|error| format!("{}:{}: {error}", destination.host, destination.port))
    }
}

async fn connect(
    destination: &Destination,
    tls: &Arc<ClientConfig>,
) -> Result<SendRequest<Incoming>, String> {
    let address = format!("{}:{}", destination.host, destination.port);
    let tcp = connect_tcp(&destination.host, destination.port).await?;
    let _ = tcp.set_nodelay(true);
    if destination.tls {
        let name = ServerName::try_from(destination.host.clone())
            .map_err(|_| format!("{:?} is not a valid TLS server name", destination.host))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|error| format!("TLS with {address} failed: {error}"))?;
        handshake(TokioIo::new(stream), &address).await
    } else {
        handshake(TokioIo::new(tcp), &address).await
    }
}

/// Opens a TCP connection to `host`:`port`, failing after `CONNECT_TIMEOUT`.
pub async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(format!("connecting to {host}:{port} failed: {error}")),
        Err(_) => Err(format!(
            "connecting to {host}:{port} timed out after {} seconds",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

async fn handshake<T>(io: T, address: &str) -> Result<SendRequest<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| format!("HTTP/1.1 handshake with {address} failed: {error}"))?;
    let address = address.to_string();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(upstream = %address, error = %error, "upstream connection closed with an error");
        }
    });
    Ok(sender)
}

/// Builds the upstream TLS configuration: certificates must chain to `upstream_ca` (PEM) when
/// given, to the system roots otherwise. Hostnames are checked in both cases.
pub fn upstream_tls(upstream_ca: Option<&[u8]>) -> Result<ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use rustls_platform_verifier::BuilderVerifierExt;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?;
    let mut config = match upstream_ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate = certificate.map_err(|error| format!("invalid PEM: {error}"))?;
                roots
                    .add(certificate)
                    .map_err(|error| format!("invalid CA certificate: {error}"))?;
            }
            if roots.is_empty() {
                return Err("contains no certificate".to_string());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .with_platform_verifier()
            .map_err(|error| format!("loading the system roots failed: {error}"))?
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Converts an upstream response for the client.
pub fn relay(response: Response<Incoming>) -> Response<ProxyBody> {
    response.map(BodyExt::boxed)
}

/// Returns an empty body.
pub fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// Builds a problem document (RFC 9457) response in the shape the server uses.
pub fn problem(
    status: StatusCode,
    slug: &str,
    detail: &str,
    request_id: Option<&str>,
) -> Response<ProxyBody> {
    let mut document = json!({
        "type": format!("urn:mayfly:problem:{slug}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(request_id) = request_id {
        document["request_id"] = json!(request_id);
    }
    let body = Full::new(Bytes::from(document.to_string()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

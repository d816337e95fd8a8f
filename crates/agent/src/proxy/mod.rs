//! The credential-injecting HTTP proxy on loopback (`--proxy-listen`).
//!
//! Applications opt in with `HTTP_PROXY`/`HTTPS_PROXY`. The proxy attests the process behind
//! each TCP connection once ([`tcp_peer`]). A request to a server workload gets the credential
//! that the caller's access policy yields, injected as the credential response's presentation
//! specifies ([`inject`]). Plain HTTP is forwarded with it. CONNECT to an `https` server workload
//! is terminated with a leaf certificate from the interception CA ([`ca`]) and forwarded over
//! verified TLS. Every other destination passes through untouched: plain HTTP is forwarded as it
//! came and CONNECT is tunnelled byte for byte. Only HTTP/1.1 is spoken, with keep-alive.

pub mod ca;
pub mod credentials;
pub mod events;
mod forward;
pub mod inject;
pub mod targets;
pub mod tcp_peer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mayfly_server::evidence::unix::{ExecutableHasher, uptime_ticks};
use rustls::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::client::ServerClient;
use crate::identity::Identity;
use ca::InterceptionCa;
use credentials::{CredentialError, ProxyCredentials};
use events::{InjectionEvents, InjectionRecord};
use forward::{Destination, ProxyBody, Upstream, empty, problem, relay};
use targets::{Target, Targets};

/// Time a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Loopback address and port to listen on.
    pub listen: SocketAddr,
    /// File the interception CA bundle is written to, for applications to trust.
    pub ca_bundle: PathBuf,
    /// PEM file of the CA certificates that upstream server workloads' certificates must chain
    /// to; the system roots when absent.
    pub upstream_ca: Option<PathBuf>,
    /// How often the server workloads' hosts and ports are fetched.
    pub targets_refresh: Duration,
    /// Maximum number of injection events kept while the server does not accept them.
    pub max_spooled_events: usize,
    /// Maximum number of cached credentials.
    pub max_cached_credentials: usize,
}

impl ProxySettings {
    /// Builds settings with the defaults: the CA bundle at `<data_dir>/proxy-ca.pem`, the
    /// system roots for upstream TLS, targets refreshed every 30 seconds, 100,000 spooled events
    /// and 4,096 cached credentials.
    pub fn new(listen: SocketAddr, data_dir: &std::path::Path) -> ProxySettings {
        ProxySettings {
            listen,
            ca_bundle: data_dir.join("proxy-ca.pem"),
            upstream_ca: None,
            targets_refresh: Duration::from_secs(30),
            max_spooled_events: 100_000,
            max_cached_credentials: 4096,
        }
    }
}

/// Errors while starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address is not a loopback address.
    #[error(
        "proxy_listen {0}: the proxy listens on loopback only (127.0.0.0/8 or ::1), since it attests callers from this host's /proc"
    )]
    NotLoopback(SocketAddr),
    /// The listener could not be bound.
    #[error("proxy_listen {address}: {reason}")]
    Bind { address: SocketAddr, reason: String },
    /// The upstream CA file could not be read or parsed.
    #[error("proxy_upstream_ca {path}: {reason}")]
    UpstreamCa { path: PathBuf, reason: String },
    /// The interception CA could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    /// The injection event spool could not be read.
    #[error("injection event spool: {0}")]
    Spool(String),
}

/// The state that the proxy's connections share.
struct Proxy {
    targets: Arc<Targets>,
    ca: Arc<InterceptionCa>,
    credentials: Arc<ProxyCredentials>,
    events: Arc<InjectionEvents>,
    hasher: Arc<ExecutableHasher>,
    upstream_tls: Arc<ClientConfig>,
}

/// The attested caller of a connection, or why attestation failed.
type Caller = Arc<Result<BTreeMap<String, Vec<String>>, String>>;

/// A started proxy's background tasks and the address it listens on.
pub struct RunningProxy {
    pub address: SocketAddr,
    pub ca_bundle: PathBuf,
    pub events: Arc<InjectionEvents>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts the proxy: checks the address, fetches the targets, opens the interception CA and
/// the event spool, and binds the listener.
pub async fn start(
    settings: &ProxySettings,
    client: ServerClient,
    identity: Arc<Identity>,
    hasher: Arc<ExecutableHasher>,
    data_dir: &std::path::Path,
) -> Result<RunningProxy, ProxyError> {
    if !settings.listen.ip().is_loopback() {
        return Err(ProxyError::NotLoopback(settings.listen));
    }
    let upstream_ca = match &settings.upstream_ca {
        Some(path) => Some(std::fs::read(path).map_err(|error| ProxyError::UpstreamCa {
            path: path.clone(),
            reason: error.to_string(),
        })?),
        None => None,
    };
    let upstream_tls =
        forward::upstream_tls(upstream_ca.as_deref()).map_err(|reason| ProxyError::UpstreamCa {
            path: settings.upstream_ca.clone().unwrap_or_default(),
            reason,
        })?;

    let targets = Arc::new(Targets::default());
    if let Err(error) = targets.load(&client, &identity).await {
        tracing::warn!(error = %error, "fetching the proxy target list failed; every destination passes through until a refresh succeeds");
    }
    let (_, agent) = identity.credential().await;
    let ca = Arc::new(InterceptionCa::open(
        data_dir,
        settings.ca_bundle.clone(),
        &agent,
        &targets.https_hosts(),
    )?);
    let events = Arc::new(
        InjectionEvents::open(data_dir, settings.max_spooled_events).map_err(ProxyError::Spool)?,
    );
    let credentials = Arc::new(ProxyCredentials::new(
        client.clone(),
        Arc::clone(&identity),
        settings.max_cached_credentials,
    ));

    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|error| ProxyError::Bind {
            address: settings.listen,
            reason: error.to_string(),
        })?;
    let address = listener.local_addr().map_err(|error| ProxyError::Bind {
        address: settings.listen,
        reason: error.to_string(),
    })?;

    let refresh_task = tokio::spawn(Arc::clone(&targets).refresh_forever(
        client.clone(),
        Arc::clone(&identity),
        Arc::clone(&ca),
        settings.targets_refresh,
    ));
    let events_task = tokio::spawn(Arc::clone(&events).send_forever(client, identity));
    let proxy = Arc::new(Proxy {
        targets,
        ca,
        credentials,
        events: Arc::clone(&events),
        hasher,
        upstream_tls: Arc::new(upstream_tls),
    });
    let accept_task = tokio::spawn(accept_forever(listener, proxy));
    tracing::info!(proxy = %address, ca_bundle = %settings.ca_bundle.display(), "agent serving the credential-injecting proxy");
    Ok(RunningProxy {
        address,
        ca_bundle: settings.ca_bundle.clone(),
        events,
        tasks: vec![refresh_task, events_task, accept_task],
    })
}

/// Accepts connections forever.
/// NOTE: the number of concurrent connections is not limited; any local process can open many.
async fn accept_forever(listener: TcpListener, proxy: Arc<Proxy>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(error = %error, "accepting a proxy connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let accepted_at_ticks = uptime_ticks();
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let caller = attest(&proxy, peer, local, accepted_at_ticks).await;
            serve_client(proxy, stream, caller).await;
        });
    }
}

/// Attests the connection's process once; every request on the connection uses the result.
async fn attest(
    proxy: &Proxy,
    peer: SocketAddr,
    local: SocketAddr,
    accepted_at_ticks: Option<u64>,
) -> Caller {
    let hasher = Arc::clone(&proxy.hasher);
    let attested = tokio::task::spawn_blocking(move || {
        tcp_peer::attest_tcp_peer(peer, local, accepted_at_ticks, &hasher)
    })
    .await;
    Arc::new(match attested {
        Ok(Ok(attributes)) => Ok(attributes),
        Ok(Err(error)) => {
            tracing::info!(peer = %peer, error = %error, "proxy caller not attested; it gets pass-through only");
            Err(error.to_string())
        }
        Err(error) => {
            tracing::error!(peer = %peer, error = %error, "the attestation task failed");
            Err("the attestation failed inside the agent".to_string())
        }
    })
}

async fn serve_client(proxy: Arc<Proxy>, stream: TcpStream, caller: Caller) {
    let _ = stream.set_nodelay(true);
    let upstream = Arc::new(Upstream::default());
    let service = service_fn(move |request| {
        let proxy = Arc::clone(&proxy);
        let caller = Arc::clone(&caller);
        let upstream = Arc::clone(&upstream);
        async move { Ok::<_, std::convert::Infallible>(route(proxy, caller, upstream, request).await) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(error) = served {
        tracing::debug!(error = %error, "proxy client connection ended with an error");
    }
}

async fn route(
    proxy: Arc<Proxy>,
    caller: Caller,
    upstream: Arc<Upstream>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    if request.method() == Method::CONNECT {
        return connect(proxy, caller, request).await;
    }
    let uri = request.uri();
    let (Some(host), Some("http")) = (uri.host(), uri.scheme_str()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "the proxy takes absolute-form http:// requests and CONNECT; send HTTPS through CONNECT",
            None,
        );
    };
    let destination = Destination {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: uri.port_u16().unwrap_or(80),
        tls: false,
    };
    // Plain HTTP is intercepted only for server workloads reached over plain HTTP: an https
    // server workload's credential never travels in clear text.
    let target = proxy
        .targets
        .lookup(&destination.host, destination.port)
        .filter(|target| target.scheme == "http");
    forward(
        &proxy,
        &caller,
        &upstream,
        &destination,
        target.as_ref(),
        request,
    )
    .await
}

/// Handles CONNECT: intercepts an `https` server workload, tunnels everything else.
async fn connect(
    proxy: Arc<Proxy>,
    caller: Caller,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(authority) = request.uri().authority() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "CONNECT needs host:port as its target",
            None,
        );
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(443);
    let target = proxy
        .targets
        .lookup(&host, port)
        .filter(|target| target.scheme == "https");

    let Some(target) = target else {
        let outbound = match forward::connect_tcp(&host, port).await {
            Ok(outbound) => outbound,
            Err(reason) => {
                return problem(StatusCode::BAD_GATEWAY, "upstream", &reason, None);
            }
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => {
                    let mut upgraded = TokioIo::new(upgraded);
                    let mut outbound = outbound;
                    let _ = tokio::io::copy_bidirectional(&mut upgraded, &mut outbound).await;
                }
                Err(error) => tracing::debug!(error = %error, "CONNECT upgrade failed"),
            }
        });
        return Response::new(empty());
    };

    let tls = match proxy.ca.server_config(&host) {
        Ok(tls) => tls,
        Err(error) => {
            tracing::warn!(host = %host, error = %error, "no interception certificate for a server workload");
            return problem(
                StatusCode::BAD_GATEWAY,
                "interception",
                &error.to_string(),
                None,
            );
        }
    };
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(error = %error, "CONNECT upgrade failed");
                return;
            }
        };
        let accepted = tokio_rustls::TlsAcceptor::from(tls)
            .accept(TokioIo::new(upgraded))
            .await;
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::info!(host = %host, error = %error, "TLS handshake with a proxy client failed: does it trust the proxy CA bundle?");
                return;
            }
        };
        let destination = Destination {
            host,
            port,
            tls: true,
        };
        let upstream = Arc::new(Upstream::default());
        let target = Arc::new(target);
        let service = service_fn(move |request| {
            let proxy = Arc::clone(&proxy);
            let caller = Arc::clone(&caller);
            let upstream = Arc::clone(&upstream);
            let destination = destination.clone();
            let target = Arc::clone(&target);
            async move {
                Ok::<_, std::convert::Infallible>(
                    forward(
                        &proxy,
                        &caller,
                        &upstream,
                        &destination,
                        Some(&target),
                        request,
                    )
                    .await,
                )
            }
        });
        let served = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service)
            .await;
        if let Err(error) = served {
            tracing::debug!(error = %error, "intercepted connection ended with an error");
        }
    });
    Response::new(empty())
}

/// Forwards one request to `destination`, injecting the credential first when `target` is a
/// server workload.
async fn forward(
    proxy: &Proxy,
    caller: &Caller,
    upstream: &Upstream,
    destination: &Destination,
    target: Option<&Target>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    // The proxy's own headers are not meant for the destination.
    parts.headers.remove(header::PROXY_AUTHORIZATION);
    parts.headers.remove("proxy-connection");
    if !parts.headers.contains_key(header::HOST) {
        let host = if destination.port == if destination.tls { 443 } else { 80 } {
            destination.host.clone()
        } else {
            format!("{}:{}", destination.host, destination.port)
        };
        if let Ok(value) = HeaderValue::from_str(&host) {
            parts.headers.insert(header::HOST, value);
        }
    }

    if let Some(target) = target {
        let attributes = match caller.as_ref() {
            Ok(attributes) => attributes,
            Err(reason) => {
                return problem(
                    StatusCode::FORBIDDEN,
                    "credential-denied",
                    &format!(
                        "the proxy could not attest the calling process, so it injects no credential: {reason}"
                    ),
                    None,
                );
            }
        };
        let injection = match proxy
            .credentials
            .get(attributes, &destination.host, destination.port)
            .await
        {
            Ok(injection) => injection,
            Err(error) => return credential_failure(error, target),
        };
        if let Err(reason) = inject::inject(&mut parts, &injection) {
            tracing::error!(server_workload = %target.server_workload, reason = %reason, "injecting a credential failed");
            return problem(StatusCode::BAD_GATEWAY, "injection", &reason, None);
        }
        proxy
            .events
            .record(InjectionRecord {
                attributes,
                host: &destination.host,
                port: destination.port,
                method: parts.method.as_str(),
                path: parts.uri.path(),
                server_workload: &injection.server_workload,
                credential_request_id: &injection.request_id,
                mode: injection.mode(),
                spiffe_id: &injection.spiffe_id,
            })
            .await;
    }

    // The destination gets the request in origin form.
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), ToString::to_string);
    match path_and_query.parse() {
        Ok(uri) => parts.uri = uri,
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                &format!("invalid request path: {error}"),
                None,
            );
        }
    }
    let request = Request::from_parts(parts, body);
    match upstream
        .send(destination, &proxy.upstream_tls, request)
        .await
    {
        Ok(response) => relay(response),
        Err(reason) => {
            tracing::warn!(host = %destination.host, port = destination.port, reason = %reason, "forwarding a proxied request failed");
            problem(StatusCode::BAD_GATEWAY, "upstream", &reason, None)
        }
    }
}

fn credential_failure(error: CredentialError, target: &Target) -> Response<ProxyBody> {
    match error {
        CredentialError::Denied { request_id, .. } => {
            tracing::info!(server_workload = %target.server_workload, request_id = %request_id, decision = "deny", "proxy request denied; nothing forwarded");
            problem(
                StatusCode::FORBIDDEN,
                "credential-denied",
                &format!(
                    "no access policy gives this process a credential for server workload {}: nothing was forwarded; the server's audit log has the reason under request id {request_id}",
                    target.server_workload
                ),
                Some(&request_id),
            )
        }
        CredentialError::NotInjectable { server_workload } => problem(
            StatusCode::BAD_GATEWAY,
            "injection",
            &format!(
                "the credential for server workload {server_workload} has no header or query presentation, so the proxy cannot inject it"
            ),
            None,
        ),
        CredentialError::Unavailable(reason) => {
            tracing::warn!(server_workload = %target.server_workload, reason = %reason, "no credential for a proxied request");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the agent cannot get a credential from the server",
                None,
            )
        }
    }
}

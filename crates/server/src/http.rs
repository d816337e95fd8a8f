//! Listeners: the API on TCP (plain or TLS) and the workload socket, served by hyper with a
//! header read timeout and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::evidence::unix::{PeerAtAccept, uptime_ticks};
use crate::settings::TlsSettings;

/// Time a client has to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The peer of a workload socket connection, as the kernel saw it at accept time.
#[derive(Debug, Clone, Copy)]
pub struct UnixPeer(pub PeerAtAccept);

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The TLS certificate or key could not be loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The socket could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// Loads a TLS acceptor from PEM files.
pub fn tls_acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, ListenError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert_file)
        .and_then(|iter| iter.collect())
        .map_err(|error| {
            ListenError::Tls(format!(
                "reading certificates from {}: {error}",
                settings.cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ListenError::Tls(format!(
            "{} contains no certificate",
            settings.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|error| {
        ListenError::Tls(format!(
            "reading the private key from {}: {error}",
            settings.key_file.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ListenError::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| {
            ListenError::Tls(format!(
                "the certificate and key do not form a usable pair: {error}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds the workload socket, replacing a stale socket file, and lets every local user connect
/// (callers are identified by attestation, not by file permissions).
pub fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    let bind_error = |source| ListenError::Bind {
        address: path.display().to_string(),
        source,
    };
    // Only a socket left behind by a stopped server is removed. Any other file at the path is
    // kept and the start fails, so a mistyped setting never deletes data.
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(bind_error)?
        }
        Ok(_) => {
            return Err(bind_error(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way; move it or choose another workload_socket path",
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(bind_error)?;
    Ok(listener)
}

/// Serves the API until `shutdown` turns true, then drains in-flight requests.
pub async fn serve_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = with_connect_info(router.clone(), peer);
        match &tls {
            None => serve_connection(TokioIo::new(stream), service, &graceful),
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(peer = %peer, error = %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection = builder()
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                });
            }
        }
    }
    drain(graceful).await;
}

/// Serves the workload socket until `shutdown` turns true.
pub async fn serve_unix(
    listener: UnixListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(error = %error, "accepting a workload socket connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let accepted_at_ticks = uptime_ticks();
        let credentials = match stream.peer_cred() {
            Ok(credentials) => credentials,
            Err(error) => {
                tracing::warn!(error = %error, "reading the peer credentials of a workload socket connection failed");
                continue;
            }
        };
        let peer = UnixPeer(PeerAtAccept {
            pid: credentials.pid(),
            uid: credentials.uid(),
            gid: credentials.gid(),
            accepted_at_ticks,
        });
        let router = router.clone();
        let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        serve_connection(TokioIo::new(stream), service, &graceful);
    }
    drain(graceful).await;
}

type BoxedService = tower::util::BoxCloneSyncService<
    hyper::Request<Incoming>,
    axum::response::Response,
    Infallible,
>;

fn with_connect_info(router: Router, peer: SocketAddr) -> BoxedService {
    BoxedService::new(tower::service_fn(
        move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        },
    ))
}

fn builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
}

fn serve_connection<I, S>(io: TokioIo<I>, service: S, graceful: &GracefulShutdown)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = builder().serve_connection(io, TowerToHyperService::new(service));
    let watched = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = watched.await {
            tracing::debug!(error = %error, "connection ended with an error");
        }
    });
}

async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "some connections were still open after {}s and were closed",
            DRAIN_TIMEOUT.as_secs()
        );
    }
}

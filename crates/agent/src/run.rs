//! Starting the agent: identity, bundle refresh, credential renewal, the Workload API socket and
//! the HTTP credential socket.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mayfly_crypto::token::SecretString;
use mayfly_server::evidence::unix::ExecutableHasher;
use mayfly_server::http::bind_unix;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

use crate::bundles;
use crate::cache::SvidCache;
use crate::client::ServerClient;
use crate::http_socket::{self, CredentialSocket};
use crate::identity::{Identity, IdentityError};
use crate::peer::PeerStream;
use crate::proto::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use crate::proxy::{self, ProxyError, ProxySettings};
use crate::workload_api::WorkloadApi;
use crate::x509::{self, X509Cache};

/// Settings of the agent.
pub struct AgentSettings {
    /// Base URL of the server, such as `https://mayfly.example:8750`.
    pub server: String,
    /// One-time join token, needed only when the data directory contains no valid credential.
    pub join_token: Option<SecretString>,
    /// Directory that keeps the agent's credential across restarts.
    pub data_dir: PathBuf,
    /// Path of the Workload API socket.
    pub socket: PathBuf,
    /// Path of the HTTP credential socket (`POST /v1/credentials`). The default lies in the data
    /// directory (mode 0700), which other users cannot enter.
    pub http_socket: PathBuf,
    /// PEM file of the CA certificates that an HTTPS server's certificate must chain to; the
    /// system roots when absent.
    pub server_ca: Option<PathBuf>,
    /// Timeout of each request to the server.
    pub server_timeout: Duration,
    /// How often the JWT and X.509 bundles are fetched from the server.
    pub bundle_refresh: Duration,
    /// Maximum number of cached JWT-SVIDs, and separately of cached X.509-SVIDs.
    pub max_cached_svids: usize,
    /// Largest executable that is hashed for attestation, in bytes.
    pub max_hashed_executable_bytes: u64,
    /// The credential-injecting proxy's settings; no proxy runs when absent.
    pub proxy: Option<ProxySettings>,
}

impl AgentSettings {
    /// Builds settings with the defaults: a 5 second server timeout, a bundle refresh every 30
    /// seconds, 4,096 cached SVIDs, executables hashed up to 256 MiB and the HTTP credential
    /// socket at `<data_dir>/credential.sock`.
    pub fn new(server: String, data_dir: PathBuf, socket: PathBuf) -> AgentSettings {
        AgentSettings {
            server,
            join_token: None,
            http_socket: data_dir.join("credential.sock"),
            data_dir,
            socket,
            server_ca: None,
            server_timeout: Duration::from_secs(5),
            bundle_refresh: Duration::from_secs(30),
            max_cached_svids: 4096,
            max_hashed_executable_bytes: 256 * 1024 * 1024,
            proxy: None,
        }
    }
}

/// Errors while starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The agent could not establish its identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The HTTP client for the server could not be built.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The data directory or the socket could not be set up.
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    /// The HTTP credential socket could not be bound.
    #[error("http_socket: {0}")]
    HttpSocket(#[from] mayfly_server::http::ListenError),
    /// The proxy could not be started.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The Workload API socket could not be bound.
    #[error("socket: {0}")]
    Socket(mayfly_server::http::ListenError),
    /// A file that is not a socket is at a socket path. The agent never deletes such a file.
    #[error(
        "{setting} {path}: a file that is not a socket is in the way; move it or choose another {setting} path"
    )]
    NotASocket {
        setting: &'static str,
        path: PathBuf,
    },
}

/// A started agent; dropping it does not stop it, `shutdown` does.
pub struct RunningAgent {
    pub identity: Arc<Identity>,
    pub cache: Arc<SvidCache>,
    /// The proxy's address, CA bundle and event spool, when the proxy runs.
    pub proxy: Option<ProxyHandle>,
    tasks: Vec<JoinHandle<()>>,
}

/// The running proxy's address, CA bundle and event spool.
pub struct ProxyHandle {
    /// The address the proxy listens on (with the port the system chose for port 0).
    pub address: std::net::SocketAddr,
    /// The interception CA bundle file.
    pub ca_bundle: PathBuf,
    /// The injection event spool.
    pub events: Arc<crate::proxy::events::InjectionEvents>,
}

impl RunningAgent {
    /// Stops the socket and the background tasks.
    pub fn shutdown(self) {
        for task in self.tasks {
            task.abort();
        }
    }

    /// Waits until the Workload API server stops.
    pub async fn wait(mut self) {
        if let Some(server) = self.tasks.pop() {
            let _ = server.await;
        }
        self.shutdown();
    }
}

/// Starts the agent and returns once its socket accepts connections.
pub async fn start(settings: AgentSettings) -> Result<RunningAgent, StartError> {
    let io_error = |path: &PathBuf| {
        let path = path.clone();
        move |error: std::io::Error| StartError::Io {
            path,
            reason: error.to_string(),
        }
    };
    std::fs::create_dir_all(&settings.data_dir).map_err(io_error(&settings.data_dir))?;
    std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_error(&settings.data_dir))?;
    // Checked before joining, so that a mistyped path fails the start without spending the
    // join token.
    reject_non_socket("--socket", &settings.socket)?;
    reject_non_socket("--http-socket", &settings.http_socket)?;

    let server_ca = match &settings.server_ca {
        Some(path) => Some(std::fs::read(path).map_err(io_error(path))?),
        None => None,
    };
    let client = ServerClient::new(
        &settings.server,
        settings.server_timeout,
        server_ca.as_deref(),
    )?;
    let identity =
        Identity::establish(&client, &settings.data_dir, settings.join_token.as_ref()).await?;
    let trust_domain = identity.trust_domain().await;

    // The first bundle is fetched before the socket opens, so that FetchJWTBundles can send it
    // at once.
    let first_bundle = match client.jwks().await {
        Ok(discovery) => Some(bundles::bundle_from_jwks(&trust_domain, &discovery)),
        Err(error) => {
            tracing::warn!(error = %error, "fetching the first JWT bundle failed; retrying in the background");
            None
        }
    };
    let (bundle_sender, bundle_receiver) = watch::channel(first_bundle);
    let cache = Arc::new(SvidCache::new(settings.max_cached_svids));
    let bundle_task = tokio::spawn(bundles::refresh_forever(
        client.clone(),
        trust_domain,
        settings.bundle_refresh,
        bundle_sender,
        Arc::clone(&cache),
    ));
    let renew_task = tokio::spawn(Arc::clone(&identity).renew_forever(client.clone()));

    // The X.509 bundle too is fetched before the socket opens, so that the first X.509
    // messages carry it.
    let first_x509_bundle = match client
        .x509_bundle()
        .await
        .map_err(|error| error.to_string())
        .and_then(|body| x509::bundle_from(&body))
    {
        Ok(bundle) => Some(Arc::new(bundle)),
        Err(error) => {
            tracing::warn!(error = %error, "fetching the first X.509 bundle failed; retrying in the background");
            None
        }
    };
    let (x509_bundle_sender, x509_bundle_receiver) = watch::channel(first_x509_bundle);
    let x509_bundle_task = tokio::spawn(x509::refresh_bundle_forever(
        client.clone(),
        settings.bundle_refresh,
        x509_bundle_sender,
    ));

    // Replaces a socket left by an earlier run. The socket gets mode 0666, because any local
    // process may call the Workload API: what it gets is decided per caller.
    let listener = bind_unix(&settings.socket).map_err(StartError::Socket)?;

    let hasher = Arc::new(ExecutableHasher::new(settings.max_hashed_executable_bytes));
    let http_task = http_socket::serve(
        &settings.http_socket,
        CredentialSocket {
            client: client.clone(),
            identity: Arc::clone(&identity),
            hasher: Arc::clone(&hasher),
        },
    )?;

    let mut tasks = vec![bundle_task, x509_bundle_task, renew_task, http_task];
    let proxy = match &settings.proxy {
        Some(proxy_settings) => {
            let running = proxy::start(
                proxy_settings,
                client.clone(),
                Arc::clone(&identity),
                Arc::clone(&hasher),
                &settings.data_dir,
            )
            .await?;
            tasks.extend(running.tasks);
            Some(ProxyHandle {
                address: running.address,
                ca_bundle: running.ca_bundle,
                events: running.events,
            })
        }
        None => None,
    };

    let service = WorkloadApi {
        client,
        identity: Arc::clone(&identity),
        cache: Arc::clone(&cache),
        hasher,
        bundles: bundle_receiver,
        x509: Arc::new(X509Cache::new(settings.max_cached_svids)),
        x509_bundles: x509_bundle_receiver,
    };
    let incoming = UnixListenerStream::new(listener).map(|stream| stream.map(PeerStream::accept));
    let socket = settings.socket.clone();
    let server_task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(SpiffeWorkloadApiServer::new(service))
            .serve_with_incoming(incoming)
            .await;
        if let Err(error) = served {
            tracing::error!(socket = %socket.display(), error = %error, "the Workload API server stopped");
        }
    });
    tracing::info!(socket = %settings.socket.display(), http_socket = %settings.http_socket.display(), "agent serving the SPIFFE Workload API and the HTTP credential endpoint");
    // The Workload API server goes last: `wait` waits on it.
    tasks.push(server_task);
    Ok(RunningAgent {
        identity,
        cache,
        proxy,
        tasks,
    })
}

/// Fails when a file other than a socket is at `path`. `bind_unix` makes the same check, but
/// its message names the server's setting.
fn reject_non_socket(setting: &'static str, path: &std::path::Path) -> Result<(), StartError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.file_type().is_socket() => Err(StartError::NotASocket {
            setting,
            path: path.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

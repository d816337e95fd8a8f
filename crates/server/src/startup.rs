//! Starting and stopping a server.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use mayfly_crypto::kek::KeyEncryptionKey;
use mayfly_domain::spiffe::TrustDomain;
use mayfly_store::{SqliteStore, Store};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api;
use crate::audit_log::{self, AuditWriter, Checkpointer};
use crate::auth::Role;
use crate::clock;
use crate::geoip::GeoIp;
use crate::http;
use crate::keys::KeyRing;
use crate::settings::{DEV_TRUST_DOMAIN, Settings};
use crate::state::{AppState, SharedState, algorithms_in_use};
use crate::x509_ca::X509Ca;

/// Name of the database file in the data directory.
const DATABASE_FILE: &str = "mayfly.db";
/// Name of the admin token file written at first start.
const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Name of the key-encryption key file a dev server generates.
const DEV_KEK_FILE: &str = "kek";
/// Metadata key of the key-encryption key's fingerprint.
const KEK_FINGERPRINT_META: &str = "kek_fingerprint";

/// A started server.
pub struct RunningServer {
    /// Address the API listens on.
    pub addr: SocketAddr,
    /// Path of the workload socket.
    pub socket_path: PathBuf,
    /// The admin token created at first start; `None` when the data directory already had one.
    pub first_admin_token: Option<String>,
    pub state: SharedState,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    /// Open lock file; the kernel releases the lock when it is closed.
    _data_dir_lock: std::fs::File,
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight requests finish, writes a last checkpoint and
    /// closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for listener in self.listeners {
            let _ = listener.await;
        }
        for task in &self.background {
            task.abort();
        }
        self.state.streams.stop();
        self.state.notifications.stop();
        if let Err(error) = self.state.checkpoints.checkpoint().await {
            tracing::warn!(error = %error, "writing the final audit checkpoint failed");
        }
        self.state.store.close().await;
        let _ = std::fs::remove_file(&self.socket_path);
        tracing::info!("server stopped");
    }
}

/// Runs a server until SIGINT or SIGTERM, printing the first admin token.
pub async fn run(settings: Settings, apply: Option<PathBuf>) -> anyhow::Result<()> {
    let server = start(settings, apply).await?;
    if let Some(token) = &server.first_admin_token {
        let path = server.state.settings.data_dir.join(ADMIN_TOKEN_FILE);
        println!(
            "Admin token (shown once, also saved to {} with mode 0600):\n\n    {token}\n",
            path.display()
        );
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// Starts a server and returns once it is ready to serve.
pub async fn start(
    mut settings: Settings,
    apply: Option<PathBuf>,
) -> anyhow::Result<RunningServer> {
    settings.validate()?;
    let trust_domain = trust_domain(&settings)?;
    let geoip = settings
        .geoip_database
        .as_deref()
        .map(GeoIp::open)
        .transpose()?;
    create_private_dir(&settings.data_dir)?;
    let data_dir_lock = lock_data_dir(&settings.data_dir)?;

    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&settings.data_dir.join(DATABASE_FILE))
            .await
            .with_context(|| format!("opening the database in {}", settings.data_dir.display()))?,
    );
    let kek = load_kek(&settings, store.as_ref()).await?;

    // Bound now, so a port in use fails the start early, but listening only once the admin
    // token file and the --apply file are in place: a client that connects finds both.
    let tcp_socket = bind_tcp(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    settings.listen = tcp_socket.local_addr()?;
    let tls = settings.tls.as_ref().map(http::tls_acceptor).transpose()?;
    let socket_path = settings.workload_socket_path();
    let unix_listener = http::bind_unix(&socket_path)?;

    let keys = KeyRing::load(
        store.clone(),
        kek,
        settings.key_rotation_period.as_duration(),
        clock::now(),
    )
    .await?;
    let x509 = X509Ca::load(
        store.clone(),
        keys.clone(),
        trust_domain.to_string(),
        settings.x509_ca_ttl.as_duration(),
        settings.x509_ca_publish_ahead.as_duration(),
        clock::now(),
    )
    .await?;
    let checkpoints = Checkpointer::new(
        store.clone(),
        keys.clone(),
        settings.checkpoint_every_events as usize,
    );
    let audit = AuditWriter::start(store.clone(), checkpoints.clone())
        .context("starting the audit writer thread")?;
    let mut app_state = AppState::new(
        settings.clone(),
        store.clone(),
        keys.clone(),
        x509,
        audit,
        checkpoints.clone(),
        trust_domain,
        metrics_handle(),
    );
    app_state.geoip = geoip;
    let state: SharedState = Arc::new(app_state);
    state.reload_config().await?;
    if state.geoip.is_none() {
        // Such resources were applied while a database was configured. They still fail closed:
        // geo conditions deny every request and location rules treat every country as unknown.
        for resource in state
            .config()
            .config
            .resources()
            .iter()
            .filter(|resource| resource.needs_location())
        {
            tracing::warn!(
                kind = %resource.kind(),
                name = %resource.name(),
                "resource needs the location of source addresses, but no geoip_database is configured"
            );
        }
    }

    let first_admin_token = bootstrap_admin_token(&state).await?;
    if let Some(path) = apply {
        apply_file(&state, &path).await?;
    }

    let listener = tcp_socket
        .listen(1024)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let (shutdown, shutdown_signal) = watch::channel(false);
    let listeners = vec![
        tokio::spawn(http::serve_tcp(
            listener,
            tls,
            api::router(state.clone()),
            shutdown_signal.clone(),
        )),
        tokio::spawn(http::serve_unix(
            unix_listener,
            api::workload_router(state.clone()),
            shutdown_signal,
        )),
    ];
    let background = vec![
        tokio::spawn(rotate_keys(state.clone())),
        tokio::spawn(rotate_x509_authorities(state.clone())),
        tokio::spawn(poll_config(state.clone())),
        tokio::spawn(audit_log::run_checkpoint_timer(
            checkpoints,
            settings.checkpoint_interval.as_duration(),
        )),
        tokio::spawn(audit_log::run_purge(
            state.clone(),
            settings.audit_retention_days,
        )),
        tokio::spawn(crate::alerts::run(state.clone())),
    ];

    state.set_ready(true);
    tracing::info!(
        listen = %settings.listen,
        tls = settings.tls.is_some(),
        issuer = %state.issuer,
        trust_domain = %state.trust_domain,
        workload_socket = %socket_path.display(),
        data_dir = %settings.data_dir.display(),
        "mayfly server ready"
    );
    Ok(RunningServer {
        addr: settings.listen,
        socket_path,
        first_admin_token,
        state,
        shutdown,
        listeners,
        background,
        _data_dir_lock: data_dir_lock,
    })
}

fn trust_domain(settings: &Settings) -> anyhow::Result<TrustDomain> {
    let name = match (&settings.trust_domain, settings.dev) {
        (Some(name), _) => name.clone(),
        (None, true) => DEV_TRUST_DOMAIN.to_string(),
        (None, false) => bail!(
            "trust_domain is not set: pass --trust-domain or set trust_domain in the settings file"
        ),
    };
    TrustDomain::parse(&name).with_context(|| "invalid trust_domain setting")
}

/// Takes an exclusive lock on `<data_dir>/lock`, so a second server cannot open the same database
/// and replace the first one's workload socket.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(error) if error == rustix::io::Errno::WOULDBLOCK => bail!(
            "the data directory {} is in use by another mayfly server; stop it or choose another --data-dir",
            data_dir.display()
        ),
        Err(error) => Err(anyhow::anyhow!(
            "locking {} failed: {error}",
            path.display()
        )),
    }
}

fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the data directory {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Loads the key-encryption key from a file or variable, or in dev mode from (or into) the data
/// directory, and checks it against the one the data directory was created with.
async fn load_kek(settings: &Settings, store: &dyn Store) -> anyhow::Result<KeyEncryptionKey> {
    let kek = if let Some(path) = &settings.kek_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the key-encryption key file {}", path.display()))?;
        KeyEncryptionKey::parse(text.trim())
            .with_context(|| format!("invalid key-encryption key in {}", path.display()))?
    } else if let Some(variable) = &settings.kek_env {
        let text = std::env::var(variable)
            .with_context(|| format!("environment variable {variable} (kek_env) is not set"))?;
        KeyEncryptionKey::parse(text.trim())
            .with_context(|| format!("invalid key-encryption key in {variable}"))?
    } else if settings.dev {
        let path = settings.data_dir.join(DEV_KEK_FILE);
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            KeyEncryptionKey::parse(text.trim())
                .with_context(|| format!("invalid key-encryption key in {}", path.display()))?
        } else {
            let kek = KeyEncryptionKey::generate()?;
            write_private_file(&path, kek.to_base64().as_bytes())?;
            kek
        }
    } else {
        bail!(
            "no key-encryption key: set kek_file or kek_env (generate one with: head -c 32 /dev/urandom | base64)"
        );
    };

    let fingerprint = kek.fingerprint();
    match store.get_meta(KEK_FINGERPRINT_META).await? {
        Some(stored) if stored != fingerprint => bail!(
            "the key-encryption key (fingerprint {fingerprint}) is not the one this data directory was created with (fingerprint {stored})"
        ),
        Some(_) => {}
        None => store.set_meta(KEK_FINGERPRINT_META, &fingerprint).await?,
    }
    Ok(kek)
}

/// Binds a TCP socket to `address` without listening yet.
fn bind_tcp(address: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    Ok(socket)
}

/// Creates the first admin token when the store has none.
async fn bootstrap_admin_token(state: &AppState) -> anyhow::Result<Option<String>> {
    if !state.store.list_admin_tokens().await?.is_empty() {
        return Ok(None);
    }
    let (record, token) = api::new_admin_token_for_bootstrap("bootstrap", Role::Admin)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let audit = api::admin_token_event("system", "create", &record);
    state.store.insert_admin_token(&record, vec![audit]).await?;
    let path = state.settings.data_dir.join(ADMIN_TOKEN_FILE);
    write_private_file(&path, format!("{}\n", token.expose()).as_bytes())?;
    Ok(Some(token.expose().to_string()))
}

async fn apply_file(state: &AppState, path: &Path) -> anyhow::Result<()> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    let config = mayfly_domain::config_file::parse_with_variables(&name, &text, |variable| {
        std::env::var(variable).ok()
    })?;
    let body = api::ApplyBody {
        config,
        prune: false,
        dry_run: false,
    };
    let changes = api::apply_config(state, &format!("server --apply {name}"), body)
        .await
        .map_err(|error| anyhow::anyhow!("applying {name} failed: {error}"))?;
    let changed = changes
        .iter()
        .filter(|change| change.action != crate::changes::Action::Unchanged)
        .count();
    tracing::info!(file = %name, changed, total = changes.len(), "applied configuration file");
    Ok(())
}

fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Returns the handle of the process-wide Prometheus recorder, which all servers started in one
/// process share.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "mayfly_credential_issuance_seconds".to_string(),
                    ),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .map(|builder| builder.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

async fn rotate_keys(state: SharedState) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticker.tick().await;
        let algorithms = algorithms_in_use(&state.config().config);
        if let Err(error) = state.keys.tick(clock::now(), &algorithms).await {
            tracing::warn!(error = %error, "signing key rotation step failed; retrying in a minute");
        }
    }
}

async fn rotate_x509_authorities(state: SharedState) {
    let mut ticker = tokio::time::interval(state.x509.tick_interval());
    let mut failing = false;
    loop {
        ticker.tick().await;
        match state.x509.tick(clock::now()).await {
            Ok(()) if failing => {
                tracing::info!("X.509 CA rotation step recovered");
                failing = false;
            }
            Ok(()) => {}
            Err(error) if !failing => {
                tracing::warn!(error = %error, "X.509 CA rotation step failed; retrying");
                failing = true;
            }
            Err(error) => tracing::debug!(error = %error, "X.509 CA rotation step failed again"),
        }
    }
}

/// Picks up configuration changes made through another replica sharing the store.
async fn poll_config(state: SharedState) {
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut failing = false;
    loop {
        ticker.tick().await;
        match state.reload_config().await {
            Ok(()) if failing => {
                tracing::info!("configuration reload recovered");
                failing = false;
            }
            Ok(()) => {}
            Err(error) if !failing => {
                tracing::warn!(error = %error, "configuration reload failed; retrying");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

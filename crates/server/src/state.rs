//! State shared by every request handler and background task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use mayfly_crypto::signing::Algorithm;
use mayfly_domain::config::Config;
use mayfly_domain::resources::{CredentialProvider, Resource, ResourceKind, SigningAlgorithm};
use mayfly_domain::spiffe::TrustDomain;
use mayfly_store::{Store, StoreError};

use crate::audit_log::{AuditWriter, Checkpointer};
use crate::evidence::EvidenceCache;
use crate::evidence::oidc::OidcVerifier;
use crate::evidence::unix::ExecutableHasher;
use crate::geoip::GeoIp;
use crate::keys::KeyRing;
use crate::log_streams::{RetryPolicy, StreamManager};
use crate::notifications::NotificationManager;
use crate::providers::UpstreamClient;
use crate::settings::Settings;
use crate::x509_ca::X509Ca;

/// The configuration in force and the store version it was read at.
pub struct ConfigSnapshot {
    pub config: Config,
    pub version: i64,
}

pub struct AppState {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyRing>,
    /// The trust domain's SPIFFE X.509 CA.
    pub x509: Arc<X509Ca>,
    pub audit: AuditWriter,
    pub checkpoints: Arc<Checkpointer>,
    pub evidence_cache: EvidenceCache,
    pub oidc: OidcVerifier,
    /// Credentials from upstream token services and the client that fetches them.
    pub upstream: UpstreamClient,
    pub hasher: Arc<ExecutableHasher>,
    pub trust_domain: TrustDomain,
    pub issuer: String,
    /// Serializes configuration writes made through this server, so each is validated against
    /// the configuration it will replace.
    pub admin_writes: tokio::sync::Mutex<()>,
    /// Lock between credential decisions and configuration writes. A credential request locks it
    /// for reading from its decision until its audit event is written, and a configuration write
    /// locks it for writing while it puts its result in force. So once a write returns, no
    /// decision made on the configuration before it is still running.
    pub issuance: tokio::sync::RwLock<()>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The shipper tasks of the configured log streams.
    pub streams: StreamManager,
    /// The sender tasks of the configured notification targets.
    pub notifications: NotificationManager,
    /// The database from the `geoip_database` setting, when one is configured.
    pub geoip: Option<GeoIp>,
    config: RwLock<Arc<ConfigSnapshot>>,
    ready: AtomicBool,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        keys: Arc<KeyRing>,
        x509: Arc<X509Ca>,
        audit: AuditWriter,
        checkpoints: Arc<Checkpointer>,
        trust_domain: TrustDomain,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> AppState {
        let issuer = settings.issuer_url();
        let hasher = Arc::new(ExecutableHasher::new(settings.max_hashed_executable_bytes));
        let retry = RetryPolicy {
            max: settings.log_stream_max_backoff.as_duration(),
            alert_after: settings.log_stream_alert_after.as_duration(),
            ..RetryPolicy::default()
        };
        let streams = StreamManager::new(store.clone(), retry);
        let notifications = NotificationManager::new(store.clone(), keys.clone(), retry);
        AppState {
            settings,
            store,
            keys,
            x509,
            audit,
            checkpoints,
            evidence_cache: EvidenceCache::default(),
            oidc: OidcVerifier::new(),
            upstream: UpstreamClient::new(),
            hasher,
            trust_domain,
            issuer,
            admin_writes: tokio::sync::Mutex::new(()),
            issuance: tokio::sync::RwLock::new(()),
            metrics,
            streams,
            notifications,
            geoip: None,
            config: RwLock::new(Arc::new(ConfigSnapshot {
                config: Config::default(),
                version: -1,
            })),
            ready: AtomicBool::new(false),
        }
    }

    /// Returns the configuration in force.
    pub fn config(&self) -> Arc<ConfigSnapshot> {
        match self.config.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Reads the configuration from the store when its version changed, makes sure every signing
    /// algorithm it uses has an active key, empties the evidence caches when a trust provider
    /// changed, and then puts the configuration in force.
    pub async fn reload_config(&self) -> Result<(), StoreError> {
        let version = self.store.config_version().await?;
        if version == self.config().version {
            return Ok(());
        }
        let records = self.store.list_all_resources().await?;
        let mut resources = Vec::with_capacity(records.len());
        let mut enabled = Vec::new();
        for record in records {
            let Some(kind) = ResourceKind::parse(&record.kind) else {
                tracing::warn!(kind = %record.kind, name = %record.name, "skipping a stored resource of unknown kind");
                continue;
            };
            let mut spec = record.spec;
            if kind == ResourceKind::LogStream
                && let Err(error) =
                    crate::log_streams::secrets::open_spec(self.keys.kek(), &record.name, &mut spec)
            {
                tracing::error!(name = %record.name, error = %error, "skipping a log stream whose secret cannot be opened");
                continue;
            }
            match Resource::from_json(kind, spec) {
                Ok(resource) => resources.push(resource),
                Err(error) => {
                    tracing::error!(kind = %record.kind, name = %record.name, error = %error, "skipping a stored resource that no longer parses");
                    continue;
                }
            }
            if kind == ResourceKind::ServerWorkload {
                enabled.push((record.name, record.enabled));
            }
        }
        let mut config = Config::from_resources(resources);
        config.enabled = enabled.into_iter().collect();

        // Keys come first, so a configuration is put in force only after every algorithm it uses
        // has an active key (unless generating one failed), even while another reload is running.
        let algorithms = algorithms_in_use(&config);
        if let Err(error) = self.keys.tick(crate::clock::now(), &algorithms).await {
            tracing::error!(error = %error, "preparing signing keys for the configured algorithms failed");
        }

        let previous = self.config();
        if previous.config.trust_providers != config.trust_providers {
            self.evidence_cache.clear();
            self.oidc.clear();
        }
        let snapshot = Arc::new(ConfigSnapshot { config, version });
        {
            let mut guard = match self.config.write() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            // A slower concurrent reload must not replace a newer configuration with an older one.
            if guard.version < version {
                *guard = snapshot;
            }
        }

        let installed = self.config();
        self.streams.reconcile(&installed.config).await;
        self.notifications.reconcile(&installed.config).await;
        Ok(())
    }
}

/// Lists ES256 (always: it signs checkpoints) and every algorithm a credential provider uses.
pub fn algorithms_in_use(config: &Config) -> Vec<Algorithm> {
    let mut algorithms = vec![Algorithm::ES256];
    for provider in config.credential_providers.values() {
        let algorithm = match provider {
            CredentialProvider::JwtSvid(jwt) => signing_algorithm(jwt.algorithm),
            CredentialProvider::OauthClientCredentials(oauth)
                if !oauth.client_auth.uses_secret() =>
            {
                signing_algorithm(oauth.algorithm)
            }
            CredentialProvider::FederatedTokenExchange(federated) => {
                signing_algorithm(federated.algorithm)
            }
            _ => continue,
        };
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    algorithms
}

/// Maps the configuration's algorithm names to the crypto crate's.
pub fn signing_algorithm(algorithm: SigningAlgorithm) -> Algorithm {
    match algorithm {
        SigningAlgorithm::ES256 => Algorithm::ES256,
        SigningAlgorithm::RS256 => Algorithm::RS256,
        SigningAlgorithm::PS256 => Algorithm::PS256,
    }
}

pub type SharedState = Arc<AppState>;

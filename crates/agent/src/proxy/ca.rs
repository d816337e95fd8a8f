//! The interception CA: the agent's own ECDSA P-256 CA that signs short-lived leaf certificates
//! for the server workloads whose TLS the proxy terminates. It is separate from the SPIFFE X.509
//! CA, and name-constrained (RFC 5280 permitted subtrees) to the server workloads' hosts.
//!
//! When the hosts outgrow the constraints, the agent issues a new CA for the current hosts. The
//! previous CA stays in the bundle file until every leaf it signed has expired, so clients that
//! loaded the bundle earlier keep working until they reload it.
//!
//! Files: `<data_dir>/proxy-ca/key.pem` (the active CA's key, mode 0600),
//! `<data_dir>/proxy-ca/state.json` (the active and retired CA certificates) and the bundle
//! (the CA certificates that clients trust, mode 0644).

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

/// Lifetime of a leaf certificate. A cached leaf is replaced once half of it has passed.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(3600);

/// Lifetime of an interception CA certificate.
/// NOTE: the agent does not renew a CA that nears this age. Only a new server workload host
/// makes it issue a new one, so a CA that stays in use for a whole year expires.
const CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Leaves and CAs are valid from this long before they are issued, for clients whose clocks
/// run behind.
const BACKDATE: Duration = Duration::from_secs(300);

/// Errors of the interception CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file of the CA could not be read or written.
    #[error("interception CA file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A certificate or key could not be generated or parsed.
    #[error("interception CA: {0}")]
    Certificate(String),
    /// The host is outside the active CA's name constraints.
    #[error("interception CA does not cover host {host:?}: it is not an https server workload")]
    NotCovered { host: String },
}

#[derive(Serialize, Deserialize)]
struct StoredState {
    active: StoredCa,
    #[serde(default)]
    retired: Vec<RetiredCa>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredCa {
    common_name: String,
    cert_pem: String,
    hosts: Vec<String>,
}

#[derive(Clone, Serialize, Deserialize)]
struct RetiredCa {
    cert_pem: String,
    /// The last leaf this CA signed expires by then; the CA leaves the bundle afterwards.
    remove_after: Timestamp,
}

struct ActiveCa {
    stored: StoredCa,
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

struct Leaf {
    config: Arc<ServerConfig>,
    renew_after: Timestamp,
}

struct State {
    active: ActiveCa,
    retired: Vec<RetiredCa>,
    leaves: HashMap<String, Leaf>,
}

/// The interception CA and its cache of leaf certificates.
pub struct InterceptionCa {
    directory: PathBuf,
    bundle: PathBuf,
    agent: String,
    state: Mutex<State>,
}

impl InterceptionCa {
    /// Loads the CA from `<data_dir>/proxy-ca`, or creates one for `hosts`, and writes the
    /// bundle to `bundle`.
    pub fn open(
        data_dir: &Path,
        bundle: PathBuf,
        agent: &str,
        hosts: &[String],
    ) -> Result<InterceptionCa, CaError> {
        let directory = data_dir.join("proxy-ca");
        std::fs::create_dir_all(&directory).map_err(file_error(&directory))?;
        let state_path = directory.join("state.json");
        let key_path = directory.join("key.pem");
        let state = match std::fs::read_to_string(&state_path) {
            Ok(text) => {
                let stored: StoredState =
                    serde_json::from_str(&text).map_err(|error| CaError::File {
                        path: state_path.clone(),
                        reason: format!("invalid JSON: {error}"),
                    })?;
                let key_pem = zeroize::Zeroizing::new(
                    std::fs::read_to_string(&key_path).map_err(file_error(&key_path))?,
                );
                let key = KeyPair::from_pem(&key_pem).map_err(|error| {
                    CaError::Certificate(format!("{}: {error}", key_path.display()))
                })?;
                let active = restore(stored.active, key)?;
                State {
                    active,
                    retired: stored.retired,
                    leaves: HashMap::new(),
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => State {
                active: generate(agent, hosts)?,
                retired: Vec::new(),
                leaves: HashMap::new(),
            },
            Err(error) => return Err(file_error(&state_path)(error)),
        };
        let ca = InterceptionCa {
            directory,
            bundle,
            agent: agent.to_string(),
            state: Mutex::new(state),
        };
        {
            let state = ca.lock()?;
            ca.save(&state)?;
        }
        ca.cover(hosts)?;
        Ok(ca)
    }

    /// Returns the path of the CA bundle file.
    pub fn bundle_path(&self) -> &Path {
        &self.bundle
    }

    /// Makes sure the active CA permits every host in `hosts`: issues a new CA for exactly
    /// `hosts` when one is missing, and drops retired CAs whose leaves have all expired.
    pub fn cover(&self, hosts: &[String]) -> Result<(), CaError> {
        let mut state = self.lock()?;
        let now = Timestamp::now();
        let retired_before = state.retired.len();
        state.retired.retain(|retired| retired.remove_after > now);
        let missing = hosts.iter().any(|host| {
            !state
                .active
                .stored
                .hosts
                .contains(&host.to_ascii_lowercase())
        });
        if missing {
            let next = generate(&self.agent, hosts)?;
            let previous = std::mem::replace(&mut state.active, next);
            state.retired.push(RetiredCa {
                cert_pem: previous.stored.cert_pem,
                remove_after: now + signed(LEAF_LIFETIME),
            });
            state.leaves.clear();
            tracing::info!(hosts = ?hosts, "issued a new proxy interception CA for the server workloads' hosts; the previous one stays in the bundle until its leaves expire");
        }
        if missing || state.retired.len() != retired_before {
            self.save(&state)?;
        }
        Ok(())
    }

    /// Returns the TLS server configuration presenting a leaf certificate for `host`, issuing
    /// the leaf when none is cached or the cached one is past half its lifetime.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let host = host.to_ascii_lowercase();
        let now = Timestamp::now();
        let mut state = self.lock()?;
        if let Some(leaf) = state.leaves.get(&host)
            && leaf.renew_after > now
        {
            return Ok(Arc::clone(&leaf.config));
        }
        if !state.active.stored.hosts.contains(&host) {
            return Err(CaError::NotCovered { host });
        }
        let config = Arc::new(issue_leaf(&state.active, &host)?);
        state.leaves.insert(
            host,
            Leaf {
                config: Arc::clone(&config),
                renew_after: now + signed(LEAF_LIFETIME / 2),
            },
        );
        Ok(config)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, CaError> {
        self.state
            .lock()
            .map_err(|_| CaError::Certificate("the CA state lock is poisoned".to_string()))
    }

    /// Writes the key, the state and the bundle, each to a temporary file renamed into place.
    fn save(&self, state: &State) -> Result<(), CaError> {
        let key_pem = zeroize::Zeroizing::new(state.active.issuer.key().serialize_pem());
        write_atomic(&self.directory.join("key.pem"), key_pem.as_bytes(), 0o600)?;
        let stored = StoredState {
            active: state.active.stored.clone(),
            retired: state.retired.clone(),
        };
        let text = serde_json::to_string_pretty(&stored)
            .map_err(|error| CaError::Certificate(error.to_string()))?;
        write_atomic(&self.directory.join("state.json"), text.as_bytes(), 0o600)?;
        let mut bundle = state.active.stored.cert_pem.clone();
        for retired in &state.retired {
            bundle.push_str(&retired.cert_pem);
        }
        write_atomic(&self.bundle, bundle.as_bytes(), 0o644)
    }
}

fn signed(duration: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::ZERO)
}

fn file_error(path: &Path) -> impl Fn(std::io::Error) -> CaError + '_ {
    move |error| CaError::File {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

fn certificate_error(error: rcgen::Error) -> CaError {
    CaError::Certificate(error.to_string())
}

/// Builds the CA's parameters. A leaf's issuer needs only the subject, key usages and key
/// identifier method, so the same parameters rebuild the issuer of a stored CA.
fn ca_params(common_name: &str, hosts: &[String]) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Mayfly agent");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(name_constraints(hosts));
    params
}

/// Permits exactly the hosts' DNS names and IP addresses. RFC 5280 leaves a name type
/// unconstrained when no subtree of its type is listed, so a type without hosts is shut off.
/// For IP addresses, all of IPv4 and IPv6 is excluded. For DNS names, only the reserved
/// `invalid` domain (RFC 6761) is permitted.
fn name_constraints(hosts: &[String]) -> NameConstraints {
    let mut permitted = Vec::new();
    let mut excluded = Vec::new();
    let mut any_dns = false;
    let mut any_ip = false;
    for host in hosts {
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                    ip, prefix,
                )));
                any_ip = true;
            }
            Err(_) => {
                permitted.push(GeneralSubtree::DnsName(host.to_ascii_lowercase()));
                any_dns = true;
            }
        }
    }
    if !any_dns {
        permitted.push(GeneralSubtree::DnsName("invalid".to_string()));
    }
    if !any_ip {
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])));
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])));
    }
    NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: excluded,
    }
}

fn generate(agent: &str, hosts: &[String]) -> Result<ActiveCa, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(certificate_error)?;
    let common_name = format!(
        "Mayfly proxy interception CA ({agent}, {})",
        Timestamp::now().as_second()
    );
    let mut hosts: Vec<String> = hosts.iter().map(|host| host.to_ascii_lowercase()).collect();
    hosts.sort();
    hosts.dedup();
    let mut params = ca_params(&common_name, &hosts);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_LIFETIME;
    let certificate = params.self_signed(&key).map_err(certificate_error)?;
    let stored = StoredCa {
        common_name,
        cert_pem: certificate.pem(),
        hosts,
    };
    Ok(ActiveCa {
        der: certificate.der().clone(),
        issuer: Issuer::new(params, key),
        stored,
    })
}

fn restore(stored: StoredCa, key: KeyPair) -> Result<ActiveCa, CaError> {
    use rustls::pki_types::pem::PemObject;

    let der = CertificateDer::from_pem_slice(stored.cert_pem.as_bytes())
        .map_err(|error| CaError::Certificate(format!("stored CA certificate: {error}")))?;
    let params = ca_params(&stored.common_name, &stored.hosts);
    Ok(ActiveCa {
        der,
        issuer: Issuer::new(params, key),
        stored,
    })
}

fn issue_leaf(ca: &ActiveCa, host: &str) -> Result<ServerConfig, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(certificate_error)?;
    let mut params = CertificateParams::new(vec![host.to_string()]).map_err(certificate_error)?;
    params.distinguished_name = DistinguishedName::new();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + LEAF_LIFETIME;
    let leaf = params
        .signed_by(&key, &ca.issuer)
        .map_err(certificate_error)?;
    let private_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| CaError::Certificate(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der.clone()], private_key)
        .map_err(|error| CaError::Certificate(error.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(file_error(&temporary))?;
    file.write_all(contents).map_err(file_error(&temporary))?;
    file.sync_all().map_err(file_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(file_error(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn new_host_issues_new_ca_and_keeps_old() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        let ca = InterceptionCa::open(
            dir.path(),
            bundle.clone(),
            "web-1",
            &["a.example".to_string()],
        )
        .unwrap();
        assert!(ca.server_config("a.example").is_ok());
        assert!(matches!(
            ca.server_config("b.example"),
            Err(CaError::NotCovered { .. })
        ));
        let first = std::fs::read_to_string(&bundle).unwrap();
        assert_eq!(first.matches("BEGIN CERTIFICATE").count(), 1);

        ca.cover(&["a.example".to_string(), "b.example".to_string()])
            .unwrap();
        assert!(ca.server_config("b.example").is_ok());
        let second = std::fs::read_to_string(&bundle).unwrap();
        assert_eq!(second.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(
            second.contains(first.trim()),
            "the old CA stays in the bundle"
        );
    }

    #[test]
    fn reopened_ca_keeps_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        let hosts = ["127.0.0.1".to_string()];
        drop(InterceptionCa::open(dir.path(), bundle.clone(), "web-1", &hosts).unwrap());
        let before = std::fs::read_to_string(&bundle).unwrap();
        let ca = InterceptionCa::open(dir.path(), bundle.clone(), "web-1", &hosts).unwrap();
        assert!(ca.server_config("127.0.0.1").is_ok());
        assert_eq!(std::fs::read_to_string(&bundle).unwrap(), before);
    }

    #[test]
    fn key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        drop(InterceptionCa::open(dir.path(), bundle.clone(), "web-1", &[]).unwrap());
        let key = std::fs::metadata(dir.path().join("proxy-ca/key.pem")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        let bundle = std::fs::metadata(&bundle).unwrap();
        assert_eq!(bundle.permissions().mode() & 0o777, 0o644);
    }
}

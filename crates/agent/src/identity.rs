//! The agent's own identity: joining with a one-time join token, keeping the short-lived
//! credential in the data directory across restarts, and renewing it at half its lifetime.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use mayfly_crypto::token::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::client::{ClientError, IssuedAgentCredential, ServerClient};

/// File in the data directory that keeps the agent's credential, mode 0600.
pub const CREDENTIAL_FILE: &str = "agent-credential.json";

/// Wait between attempts after a failed renewal.
const RENEW_RETRY: Duration = Duration::from_secs(5);

/// A stored credential is used only while it has at least this long left.
const MIN_REMAINING: Duration = Duration::from_secs(30);

/// Errors while establishing the agent's identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No usable stored credential and no join token to get one.
    #[error(
        "no valid agent credential in {path}: start the agent with --join-token from `mayfly agent-token create`"
    )]
    NeedsJoinToken { path: PathBuf },
    /// The server rejected the stored credential and no join token was given.
    #[error(
        "the server rejected the stored credential of agent {agent:?} in {path} ({detail}): the agent may have been evicted; create a join token with `mayfly agent-token create {agent}` and start the agent with --join-token, MAYFLY_JOIN_TOKEN or join_token_file"
    )]
    Rejected {
        agent: String,
        path: PathBuf,
        detail: String,
    },
    /// The server call failed.
    #[error(transparent)]
    Server(#[from] ClientError),
    /// The credential file could not be read or written.
    #[error("agent credential file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// The agent's current credential.
pub struct AgentCredential {
    pub agent: String,
    pub credential: SecretString,
    pub expires_at: Timestamp,
    pub trust_domain: String,
}

impl std::fmt::Debug for AgentCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCredential")
            .field("agent", &self.agent)
            .field("credential", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredCredential {
    agent: String,
    credential: String,
    expires_at: Timestamp,
    trust_domain: String,
}

impl Drop for StoredCredential {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.credential);
    }
}

/// The agent's identity, shared by the renewal task and the request handlers.
pub struct Identity {
    current: RwLock<AgentCredential>,
    path: PathBuf,
    /// The join token given at start when the stored credential made it unnecessary. It is used
    /// once, when the server rejects the credential while the agent runs.
    unused_join_token: std::sync::Mutex<Option<SecretString>>,
    /// Whether the server's rejection of the current credential has been logged.
    rejection_logged: std::sync::atomic::AtomicBool,
}

impl Identity {
    /// Loads the stored credential when it is still valid and renews it, which also checks that
    /// the server still accepts it. Joins with `join_token` when nothing valid is stored or the
    /// server rejects the stored credential. When the server cannot be reached, the stored
    /// credential is used unchecked.
    pub async fn establish(
        client: &ServerClient,
        data_dir: &Path,
        join_token: Option<&SecretString>,
    ) -> Result<Arc<Identity>, IdentityError> {
        let path = data_dir.join(CREDENTIAL_FILE);
        let minimum =
            jiff::SignedDuration::try_from(MIN_REMAINING).unwrap_or(jiff::SignedDuration::ZERO);
        let usable = load(&path)?.filter(|stored| stored.expires_at > Timestamp::now() + minimum);
        let mut join_token = join_token.cloned();
        let credential = match usable {
            Some(stored) => match client.renew(&stored.credential).await {
                Ok(issued) => {
                    tracing::info!(agent = %stored.agent, "renewed the stored agent credential");
                    let credential = from_issued(issued);
                    save(&path, &credential)?;
                    credential
                }
                Err(ClientError::Unauthorized { detail, .. }) => {
                    let Some(token) = join_token.take() else {
                        return Err(IdentityError::Rejected {
                            agent: stored.agent.clone(),
                            path,
                            detail,
                        });
                    };
                    tracing::warn!(agent = %stored.agent, detail = %detail, "the server rejected the stored agent credential; joining with the join token");
                    join(client, &path, &token).await?
                }
                Err(error) => {
                    tracing::warn!(agent = %stored.agent, error = %error, "checking the stored agent credential failed; using it unchecked");
                    stored
                }
            },
            None => match join_token.take() {
                Some(token) => join(client, &path, &token).await?,
                None => return Err(IdentityError::NeedsJoinToken { path }),
            },
        };
        Ok(Arc::new(Identity {
            current: RwLock::new(credential),
            path,
            unused_join_token: std::sync::Mutex::new(join_token),
            rejection_logged: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Handles the server's rejection of the current credential, reported by renewal or by a
    /// workload request. Joins with the unused join token given at start, if any. Otherwise it
    /// logs an error with the steps to re-admit the agent, once until a credential works again.
    pub async fn credential_rejected(&self, client: &ServerClient, detail: &str) {
        use std::sync::atomic::Ordering;
        let agent = self.current.read().await.agent.clone();
        let token = self
            .unused_join_token
            .lock()
            .ok()
            .and_then(|mut token| token.take());
        if let Some(token) = token {
            tracing::warn!(agent = %agent, detail = %detail, "the server rejected the agent credential; joining with the join token given at start");
            match join(client, &self.path, &token).await {
                Ok(credential) => {
                    *self.current.write().await = credential;
                    self.rejection_logged.store(false, Ordering::Relaxed);
                    return;
                }
                Err(error) => {
                    tracing::error!(agent = %agent, error = %error, "joining with the join token given at start failed");
                }
            }
        }
        if !self.rejection_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(agent = %agent, detail = %detail, "the server rejected the agent credential, so workloads get no new credentials: the agent may have been evicted; create a join token with `mayfly agent-token create {agent}` and restart the agent with it");
        }
    }

    /// Returns the current credential's secret and the agent's name.
    pub async fn credential(&self) -> (SecretString, String) {
        let current = self.current.read().await;
        (current.credential.clone(), current.agent.clone())
    }

    /// Returns the trust domain the server named when the agent joined.
    pub async fn trust_domain(&self) -> String {
        self.current.read().await.trust_domain.clone()
    }

    /// Returns when the current credential expires.
    pub async fn expires_at(&self) -> Timestamp {
        self.current.read().await.expires_at
    }

    /// Renews the credential now and stores the new one.
    pub async fn renew(&self, client: &ServerClient) -> Result<(), IdentityError> {
        let (secret, _) = self.credential().await;
        let issued = client.renew(&secret).await?;
        let credential = from_issued(issued);
        save(&self.path, &credential)?;
        *self.current.write().await = credential;
        self.rejection_logged
            .store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Renews the credential at about half its remaining lifetime, forever. A failed renewal is
    /// retried every `RENEW_RETRY`. Once the credential has expired, renewal cannot succeed and
    /// the agent needs a new join token.
    pub async fn renew_forever(self: Arc<Self>, client: ServerClient) {
        let mut failing = false;
        loop {
            let wait = if failing {
                RENEW_RETRY
            } else {
                let remaining = (self.expires_at().await - Timestamp::now()).as_secs_f64();
                Duration::from_secs_f64((remaining / 2.0).max(1.0))
            };
            tokio::time::sleep(wait).await;
            match self.renew(&client).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("agent credential renewal recovered");
                    }
                    failing = false;
                }
                Err(IdentityError::Server(ClientError::Unauthorized { detail, .. })) => {
                    self.credential_rejected(&client, &detail).await;
                    failing = true;
                }
                Err(error) => {
                    if failing {
                        tracing::debug!(error = %error, "agent credential renewal failed again");
                    } else {
                        tracing::warn!(error = %error, "agent credential renewal failed; retrying");
                    }
                    failing = true;
                }
            }
        }
    }
}

/// Joins with `join_token` and stores the new credential.
async fn join(
    client: &ServerClient,
    path: &Path,
    join_token: &SecretString,
) -> Result<AgentCredential, IdentityError> {
    let issued = client.join(join_token).await?;
    tracing::info!(agent = %issued.agent, "joined the server");
    let credential = from_issued(issued);
    save(path, &credential)?;
    Ok(credential)
}

fn from_issued(issued: IssuedAgentCredential) -> AgentCredential {
    AgentCredential {
        agent: issued.agent,
        credential: issued.credential,
        expires_at: issued.expires_at,
        trust_domain: issued.trust_domain,
    }
}

fn load(path: &Path) -> Result<Option<AgentCredential>, IdentityError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => zeroize::Zeroizing::new(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(IdentityError::File {
                path: path.to_path_buf(),
                reason: error.to_string(),
            });
        }
    };
    let stored: StoredCredential =
        serde_json::from_str(&text).map_err(|error| IdentityError::File {
            path: path.to_path_buf(),
            reason: format!("invalid JSON: {error}"),
        })?;
    Ok(Some(AgentCredential {
        agent: stored.agent.clone(),
        credential: SecretString::new(stored.credential.clone()),
        expires_at: stored.expires_at,
        trust_domain: stored.trust_domain.clone(),
    }))
}

/// Writes the credential to a temporary file with mode 0600 and renames it into place, so a
/// crash never leaves a half-written file.
fn save(path: &Path, credential: &AgentCredential) -> Result<(), IdentityError> {
    let file_error = |error: std::io::Error| IdentityError::File {
        path: path.to_path_buf(),
        reason: error.to_string(),
    };
    let stored = StoredCredential {
        agent: credential.agent.clone(),
        credential: credential.credential.expose().to_string(),
        expires_at: credential.expires_at,
        trust_domain: credential.trust_domain.clone(),
    };
    let text = zeroize::Zeroizing::new(serde_json::to_string(&stored).unwrap_or_default());
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(file_error)?;
    file.write_all(text.as_bytes()).map_err(file_error)?;
    file.sync_all().map_err(file_error)?;
    std::fs::rename(&temporary, path).map_err(file_error)?;
    Ok(())
}

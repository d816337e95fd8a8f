//! Options shared by the client subcommands: server address, admin token, data directory and CA
//! file, and how the admin token is found.

use std::path::{Path, PathBuf};

use crate::api::{ApiClient, ApiError};
use crate::secret::Secret;

/// Default address of a local server.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8750";
/// Default data directory, shared with `mayfly server --dev`.
pub const DEFAULT_DATA_DIR: &str = "./mayfly-data";
/// File in the data directory where a dev server writes its admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// A missing or unusable admin token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Neither `--token`, `MAYFLY_TOKEN` nor the data directory's token file is available.
    #[error(
        "no admin token: set MAYFLY_TOKEN or --token, or point --data-dir (MAYFLY_DATA_DIR) at the data directory of a dev server ({path} does not exist)"
    )]
    Missing { path: PathBuf },
    /// The token file exists but could not be read.
    #[error("cannot read the admin token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The token is empty after trimming.
    #[error("the admin token from {origin} is empty")]
    Empty { origin: String },
    /// The token has characters that an HTTP header cannot carry.
    #[error("the admin token from {origin} contains whitespace or control characters")]
    InvalidCharacters { origin: String },
}

/// Options naming the server: its address, its local data directory and the CA to trust. They
/// are global, so they may follow any nested subcommand (`mayfly audit list --addr ...`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerOptions {
    /// Server address.
    #[arg(long, env = "MAYFLY_ADDR", default_value = DEFAULT_ADDRESS, global = true)]
    pub addr: String,

    /// Data directory of a local server: where the admin token file and the workload socket are.
    #[arg(long, env = "MAYFLY_DATA_DIR", default_value = DEFAULT_DATA_DIR, global = true)]
    pub data_dir: PathBuf,

    /// PEM file of the CA certificates that https connections trust, instead of the system's.
    #[arg(
        long = "ca-file",
        env = "MAYFLY_CACERT",
        value_name = "PEM",
        global = true
    )]
    pub ca_file: Option<PathBuf>,
}

impl ServerOptions {
    /// Builds a client that sends `token` (or none).
    pub fn client_with_token(&self, token: Option<Secret>) -> Result<ApiClient, ApiError> {
        ApiClient::new(&self.addr, self.ca_file.as_deref(), token)
    }
}

/// Options of the admin subcommands: the server and the admin token.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOptions {
    #[command(flatten)]
    pub server: ServerOptions,

    /// Admin token; when unset, the CLI reads `<data-dir>/admin-token`.
    #[arg(long, env = "MAYFLY_TOKEN", hide_env_values = true, value_parser = parse_secret, global = true)]
    pub token: Option<Secret>,
}

impl ClientOptions {
    /// Builds a client that sends the admin token.
    pub fn admin_client(&self) -> anyhow::Result<ApiClient> {
        // An invalid address is reported before a missing token, since it is the likelier mistake.
        crate::api::parse_address(&self.server.addr)?;
        let token = resolve_admin_token(self.token.as_ref(), &self.server.data_dir)?;
        Ok(self.server.client_with_token(Some(token))?)
    }
}

fn parse_secret(text: &str) -> Result<Secret, String> {
    Ok(Secret::new(text.to_string()))
}

/// Returns the token from the flag or environment when set, else from `<data_dir>/admin-token`
/// with surrounding whitespace trimmed.
pub fn resolve_admin_token(flag: Option<&Secret>, data_dir: &Path) -> Result<Secret, TokenError> {
    if let Some(token) = flag {
        return check_token(token.expose(), "--token or MAYFLY_TOKEN");
    }

    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let contents = match std::fs::read_to_string(&path) {
        Ok(contents) => Secret::new(contents),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(TokenError::Missing { path });
        }
        Err(source) => return Err(TokenError::Read { path, source }),
    };
    check_token(contents.expose(), &path.display().to_string())
}

/// Trims the token and checks that it is a non-empty run of visible ASCII.
fn check_token(raw: &str, origin: &str) -> Result<Secret, TokenError> {
    let token = raw.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            origin: origin.to_string(),
        });
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(TokenError::InvalidCharacters {
            origin: origin.to_string(),
        });
    }
    Ok(Secret::new(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_token_wins_over_file() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join(ADMIN_TOKEN_FILE), "from-file\n").unwrap();
        let flag = Secret::new("from-flag".to_string());

        let token = resolve_admin_token(Some(&flag), directory.path()).unwrap();

        assert_eq!(token.expose(), "from-flag");
    }

    #[test]
    fn file_token_has_newline_trimmed() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(
            directory.path().join(ADMIN_TOKEN_FILE),
            "mfa_0123456789\r\n",
        )
        .unwrap();

        let token = resolve_admin_token(None, directory.path()).unwrap();

        assert_eq!(token.expose(), "mfa_0123456789");
    }

    #[test]
    fn missing_token_file_names_path() {
        let directory = tempfile::tempdir().unwrap();

        let error = resolve_admin_token(None, directory.path()).err();

        let message = error.map(|error| error.to_string()).unwrap_or_default();
        assert!(message.contains("MAYFLY_TOKEN"), "{message}");
        assert!(message.contains(ADMIN_TOKEN_FILE), "{message}");
    }

    #[test]
    fn empty_token_file_is_rejected() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join(ADMIN_TOKEN_FILE), "\n").unwrap();

        let error = resolve_admin_token(None, directory.path()).err();

        assert!(matches!(error, Some(TokenError::Empty { .. })), "{error:?}");
    }

    #[test]
    fn header_injection_in_token_is_rejected() {
        let flag = Secret::new("abc\r\nX-Injected: 1".to_string());

        let error = resolve_admin_token(Some(&flag), Path::new("/nonexistent")).err();

        assert!(
            matches!(error, Some(TokenError::InvalidCharacters { .. })),
            "{error:?}"
        );
    }
}

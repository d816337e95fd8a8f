//! `mayfly server`: build the server settings from flags and an optional TOML file, then run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use mayfly_server::settings::{DEV_TRUST_DOMAIN, LogFormat, Settings, SettingsError, TlsSettings};

use crate::logging;

/// Invalid server settings, or neither `--dev` nor `--config`.
#[derive(Debug, thiserror::Error)]
pub enum ServerCommandError {
    /// Neither `--dev` nor `--config` was given.
    #[error(
        "mayfly server needs --dev (a local development server with generated keys) or --config FILE (production settings)"
    )]
    NoMode,
    /// The settings file is unreadable or invalid, or a value is out of range.
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Run a single-node development server: embedded SQLite, a generated key-encryption key
    /// and an admin token written to the data directory.
    #[arg(long)]
    pub dev: bool,

    /// Apply this YAML configuration file at start.
    #[arg(long, value_name = "FILE")]
    pub apply: Option<PathBuf>,

    /// TOML settings file; the flags below override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Data directory: database, workload socket, admin token file [default: ./mayfly-data].
    #[arg(long, env = "MAYFLY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address of the HTTP API [default: 127.0.0.1:8750].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Issuer URL, the `iss` claim of every token [default: derived from the listen address].
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,

    /// Trust domain of the issued SPIFFE IDs [default with --dev: mayfly.local].
    #[arg(long, value_name = "TD")]
    pub trust_domain: Option<String>,

    /// PEM certificate chain of the API's TLS listener, leaf first.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the API's TLS listener.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// File holding the base64 key-encryption key that protects signing keys at rest.
    #[arg(long, value_name = "FILE")]
    pub kek_file: Option<PathBuf>,

    /// Log format [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

/// The `--log-format` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

/// Runs `mayfly server` until SIGINT or SIGTERM.
pub async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let settings = build_settings(&args)?;
    logging::init_server(settings.log_format);
    tracing::info!(
        listen = %settings.listen,
        data_dir = %settings.data_dir.display(),
        dev = settings.dev,
        "starting mayfly server"
    );

    mayfly_server::run(settings, args.apply).await?;
    Ok(ExitCode::SUCCESS)
}

/// Builds the settings: the file's values (or the defaults), then each flag given on the command
/// line. In dev mode the trust domain defaults to `mayfly.local`.
pub fn build_settings(args: &ServerArgs) -> Result<Settings, ServerCommandError> {
    if !args.dev && args.config.is_none() {
        return Err(ServerCommandError::NoMode);
    }

    let mut settings = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };

    if args.dev {
        settings.dev = true;
    }
    if let Some(data_dir) = &args.data_dir {
        settings.data_dir = data_dir.clone();
    }
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    if let Some(issuer) = &args.issuer {
        settings.issuer = Some(issuer.clone());
    }
    if let Some(trust_domain) = &args.trust_domain {
        settings.trust_domain = Some(trust_domain.clone());
    }
    if let (Some(cert_file), Some(key_file)) = (&args.tls_cert, &args.tls_key) {
        settings.tls = Some(TlsSettings {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        });
    }
    if let Some(kek_file) = &args.kek_file {
        settings.kek_file = Some(kek_file.clone());
    }
    if let Some(format) = args.log_format {
        settings.log_format = match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }

    if settings.dev && settings.trust_domain.is_none() {
        settings.trust_domain = Some(DEV_TRUST_DOMAIN.to_string());
    }
    settings.validate()?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn server_args(arguments: &[&str]) -> ServerArgs {
        let cli = Cli::try_parse_from(
            std::iter::once("mayfly")
                .chain(std::iter::once("server"))
                .chain(arguments.iter().copied()),
        );
        match cli.map(|cli| cli.command) {
            Ok(Command::Server(args)) => args,
            other => panic!("expected server arguments, got {other:?}"),
        }
    }

    #[test]
    fn server_without_mode_is_rejected() {
        let result = build_settings(&server_args(&["--listen", "127.0.0.1:9000"]));
        let message = result
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("--dev"), "{message}");
        assert!(message.contains("--config"), "{message}");
    }

    #[test]
    fn dev_defaults_trust_domain() {
        let settings = build_settings(&server_args(&["--dev"])).unwrap();
        assert!(settings.dev);
        assert_eq!(settings.trust_domain.as_deref(), Some("mayfly.local"));
        assert_eq!(settings.listen, "127.0.0.1:8750".parse().unwrap());
    }

    #[test]
    fn flags_override_file_values() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("mayfly.toml");
        let toml = "listen = \"127.0.0.1:7000\"\ntrust_domain = \"prod.example.com\"\ndata_dir = \"/var/lib/mayfly\"\n";
        std::fs::write(&path, toml).unwrap();
        let config = path.to_str().unwrap();

        let settings = build_settings(&server_args(&[
            "--config",
            config,
            "--listen",
            "127.0.0.1:7100",
            "--log-format",
            "json",
        ]))
        .unwrap();

        assert_eq!(settings.listen, "127.0.0.1:7100".parse().unwrap());
        assert_eq!(settings.trust_domain.as_deref(), Some("prod.example.com"));
        assert_eq!(settings.data_dir, PathBuf::from("/var/lib/mayfly"));
        assert_eq!(settings.log_format, LogFormat::Json);
        assert!(!settings.dev);
    }

    #[test]
    fn unknown_setting_names_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("mayfly.toml");
        std::fs::write(&path, "listen_address = \"127.0.0.1:7000\"\n").unwrap();

        let result = build_settings(&server_args(&["--config", path.to_str().unwrap()]));

        let message = result
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("mayfly.toml"), "{message}");
        assert!(message.contains("listen_address"), "{message}");
    }

    #[test]
    fn tls_flags_need_each_other() {
        let cli = Cli::try_parse_from(["mayfly", "server", "--dev", "--tls-cert", "cert.pem"]);
        assert!(cli.is_err());
    }

    #[test]
    fn invalid_issuer_is_rejected() {
        let result = build_settings(&server_args(&["--dev", "--issuer", "mayfly.example"]));
        assert!(
            matches!(result, Err(ServerCommandError::Settings(_))),
            "{result:?}"
        );
    }
}

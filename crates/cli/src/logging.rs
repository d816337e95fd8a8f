//! Log setup: the server logs at `info` unless `RUST_LOG` sets another filter, and client
//! commands log only warnings.

use std::io::IsTerminal;

use mayfly_server::settings::LogFormat;
use tracing_subscriber::EnvFilter;

/// Starts logging to standard error for `mayfly server`, in text or JSON lines. The filter comes
/// from `RUST_LOG` and defaults to `info`.
pub fn init_server(format: LogFormat) {
    let (filter, invalid_filter) = filter_from_env("info");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // The server still runs when no subscriber can be installed, so the error is ignored.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(error) = invalid_filter {
        tracing::warn!(%error, "invalid RUST_LOG, logging at info");
    }
}

/// Starts logging warnings and errors to standard error for the client commands, unless
/// `RUST_LOG` sets another filter. The certificate verifier's own error log is off by default because
/// the command reports the same failure as its error.
pub fn init_client() {
    let (filter, _) = filter_from_env("warn,rustls_platform_verifier=off");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
}

/// Reads `RUST_LOG`, falling back to `default` when it is unset or invalid. The parse error of an
/// invalid value is returned so that the caller can log it once logging works.
fn filter_from_env(default: &str) -> (EnvFilter, Option<String>) {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new(default), Some(error.to_string())),
        },
        _ => (EnvFilter::new(default), None),
    }
}

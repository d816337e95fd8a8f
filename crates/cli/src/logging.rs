//! Log setup: the server logs at `info` (or as `RUST_LOG` says), client commands only warnings.

use mayfly_server::settings::LogFormat;
use tracing_subscriber::EnvFilter;

/// Starts logging to standard error for `mayfly server`, in text or JSON lines. The filter comes
/// from `RUST_LOG` and defaults to `info`.
pub fn init_server(format: LogFormat) {
    let (filter, invalid_filter) = filter_from_env("info");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only when a subscriber is already set, which leaves that one in place.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(error) = invalid_filter {
        tracing::warn!(%error, "invalid RUST_LOG, logging at info");
    }
}

/// Starts logging warnings and errors to standard error for the client commands, unless
/// `RUST_LOG` asks for more.
pub fn init_client() {
    let (filter, _) = filter_from_env("warn");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// Reads `RUST_LOG`, falling back to `default` when it is unset or invalid; returns the parse
/// error of an invalid value so the caller can report it once logging works.
fn filter_from_env(default: &str) -> (EnvFilter, Option<String>) {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new(default), Some(error.to_string())),
        },
        _ => (EnvFilter::new(default), None),
    }
}

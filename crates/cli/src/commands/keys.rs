//! `mayfly keys list|rotate|taint|revoke`: signing keys and their rotation states.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::connection::ClientOptions;
use crate::output::{self, OutputFormat, Table, array_field, clean_text, field_text, time_text};

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,

    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// List signing keys and their states.
    List(ListArgs),
    /// Prepare a new signing key; it is published at once and signs after the activation delay.
    Rotate(RotateArgs),
    /// Stop signing with a key now but keep publishing it; a new key becomes active at once.
    Taint(KeyArgs),
    /// Remove a key from the JWKS now: every token it signed stops validating.
    Revoke(KeyArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// Signing algorithm of the new key.
    #[arg(long, value_enum, default_value_t = Algorithm::Es256)]
    pub algorithm: Algorithm,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// Key id (`kid`). It may start with `-`, as base64url key ids can.
    #[arg(allow_hyphen_values = true)]
    pub kid: String,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// JWT-SVID signing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    #[value(name = "ES256")]
    Es256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "PS256")]
    Ps256,
}

impl Algorithm {
    fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
            Algorithm::Ps256 => "PS256",
        }
    }
}

/// Runs a `mayfly keys` subcommand.
pub async fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.admin_client()?;

    let (response, format, action) = match &args.command {
        KeysCommand::List(list) => {
            let response = client.get(&["v1", "keys"], &[]).await?;
            if !output::print_structured(list.output, &response)? {
                output::print_text(&key_table(array_field(&response, "keys")).render())?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        KeysCommand::Rotate(rotate) => {
            let body = json!({"algorithm": rotate.algorithm.as_str()});
            (
                client.post(&["v1", "keys", "rotate"], Some(&body)).await?,
                rotate.output,
                "created",
            )
        }
        KeysCommand::Taint(key) => (
            client
                .post(&["v1", "keys", &key.kid, "taint"], None)
                .await?,
            key.output,
            "tainted",
        ),
        KeysCommand::Revoke(key) => (
            client
                .post(&["v1", "keys", &key.kid, "revoke"], None)
                .await?,
            key.output,
            "revoked",
        ),
    };

    if !output::print_structured(format, &response)? {
        output::print_text(&describe_key_change(&response, action))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the table of signing keys.
pub fn key_table(keys: &[Value]) -> Table {
    let mut table = Table::new(&[
        "KID",
        "ALGORITHM",
        "STATE",
        "CREATED",
        "ACTIVATES",
        "RETIRED",
        "REMOVE AFTER",
    ]);
    for key in keys {
        table.push(vec![
            field_text(key, "kid"),
            field_text(key, "algorithm"),
            field_text(key, "state"),
            time_text(key, "created_at"),
            time_text(key, "activates_at"),
            time_text(key, "retired_at"),
            time_text(key, "remove_after"),
        ]);
    }
    table
}

/// Describes the reply `{"key": {...}}` of rotate, taint and revoke: the key and its new state.
pub fn describe_key_change(response: &Value, action: &str) -> String {
    let key = response.get("key").unwrap_or(&Value::Null);
    let mut text = format!(
        "{action} key {} ({}): state is now {}",
        field_text(key, "kid"),
        field_text(key, "algorithm"),
        field_text(key, "state")
    );
    if key.get("state").and_then(Value::as_str) == Some("prepared") {
        text.push_str(&format!(", signs from {}", time_text(key, "activates_at")));
    }
    clean_text(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_reports_activation_time() {
        let response = json!({"key": {"kid": "k-3", "algorithm": "ES256", "state": "prepared",
            "activates_at": "2026-12-04T13:00:00Z"}});
        assert_eq!(
            describe_key_change(&response, "created"),
            "created key k-3 (ES256): state is now prepared, signs from 2026-12-04T13:00:00Z"
        );
    }

    #[test]
    fn revoke_reports_state() {
        let response = json!({"key": {"kid": "k-1", "algorithm": "ES256", "state": "revoked"}});
        assert_eq!(
            describe_key_change(&response, "revoked"),
            "revoked key k-1 (ES256): state is now revoked"
        );
    }

    #[test]
    fn key_table_lists_states() {
        let keys = vec![
            json!({"kid": "k-1", "algorithm": "ES256", "state": "active",
            "created_at": "2026-12-01T00:00:00Z", "activates_at": "2026-12-01T01:00:00Z",
            "retired_at": null, "remove_after": null}),
        ];

        let rendered = key_table(&keys).render();
        let row = rendered.lines().nth(1).unwrap_or_default();

        assert!(row.starts_with("k-1  ES256      active"), "{rendered}");
        assert!(
            row.ends_with("2026-12-01T01:00:00Z  -        -"),
            "{rendered}"
        );
    }
}

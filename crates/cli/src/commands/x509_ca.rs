//! `mayfly x509-ca list|rotate`: the trust domain's SPIFFE X.509 CAs and their rotation.

use std::process::ExitCode;

use serde_json::Value;

use crate::connection::ClientOptions;
use crate::output::{self, OutputFormat, Table, array_field, clean_text, field_text, time_text};

#[derive(Debug, clap::Args)]
pub struct X509CaArgs {
    #[command(subcommand)]
    pub command: X509CaCommand,

    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, clap::Subcommand)]
pub enum X509CaCommand {
    /// List the X.509 CAs and their states.
    List(FormatArgs),
    /// Prepare a new X.509 CA; it is in the trust bundle at once and signs after the
    /// server's x509_ca_publish_ahead.
    Rotate(FormatArgs),
}

#[derive(Debug, clap::Args)]
pub struct FormatArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Runs a `mayfly x509-ca` subcommand.
pub async fn run(args: X509CaArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.admin_client()?;
    match &args.command {
        X509CaCommand::List(list) => {
            let response = client.get(&["v1", "x509-authorities"], &[]).await?;
            if !output::print_structured(list.output, &response)? {
                output::print_text(
                    &authority_table(array_field(&response, "x509_authorities")).render(),
                )?;
            }
        }
        X509CaCommand::Rotate(rotate) => {
            let response = client
                .post(&["v1", "x509-authorities", "rotate"], None)
                .await?;
            if !output::print_structured(rotate.output, &response)? {
                output::print_text(&describe_rotation(&response))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the table of X.509 CAs.
pub fn authority_table(authorities: &[Value]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "CREATED",
        "ACTIVATES",
        "NOT AFTER",
        "RETIRED",
        "REMOVE AFTER",
    ]);
    for authority in authorities {
        table.push(vec![
            field_text(authority, "id"),
            field_text(authority, "state"),
            time_text(authority, "created_at"),
            time_text(authority, "activates_at"),
            time_text(authority, "not_after"),
            time_text(authority, "retired_at"),
            time_text(authority, "remove_after"),
        ]);
    }
    table
}

/// Describes the reply `{"x509_authority": {...}}` of a rotation.
pub fn describe_rotation(response: &Value) -> String {
    let authority = response.get("x509_authority").unwrap_or(&Value::Null);
    clean_text(&format!(
        "created X.509 CA {}: state is now {}, signs from {}, valid until {}",
        field_text(authority, "id"),
        field_text(authority, "state"),
        time_text(authority, "activates_at"),
        time_text(authority, "not_after"),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rotation_reports_activation_time() {
        let response = json!({"x509_authority": {"id": "ca-2", "state": "prepared",
            "activates_at": "2026-12-04T13:00:00Z", "not_after": "2027-01-03T12:00:00Z"}});
        assert_eq!(
            describe_rotation(&response),
            "created X.509 CA ca-2: state is now prepared, signs from 2026-12-04T13:00:00Z, valid until 2027-01-03T12:00:00Z"
        );
    }

    #[test]
    fn authority_table_lists_states() {
        let authorities = vec![
            json!({"id": "ca-1", "state": "active", "created_at": "2026-12-01T00:00:00Z",
            "activates_at": "2026-12-01T00:00:00Z", "not_after": "2026-12-31T00:00:00Z",
            "retired_at": null, "remove_after": null}),
        ];

        let rendered = authority_table(&authorities).render();
        let row = rendered.lines().nth(1).unwrap_or_default();

        assert!(row.starts_with("ca-1  active"), "{rendered}");
        assert!(row.contains("2026-12-31T00:00:00Z"), "{rendered}");
    }
}

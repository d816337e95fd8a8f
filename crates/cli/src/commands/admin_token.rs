//! `mayfly admin-token create|list|revoke`.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::connection::ClientOptions;
use crate::output::{self, OutputFormat, Table, array_field, clean_text, field_text, time_text};

#[derive(Debug, clap::Args)]
pub struct AdminTokenArgs {
    #[command(subcommand)]
    pub command: AdminTokenCommand,

    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminTokenCommand {
    /// Create an admin token; the token is printed once and cannot be shown again.
    Create(CreateArgs),
    /// List admin tokens (names and roles, never the tokens).
    List(ListArgs),
    /// Revoke an admin token.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Token name, unique among admin tokens.
    pub name: String,

    /// Role: `admin` may do everything, `auditor` may read configuration, audit events and alerts.
    #[arg(long, value_enum)]
    pub role: Role,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// Token name.
    pub name: String,
}

/// Admin token roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Admin,
    Auditor,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

/// Runs a `mayfly admin-token` subcommand.
pub async fn run(args: AdminTokenArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.admin_client()?;

    match &args.command {
        AdminTokenCommand::Create(create) => {
            let body = json!({"name": create.name, "role": create.role.as_str()});
            let response = client.post(&["v1", "admin-tokens"], Some(&body)).await?;
            let token = response
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if token.is_empty() {
                anyhow::bail!("invalid response from the server: the created token is missing");
            }
            eprintln!(
                "created {} token {:?}. Store it now: it is not shown again.",
                clean_text(&field_text(&response, "role")),
                clean_text(&field_text(&response, "name"))
            );
            output::print_text(&clean_text(token))?;
        }
        AdminTokenCommand::List(list) => {
            let response = client.get(&["v1", "admin-tokens"], &[]).await?;
            if !output::print_structured(list.output, &response)? {
                output::print_text(&token_table(array_field(&response, "items")).render())?;
            }
        }
        AdminTokenCommand::Revoke(revoke) => {
            client.delete(&["v1", "admin-tokens", &revoke.name]).await?;
            output::print_text(&format!(
                "revoked admin token {:?}",
                clean_text(&revoke.name)
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the table of admin tokens.
pub fn token_table(tokens: &[Value]) -> Table {
    let mut table = Table::new(&["NAME", "ROLE", "CREATED", "REVOKED"]);
    for token in tokens {
        table.push(vec![
            field_text(token, "name"),
            field_text(token, "role"),
            time_text(token, "created_at"),
            time_text(token, "revoked_at"),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_table_shows_revocation() {
        let tokens = vec![
            json!({"name": "ci", "role": "auditor", "created_at": "2026-12-01T00:00:00Z", "revoked_at": null}),
            json!({"name": "old", "role": "admin", "created_at": "2026-11-01T00:00:00Z",
                   "revoked_at": "2026-11-02T00:00:00Z"}),
        ];

        let rendered = token_table(&tokens).render();

        assert_eq!(
            rendered,
            "NAME  ROLE     CREATED               REVOKED\n\
             ci    auditor  2026-12-01T00:00:00Z  -\n\
             old   admin    2026-11-01T00:00:00Z  2026-11-02T00:00:00Z\n"
        );
    }
}

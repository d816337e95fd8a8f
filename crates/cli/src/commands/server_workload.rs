//! `mayfly server-workload disable|enable NAME`: the incident switch.

use std::process::ExitCode;

use serde_json::Value;

use crate::connection::ClientOptions;
use crate::output::{self, OutputFormat, clean_text};

#[derive(Debug, clap::Args)]
pub struct ServerWorkloadArgs {
    #[command(subcommand)]
    pub action: SwitchAction,

    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, clap::Subcommand)]
pub enum SwitchAction {
    /// Stop issuing new credentials for the server workload, on every replica.
    Disable(SwitchArgs),
    /// Resume issuing credentials for the server workload.
    Enable(SwitchArgs),
}

#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// Server workload name.
    pub name: String,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Runs `mayfly server-workload disable|enable`.
pub async fn run(args: ServerWorkloadArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.admin_client()?;
    let (verb, switch) = match &args.action {
        SwitchAction::Disable(switch) => ("disable", switch),
        SwitchAction::Enable(switch) => ("enable", switch),
    };

    let response = client
        .post(&["v1", "server-workloads", &switch.name, verb], None)
        .await?;

    if !output::print_structured(switch.output, &response)? {
        output::print_text(&describe_switch(&response, &switch.name))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Describes the reply `{"name", "enabled", "changed"}` in one line.
pub fn describe_switch(response: &Value, requested_name: &str) -> String {
    let name = clean_text(
        response
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(requested_name),
    );
    let enabled = response.get("enabled").and_then(Value::as_bool);
    let changed = response
        .get("changed")
        .and_then(Value::as_bool)
        .unwrap_or(true);

    let state = match enabled {
        Some(true) => "enabled",
        Some(false) => "disabled",
        None => return format!("server workload {name:?}: the server did not report its state"),
    };
    if changed {
        let consequence = if enabled == Some(true) {
            "credentials are issued again"
        } else {
            "no new credentials are issued; tokens already issued stay valid until they expire"
        };
        format!("server workload {name:?} {state}: {consequence}")
    } else {
        format!("server workload {name:?} was already {state}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn disable_reports_change() {
        let text = describe_switch(
            &json!({"name": "api", "enabled": false, "changed": true}),
            "api",
        );
        assert!(
            text.starts_with("server workload \"api\" disabled"),
            "{text}"
        );
    }

    #[test]
    fn repeated_enable_reports_no_change() {
        let text = describe_switch(
            &json!({"name": "api", "enabled": true, "changed": false}),
            "api",
        );
        assert_eq!(text, "server workload \"api\" was already enabled");
    }

    #[test]
    fn missing_state_is_reported() {
        let text = describe_switch(&json!({}), "api");
        assert!(text.contains("did not report"), "{text}");
    }
}

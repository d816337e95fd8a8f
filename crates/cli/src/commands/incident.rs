//! `mayfly incident report`: the audit log's record of one server workload, for an
//! investigation.

use std::process::ExitCode;

use jiff::Timestamp;
use serde_json::Value;

use crate::connection::ClientOptions;
use crate::output::{self, OutputFormat, Table, array_field, field_text, time_text};
use crate::time_arg::{format_rfc3339, parse_time_bound};

#[derive(Debug, clap::Args)]
pub struct IncidentArgs {
    #[command(subcommand)]
    pub command: IncidentCommand,

    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, clap::Subcommand)]
pub enum IncidentCommand {
    /// Report the clients, source addresses, failures, configuration changes and alerts of one
    /// server workload.
    Report(ReportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The server workload under investigation.
    #[arg(long, value_name = "NAME")]
    pub server_workload: String,

    /// Start of the report: a duration before now (30m, 24h, 7d) or RFC 3339.
    #[arg(long, value_name = "TIME", default_value = "24h")]
    pub since: String,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Runs `mayfly incident report`.
pub async fn run(args: IncidentArgs) -> anyhow::Result<ExitCode> {
    let IncidentCommand::Report(report) = args.command;
    let since = parse_time_bound(&report.since, Timestamp::now()).map_err(|error| anyhow::anyhow!("--since: {error}"))?;
    let query = vec![("server_workload", report.server_workload.clone()), ("since", format_rfc3339(since))];
    let client = args.client.admin_client()?;
    let response = client.get(&["v1", "incidents", "report"], &query).await?;
    if output::print_structured(report.output, &response)? {
        return Ok(ExitCode::SUCCESS);
    }
    output::print_text(&render(&response))?;
    Ok(ExitCode::SUCCESS)
}

/// Renders the report as text: a header, then one table per section.
fn render(report: &Value) -> String {
    let mut text = format!(
        "Incident report for server workload {} since {} ({} events read{})\n",
        field_text(report, "server_workload"),
        field_text(report, "since"),
        field_text(report, "events_read"),
        if report["truncated"] == Value::Bool(true) { ", truncated" } else { "" },
    );

    let mut clients = Table::new(&["CLIENT WORKLOAD", "CREDENTIALS", "FAILURES", "OFF HOURS", "SOURCE ADDRESSES", "FIRST", "LAST"]);
    for client in array_field(report, "client_workloads") {
        let addresses: Vec<String> = array_field(client, "source_ips").iter().filter_map(Value::as_str).map(str::to_string).collect();
        clients.push(vec![
            field_text(client, "client_workload"),
            field_text(client, "credentials"),
            field_text(client, "failures"),
            field_text(client, "off_hours_requests"),
            addresses.join(", "),
            time_text(client, "first_request"),
            time_text(client, "last_request"),
        ]);
    }
    text.push_str(&format!("\nClient workloads\n{}", clients.render()));

    let mut requests = Table::new(&["TIME", "OUTCOME", "CLIENT WORKLOAD", "SOURCE", "FLAGS", "REASON"]);
    for (outcome, key) in [("success", "credentials"), ("failure", "failures")] {
        for entry in array_field(report, key) {
            let flag = if entry["off_hours"] == Value::Bool(true) { "off-hours" } else { "-" };
            requests.push(vec![
                time_text(entry, "time"),
                outcome.to_string(),
                field_text(entry, "client_workload"),
                field_text(entry, "source_ip"),
                flag.to_string(),
                field_text(entry, "reason"),
            ]);
        }
    }
    text.push_str(&format!("\nCredential requests\n{}", requests.render()));

    let mut changes = Table::new(&["TIME", "ACTION", "ACTOR"]);
    for change in array_field(report, "config_changes") {
        let detail = change.get("detail").unwrap_or(&Value::Null);
        changes.push(vec![time_text(change, "time"), field_text(detail, "action"), field_text(detail, "actor")]);
    }
    text.push_str(&format!("\nConfiguration changes\n{}", changes.render()));

    let mut alerts = Table::new(&["TIME", "RULE", "MESSAGE"]);
    for alert in array_field(report, "alerts") {
        let detail = alert.get("detail").unwrap_or(&Value::Null);
        alerts.push(vec![time_text(alert, "time"), field_text(detail, "rule"), field_text(detail, "message")]);
    }
    text.push_str(&format!("\nAlerts\n{}", alerts.render()));
    text
}

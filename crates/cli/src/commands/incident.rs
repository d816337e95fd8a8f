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
    let since = parse_time_bound(&report.since, Timestamp::now())
        .map_err(|error| anyhow::anyhow!("--since: {error}"))?;
    let query = vec![
        ("server_workload", report.server_workload.clone()),
        ("since", format_rfc3339(since)),
    ];
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
        if report["truncated"] == Value::Bool(true) {
            ", truncated"
        } else {
            ""
        },
    );
    if let Some(note) = report.get("location_note").and_then(Value::as_str) {
        text.push_str(&format!("Note: {}\n", output::clean_text(note)));
    }

    let mut clients = Table::new(&[
        "CLIENT WORKLOAD",
        "CREDENTIALS",
        "FAILURES",
        "OFF HOURS",
        "UNEXPECTED LOCATION",
        "SOURCE ADDRESSES",
        "FIRST",
        "LAST",
    ]);
    for client in array_field(report, "client_workloads") {
        let addresses: Vec<String> = array_field(client, "source_ips")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        clients.push(vec![
            field_text(client, "client_workload"),
            field_text(client, "credentials"),
            field_text(client, "failures"),
            field_text(client, "off_hours_requests"),
            field_text(client, "unexpected_location_requests"),
            addresses.join(", "),
            time_text(client, "first_request"),
            time_text(client, "last_request"),
        ]);
    }
    text.push_str(&format!("\nClient workloads\n{}", clients.render()));

    let mut sources = Table::new(&[
        "SOURCE",
        "LOCATION",
        "CLIENT WORKLOADS",
        "CREDENTIALS",
        "FAILURES",
        "OFF HOURS",
        "UNEXPECTED LOCATION",
        "FIRST",
        "LAST",
    ]);
    for source in array_field(report, "source_addresses") {
        let workloads: Vec<String> = array_field(source, "client_workloads")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        sources.push(vec![
            field_text(source, "source_ip"),
            location_text(source.get("location")),
            workloads.join(", "),
            field_text(source, "credentials"),
            field_text(source, "failures"),
            field_text(source, "off_hours_requests"),
            field_text(source, "unexpected_location_requests"),
            time_text(source, "first_request"),
            time_text(source, "last_request"),
        ]);
    }
    text.push_str(&format!("\nSource addresses\n{}", sources.render()));

    let mut requests = Table::new(&[
        "TIME",
        "OUTCOME",
        "CLIENT WORKLOAD",
        "SOURCE",
        "LOCATION",
        "FLAGS",
        "REASON",
    ]);
    for (outcome, key) in [("success", "credentials"), ("failure", "failures")] {
        for entry in array_field(report, key) {
            let mut flags = Vec::new();
            if entry["off_hours"] == Value::Bool(true) {
                flags.push("off-hours");
            }
            if entry["unexpected_location"] == Value::Bool(true) {
                flags.push("unexpected-location");
            }
            requests.push(vec![
                time_text(entry, "time"),
                outcome.to_string(),
                field_text(entry, "client_workload"),
                field_text(entry, "source_ip"),
                location_text(entry.get("location")),
                if flags.is_empty() {
                    "-".to_string()
                } else {
                    flags.join(", ")
                },
                field_text(entry, "reason"),
            ]);
        }
    }
    text.push_str(&format!("\nCredential requests\n{}", requests.render()));

    let mut changes = Table::new(&["TIME", "ACTION", "ACTOR"]);
    for change in array_field(report, "config_changes") {
        let detail = change.get("detail").unwrap_or(&Value::Null);
        changes.push(vec![
            time_text(change, "time"),
            field_text(detail, "action"),
            field_text(detail, "actor"),
        ]);
    }
    text.push_str(&format!("\nConfiguration changes\n{}", changes.render()));

    let mut alerts = Table::new(&["TIME", "RULE", "MESSAGE"]);
    for alert in array_field(report, "alerts") {
        let detail = alert.get("detail").unwrap_or(&Value::Null);
        alerts.push(vec![
            time_text(alert, "time"),
            field_text(detail, "rule"),
            field_text(detail, "message"),
        ]);
    }
    text.push_str(&format!("\nAlerts\n{}", alerts.render()));
    text
}

/// Writes a location as `DE (DE-BE)`, or `-` when it is unknown or was not checked.
fn location_text(location: Option<&Value>) -> String {
    let Some(location) = location.filter(|value| !value.is_null()) else {
        return "-".to_string();
    };
    let country = location
        .get("country")
        .and_then(Value::as_str)
        .unwrap_or("-");
    let subdivisions: Vec<&str> = array_field(location, "subdivisions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let text = if subdivisions.is_empty() {
        country.to_string()
    } else {
        format!("{country} ({})", subdivisions.join(", "))
    };
    output::clean_text(&text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(location_checked: bool) -> Value {
        let entry = json!({
            "time": "2026-12-04T02:00:00Z", "client_workload": "billing", "source_ip": "192.0.2.10",
            "location": {"country": "US", "subdivisions": ["US-CA"]},
            "off_hours": true, "unexpected_location": true,
        });
        json!({
            "server_workload": "payments", "since": "2026-12-03T02:00:00Z", "events_read": 3, "truncated": false,
            "location_checked": location_checked,
            "location_note": if location_checked { Value::Null } else { json!("location was not checked") },
            "client_workloads": [{"client_workload": "billing", "credentials": 1, "failures": 0,
                "off_hours_requests": 1, "unexpected_location_requests": 1, "source_ips": ["192.0.2.10"]}],
            "source_addresses": [{"source_ip": "192.0.2.10", "location": {"country": "US", "subdivisions": ["US-CA"]},
                "client_workloads": ["billing"], "credentials": 1, "failures": 0, "off_hours_requests": 1,
                "unexpected_location_requests": 1}],
            "credentials": [entry], "failures": [], "config_changes": [], "alerts": [],
        })
    }

    #[test]
    fn text_flags_location_and_off_hours() {
        let text = render(&report(true));
        let request = text.lines().find(|line| line.contains("success")).unwrap();

        assert!(text.contains("Source addresses"), "{text}");
        assert!(text.contains("UNEXPECTED LOCATION"), "{text}");
        assert!(request.contains("US (US-CA)"), "{request}");
        assert!(
            request.contains("off-hours, unexpected-location"),
            "{request}"
        );
        assert!(!text.contains("Note:"), "{text}");
    }

    #[test]
    fn text_says_location_not_checked() {
        let text = render(&report(false));
        assert!(text.contains("Note: location was not checked"), "{text}");
    }
}

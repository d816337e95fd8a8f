//! `mayfly alerts list` (the alerts that alert rules raised, newest first), `mayfly alerts
//! test` (what a rule would have raised over past events) and `mayfly alerts ack`.

use std::process::ExitCode;

use jiff::Timestamp;

use crate::connection::ClientOptions;
use crate::output::{self, OutputFormat, Table, array_field, field_text, time_text};
use crate::time_arg::{format_rfc3339, parse_time_bound};

#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub command: AlertsCommand,

    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// List fired alerts, newest first.
    List(ListArgs),
    /// Replay past audit events through a rule and show the alerts it would have raised.
    Test(TestArgs),
    /// Acknowledge an alert, by the id that `alerts list -o json` shows.
    Ack(AckArgs),
}

#[derive(Debug, clap::Args)]
pub struct AckArgs {
    /// Id of the alert.
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Name of a stored alert rule; with --file, the name of the rule in that file.
    pub rule: String,

    /// A YAML configuration file whose `alert_rules` contains the rule, to try it before it is
    /// applied.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,

    /// Start of the replayed events: a duration before now (30m, 24h, 7d) or RFC 3339.
    #[arg(long, value_name = "TIME", default_value = "7d")]
    pub since: String,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only alerts about this server workload.
    #[arg(long, value_name = "NAME")]
    pub server_workload: Option<String>,

    /// Only alerts at or after this time: a duration before now (30m, 24h, 7d) or RFC 3339.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// Maximum number of alerts listed.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Runs `mayfly alerts list` or `mayfly alerts test`.
pub async fn run(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let list = match args.command {
        AlertsCommand::List(list) => list,
        AlertsCommand::Test(test) => return run_test(&args.client, test).await,
        AlertsCommand::Ack(ack) => return run_ack(&args.client, ack).await,
    };
    let mut query = vec![("limit", list.limit.to_string())];
    if let Some(name) = &list.server_workload {
        query.push(("server_workload", name.clone()));
    }
    if let Some(since) = &list.since {
        let time = parse_time_bound(since, Timestamp::now())
            .map_err(|error| anyhow::anyhow!("--since: {error}"))?;
        query.push(("since", format_rfc3339(time)));
    }

    let client = args.client.admin_client()?;
    let response = client.get(&["v1", "alerts"], &query).await?;
    if output::print_structured(list.output, &response)? {
        return Ok(ExitCode::SUCCESS);
    }
    let alerts = array_field(&response, "alerts");
    if alerts.is_empty() {
        eprintln!("no alerts");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["ID", "TIME", "RULE", "KEY", "ACKNOWLEDGED", "MESSAGE"]);
    for alert in alerts {
        table.push(vec![
            field_text(alert, "id"),
            time_text(alert, "time"),
            field_text(alert, "rule"),
            field_text(alert, "key"),
            field_text(alert, "acknowledged"),
            field_text(alert, "message"),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

async fn run_test(client_options: &ClientOptions, args: TestArgs) -> anyhow::Result<ExitCode> {
    let since = parse_time_bound(&args.since, Timestamp::now())
        .map_err(|error| anyhow::anyhow!("--since: {error}"))?;
    let mut body = serde_json::json!({"since": format_rfc3339(since)});
    match &args.file {
        None => body["name"] = serde_json::json!(args.rule),
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|error| anyhow::anyhow!("reading {name} failed: {error}"))?;
            let config =
                mayfly_domain::config_file::parse_with_variables(&name, &text, |variable| {
                    std::env::var(variable).ok()
                })?;
            let rule = config
                .alert_rules
                .into_iter()
                .find(|rule| rule.name == args.rule)
                .ok_or_else(|| anyhow::anyhow!("{name} has no alert rule named {:?}", args.rule))?;
            body["rule"] = serde_json::to_value(rule)?;
        }
    }

    let client = client_options.admin_client()?;
    let response = client.post(&["v1", "alerts", "test"], Some(&body)).await?;
    if output::print_structured(args.output, &response)? {
        return Ok(ExitCode::SUCCESS);
    }
    let alerts = array_field(&response, "alerts");
    let mut table = Table::new(&["TIME", "KEY", "MESSAGE"]);
    for alert in alerts {
        table.push(vec![
            time_text(alert, "time"),
            field_text(alert, "key"),
            field_text(alert, "message"),
        ]);
    }
    if !alerts.is_empty() {
        output::print_text(&table.render())?;
    }
    eprintln!(
        "{} alerts from {} events",
        alerts.len(),
        field_text(&response, "events_read")
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_ack(client_options: &ClientOptions, args: AckArgs) -> anyhow::Result<ExitCode> {
    let client = client_options.admin_client()?;
    let response = client
        .post(&["v1", "alerts", &args.id, "acknowledge"], None)
        .await?;
    let changed = response
        .get("changed")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let text = if changed {
        "acknowledged"
    } else {
        "already acknowledged"
    };
    output::print_text(&format!("alert {}: {text}", output::clean_text(&args.id)))?;
    Ok(ExitCode::SUCCESS)
}

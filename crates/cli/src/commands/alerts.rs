//! `mayfly alerts list`: the alerts that alert rules raised, newest first.

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

/// Runs `mayfly alerts list`.
pub async fn run(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let AlertsCommand::List(list) = args.command;
    let mut query = vec![("limit", list.limit.to_string())];
    if let Some(name) = &list.server_workload {
        query.push(("server_workload", name.clone()));
    }
    if let Some(since) = &list.since {
        let time = parse_time_bound(since, Timestamp::now()).map_err(|error| anyhow::anyhow!("--since: {error}"))?;
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
    let mut table = Table::new(&["TIME", "RULE", "KEY", "MESSAGE"]);
    for alert in alerts {
        table.push(vec![time_text(alert, "time"), field_text(alert, "rule"), field_text(alert, "key"), field_text(alert, "message")]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

//! `mayfly audit list` and `mayfly audit verify`.

use std::process::ExitCode;

use jiff::Timestamp;
use serde_json::Value;

use crate::connection::ClientOptions;
use crate::output::{self, OutputFormat, Table, array_field, clean_text, field_text, time_text};
use crate::time_arg::{format_rfc3339, parse_time_bound};

/// Exit code of `mayfly audit verify` when the chain or a checkpoint does not verify.
pub const EXIT_VERIFY_FAILED: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,

    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// List audit events, newest first.
    List(ListArgs),
    /// Check the hash chain and the signed checkpoints of the audit log.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only events about this server workload.
    #[arg(long, value_name = "NAME")]
    pub server_workload: Option<String>,

    /// Only events about this client workload.
    #[arg(long, value_name = "NAME")]
    pub client_workload: Option<String>,

    /// Only events with this outcome.
    #[arg(long, value_enum)]
    pub outcome: Option<Outcome>,

    /// Only events of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<EventKind>,

    /// Only events at or after this time: a duration before now (30m, 24h, 7d) or RFC 3339.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// Only events before this time: a duration before now (30m, 24h, 7d) or RFC 3339.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Maximum number of events in one page.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,

    /// Continue after the previous page, with the cursor it printed.
    #[arg(long)]
    pub cursor: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// The outcome of a credential decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Outcome {
    Success,
    Failure,
}

/// The kinds of audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum EventKind {
    CredentialRequest,
    ConfigChange,
    KeyChange,
    AdminTokenChange,
    AgentChange,
    Alert,
    CredentialInjection,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::CredentialRequest => "credential_request",
            EventKind::ConfigChange => "config_change",
            EventKind::KeyChange => "key_change",
            EventKind::AdminTokenChange => "admin_token_change",
            EventKind::AgentChange => "agent_change",
            EventKind::Alert => "alert",
            EventKind::CredentialInjection => "credential_injection",
        }
    }
}

/// Runs `mayfly audit list` or `mayfly audit verify`.
pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::List(list) => run_list(&args.client, list).await,
        AuditCommand::Verify(verify) => run_verify(&args.client, verify).await,
    }
}

async fn run_list(client_options: &ClientOptions, args: ListArgs) -> anyhow::Result<ExitCode> {
    let query = list_query(&args, Timestamp::now())?;
    let client = client_options.admin_client()?;

    let response = client.get(&["v1", "audit", "events"], &query).await?;

    if output::print_structured(args.output, &response)? {
        return Ok(ExitCode::SUCCESS);
    }
    let events = array_field(&response, "events");
    if events.is_empty() {
        eprintln!("no audit events match");
    } else {
        output::print_text(&event_table(events).render())?;
    }
    if let Some(cursor) = response.get("next_cursor").and_then(Value::as_str) {
        eprintln!(
            "more events: repeat the command with --cursor {}",
            clean_text(cursor)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the query of `GET /v1/audit/events`, turning relative times into RFC 3339 from `now`.
pub fn list_query(args: &ListArgs, now: Timestamp) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut query = Vec::new();
    if let Some(name) = &args.server_workload {
        query.push(("server_workload", name.clone()));
    }
    if let Some(name) = &args.client_workload {
        query.push(("client_workload", name.clone()));
    }
    if let Some(outcome) = args.outcome {
        query.push(("outcome", outcome.as_str().to_string()));
    }
    if let Some(kind) = args.kind {
        query.push(("kind", kind.as_str().to_string()));
    }
    if let Some(since) = &args.since {
        let time =
            parse_time_bound(since, now).map_err(|error| anyhow::anyhow!("--since: {error}"))?;
        query.push(("since", format_rfc3339(time)));
    }
    if let Some(until) = &args.until {
        let time =
            parse_time_bound(until, now).map_err(|error| anyhow::anyhow!("--until: {error}"))?;
        query.push(("until", format_rfc3339(time)));
    }
    query.push(("limit", args.limit.to_string()));
    if let Some(cursor) = &args.cursor {
        query.push(("cursor", cursor.clone()));
    }
    Ok(query)
}

/// Builds the table of audit events.
pub fn event_table(events: &[Value]) -> Table {
    let mut table = Table::new(&[
        "SEQ",
        "TIME",
        "KIND",
        "OUTCOME",
        "CLIENT -> SERVER",
        "REASON",
    ]);
    for event in events {
        let parties = match (event.get("client_workload"), event.get("server_workload")) {
            (None | Some(Value::Null), None | Some(Value::Null)) => "-".to_string(),
            _ => format!(
                "{} -> {}",
                field_text(event, "client_workload"),
                field_text(event, "server_workload")
            ),
        };
        table.push(vec![
            field_text(event, "seq"),
            time_text(event, "time"),
            field_text(event, "kind"),
            field_text(event, "outcome"),
            parties,
            event_reason(event),
        ]);
    }
    table
}

/// Summarizes an event's `detail`: the failing step and reason of a denial, or the action and
/// resource of a configuration change, with the actor when known.
pub fn event_reason(event: &Value) -> String {
    let detail = event.get("detail").unwrap_or(&Value::Null);
    let present = |key: &str| {
        detail
            .get(key)
            .filter(|value| !value.is_null())
            .map(|_| field_text(detail, key))
    };

    let mut parts: Vec<String> = Vec::new();
    let is_config_change = event.get("kind").and_then(Value::as_str) == Some("config_change");
    if is_config_change {
        parts.extend(
            ["action", "resource_kind", "resource_name"]
                .into_iter()
                .filter_map(present),
        );
    } else if event.get("outcome").and_then(Value::as_str) == Some("failure") {
        let step = present("step");
        let reason = present("reason");
        match (step, reason) {
            (Some(step), Some(reason)) => parts.push(format!("{step}: {reason}")),
            (step, reason) => parts.extend(step.into_iter().chain(reason)),
        }
    } else {
        parts.extend(
            ["action", "kid", "name", "reason"]
                .into_iter()
                .filter_map(present),
        );
    }

    if parts.is_empty() {
        return "-".to_string();
    }
    let mut text = parts.join(" ");
    if let Some(actor) = present("actor") {
        text.push_str(&format!(" (by {actor})"));
    }
    text
}

async fn run_verify(client_options: &ClientOptions, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let client = client_options.admin_client()?;

    let report = client.get(&["v1", "audit", "verify"], &[]).await?;

    let ok = report.get("ok").and_then(Value::as_bool) == Some(true);
    if !output::print_structured(args.output, &report)? {
        output::print_text(&describe_verification(&report))?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VERIFY_FAILED)
    })
}

/// Describes a verification report: a verdict line, the counts, and each problem.
pub fn describe_verification(report: &Value) -> String {
    let ok = report.get("ok").and_then(Value::as_bool) == Some(true);
    let problems = array_field(report, "problems");
    let mut text = if ok {
        "audit log verified\n".to_string()
    } else {
        format!(
            "audit log verification FAILED: {} problem(s)\n",
            problems.len()
        )
    };

    text.push_str(&format!(
        "  events checked:       {} (seq {} to {})\n",
        field_text(report, "events_checked"),
        field_text(report, "first_seq"),
        field_text(report, "last_seq")
    ));
    text.push_str(&format!(
        "  checkpoints verified: {}\n",
        field_text(report, "checkpoints_checked")
    ));
    text.push_str(&format!(
        "  last anchored seq:    {}\n",
        field_text(report, "last_anchored_seq")
    ));
    text.push_str(&format!(
        "  not yet anchored:     {} event(s) after the last checkpoint\n",
        field_text(report, "unanchored")
    ));

    for problem in problems {
        let line = format!(
            "  seq {}: {}",
            field_text(problem, "seq"),
            field_text(problem, "problem")
        );
        text.push_str(&clean_text(&line));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests;

//! `mayfly`: the Mayfly server (`mayfly server`) and its command-line client.
//!
//! Exit codes: 0 success, 1 error, 2 invalid arguments or a failed `audit verify`, 3 a denied
//! `credential get`.
#![forbid(unsafe_code)]

mod api;
mod commands;
mod connection;
mod logging;
mod output;
mod secret;
mod target;
mod time_arg;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::ApiError;
use crate::commands::credential::{CredentialError, EXIT_DENIED};
use crate::commands::{
    admin_token, agent, alerts, apply, audit, credential, incident, keys, resources, server,
    server_workload, x509_ca,
};

/// Mayfly issues short-lived credentials to workloads by policy and audits every decision.
#[derive(Debug, Parser)]
#[command(name = "mayfly", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Mayfly server.
    Server(server::ServerArgs),
    /// Show configuration resources of one kind, or one resource.
    Get(resources::GetArgs),
    /// Delete a configuration resource; fails while other resources reference it.
    Delete(resources::DeleteArgs),
    /// Create, update (and with --prune, delete) resources to match a YAML file.
    Apply(apply::ApplyArgs),
    /// Disable or enable a server workload: the incident switch.
    ServerWorkload(server_workload::ServerWorkloadArgs),
    /// Query the audit log or verify its hash chain.
    Audit(audit::AuditArgs),
    /// List, acknowledge and try out alerts.
    Alerts(alerts::AlertsArgs),
    /// Report the audit log's record of one server workload.
    Incident(incident::IncidentArgs),
    /// List, rotate, taint or revoke signing keys.
    Keys(keys::KeysArgs),
    /// List or rotate the SPIFFE X.509 CAs.
    #[command(name = "x509-ca")]
    X509Ca(x509_ca::X509CaArgs),
    /// Create, list or revoke admin tokens.
    AdminToken(admin_token::AdminTokenArgs),
    /// Fetch a credential for the calling process.
    Credential(credential::CredentialArgs),
    /// Run the agent: the SPIFFE Workload API for the processes on this host.
    Agent(agent::AgentArgs),
    /// Create one-time join tokens for agents.
    AgentToken(agent::AgentTokenArgs),
    /// List or evict agents.
    Agents(agent::AgentsArgs),
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Agent(_) = cli.command {
        logging::init_server(mayfly_server::settings::LogFormat::Text);
    } else if !matches!(cli.command, Command::Server(_)) {
        logging::init_client();
    }

    let result = match cli.command {
        Command::Server(args) => server::run(args).await,
        Command::Get(args) => resources::get(args).await,
        Command::Delete(args) => resources::delete(args).await,
        Command::Apply(args) => apply::apply(args).await,
        Command::ServerWorkload(args) => server_workload::run(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Alerts(args) => alerts::run(args).await,
        Command::Incident(args) => incident::run(args).await,
        Command::Keys(args) => keys::run(args).await,
        Command::X509Ca(args) => x509_ca::run(args).await,
        Command::AdminToken(args) => admin_token::run(args).await,
        Command::Credential(args) => credential::run(args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::AgentToken(args) => agent::token(args).await,
        Command::Agents(args) => agent::agents(args).await,
        Command::Version => output::print_text(concat!("mayfly ", env!("CARGO_PKG_VERSION")))
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
    };

    match result {
        Ok(code) => code,
        Err(error) => report_error(&error),
    }
}

/// Prints an error to standard error and returns the exit code for it. For a problem document
/// it prints the detail, the resources that reference the target of a delete, and the request id.
fn report_error(error: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(error) {
        // Nothing to report when the reader of standard output went away (`mayfly audit list | head`).
        return ExitCode::SUCCESS;
    }
    if let Some(CredentialError::Denied { .. }) = error.downcast_ref::<CredentialError>() {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_DENIED);
    }
    if let Some(ApiError::Problem { problem, .. }) = error.downcast_ref::<ApiError>() {
        eprintln!("error: {}", problem.message());
        for line in problem.context_lines() {
            eprintln!("{line}");
        }
        return ExitCode::FAILURE;
    }
    eprintln!(
        "error: {}",
        output::clean_multiline_text(&error_chain(error))
    );
    ExitCode::FAILURE
}

/// Joins an error with its causes, skipping a cause whose text the message already contains
/// (many messages quote their source).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause_text = cause.to_string();
        if text.contains(&cause_text) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause_text);
    }
    text
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io_error| io_error.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests;

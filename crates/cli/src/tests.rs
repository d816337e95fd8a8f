use clap::CommandFactory;

use super::*;
use crate::commands::audit::{AuditCommand, EventKind};
use crate::commands::credential::CredentialCommand;

fn parse(arguments: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("mayfly").chain(arguments.iter().copied()))
}

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn quickstart_example_parses() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/quickstart.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();

    let config = mayfly_domain::config_file::parse("examples/quickstart.yaml", &text);

    assert!(config.is_ok(), "{config:?}");
    let config = config.unwrap();
    assert_eq!(config.trust_providers.len(), 1);
    assert_eq!(config.client_workloads[0].name, "demo-client");
    assert_eq!(config.server_workloads[0].name, "demo-api");
    assert_eq!(config.server_workloads[0].port, 8443);
    assert_eq!(config.credential_providers[0].name(), "demo-jwt");
    assert_eq!(config.access_policies[0].name, "demo-client-to-demo-api");
    assert_eq!(config.access_policies[0].client_workload, "demo-client");
    assert_eq!(config.access_policies[0].server_workload, "demo-api");
}

#[test]
fn global_options_follow_nested_subcommand() {
    let cli = parse(&[
        "audit",
        "list",
        "--addr",
        "http://127.0.0.1:9999",
        "--kind",
        "config_change",
    ])
    .unwrap();

    let Command::Audit(audit) = cli.command else {
        panic!("expected the audit command");
    };
    assert_eq!(audit.client.server.addr, "http://127.0.0.1:9999");
    let AuditCommand::List(list) = audit.command else {
        panic!("expected audit list");
    };
    assert_eq!(list.kind, Some(EventKind::ConfigChange));
}

#[test]
fn credential_get_needs_name_or_target() {
    assert!(parse(&["credential", "get"]).is_err());
    assert!(parse(&["credential", "get", "api", "--target", "api.local:443"]).is_err());

    let cli = parse(&["credential", "get", "--target", "[::1]:8443"]).unwrap();
    let Command::Credential(credential) = cli.command else {
        panic!("expected the credential command");
    };
    let CredentialCommand::Get(get) = credential.command;
    assert_eq!(
        get.target.map(|target| target.to_string()).as_deref(),
        Some("[::1]:8443")
    );
}

#[test]
fn invalid_target_is_a_usage_error() {
    let error = parse(&["credential", "get", "--target", "api.local"]).err();
    let message = error.map(|error| error.to_string()).unwrap_or_default();
    assert!(message.contains("HOST:PORT"), "{message}");
}

#[test]
fn unknown_kind_is_a_usage_error() {
    let error = parse(&["get", "workloads"]).err();
    let message = error.map(|error| error.to_string()).unwrap_or_default();
    assert!(message.contains("unknown resource kind"), "{message}");
}

#[test]
fn audit_limit_must_be_positive() {
    assert!(parse(&["audit", "list", "--limit", "0"]).is_err());
}

#[test]
fn token_flag_is_hidden_from_debug_output() {
    let cli = parse(&["get", "server-workloads", "--token", "very-secret-token"]).unwrap();
    let printed = format!("{cli:?}");
    assert!(!printed.contains("very-secret-token"), "{printed}");
}

#[test]
fn denial_exits_with_code_three() {
    let error = anyhow::Error::from(CredentialError::Denied {
        step: "x".to_string(),
        request_id: "r".to_string(),
    });
    assert_eq!(report_error(&error), ExitCode::from(EXIT_DENIED));
}

#[test]
fn key_id_may_start_with_dash() {
    let cli = parse(&["keys", "taint", "-vZQlvekOvJ2q31O"]).unwrap();

    let Command::Keys(keys) = cli.command else {
        panic!("expected the keys command");
    };
    let crate::commands::keys::KeysCommand::Taint(key) = keys.command else {
        panic!("expected keys taint");
    };
    assert_eq!(key.kid, "-vZQlvekOvJ2q31O");
}

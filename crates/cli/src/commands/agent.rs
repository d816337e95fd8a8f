//! `mayfly agent` (run the agent), `mayfly agent-token create` and `mayfly agents list|evict`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mayfly_agent::config::AgentFile;
use mayfly_crypto::token::SecretString;
use serde_json::{Value, json};

use crate::connection::ClientOptions;
use crate::output::{self, OutputFormat, Table, array_field, clean_text, field_text, time_text};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// TOML settings file with the same keys as these flags (`join_token_file` in place of
    /// `--join-token`); flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Base URL of the Mayfly server, such as https://mayfly.example:8750.
    #[arg(long, env = "MAYFLY_ADDR")]
    pub server: Option<String>,

    /// One-time join token from `mayfly agent-token create`. Used only when the data directory
    /// contains no valid agent credential (first start, or after the agent stayed down past the
    /// credential's expiry) or the server rejects the stored one (after an eviction).
    #[arg(long, env = "MAYFLY_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// Directory that keeps the agent's credential across restarts (created with mode 0700);
    /// default `mayfly-agent-data`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Path of the SPIFFE Workload API socket; default `/tmp/mayfly-agent.sock`.
    #[arg(long)]
    pub socket: Option<PathBuf>,

    /// Path of the HTTP credential socket (`mayfly credential get NAME --socket PATH`); default
    /// `<data-dir>/credential.sock`.
    #[arg(long)]
    pub http_socket: Option<PathBuf>,

    /// PEM file of the CA certificates that the server's HTTPS certificate must chain to. Without
    /// it, the system roots are used.
    #[arg(long, env = "MAYFLY_CACERT")]
    pub server_ca: Option<PathBuf>,

    /// Loopback address and port of the credential-injecting HTTP proxy, such as
    /// 127.0.0.1:8181; no proxy runs without it. Applications opt in with HTTP_PROXY and
    /// HTTPS_PROXY.
    #[arg(long)]
    pub proxy_listen: Option<String>,

    /// File the proxy writes its interception CA bundle to (PEM, mode 0644), for applications
    /// to trust; default `<data-dir>/proxy-ca.pem`.
    #[arg(long)]
    pub proxy_ca_bundle: Option<PathBuf>,

    /// PEM file of the CA certificates that server workloads' HTTPS certificates must chain to
    /// when the proxy forwards to them. Without it, the system roots are used.
    #[arg(long)]
    pub proxy_upstream_ca: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AgentTokenArgs {
    #[command(subcommand)]
    pub command: AgentTokenCommand,

    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, clap::Subcommand)]
pub enum AgentTokenCommand {
    /// Create a one-time join token for the agent NAME; the token is printed once.
    Create(CreateTokenArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateTokenArgs {
    /// The agent's name, as identity rules name it (`match: {agent: NAME}`).
    pub name: String,

    /// How long the token can be used, such as 10m (default) or 1h; at most 24h.
    #[arg(long)]
    pub ttl: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub command: AgentsCommand,

    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, clap::Subcommand)]
pub enum AgentsCommand {
    /// List the agents registered with the server, evicted ones included.
    List(ListArgs),
    /// Evict an agent: its credential stops working at once and its unused join tokens are
    /// revoked.
    Evict(EvictArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct EvictArgs {
    /// Agent name.
    pub name: String,
}

/// Runs the agent until it stops or the process receives Ctrl-C.
pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let settings = agent_settings(args)?;
    let agent = mayfly_agent::start(settings)
        .await
        .context("starting the agent failed")?;
    tokio::select! {
        () = agent.wait() => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("agent stopping"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Merges the flags over the settings file, if any, over the defaults.
fn agent_settings(args: AgentArgs) -> anyhow::Result<mayfly_agent::AgentSettings> {
    let file = match &args.config {
        Some(path) => AgentFile::load(path)?,
        None => AgentFile::default(),
    };
    let Some(server) = args.server.or_else(|| file.server.clone()) else {
        anyhow::bail!(
            "missing server URL: pass --server, set MAYFLY_ADDR, or set server in the settings file"
        );
    };
    let data_dir = args
        .data_dir
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("mayfly-agent-data"));
    let socket = args
        .socket
        .or_else(|| file.socket.clone())
        .unwrap_or_else(|| PathBuf::from("/tmp/mayfly-agent.sock"));

    let mut settings = mayfly_agent::AgentSettings::new(server, data_dir, socket);
    settings.server_ca = args.server_ca.or_else(|| file.server_ca.clone());
    if let Some(path) = args.http_socket.or_else(|| file.http_socket.clone()) {
        settings.http_socket = path;
    }
    settings.join_token = match (args.join_token, &file.join_token_file) {
        (Some(token), _) => Some(SecretString::new(token)),
        (None, Some(path)) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .map(zeroize::Zeroizing::new)
                .with_context(|| format!("reading the join token file {}", path.display()))?;
            Some(SecretString::new(text.trim().to_string()))
        }
        (None, _) => None,
    };
    if let Some(value) = args
        .proxy_listen
        .as_deref()
        .or(file.proxy_listen.as_deref())
    {
        let flag = if args.proxy_listen.is_some() {
            "--proxy-listen"
        } else {
            "proxy_listen"
        };
        let listen = mayfly_agent::config::parse_proxy_listen(flag, value)?;
        let mut proxy = mayfly_agent::proxy::ProxySettings::new(listen, &settings.data_dir);
        if let Some(path) = args
            .proxy_ca_bundle
            .or_else(|| file.proxy_ca_bundle.clone())
        {
            proxy.ca_bundle = path;
        }
        proxy.upstream_ca = args
            .proxy_upstream_ca
            .or_else(|| file.proxy_upstream_ca.clone());
        settings.proxy = Some(proxy);
    }
    if let Some(path) = &args.config {
        file.apply_limits(path, &mut settings)?;
    }
    Ok(settings)
}

/// Runs `mayfly agent-token create`.
pub async fn token(args: AgentTokenArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.admin_client()?;
    let AgentTokenCommand::Create(create) = &args.command;
    let mut body = json!({"agent": create.name});
    if let Some(ttl) = &create.ttl {
        body["ttl"] = json!(ttl);
    }
    let response = client.post(&["v1", "agent-tokens"], Some(&body)).await?;
    let token = response
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        anyhow::bail!("invalid response from the server: the created join token is missing");
    }
    eprintln!(
        "created a join token for agent {:?}, usable once until {}. Store it now: it is not shown again.",
        clean_text(&field_text(&response, "agent")),
        clean_text(&field_text(&response, "expires_at"))
    );
    output::print_text(&clean_text(token))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `mayfly agents list|evict`.
pub async fn agents(args: AgentsArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.admin_client()?;
    match &args.command {
        AgentsCommand::List(list) => print_agents(&client, list.output).await?,
        AgentsCommand::Evict(evict) => {
            client
                .post(&["v1", "agents", &evict.name, "evict"], Some(&json!({})))
                .await?;
            output::print_text(&format!("evicted agent {:?}", clean_text(&evict.name)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the agent list, for `mayfly agents list` and `mayfly get agents`.
pub async fn print_agents(
    client: &crate::api::ApiClient,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let response = client.get(&["v1", "agents"], &[]).await?;
    if !output::print_structured(format, &response)? {
        output::print_text(&agent_table(array_field(&response, "items")).render())?;
    }
    Ok(())
}

/// Builds the table of agents.
pub fn agent_table(agents: &[Value]) -> Table {
    let mut table = Table::new(&["NAME", "STATE", "JOINED", "CREDENTIAL EXPIRES", "EVICTED"]);
    for agent in agents {
        table.push(vec![
            field_text(agent, "name"),
            field_text(agent, "state"),
            time_text(agent, "joined_at"),
            time_text(agent, "credential_expires_at"),
            time_text(agent, "evicted_at"),
        ]);
    }
    table
}

//! `mayfly get KIND [NAME]` and `mayfly delete KIND NAME`.

use std::process::ExitCode;

use mayfly_domain::resources::ResourceKind;
use serde_json::Value;
use serde_yaml_ng::{Mapping, Value as YamlValue};

use crate::connection::ClientOptions;
use crate::output::{self, OutputFormat, Table, array_field, field_text, time_text};

/// An invalid resource kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// The text names no resource kind.
    #[error("unknown resource kind {0:?}: expected one of {kinds}", kinds = kind_names())]
    Unknown(String),
}

/// Lists every resource kind as `mayfly get` and `mayfly delete` spell it.
fn kind_names() -> String {
    ResourceKind::ALL.map(ResourceKind::path_name).join(", ")
}

/// Parses a resource kind in any spelling: singular or plural, dashes or underscores.
pub fn parse_kind(text: &str) -> Result<ResourceKind, KindError> {
    ResourceKind::parse(text.trim()).ok_or_else(|| KindError::Unknown(text.to_string()))
}

/// The kind that `mayfly get` shows: a configuration resource kind, or the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetKind {
    Resource(ResourceKind),
    Agents,
}

/// Parses the kind of `mayfly get`: `agents` (or `agent`), or a resource kind.
pub fn parse_get_kind(text: &str) -> Result<GetKind, KindError> {
    match text.trim() {
        "agent" | "agents" => Ok(GetKind::Agents),
        other => parse_kind(other).map(GetKind::Resource),
    }
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Resource kind, such as server-workloads or access_policy, or agents.
    #[arg(value_parser = parse_get_kind)]
    pub kind: GetKind,

    /// Resource name; without it, every resource of the kind is listed.
    pub name: Option<String>,

    /// Output format. `yaml` prints the configuration-file form, which `mayfly apply -f` accepts.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,

    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Resource kind, such as server-workloads or access_policy.
    #[arg(value_parser = parse_kind)]
    pub kind: ResourceKind,

    /// Resource name.
    pub name: String,

    #[command(flatten)]
    pub client: ClientOptions,
}

/// Runs `mayfly get`.
pub async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.admin_client()?;
    let kind = match args.kind {
        GetKind::Resource(kind) => kind,
        GetKind::Agents => {
            crate::commands::agent::print_agents(&client, args.output).await?;
            return Ok(ExitCode::SUCCESS);
        }
    };

    let (response, items) = match &args.name {
        Some(name) => {
            let resource = client.get(&["v1", kind.path_name(), name], &[]).await?;
            (resource.clone(), vec![resource])
        }
        None => {
            let list = client.get(&["v1", kind.path_name()], &[]).await?;
            let items = array_field(&list, "items").to_vec();
            (list, items)
        }
    };

    match args.output {
        OutputFormat::Json => output::print_json(&response)?,
        OutputFormat::Yaml => output::print_yaml(&config_file_form(kind, &items)?)?,
        OutputFormat::Table if items.is_empty() => {
            eprintln!("no {} found", kind.path_name().replace('-', " "));
        }
        OutputFormat::Table => output::print_text(&resource_table(kind, &items).render())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `mayfly delete`.
pub async fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.admin_client()?;

    let response = client
        .delete(&["v1", args.kind.path_name(), &args.name])
        .await?;

    let deleted = response.get("deleted").unwrap_or(&Value::Null);
    let kind = deleted
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(args.kind.as_str());
    let name = deleted
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&args.name);
    output::print_text(&format!(
        "deleted {} {:?}",
        output::clean_text(kind),
        output::clean_text(name)
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Turns API resources into a configuration file with one list, the form `mayfly apply -f`
/// reads. The fields that the server adds (`created_at`, `updated_at`, `enabled`,
/// `credential_type`, `typical_lifetime`, a log stream's `status`) are dropped because the file
/// format rejects them, and so is a write-only secret as reads show it (set, fingerprint, age):
/// applying the file keeps the stored secret. `name` and `kind` come first in each resource.
pub fn config_file_form(
    kind: ResourceKind,
    items: &[Value],
) -> Result<YamlValue, serde_yaml_ng::Error> {
    const LEADING_FIELDS: [&str; 2] = ["name", "kind"];
    const SERVER_FIELDS: [&str; 6] = [
        "created_at",
        "updated_at",
        "enabled",
        "credential_type",
        "typical_lifetime",
        "status",
    ];

    let mut resources = Vec::new();
    for item in items {
        let Some(object) = item.as_object() else {
            resources.push(serde_yaml_ng::to_value(item)?);
            continue;
        };
        let mut resource = Mapping::new();
        for key in LEADING_FIELDS {
            if let Some(value) = object.get(key) {
                resource.insert(YamlValue::from(key), serde_yaml_ng::to_value(value)?);
            }
        }
        for (key, value) in object {
            let described_secret =
                value.get("set") == Some(&Value::Bool(true)) && value.get("fingerprint").is_some();
            if LEADING_FIELDS.contains(&key.as_str())
                || SERVER_FIELDS.contains(&key.as_str())
                || described_secret
            {
                continue;
            }
            resource.insert(
                YamlValue::from(key.as_str()),
                serde_yaml_ng::to_value(value)?,
            );
        }
        resources.push(YamlValue::Mapping(resource));
    }

    let mut file = Mapping::new();
    file.insert(
        YamlValue::from(kind.file_key()),
        YamlValue::Sequence(resources),
    );
    Ok(YamlValue::Mapping(file))
}

/// Builds the table of resources of one kind, with a summary column chosen per kind.
pub fn resource_table(kind: ResourceKind, items: &[Value]) -> Table {
    let mut table = match kind {
        ResourceKind::TrustProvider => Table::new(&["NAME", "KIND", "ISSUER", "UPDATED"]),
        ResourceKind::ClientWorkload => {
            Table::new(&["NAME", "SPIFFE ID", "TRUST PROVIDERS", "UPDATED"])
        }
        ResourceKind::ServerWorkload => {
            Table::new(&["NAME", "TARGET", "AUTHENTICATION", "ENABLED", "UPDATED"])
        }
        ResourceKind::CredentialProvider => {
            Table::new(&["NAME", "KIND", "TYPE", "LIFETIME", "TARGET", "UPDATED"])
        }
        ResourceKind::AccessCondition => Table::new(&["NAME", "KIND", "RULE", "UPDATED"]),
        ResourceKind::AccessPolicy => {
            Table::new(&["NAME", "CLIENT -> SERVER", "CREDENTIAL PROVIDER", "UPDATED"])
        }
        ResourceKind::AlertRule => Table::new(&["NAME", "KIND", "RULE", "NOTIFY", "UPDATED"]),
        ResourceKind::NotificationTarget => {
            Table::new(&["NAME", "KIND", "URL", "SECRET", "STATE", "LAG", "UPDATED"])
        }
        ResourceKind::LogStream => Table::new(&[
            "NAME",
            "KIND",
            "DESTINATION",
            "FORMAT",
            "STATE",
            "LAG",
            "UPDATED",
        ]),
    };

    for item in items {
        let name = field_text(item, "name");
        let updated = time_text(item, "updated_at");
        let row = match kind {
            ResourceKind::TrustProvider => vec![
                name,
                field_text(item, "kind"),
                field_text(item, "issuer"),
                updated,
            ],
            ResourceKind::ClientWorkload => {
                vec![
                    name,
                    client_spiffe_id(item),
                    identity_providers(item),
                    updated,
                ]
            }
            ResourceKind::ServerWorkload => vec![
                name,
                server_target(item),
                authentication_summary(item),
                field_text(item, "enabled"),
                updated,
            ],
            ResourceKind::CredentialProvider => vec![
                name,
                field_text(item, "kind"),
                field_text(item, "credential_type"),
                provider_lifetime(item),
                provider_target(item),
                updated,
            ],
            ResourceKind::AccessCondition => vec![
                name,
                field_text(item, "kind"),
                condition_rule(item),
                updated,
            ],
            ResourceKind::AccessPolicy => vec![
                name,
                format!(
                    "{} -> {}",
                    field_text(item, "client_workload"),
                    field_text(item, "server_workload")
                ),
                field_text(item, "credential_provider"),
                updated,
            ],
            ResourceKind::AlertRule => vec![
                name,
                field_text(item, "kind"),
                alert_rule_summary(item),
                match array_field(item, "notify") {
                    [] => "-".to_string(),
                    targets => string_list(targets),
                },
                updated,
            ],
            ResourceKind::NotificationTarget => vec![
                name,
                field_text(item, "kind"),
                field_text(item, "url"),
                target_secret(item),
                item.get("status")
                    .map(|status| field_text(status, "state"))
                    .unwrap_or_else(|| "-".to_string()),
                item.get("status")
                    .map(|status| field_text(status, "lag"))
                    .unwrap_or_else(|| "-".to_string()),
                updated,
            ],
            ResourceKind::LogStream => vec![
                name,
                field_text(item, "kind"),
                stream_destination(item),
                field_text(item, "format"),
                item.get("status")
                    .map(|status| field_text(status, "state"))
                    .unwrap_or_else(|| "-".to_string()),
                item.get("status")
                    .map(|status| field_text(status, "lag"))
                    .unwrap_or_else(|| "-".to_string()),
                updated,
            ],
        };
        table.push(row);
    }
    table
}

/// Describes how long a provider's credentials live: its TTL, "set by target", or for a stored
/// secret how long ago it was set, so that long-lived secrets stand out.
fn provider_lifetime(item: &Value) -> String {
    let lifetime_kind = item
        .get("typical_lifetime")
        .and_then(|lifetime| lifetime.get("kind"))
        .and_then(Value::as_str);
    match lifetime_kind {
        Some("until_rotated") => match item.pointer("/value/age").and_then(Value::as_str) {
            Some(age) => format!("until rotated (set {age} ago)"),
            None => "until rotated".to_string(),
        },
        Some("set_by_target") => "set by target".to_string(),
        _ => field_text(item, "ttl"),
    }
}

/// Names what a provider's credentials are for: JWT-SVID audiences, the token service, or
/// X.509-SVIDs through agents.
fn provider_target(item: &Value) -> String {
    if let Some(url) = item.get("token_url").and_then(Value::as_str) {
        return url.to_string();
    }
    if let Some(username) = item.get("username").and_then(Value::as_str) {
        return format!("user {username}");
    }
    if item.get("kind").and_then(Value::as_str) == Some("x509_svid") {
        return "X.509-SVID (agents only)".to_string();
    }
    match array_field(item, "audience") {
        [] => "-".to_string(),
        audience => string_list(audience),
    }
}

fn client_spiffe_id(item: &Value) -> String {
    match item.get("spiffe_id").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => "(default)".to_string(),
    }
}

fn identity_providers(item: &Value) -> String {
    let mut providers: Vec<String> = array_field(item, "identities")
        .iter()
        .map(|identity| field_text(identity, "trust_provider"))
        .collect();
    providers.dedup();
    providers.join(", ")
}

fn server_target(item: &Value) -> String {
    let scheme = item
        .get("scheme")
        .and_then(Value::as_str)
        .unwrap_or("https");
    format!(
        "{scheme}://{}:{}",
        field_text(item, "host"),
        field_text(item, "port")
    )
}

fn authentication_summary(item: &Value) -> String {
    let Some(authentication) = item.get("authentication") else {
        return "bearer".to_string();
    };
    let method = field_text(authentication, "method");
    match method.as_str() {
        "header" => format!("header {}", field_text(authentication, "header")),
        "query" => format!("query {}", field_text(authentication, "parameter")),
        _ => method,
    }
}

fn condition_rule(item: &Value) -> String {
    match item.get("kind").and_then(Value::as_str) {
        Some("source_ip") => string_list(array_field(item, "allow")),
        Some("geo") => {
            let countries = string_list(array_field(item, "allow_countries"));
            match array_field(item, "allow_subdivisions") {
                [] => format!("countries {countries}"),
                subdivisions => format!(
                    "countries {countries}; subdivisions {}",
                    string_list(subdivisions)
                ),
            }
        }
        Some("time_window") => {
            let windows: Vec<String> = array_field(item, "schedule")
                .iter()
                .map(|entry| {
                    let days = string_list(array_field(entry, "days"));
                    format!(
                        "{days} {}-{}",
                        field_text(entry, "start"),
                        field_text(entry, "end")
                    )
                })
                .collect();
            format!("{}: {}", field_text(item, "timezone"), windows.join("; "))
        }
        _ => "-".to_string(),
    }
}

/// Summarizes an alert rule's settings, such as `threshold 5 in 10m`.
fn alert_rule_summary(item: &Value) -> String {
    match item.get("kind").and_then(Value::as_str) {
        Some("failed_requests") => {
            let threshold = item
                .get("threshold")
                .map_or("5".to_string(), |_| field_text(item, "threshold"));
            let window = item
                .get("window")
                .map_or("10m".to_string(), |_| field_text(item, "window"));
            format!("more than {threshold} failures in {window}")
        }
        Some("off_hours") => format!("outside business hours ({})", field_text(item, "timezone")),
        Some("config_change") => "server workload changes".to_string(),
        Some("rate_spike") => {
            let percent = item
                .get("percent")
                .map_or("200".to_string(), |_| field_text(item, "percent"));
            let window = item
                .get("window")
                .map_or("1h".to_string(), |_| field_text(item, "window"));
            format!("issuance above {percent}% of baseline per {window}")
        }
        Some("unexpected_location") => {
            let mut allowed = Vec::new();
            if let networks @ [_, ..] = array_field(item, "allow_networks") {
                allowed.push(format!("networks {}", string_list(networks)));
            }
            if let countries @ [_, ..] = array_field(item, "allow_countries") {
                allowed.push(format!("countries {}", string_list(countries)));
            }
            format!("requests from outside {}", allowed.join(" and "))
        }
        _ => "-".to_string(),
    }
}

/// Describes a notification target's secret as reads show it: how it is sent, its fingerprint
/// and age, never its value.
fn target_secret(item: &Value) -> String {
    let auth = item.get("auth").and_then(Value::as_str).unwrap_or("none");
    let Some(secret) = item.get("secret") else {
        return auth.to_string();
    };
    let fingerprint = field_text(secret, "fingerprint");
    let shown = fingerprint
        .strip_prefix("hmac-sha256:")
        .unwrap_or(&fingerprint);
    let short: String = shown.chars().take(12).collect();
    let header = match item.get("header").and_then(Value::as_str) {
        Some(header) => format!(" {header}"),
        None => String::new(),
    };
    match secret.get("age").and_then(Value::as_str) {
        Some(age) => format!("{auth}{header} set {short} ({age} ago)"),
        None => format!("{auth}{header} set {short}"),
    }
}

/// Returns where a log stream delivers: its path, URL or address (with the NATS subject).
fn stream_destination(item: &Value) -> String {
    for field in ["path", "url"] {
        if let Some(text) = item.get(field).and_then(Value::as_str) {
            return text.to_string();
        }
    }
    let address = field_text(item, "address");
    match item.get("subject").and_then(Value::as_str) {
        Some(subject) => format!("{address} {subject}"),
        None => match item.get("transport").and_then(Value::as_str) {
            Some(transport) => format!("{transport}://{address}"),
            None => address,
        },
    }
}

fn string_list(values: &[Value]) -> String {
    let texts: Vec<String> = values
        .iter()
        .map(|value| {
            value
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string())
        })
        .collect();
    texts.join(", ")
}

#[cfg(test)]
mod tests;

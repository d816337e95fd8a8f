//! The YAML configuration file that `mayfly apply -f` and `mayfly server --apply` read: one list
//! per resource kind, with `${VAR}` placeholders filled from the environment.
//!
//! Placeholders are filled after the file is parsed, inside the one value that contains them,
//! so a variable's value is always data: whatever characters it has (newlines, `#`, quotes,
//! `: `), it cannot add a key, a list item or a resource.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::alerts::AlertRule;
use crate::log_stream::LogStream;
use crate::notification::NotificationTarget;
use crate::resources::{
    AccessCondition, AccessPolicy, ClientWorkload, CredentialProvider, Resource, ResourceKind,
    ServerWorkload, TrustProvider,
};

/// A problem with a configuration file, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct FileError {
    pub file: String,
    /// 1-based line number, when known.
    pub line: Option<usize>,
    /// `kind "name"` of the resource at fault, when known.
    pub resource: Option<String>,
    pub message: String,
}

impl FileError {
    fn render(&self) -> String {
        let mut text = self.file.clone();
        if let Some(line) = self.line {
            text.push_str(&format!(":{line}"));
        }
        if let Some(resource) = &self.resource {
            text.push_str(&format!(": {resource}"));
        }
        format!("{text}: {}", self.message)
    }
}

/// The file's resources, one list per kind. Also the JSON body of `POST /v1/apply`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub trust_providers: Vec<TrustProvider>,
    #[serde(default)]
    pub client_workloads: Vec<ClientWorkload>,
    #[serde(default)]
    pub server_workloads: Vec<ServerWorkload>,
    #[serde(default)]
    pub credential_providers: Vec<CredentialProvider>,
    #[serde(default)]
    pub access_conditions: Vec<AccessCondition>,
    #[serde(default)]
    pub access_policies: Vec<AccessPolicy>,
    #[serde(default)]
    pub log_streams: Vec<LogStream>,
    #[serde(default)]
    pub notification_targets: Vec<NotificationTarget>,
    #[serde(default)]
    pub alert_rules: Vec<AlertRule>,
}

impl ConfigFile {
    /// Lists the resources in dependency order.
    pub fn into_resources(self) -> Vec<Resource> {
        let mut resources = Vec::new();
        resources.extend(
            self.trust_providers
                .into_iter()
                .map(Resource::TrustProvider),
        );
        resources.extend(
            self.server_workloads
                .into_iter()
                .map(Resource::ServerWorkload),
        );
        resources.extend(
            self.credential_providers
                .into_iter()
                .map(Resource::CredentialProvider),
        );
        resources.extend(
            self.access_conditions
                .into_iter()
                .map(Resource::AccessCondition),
        );
        resources.extend(
            self.client_workloads
                .into_iter()
                .map(Resource::ClientWorkload),
        );
        resources.extend(self.access_policies.into_iter().map(Resource::AccessPolicy));
        resources.extend(self.log_streams.into_iter().map(Resource::LogStream));
        resources.extend(
            self.notification_targets
                .into_iter()
                .map(Resource::NotificationTarget),
        );
        resources.extend(self.alert_rules.into_iter().map(Resource::AlertRule));
        resources
    }

    /// Groups resources back into a file.
    pub fn from_resources(resources: impl IntoIterator<Item = Resource>) -> ConfigFile {
        let mut file = ConfigFile::default();
        for resource in resources {
            match resource {
                Resource::TrustProvider(r) => file.trust_providers.push(r),
                Resource::ClientWorkload(r) => file.client_workloads.push(r),
                Resource::ServerWorkload(r) => file.server_workloads.push(r),
                Resource::CredentialProvider(r) => file.credential_providers.push(r),
                Resource::AccessCondition(r) => file.access_conditions.push(r),
                Resource::AccessPolicy(r) => file.access_policies.push(r),
                Resource::LogStream(r) => file.log_streams.push(r),
                Resource::NotificationTarget(r) => file.notification_targets.push(r),
                Resource::AlertRule(r) => file.alert_rules.push(r),
            }
        }
        file
    }
}

/// Replaces every `${NAME}` with the value `lookup` returns. `$${` stands for a literal `${`.
/// A name that `lookup` does not know is an error naming it and its line. Lines that are
/// comments (first non-blank character `#`) are left as they are.
pub fn expand_variables(
    file: &str,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, FileError> {
    let mut output = String::with_capacity(text.len());
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        // Whole-line comments are copied as they are, so a comment may mention a variable that
        // is not set.
        if line.trim_start().starts_with('#') {
            output.push_str(line);
        } else {
            output.push_str(&expand_line(file, line, offset, text, &lookup)?);
        }
        offset += line.len();
    }
    Ok(output)
}

/// Expands one line; `offset` is where it starts in `text`, for line numbers in errors.
fn expand_line(
    file: &str,
    line_text: &str,
    offset: usize,
    text: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<String, FileError> {
    let mut output = String::with_capacity(line_text.len());
    let mut rest = line_text;
    while let Some(index) = rest.find('$') {
        output.push_str(&rest[..index]);
        let after = &rest[index..];
        if let Some(stripped) = after.strip_prefix("$${") {
            output.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(body) = after.strip_prefix("${") else {
            output.push('$');
            rest = &after[1..];
            continue;
        };
        let line = text[..offset + line_text.len() - after.len()]
            .matches('\n')
            .count()
            + 1;
        let Some(end) = body.find('}') else {
            return Err(FileError {
                file: file.to_string(),
                line: Some(line),
                resource: None,
                message: "unterminated ${ placeholder: add the closing }".to_string(),
            });
        };
        let name = &body[..end];
        let valid_name = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid_name {
            return Err(FileError {
                file: file.to_string(),
                line: Some(line),
                resource: None,
                message: format!(
                    "invalid variable name {name:?} in ${{...}}: use letters, digits and _"
                ),
            });
        }
        let Some(value) = lookup(name) else {
            return Err(FileError {
                file: file.to_string(),
                line: Some(line),
                resource: None,
                message: format!("environment variable {name} is not set"),
            });
        };
        output.push_str(&value);
        rest = &body[end + 1..];
    }
    output.push_str(rest);
    Ok(output)
}

/// Parses a YAML file whose values may contain `${NAME}` placeholders and fills each placeholder
/// with the value `lookup` returns, inside the value that contains it. `$${` stands for a literal
/// `${`. Keys and comments are not expanded. A value that is a single placeholder may fill a
/// number or boolean field (`port: ${PORT}`). An unset variable is an error naming it and its
/// line.
pub fn parse_with_variables(
    file: &str,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ConfigFile, FileError> {
    // Checks every placeholder of the text first, so that errors carry line numbers.
    expand_variables(file, text, &lookup)?;
    if !text.contains("${") {
        return parse(file, text);
    }
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|error| {
        let mut error = yaml_error(file, error);
        error
            .message
            .push_str(" (inside {...} or [...], write a placeholder in quotes: \"${NAME}\")");
        error
    })?;
    expand_values(file, &mut value, &lookup)?;
    let parsed: ConfigFile = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        let resource = resource_at(&path);
        FileError {
            file: file.to_string(),
            line: None,
            resource: None,
            message: match resource {
                Some(_) => format!("{path}: {inner}"),
                None => inner,
            },
        }
    })?;
    validate_resources(file, Some(text), &parsed.clone().into_resources())?;
    Ok(parsed)
}

/// Returns the `kind[index]` prefix of a deserialization path such as `log_streams[0].url`.
fn resource_at(path: &str) -> Option<&str> {
    let end = path.find(']')?;
    Some(&path[..=end])
}

/// Fills the placeholders of every string value in `value`, leaving keys as they are.
fn expand_values(
    file: &str,
    value: &mut serde_yaml_ng::Value,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(), FileError> {
    use serde_yaml_ng::Value;
    match value {
        Value::String(text) if text.contains("${") => {
            let expanded = expand_line(file, text, 0, text, lookup).map_err(|error| FileError {
                line: None,
                ..error
            })?;
            *text = expanded;
        }
        Value::Sequence(items) => {
            for item in items {
                expand_values(file, item, lookup)?;
            }
        }
        Value::Mapping(entries) => {
            for (_, entry) in entries.iter_mut() {
                expand_values(file, entry, lookup)?;
            }
        }
        Value::Tagged(tagged) => expand_values(file, &mut tagged.value, lookup)?,
        _ => {}
    }
    Ok(())
}

fn yaml_error(file: &str, error: serde_yaml_ng::Error) -> FileError {
    let line = error.location().map(|location| location.line());
    let mut message = error.to_string();
    // The line already leads the rendered error, so drop the parser's own suffix.
    if let Some(index) = message.rfind(" at line ") {
        message.truncate(index);
    }
    FileError {
        file: file.to_string(),
        line,
        resource: None,
        message,
    }
}

/// Parses an expanded YAML file and validates each resource on its own. Cross-resource checks
/// (references, unique targets) happen against the whole configuration when it is applied.
pub fn parse(file: &str, text: &str) -> Result<ConfigFile, FileError> {
    let parsed: ConfigFile = if text.trim().is_empty() {
        ConfigFile::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|error| yaml_error(file, error))?
    };
    validate_resources(file, Some(text), &parsed.clone().into_resources())?;
    Ok(parsed)
}

/// Validates resources one by one and rejects duplicate names within a kind. With the file's
/// text, an error carries the line where the resource's name appears.
pub fn validate_resources(
    file: &str,
    text: Option<&str>,
    resources: &[Resource],
) -> Result<(), FileError> {
    let mut seen: BTreeSet<(ResourceKind, &str)> = BTreeSet::new();
    for resource in resources {
        let label = format!("{} {:?}", resource.kind(), resource.name());
        let line = text.and_then(|text| line_of_name(text, resource.name()));
        let error = |message: String| FileError {
            file: file.to_string(),
            line,
            resource: Some(label.clone()),
            message,
        };
        if !seen.insert((resource.kind(), resource.name())) {
            return Err(error(format!(
                "the name {:?} is used twice for {}",
                resource.name(),
                resource.kind().file_key()
            )));
        }
        resource
            .validate()
            .map_err(|field_error| error(field_error.to_string()))?;
    }
    Ok(())
}

/// Finds the first line that declares `name: <name>`, for error messages.
fn line_of_name(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let trimmed = line.trim_start().trim_start_matches('-').trim_start();
            let Some(value) = trimmed.strip_prefix("name:") else {
                return false;
            };
            value.trim().trim_matches('"').trim_matches('\'') == name
        })
        .map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const DESIGN_EXAMPLE: &str = r#"
trust_providers:
  - name: ci
    kind: oidc
    issuer: https://ci.example.com
    audience: mayfly
    jwks: {"keys": [{"kty": "EC", "crv": "P-256", "kid": "ci-1", "x": "x", "y": "y"}]}
  - name: local
    kind: unix

client_workloads:
  - name: billing
    spiffe_id: spiffe://mayfly.local/billing
    identities:
      - trust_provider: ci
        match: {sub: "repo:acme/billing:ref:refs/heads/main"}
      - trust_provider: local
        match: {uid: 1000, path: /usr/local/bin/billing}

server_workloads:
  - name: payments-api
    host: payments.internal.example
    port: 443
    scheme: https
    authentication: {method: bearer}

credential_providers:
  - name: payments-jwt
    kind: jwt_svid
    audience: [payments-api]
    ttl: 5m

access_conditions:
  - name: office-network
    kind: source_ip
    allow: [10.0.0.0/8, 127.0.0.0/8]
  - name: business-hours
    kind: time_window
    timezone: Europe/Berlin
    schedule:
      - days: [mon, tue, wed, thu, fri]
        start: "08:00"
        end: "18:00"

access_policies:
  - name: billing-to-payments
    client_workload: billing
    server_workload: payments-api
    credential_provider: payments-jwt
    trust_providers: [ci, local]
    access_conditions: [office-network]
"#;

    #[test]
    fn parses_the_reference_example() {
        let parsed = parse("example.yaml", DESIGN_EXAMPLE);
        assert!(parsed.is_ok(), "{parsed:?}");
        let parsed = parsed.unwrap_or_default();
        assert_eq!(parsed.trust_providers.len(), 2);
        assert_eq!(parsed.access_conditions.len(), 2);
        let rules = &parsed.client_workloads[0].identities[1].match_rules;
        assert_eq!(rules.get("uid").map(|v| v.0.as_str()), Some("1000"));
    }

    #[test]
    fn unknown_field_names_line() {
        let text = "server_workloads:\n  - name: api\n    host: a.example\n    port: 443\n    colour: blue\n";
        let error = parse("f.yaml", text).err();
        let error = error.map(|e| (e.line, e.message.contains("colour")));
        assert_eq!(error, Some((Some(5), true)));
    }

    #[test]
    fn invalid_field_names_resource_and_line() {
        let text = "credential_providers:\n  - name: jwt\n    kind: jwt_svid\n    audience: [a]\n    ttl: 48h\n";
        let error = parse("f.yaml", text).err();
        assert_eq!(error.as_ref().and_then(|e| e.line), Some(2));
        assert_eq!(
            error.as_ref().and_then(|e| e.resource.clone()),
            Some("credential_provider \"jwt\"".to_string())
        );
        assert!(error.is_some_and(|e| e.message.contains("ttl \"2d\"")));
    }

    #[test]
    fn x509_svid_provider_parses_with_default_ttl() {
        let text = "credential_providers:\n  - name: mesh\n    kind: x509_svid\n";
        let parsed = parse("f.yaml", text).unwrap_or_default();
        let resources = parsed.into_resources();
        let provider = resources.iter().find_map(|resource| match resource {
            Resource::CredentialProvider(CredentialProvider::X509Svid(provider)) => {
                Some(provider.clone())
            }
            _ => None,
        });
        assert_eq!(
            provider.map(|provider| provider.ttl),
            Some(crate::duration::Seconds(3600))
        );
    }

    #[test]
    fn x509_svid_ttl_over_24h_rejected() {
        let text = "credential_providers:\n  - name: mesh\n    kind: x509_svid\n    ttl: 48h\n";
        let error = parse("f.yaml", text).err();
        assert_eq!(
            error.as_ref().and_then(|e| e.resource.clone()),
            Some("credential_provider \"mesh\"".to_string())
        );
        assert!(error.is_some_and(|e| e.message.contains("ttl \"2d\"")));
    }

    #[test]
    fn x509_svid_rejects_audience_field() {
        let text =
            "credential_providers:\n  - name: mesh\n    kind: x509_svid\n    audience: [a]\n";
        assert!(parse("f.yaml", text).is_err_and(|e| e.message.contains("audience")));
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let text = "trust_providers:\n  - name: a\n    kind: unix\n  - name: a\n    kind: unix\n";
        assert!(parse("f.yaml", text).is_err_and(|e| e.message.contains("used twice")));
    }

    #[test]
    fn expands_variables_and_rejects_unset_ones() {
        let lookup = |name: &str| (name == "PORT").then(|| "8443".to_string());
        assert_eq!(
            expand_variables("f", "port: ${PORT}", lookup),
            Ok("port: 8443".to_string())
        );
        assert_eq!(
            expand_variables("f", "cost: $5 and $${PORT}", lookup),
            Ok("cost: $5 and ${PORT}".to_string())
        );
        let error = expand_variables("f", "a: 1\nb: ${MISSING}\n", lookup).err();
        assert_eq!(error.as_ref().and_then(|e| e.line), Some(2));
        assert!(error.is_some_and(|e| e.message.contains("MISSING")));
        assert!(expand_variables("f", "a: ${OPEN", lookup).is_err());
        assert!(expand_variables("f", "a: ${1X}", lookup).is_err());
        assert_eq!(
            expand_variables("f", "  # uses ${UNSET}\nport: ${PORT}\n", lookup),
            Ok("  # uses ${UNSET}\nport: 8443\n".to_string())
        );
    }

    const WITH_SECRET: &str = "server_workloads:\n  - name: api\n    host: api.local\n    port: ${PORT}\ncredential_providers:\n  - name: key\n    kind: static_secret\n    value: ${SECRET}\n";

    fn secret_value(config: &ConfigFile) -> String {
        let provider = serde_json::to_value(&config.credential_providers[0]).unwrap_or_default();
        provider["value"].as_str().unwrap_or_default().to_string()
    }

    #[test]
    fn variable_cannot_add_resources() {
        let injected = "s3cret\naccess_policies:\n  - {name: injected, client_workload: a, server_workload: api, credential_provider: key}";
        let lookup = |name: &str| match name {
            "PORT" => Some("8443".to_string()),
            "SECRET" => Some(injected.to_string()),
            _ => None,
        };
        // The whole text stays the secret's value, which may not hold line breaks.
        let error = parse_with_variables("f.yaml", WITH_SECRET, lookup)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("value: must not contain line breaks"),
            "{error}"
        );
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn variable_keeps_comment_and_quote_characters() {
        let quoted = WITH_SECRET.replace("value: ${SECRET}", "value: \"${SECRET}\"");
        for text in [WITH_SECRET, quoted.as_str()] {
            for secret in [
                "Abc #Def",
                "a\" # b",
                "'single",
                "key: value",
                "true",
                "98765432109",
                "- item",
            ] {
                let lookup = |name: &str| match name {
                    "PORT" => Some("8443".to_string()),
                    "SECRET" => Some(secret.to_string()),
                    _ => None,
                };
                let config = parse_with_variables("f.yaml", text, lookup).unwrap();
                assert_eq!(secret_value(&config), secret);
                assert_eq!(config.server_workloads[0].port, 8443);
            }
        }
    }

    #[test]
    fn variable_number_out_of_range_is_named() {
        let lookup = |name: &str| match name {
            "PORT" => Some("70000".to_string()),
            _ => Some("x".to_string()),
        };
        let error = parse_with_variables("f.yaml", WITH_SECRET, lookup).unwrap_err();
        assert!(
            error.message.contains("server_workloads[0].port"),
            "{error}"
        );
        assert!(error.message.contains("70000"), "{error}");
    }

    #[test]
    fn escaped_placeholder_is_literal() {
        let text = WITH_SECRET.replace("value: ${SECRET}", "value: \"costs $${X}\"");
        let lookup = |name: &str| (name == "PORT").then(|| "443".to_string());
        let config = parse_with_variables("f.yaml", &text, lookup).unwrap();
        assert_eq!(secret_value(&config), "costs ${X}");
    }

    #[test]
    fn unquoted_placeholder_in_flow_mapping_gets_hint() {
        let text = "server_workloads:\n  - {name: api, host: api.local, port: ${PORT}}\n";
        let error = parse_with_variables("f.yaml", text, |_| Some("443".to_string())).unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(
            error.message.contains("write a placeholder in quotes"),
            "{error}"
        );
    }

    #[test]
    fn numeric_secret_is_not_echoed() {
        let text =
            "credential_providers:\n  - {name: key, kind: static_secret, value: 98765432109}\n";
        let error = parse("f.yaml", text).unwrap_err().to_string();
        assert!(!error.contains("98765432109"), "{error}");
        assert!(error.contains("quote it"), "{error}");
    }

    #[test]
    fn empty_file_is_empty_config() {
        assert_eq!(parse("f.yaml", "\n"), Ok(ConfigFile::default()));
    }
}

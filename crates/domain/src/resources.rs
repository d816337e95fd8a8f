//! Configuration resources: what operators declare with `mayfly apply` or the `/v1` API.
//!
//! Each resource has a unique name per kind (DNS-label style). Validation here looks at one
//! resource alone; checks that need the whole configuration (references, unique host and port)
//! live in [`crate::config`].

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::alerts::AlertRule;
use crate::duration::Seconds;
use crate::error::FieldError;
pub use crate::federation::FederatedTokenExchangeProvider;
use crate::log_stream::LogStream;
use crate::notification::NotificationTarget;
pub use crate::oauth::OauthClientCredentialsProvider;
use crate::spiffe::SpiffeId;
pub use crate::static_secret::StaticSecretProvider;

/// Longest credential lifetime a provider may configure: 24 hours. It also bounds how long a
/// retired signing key stays published.
pub const MAX_CREDENTIAL_TTL: Seconds = Seconds(86_400);
/// Lifetime of a JWT-SVID when its provider sets none: 5 minutes.
pub const DEFAULT_CREDENTIAL_TTL: Seconds = Seconds(300);
/// Shortest credential lifetime accepted.
pub const MIN_CREDENTIAL_TTL: Seconds = Seconds(10);

/// The kinds of configuration resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    TrustProvider,
    ClientWorkload,
    ServerWorkload,
    CredentialProvider,
    AccessCondition,
    AccessPolicy,
    LogStream,
    NotificationTarget,
    AlertRule,
}

impl ResourceKind {
    /// Every kind in dependency order: a kind only references kinds listed before it.
    pub const ALL: [ResourceKind; 9] = [
        ResourceKind::TrustProvider,
        ResourceKind::ServerWorkload,
        ResourceKind::CredentialProvider,
        ResourceKind::AccessCondition,
        ResourceKind::ClientWorkload,
        ResourceKind::AccessPolicy,
        ResourceKind::LogStream,
        ResourceKind::NotificationTarget,
        ResourceKind::AlertRule,
    ];

    /// The singular snake_case name used in stores and audit events, e.g. `trust_provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::TrustProvider => "trust_provider",
            ResourceKind::ClientWorkload => "client_workload",
            ResourceKind::ServerWorkload => "server_workload",
            ResourceKind::CredentialProvider => "credential_provider",
            ResourceKind::AccessCondition => "access_condition",
            ResourceKind::AccessPolicy => "access_policy",
            ResourceKind::LogStream => "log_stream",
            ResourceKind::NotificationTarget => "notification_target",
            ResourceKind::AlertRule => "alert_rule",
        }
    }

    /// The plural kebab-case name used in API paths and CLI verbs, e.g. `trust-providers`.
    pub fn path_name(self) -> &'static str {
        match self {
            ResourceKind::TrustProvider => "trust-providers",
            ResourceKind::ClientWorkload => "client-workloads",
            ResourceKind::ServerWorkload => "server-workloads",
            ResourceKind::CredentialProvider => "credential-providers",
            ResourceKind::AccessCondition => "access-conditions",
            ResourceKind::AccessPolicy => "access-policies",
            ResourceKind::LogStream => "log-streams",
            ResourceKind::NotificationTarget => "notification-targets",
            ResourceKind::AlertRule => "alert-rules",
        }
    }

    /// The plural snake_case key of the configuration file, e.g. `trust_providers`.
    pub fn file_key(self) -> &'static str {
        match self {
            ResourceKind::TrustProvider => "trust_providers",
            ResourceKind::ClientWorkload => "client_workloads",
            ResourceKind::ServerWorkload => "server_workloads",
            ResourceKind::CredentialProvider => "credential_providers",
            ResourceKind::AccessCondition => "access_conditions",
            ResourceKind::AccessPolicy => "access_policies",
            ResourceKind::LogStream => "log_streams",
            ResourceKind::NotificationTarget => "notification_targets",
            ResourceKind::AlertRule => "alert_rules",
        }
    }

    /// Accepts any of the three spellings and the singular kebab form (`trust-provider`).
    pub fn parse(text: &str) -> Option<ResourceKind> {
        let normalized = text.replace('-', "_");
        ResourceKind::ALL
            .into_iter()
            .find(|kind| normalized == kind.as_str() || normalized == kind.file_key())
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference from one resource to another, by kind and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    pub kind: ResourceKind,
    pub name: String,
    /// The field of the referring resource that holds the reference.
    pub field: &'static str,
}

/// Checks a resource name: 1 to 63 characters of `a-z`, `0-9` and `-`, starting and ending with a
/// letter or digit.
pub fn validate_name(field: &str, name: &str) -> Result<(), FieldError> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let valid_ends = !name.starts_with('-') && !name.ends_with('-');
    if name.is_empty() || name.len() > 63 || !valid_chars || !valid_ends {
        return Err(FieldError::new(
            field,
            name,
            "must be 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// A value in a match rule. YAML numbers and booleans are accepted and kept as their text, since
/// attested attributes compare as strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MatchValue(pub String);

impl<'de> Deserialize<'de> for MatchValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match value {
            serde_json::Value::String(text) => Ok(MatchValue(text)),
            serde_json::Value::Number(number) => Ok(MatchValue(number.to_string())),
            serde_json::Value::Bool(flag) => Ok(MatchValue(flag.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "match values must be strings, numbers or booleans, not {other}"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Trust providers

/// A verifier of evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrustProvider {
    /// OIDC or JWT tokens from an issuer: Kubernetes service accounts, CI systems, any OIDC issuer.
    Oidc(OidcTrustProvider),
    /// Processes on the server's workload socket, attested from the kernel.
    Unix(UnixTrustProvider),
}

/// Where an `oidc` trust provider gets the issuer's public keys.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource<'a> {
    Inline(&'a serde_json::Value),
    Uri(&'a str),
    Discovery,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcTrustProvider {
    pub name: String,
    /// Expected `iss` claim, compared exactly.
    pub issuer: String,
    /// A value the evidence token's `aud` claim must contain.
    pub audience: String,
    /// Inline JWK set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// URL of the issuer's JWK set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Find `jwks_uri` through `<issuer>/.well-known/openid-configuration`.
    #[serde(
        default,
        deserialize_with = "crate::scalar::boolean",
        skip_serializing_if = "is_false"
    )]
    pub discovery: bool,
    /// Claims every accepted token must carry with these values, whichever client workload it
    /// identifies (for example `repository_owner: acme`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_claims: BTreeMap<String, MatchValue>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`; default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<Seconds>,
}

impl OidcTrustProvider {
    pub fn key_source(&self) -> Option<KeySource<'_>> {
        match (&self.jwks, &self.jwks_uri, self.discovery) {
            (Some(jwks), None, false) => Some(KeySource::Inline(jwks)),
            (None, Some(uri), false) => Some(KeySource::Uri(uri)),
            (None, None, true) => Some(KeySource::Discovery),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixTrustProvider {
    pub name: String,
}

/// Attributes that a `unix` trust provider attests, and so the keys its match rules may use.
///
/// `groups` has one value per supplementary group id, and a rule on it matches when any of them
/// matches.
///
/// `agent` is the name of the agent that attested the process. The server sets it from the
/// agent's credential, never from what the agent sends, and leaves it out for processes on the
/// server's own socket. A rule with `agent` matches only processes attested by a matching agent,
/// and a rule without it matches only processes on the server's own socket.
pub const UNIX_ATTRIBUTES: [&str; 7] = [
    "uid",
    "gid",
    "groups",
    "pid",
    "path",
    "sha256",
    UNIX_AGENT_ATTRIBUTE,
];

/// The attribute naming the agent that attested a process.
pub const UNIX_AGENT_ATTRIBUTE: &str = "agent";

impl TrustProvider {
    pub fn name(&self) -> &str {
        match self {
            TrustProvider::Oidc(provider) => &provider.name,
            TrustProvider::Unix(provider) => &provider.name,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            TrustProvider::Oidc(_) => "oidc",
            TrustProvider::Unix(_) => "unix",
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", self.name())?;
        let TrustProvider::Oidc(provider) = self else {
            return Ok(());
        };
        validate_url("issuer", &provider.issuer)?;
        if provider.audience.is_empty() {
            return Err(FieldError::new("audience", "", "must not be empty"));
        }
        if provider.key_source().is_none() {
            return Err(FieldError::new(
                "jwks",
                "",
                "set exactly one of jwks, jwks_uri or discovery: true",
            ));
        }
        if let Some(uri) = &provider.jwks_uri {
            validate_url("jwks_uri", uri)?;
        }
        if let Some(jwks) = &provider.jwks {
            let has_keys = jwks.get("keys").and_then(|keys| keys.as_array()).is_some();
            if !has_keys {
                return Err(FieldError::new(
                    "jwks",
                    "",
                    "must be a JWK set: an object with a \"keys\" array",
                ));
            }
        }
        if let Some(leeway) = provider.leeway
            && leeway.as_secs() > 300
        {
            return Err(FieldError::new(
                "leeway",
                &leeway.to_string(),
                "must be at most 5m",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Client workloads

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientWorkload {
    pub name: String,
    /// Defaults to `spiffe://<trust domain>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<SpiffeId>,
    /// Any one of them identifies the workload.
    #[serde(default)]
    pub identities: Vec<Identity>,
}

/// One way to recognize a client workload: evidence attested by a trust provider whose attributes
/// match every entry of `match`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub trust_provider: String,
    /// Attribute name to expected value. A `*` in the value matches any run of characters.
    #[serde(rename = "match", default)]
    pub match_rules: BTreeMap<String, MatchValue>,
}

impl ClientWorkload {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", &self.name)?;
        if self.identities.is_empty() {
            return Err(FieldError::new(
                "identities",
                "",
                "must list at least one identity",
            ));
        }
        for (index, identity) in self.identities.iter().enumerate() {
            if identity.match_rules.is_empty() {
                return Err(FieldError::new(
                    &format!("identities[{index}].match"),
                    "",
                    "must have at least one attribute, or any caller attested by the trust provider would match",
                ));
            }
            // `*` matches any value, so a rule made only of `*` values matches every caller.
            if identity
                .match_rules
                .values()
                .all(|value| !value.0.is_empty() && value.0.bytes().all(|b| b == b'*'))
            {
                return Err(FieldError::new(
                    &format!("identities[{index}].match"),
                    "",
                    "must have at least one attribute whose value is not *, or any caller attested by the trust provider would match",
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Server workloads

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    #[default]
    Https,
}

/// How the server workload expects to receive a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Authentication {
    /// `Authorization: Bearer <credential>`.
    #[default]
    Bearer,
    /// A custom header carrying the credential as its whole value.
    Header { header: String },
    /// `Authorization: Basic` with the credential as the password (and a configured username).
    Basic {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
    },
    /// A query parameter.
    Query { parameter: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerWorkload {
    pub name: String,
    pub host: String,
    #[serde(deserialize_with = "crate::scalar::port")]
    pub port: u16,
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default)]
    pub authentication: Authentication,
}

impl ServerWorkload {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", &self.name)?;
        validate_host("host", &self.host)?;
        if self.port == 0 {
            return Err(FieldError::new("port", "0", "must be between 1 and 65535"));
        }
        match &self.authentication {
            Authentication::Header { header } => {
                let valid = !header.is_empty()
                    && header
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !valid {
                    return Err(FieldError::new(
                        "authentication.header",
                        header,
                        "must be a valid HTTP header name",
                    ));
                }
            }
            Authentication::Query { parameter } if parameter.is_empty() => {
                return Err(FieldError::new(
                    "authentication.parameter",
                    parameter,
                    "must not be empty",
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// Returns the host in the form used to compare and look up server workloads by target.
    pub fn host_key(&self) -> String {
        normalize_host(&self.host)
    }
}

/// Returns a host in lower case without one trailing dot, so `Api.Example.` and `api.example`
/// name the same server workload. DNS names are case-insensitive, and a trailing dot only marks a
/// name as fully qualified.
pub fn normalize_host(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------
// Credential providers

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub enum SigningAlgorithm {
    #[default]
    ES256,
    RS256,
    PS256,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::RS256 => "RS256",
            SigningAlgorithm::PS256 => "PS256",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CredentialProvider {
    /// A JWT-SVID signed by Mayfly.
    JwtSvid(JwtSvidProvider),
    /// An API key or a username and password, stored encrypted.
    StaticSecret(StaticSecretProvider),
    /// An access token from the target's OAuth authorization server.
    OauthClientCredentials(OauthClientCredentialsProvider),
    /// The target's credential, obtained by exchanging a JWT-SVID at its token service.
    FederatedTokenExchange(FederatedTokenExchangeProvider),
    /// An X.509-SVID signed by Mayfly's X.509 CA for a key pair the agent generated. Only the
    /// agent's Workload API can request it, because the request carries a CSR.
    X509Svid(X509SvidProvider),
}

/// How long a provider's credentials typically live, for operators comparing providers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TypicalLifetime {
    /// A fixed lifetime set by the provider.
    Fixed { seconds: u64 },
    /// Valid until an operator replaces it.
    UntilRotated,
    /// Set by the target's token service with each credential (`expires_in`).
    SetByTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidProvider {
    pub name: String,
    /// Values of the token's `aud` claim.
    pub audience: Vec<String>,
    #[serde(default = "default_ttl")]
    pub ttl: Seconds,
    #[serde(default)]
    pub algorithm: SigningAlgorithm,
}

fn default_ttl() -> Seconds {
    DEFAULT_CREDENTIAL_TTL
}

/// Default lifetime of an X.509-SVID.
pub const DEFAULT_X509_SVID_TTL: Seconds = Seconds(3600);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509SvidProvider {
    pub name: String,
    /// Lifetime of each X.509-SVID, capped by the lifetime of the CA that signs it.
    #[serde(default = "default_x509_ttl")]
    pub ttl: Seconds,
}

fn default_x509_ttl() -> Seconds {
    DEFAULT_X509_SVID_TTL
}

impl CredentialProvider {
    pub fn name(&self) -> &str {
        match self {
            CredentialProvider::JwtSvid(provider) => &provider.name,
            CredentialProvider::StaticSecret(provider) => &provider.name,
            CredentialProvider::OauthClientCredentials(provider) => &provider.name,
            CredentialProvider::FederatedTokenExchange(provider) => &provider.name,
            CredentialProvider::X509Svid(provider) => &provider.name,
        }
    }

    /// The `credential_type` of what the provider produces: `jwt_svid`, `api_key`, `password`.
    pub fn credential_type(&self) -> &'static str {
        match self {
            CredentialProvider::JwtSvid(_) => "jwt_svid",
            CredentialProvider::StaticSecret(provider) => provider.credential_type(),
            CredentialProvider::OauthClientCredentials(_) => "access_token",
            CredentialProvider::FederatedTokenExchange(provider) => provider.credential_type(),
            CredentialProvider::X509Svid(_) => "x509_svid",
        }
    }

    pub fn typical_lifetime(&self) -> TypicalLifetime {
        match self {
            CredentialProvider::JwtSvid(provider) => TypicalLifetime::Fixed {
                seconds: provider.ttl.as_secs(),
            },
            CredentialProvider::X509Svid(provider) => TypicalLifetime::Fixed {
                seconds: provider.ttl.as_secs(),
            },
            CredentialProvider::StaticSecret(_) => TypicalLifetime::UntilRotated,
            CredentialProvider::OauthClientCredentials(_)
            | CredentialProvider::FederatedTokenExchange(_) => TypicalLifetime::SetByTarget,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            CredentialProvider::JwtSvid(_) => "jwt_svid",
            CredentialProvider::StaticSecret(_) => "static_secret",
            CredentialProvider::OauthClientCredentials(_) => "oauth_client_credentials",
            CredentialProvider::FederatedTokenExchange(_) => "federated_token_exchange",
            CredentialProvider::X509Svid(_) => "x509_svid",
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", self.name())?;
        let provider = match self {
            CredentialProvider::JwtSvid(provider) => provider,
            CredentialProvider::StaticSecret(provider) => return provider.validate(),
            CredentialProvider::OauthClientCredentials(provider) => return provider.validate(),
            CredentialProvider::FederatedTokenExchange(provider) => return provider.validate(),
            CredentialProvider::X509Svid(provider) => return validate_ttl(provider.ttl),
        };
        if provider.audience.is_empty() {
            return Err(FieldError::new(
                "audience",
                "[]",
                "must list at least one audience",
            ));
        }
        if let Some(empty) = provider
            .audience
            .iter()
            .find(|value| value.trim().is_empty())
        {
            return Err(FieldError::new(
                "audience",
                empty,
                "audience values must not be empty",
            ));
        }
        validate_ttl(provider.ttl)
    }
}

fn validate_ttl(ttl: Seconds) -> Result<(), FieldError> {
    if ttl > MAX_CREDENTIAL_TTL || ttl < MIN_CREDENTIAL_TTL {
        return Err(FieldError::new(
            "ttl",
            &ttl.to_string(),
            "must be between 10s and 24h",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Access conditions

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccessCondition {
    /// Weekdays and hours in an IANA time zone.
    TimeWindow(TimeWindowCondition),
    /// An allowlist of networks for the request's source address.
    SourceIp(SourceIpCondition),
    /// An allowlist of countries and subdivisions for the location of the source address.
    Geo(GeoCondition),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindowCondition {
    pub name: String,
    /// IANA time zone name, such as `Europe/Berlin`.
    pub timezone: String,
    pub schedule: Vec<ScheduleEntry>,
}

/// Days and an `HH:MM` range. When `end` is not after `start` the window runs past midnight into
/// the next day; `days` name the day on which it starts. `end` may be `24:00`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    pub days: Vec<Weekday>,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceIpCondition {
    pub name: String,
    /// CIDR networks; a bare address counts as a single-address network.
    pub allow: Vec<Network>,
}

/// Countries (ISO 3166-1 alpha-2, such as `DE`) and optional subdivisions (ISO 3166-2, such as
/// `DE-BE`). A country with listed subdivisions passes only from those subdivisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoCondition {
    pub name: String,
    pub allow_countries: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_subdivisions: Vec<String>,
}

/// A network written as CIDR (`10.0.0.0/8`) or as a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Network(pub IpNet);

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if let Ok(network) = text.parse::<IpNet>() {
            return Ok(Network(network.trunc()));
        }
        match text.parse::<std::net::IpAddr>() {
            Ok(address) => Ok(Network(IpNet::from(address))),
            Err(_) => Err(serde::de::Error::custom(format!(
                "invalid network {text:?}: expected CIDR such as 10.0.0.0/8 or a single address"
            ))),
        }
    }
}

impl AccessCondition {
    pub fn name(&self) -> &str {
        match self {
            AccessCondition::TimeWindow(condition) => &condition.name,
            AccessCondition::SourceIp(condition) => &condition.name,
            AccessCondition::Geo(condition) => &condition.name,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            AccessCondition::TimeWindow(_) => "time_window",
            AccessCondition::SourceIp(_) => "source_ip",
            AccessCondition::Geo(_) => "geo",
        }
    }

    /// Tells whether evaluating the condition needs the location of the source address.
    pub fn needs_location(&self) -> bool {
        matches!(self, AccessCondition::Geo(_))
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", self.name())?;
        match self {
            AccessCondition::TimeWindow(condition) => {
                crate::conditions::validate_time_window(condition)
            }
            AccessCondition::SourceIp(condition) if condition.allow.is_empty() => Err(
                FieldError::new("allow", "[]", "must list at least one network"),
            ),
            AccessCondition::SourceIp(_) => Ok(()),
            AccessCondition::Geo(condition) => crate::conditions::validate_geo(condition),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Access policies

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    pub name: String,
    pub client_workload: String,
    pub server_workload: String,
    pub credential_provider: String,
    /// The evidence must be attested by any one of them.
    pub trust_providers: Vec<String>,
    /// All of them must pass.
    #[serde(default)]
    pub access_conditions: Vec<String>,
}

impl AccessPolicy {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", &self.name)?;
        if self.trust_providers.is_empty() {
            return Err(FieldError::new(
                "trust_providers",
                "[]",
                "must list at least one trust provider",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Any resource

/// One resource of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    TrustProvider(TrustProvider),
    ClientWorkload(ClientWorkload),
    ServerWorkload(ServerWorkload),
    CredentialProvider(CredentialProvider),
    AccessCondition(AccessCondition),
    AccessPolicy(AccessPolicy),
    LogStream(LogStream),
    NotificationTarget(NotificationTarget),
    AlertRule(AlertRule),
}

impl Resource {
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::TrustProvider(_) => ResourceKind::TrustProvider,
            Resource::ClientWorkload(_) => ResourceKind::ClientWorkload,
            Resource::ServerWorkload(_) => ResourceKind::ServerWorkload,
            Resource::CredentialProvider(_) => ResourceKind::CredentialProvider,
            Resource::AccessCondition(_) => ResourceKind::AccessCondition,
            Resource::AccessPolicy(_) => ResourceKind::AccessPolicy,
            Resource::LogStream(_) => ResourceKind::LogStream,
            Resource::NotificationTarget(_) => ResourceKind::NotificationTarget,
            Resource::AlertRule(_) => ResourceKind::AlertRule,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::TrustProvider(resource) => resource.name(),
            Resource::ClientWorkload(resource) => &resource.name,
            Resource::ServerWorkload(resource) => &resource.name,
            Resource::CredentialProvider(resource) => resource.name(),
            Resource::AccessCondition(resource) => resource.name(),
            Resource::AccessPolicy(resource) => &resource.name,
            Resource::LogStream(resource) => &resource.name,
            Resource::NotificationTarget(resource) => &resource.name,
            Resource::AlertRule(resource) => &resource.name,
        }
    }

    /// Parses a resource of `kind` from its JSON form.
    pub fn from_json(
        kind: ResourceKind,
        value: serde_json::Value,
    ) -> Result<Resource, serde_json::Error> {
        Ok(match kind {
            ResourceKind::TrustProvider => Resource::TrustProvider(serde_json::from_value(value)?),
            ResourceKind::ClientWorkload => {
                Resource::ClientWorkload(serde_json::from_value(value)?)
            }
            ResourceKind::ServerWorkload => {
                Resource::ServerWorkload(serde_json::from_value(value)?)
            }
            ResourceKind::CredentialProvider => {
                Resource::CredentialProvider(serde_json::from_value(value)?)
            }
            ResourceKind::AccessCondition => {
                Resource::AccessCondition(serde_json::from_value(value)?)
            }
            ResourceKind::AccessPolicy => Resource::AccessPolicy(serde_json::from_value(value)?),
            ResourceKind::LogStream => Resource::LogStream(serde_json::from_value(value)?),
            ResourceKind::NotificationTarget => {
                Resource::NotificationTarget(serde_json::from_value(value)?)
            }
            ResourceKind::AlertRule => Resource::AlertRule(serde_json::from_value(value)?),
        })
    }

    /// Returns the JSON form, the same shape as in the configuration file.
    pub fn to_json(&self) -> serde_json::Value {
        let result = match self {
            Resource::TrustProvider(resource) => serde_json::to_value(resource),
            Resource::ClientWorkload(resource) => serde_json::to_value(resource),
            Resource::ServerWorkload(resource) => serde_json::to_value(resource),
            Resource::CredentialProvider(resource) => serde_json::to_value(resource),
            Resource::AccessCondition(resource) => serde_json::to_value(resource),
            Resource::AccessPolicy(resource) => serde_json::to_value(resource),
            Resource::LogStream(resource) => serde_json::to_value(resource),
            Resource::NotificationTarget(resource) => serde_json::to_value(resource),
            Resource::AlertRule(resource) => serde_json::to_value(resource),
        };
        result.unwrap_or(serde_json::Value::Null)
    }

    /// Validates the resource on its own.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            Resource::TrustProvider(resource) => resource.validate(),
            Resource::ClientWorkload(resource) => resource.validate(),
            Resource::ServerWorkload(resource) => resource.validate(),
            Resource::CredentialProvider(resource) => resource.validate(),
            Resource::AccessCondition(resource) => resource.validate(),
            Resource::AccessPolicy(resource) => resource.validate(),
            Resource::LogStream(resource) => resource.validate(),
            Resource::NotificationTarget(resource) => resource.validate(),
            Resource::AlertRule(resource) => resource.validate(),
        }
    }

    /// Tells whether the resource needs the location of source addresses, so a server without a
    /// GeoIP database must reject it.
    pub fn needs_location(&self) -> bool {
        match self {
            Resource::AccessCondition(condition) => condition.needs_location(),
            Resource::AlertRule(rule) => rule.needs_location(),
            _ => false,
        }
    }

    /// Lists the resources this one refers to.
    pub fn references(&self) -> Vec<Reference> {
        let reference = |kind, name: &str, field| Reference {
            kind,
            name: name.to_string(),
            field,
        };
        match self {
            Resource::ClientWorkload(workload) => workload
                .identities
                .iter()
                .map(|identity| {
                    reference(
                        ResourceKind::TrustProvider,
                        &identity.trust_provider,
                        "identities.trust_provider",
                    )
                })
                .collect(),
            Resource::AccessPolicy(policy) => {
                let mut references = vec![
                    reference(
                        ResourceKind::ClientWorkload,
                        &policy.client_workload,
                        "client_workload",
                    ),
                    reference(
                        ResourceKind::ServerWorkload,
                        &policy.server_workload,
                        "server_workload",
                    ),
                    reference(
                        ResourceKind::CredentialProvider,
                        &policy.credential_provider,
                        "credential_provider",
                    ),
                ];
                for name in &policy.trust_providers {
                    references.push(reference(
                        ResourceKind::TrustProvider,
                        name,
                        "trust_providers",
                    ));
                }
                for name in &policy.access_conditions {
                    references.push(reference(
                        ResourceKind::AccessCondition,
                        name,
                        "access_conditions",
                    ));
                }
                references.sort();
                references.dedup_by(|a, b| a.kind == b.kind && a.name == b.name);
                references
            }
            Resource::AlertRule(rule) => {
                let mut references: Vec<Reference> = rule
                    .notify
                    .iter()
                    .map(|name| reference(ResourceKind::NotificationTarget, name, "notify"))
                    .collect();
                references.sort();
                references.dedup_by(|a, b| a.kind == b.kind && a.name == b.name);
                references
            }
            _ => Vec::new(),
        }
    }
}

// Kinds tagged by a `kind` field are read in two steps, the tag first and then the variant's own
// struct, because serde's derived tagged enums buffer their content and so lose the path of the
// field at fault: "allow[0]: invalid network" instead of only "invalid network".

impl<'de> Deserialize<'de> for TrustProvider {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (kind, body) = split_kind(deserializer, "trust provider", &["oidc", "unix"])?;
        match kind.as_str() {
            "oidc" => parse_variant(body).map(TrustProvider::Oidc),
            _ => parse_variant(body).map(TrustProvider::Unix),
        }
    }
}

impl<'de> Deserialize<'de> for CredentialProvider {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let kinds = [
            "jwt_svid",
            "static_secret",
            "oauth_client_credentials",
            "federated_token_exchange",
            "x509_svid",
        ];
        let (kind, body) = split_kind(deserializer, "credential provider", &kinds)?;
        match kind.as_str() {
            "jwt_svid" => parse_variant(body).map(CredentialProvider::JwtSvid),
            "static_secret" => parse_variant(body).map(CredentialProvider::StaticSecret),
            "oauth_client_credentials" => {
                parse_variant(body).map(CredentialProvider::OauthClientCredentials)
            }
            "x509_svid" => parse_variant(body).map(CredentialProvider::X509Svid),
            _ => parse_variant(body).map(CredentialProvider::FederatedTokenExchange),
        }
    }
}

impl<'de> Deserialize<'de> for AccessCondition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (kind, body) = split_kind(
            deserializer,
            "access condition",
            &["time_window", "source_ip", "geo"],
        )?;
        match kind.as_str() {
            "time_window" => parse_variant(body).map(AccessCondition::TimeWindow),
            "geo" => parse_variant(body).map(AccessCondition::Geo),
            _ => parse_variant(body).map(AccessCondition::SourceIp),
        }
    }
}

/// Reads a resource as a JSON object and takes out its `kind`, which must be one of `kinds`.
fn split_kind<'de, D: Deserializer<'de>>(
    deserializer: D,
    what: &str,
    kinds: &[&str],
) -> Result<(String, serde_json::Value), D::Error> {
    let mut value = serde_json::Value::deserialize(deserializer)?;
    let Some(object) = value.as_object_mut() else {
        return Err(serde::de::Error::custom(format!(
            "a {what} must be a mapping of fields"
        )));
    };
    let kind = match object.remove("kind") {
        Some(serde_json::Value::String(kind)) => kind,
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "kind: expected one of {kinds:?}, found {other}"
            )));
        }
        None => {
            return Err(serde::de::Error::custom(format!(
                "kind: missing; a {what} needs one of {kinds:?}"
            )));
        }
    };
    if !kinds.contains(&kind.as_str()) {
        return Err(serde::de::Error::custom(format!(
            "kind: unknown {what} kind {kind:?}, expected one of {kinds:?}"
        )));
    }
    Ok((kind, value))
}

/// Deserializes a variant's struct, prefixing errors with the path of the field at fault.
fn parse_variant<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    body: serde_json::Value,
) -> Result<T, E> {
    serde_path_to_error::deserialize(body).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            E::custom(error.into_inner())
        } else {
            E::custom(format!("{path}: {}", error.into_inner()))
        }
    })
}

fn is_false(value: &bool) -> bool {
    !*value
}

pub(crate) fn validate_url(field: &str, value: &str) -> Result<(), FieldError> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !value.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(FieldError::new(
            field,
            value,
            "must be an http:// or https:// URL",
        )),
    }
}

fn validate_host(field: &str, host: &str) -> Result<(), FieldError> {
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        && !host.starts_with('.')
        && !host.contains("..");
    if !valid {
        return Err(FieldError::new(
            field,
            host,
            "must be a DNS name or an IP address",
        ));
    }
    Ok(())
}

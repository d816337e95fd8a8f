//! Log streams: destinations outside the server that receive every audit event (and every signed
//! checkpoint) a stream's filter selects.
//!
//! A stream is one flat resource whose `kind` picks the destination. Fields that only some kinds
//! use are optional, and [`LogStream::validate`] rejects a field that the stream's kind does not
//! use, so a misspelt configuration never silently ships somewhere else.

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditKind, Outcome};
use crate::duration::Seconds;
use crate::error::FieldError;
use crate::resources::validate_name;

/// Time a send may take before it counts as failed, when the stream sets none.
pub const DEFAULT_SEND_TIMEOUT: Seconds = Seconds(10);
/// Events per send when the stream sets no batch size.
pub const DEFAULT_BATCH_SIZE: u32 = 100;
/// Largest batch a stream may configure.
pub const MAX_BATCH_SIZE: u32 = 1000;

/// The destination type of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// A local file, one event per line, reopened when log rotation moves it away.
    File,
    /// Generic JSON batches sent with HTTP POST.
    Webhook,
    /// The Splunk HTTP Event Collector protocol.
    HttpHec,
    /// RFC 5424 syslog messages over TCP or TLS with octet-counting framing (RFC 6587).
    Syslog,
    /// A NATS JetStream subject.
    Nats,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::File => "file",
            StreamKind::Webhook => "webhook",
            StreamKind::HttpHec => "http_hec",
            StreamKind::Syslog => "syslog",
            StreamKind::Nats => "nats",
        }
    }
}

/// The format each record is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StreamFormat {
    /// Mayfly's own JSON form of the stored event, chain hashes included.
    #[default]
    Json,
    /// OCSF 1.8.0 records.
    Ocsf,
    /// ArcSight Common Event Format.
    Cef,
}

/// Transport of a syslog stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyslogTransport {
    #[default]
    Tcp,
    Tls,
}

/// The way a webhook presents its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WebhookAuth {
    /// `Authorization: Bearer <secret>`.
    #[default]
    Bearer,
    /// The header named by `header`, carrying the secret as its whole value.
    Header,
}

/// The selection of events a stream ships. An empty list selects everything for that attribute.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<AuditKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<Outcome>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_workloads: Vec<String>,
}

impl StreamFilter {
    /// Reports whether the stream ships `event`. An event without an outcome or a server
    /// workload never matches a filter that lists outcomes or server workloads.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        let event = &event.event;
        let kind_ok = self.kinds.is_empty() || self.kinds.contains(&event.kind);
        let outcome_ok = self.outcomes.is_empty()
            || event
                .outcome
                .is_some_and(|outcome| self.outcomes.contains(&outcome));
        let workload_ok = self.server_workloads.is_empty()
            || event
                .server_workload
                .as_ref()
                .is_some_and(|name| self.server_workloads.contains(name));
        kind_ok && outcome_ok && workload_ok
    }
}

/// A log stream resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogStream {
    pub name: String,
    pub kind: StreamKind,
    #[serde(default)]
    pub format: StreamFormat,
    #[serde(default, skip_serializing_if = "is_default_filter")]
    pub filter: StreamFilter,
    /// `file`: path of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `webhook`, `http_hec`: URL the batches are posted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `syslog`: `host:port` of the receiver. `nats`: `host:port` of the NATS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `syslog`: `tcp` (default) or `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<SyslogTransport>,
    /// `syslog` over TLS: PEM file of the CA certificates that the receiver's certificate must
    /// chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// `syslog` over TLS: name checked against the receiver's certificate. The host of `address`
    /// is used when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// `nats`: the JetStream subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `webhook`: how the secret is presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<WebhookAuth>,
    /// `webhook` with `auth: header`: the header's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `webhook`: the bearer token or header value. `http_hec`: the HEC token. It is write-only,
    /// because the server stores it encrypted and configuration reads return a placeholder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<StreamSecret>,
    /// Maximum time one send may take, 10s by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Seconds>,
    /// Maximum number of events per send, 100 by default.
    #[serde(
        default,
        deserialize_with = "crate::scalar::option_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub batch_size: Option<u32>,
}

/// A destination's secret (bearer token, header value or HEC token). Its `Debug` prints a
/// placeholder, and its memory is zeroed when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamSecret(String);

impl StreamSecret {
    pub fn new(value: String) -> StreamSecret {
        StreamSecret(value)
    }

    /// Returns the secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamSecret(<redacted>)")
    }
}

impl Drop for StreamSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

fn is_default_filter(filter: &StreamFilter) -> bool {
    *filter == StreamFilter::default()
}

impl LogStream {
    /// Returns the send timeout in force.
    pub fn send_timeout(&self) -> Seconds {
        self.timeout.unwrap_or(DEFAULT_SEND_TIMEOUT)
    }

    /// Returns the batch size in force.
    pub fn batch(&self) -> u32 {
        self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE)
    }

    /// Checks the fields that the stream's kind needs, and rejects those it does not use.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", &self.name)?;

        let used: &[&str] = match self.kind {
            StreamKind::File => &["path"],
            StreamKind::Webhook => &["url", "auth", "header", "secret"],
            StreamKind::HttpHec => &["url", "secret"],
            StreamKind::Syslog => &["address", "transport", "ca_file", "server_name"],
            StreamKind::Nats => &["address", "subject"],
        };
        let set = [
            ("path", self.path.is_some()),
            ("url", self.url.is_some()),
            ("address", self.address.is_some()),
            ("transport", self.transport.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("server_name", self.server_name.is_some()),
            ("subject", self.subject.is_some()),
            ("auth", self.auth.is_some()),
            ("header", self.header.is_some()),
            ("secret", self.secret.is_some()),
        ];
        for (field, is_set) in set {
            if is_set && !used.contains(&field) {
                return Err(FieldError::new(
                    field,
                    "",
                    &format!("is not used by a {} log stream", self.kind.as_str()),
                ));
            }
        }

        match self.kind {
            StreamKind::File => require_text("path", self.path.as_deref())?,
            StreamKind::Webhook => {
                validate_http_url("url", self.url.as_deref())?;
                require_text("secret", self.secret.as_ref().map(StreamSecret::expose))?;
                let auth = self.auth.unwrap_or_default();
                match (auth, self.header.as_deref()) {
                    (WebhookAuth::Header, Some(header)) => validate_header_name(header)?,
                    (WebhookAuth::Header, None) => {
                        return Err(FieldError::new(
                            "header",
                            "",
                            "is required with auth: header",
                        ));
                    }
                    (WebhookAuth::Bearer, Some(_)) => {
                        return Err(FieldError::new(
                            "header",
                            "",
                            "is only used with auth: header",
                        ));
                    }
                    (WebhookAuth::Bearer, None) => {}
                }
            }
            StreamKind::HttpHec => {
                validate_http_url("url", self.url.as_deref())?;
                require_text("secret", self.secret.as_ref().map(StreamSecret::expose))?;
            }
            StreamKind::Syslog => {
                validate_address("address", self.address.as_deref())?;
                let tls = self.transport == Some(SyslogTransport::Tls);
                if !tls && (self.ca_file.is_some() || self.server_name.is_some()) {
                    let field = if self.ca_file.is_some() {
                        "ca_file"
                    } else {
                        "server_name"
                    };
                    return Err(FieldError::new(
                        field,
                        "",
                        "is only used with transport: tls",
                    ));
                }
                if tls {
                    require_text("ca_file", self.ca_file.as_deref())?;
                }
            }
            StreamKind::Nats => {
                validate_address("address", self.address.as_deref())?;
                let subject = self.subject.as_deref().unwrap_or_default();
                let valid = !subject.is_empty()
                    && subject.split('.').all(|token| !token.is_empty())
                    && !subject.contains(|c: char| c.is_whitespace() || c == '*' || c == '>');
                if !valid {
                    return Err(FieldError::new(
                        "subject",
                        subject,
                        "must be a NATS subject without wildcards, such as mayfly.audit",
                    ));
                }
            }
        }

        if self
            .timeout
            .is_some_and(|timeout| timeout.as_secs() == 0 || timeout.as_secs() > 300)
        {
            let text = self
                .timeout
                .map(|timeout| timeout.to_string())
                .unwrap_or_default();
            return Err(FieldError::new(
                "timeout",
                &text,
                "must be between 1s and 5m",
            ));
        }
        if let Some(size) = self.batch_size
            && (size == 0 || size > MAX_BATCH_SIZE)
        {
            return Err(FieldError::new(
                "batch_size",
                &size.to_string(),
                "must be between 1 and 1000",
            ));
        }
        for (index, name) in self.filter.server_workloads.iter().enumerate() {
            validate_name(&format!("filter.server_workloads[{index}]"), name)?;
        }
        Ok(())
    }
}

fn require_text(field: &str, value: Option<&str>) -> Result<(), FieldError> {
    match value {
        Some(text) if !text.trim().is_empty() => Ok(()),
        _ => Err(FieldError::new(
            field,
            "",
            "is required and must not be empty",
        )),
    }
}

pub(crate) fn validate_http_url(field: &str, value: Option<&str>) -> Result<(), FieldError> {
    let text = value.unwrap_or_default();
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !text.contains(char::is_whitespace) =>
        {
            // The authority ends at the first `/`, `?` or `#`. An `@` in it separates user
            // information, which would be shown wherever the URL is, and sent instead of the secret.
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.contains('@') {
                // The value is left out of the error because it contains a password.
                return Err(FieldError::new(
                    field,
                    "",
                    "must not contain user information (user:password@); put the credential in secret instead",
                ));
            }
            Ok(())
        }
        _ => Err(FieldError::new(
            field,
            text,
            "must be an http:// or https:// URL",
        )),
    }
}

/// Headers that HTTP framing or the connection owns: a secret sent in one of them would be
/// dropped, replaced or would break the request.
const RESERVED_HEADERS: [&str; 11] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "expect",
];

fn validate_address(field: &str, value: Option<&str>) -> Result<(), FieldError> {
    let text = value.unwrap_or_default();
    let valid = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port != 0)
    });
    if !valid {
        return Err(FieldError::new(
            field,
            text,
            "must be host:port, such as 127.0.0.1:6514",
        ));
    }
    Ok(())
}

pub(crate) fn validate_header_name(header: &str) -> Result<(), FieldError> {
    let valid = !header.is_empty()
        && header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return Err(FieldError::new(
            "header",
            header,
            "must be a valid HTTP header name",
        ));
    }
    if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
        return Err(FieldError::new(
            "header",
            header,
            "is set by HTTP itself and cannot carry the secret; choose another header, such as X-Api-Key",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(yaml: &str) -> LogStream {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|error| LogStream {
            name: format!("parse error: {error}"),
            kind: StreamKind::File,
            format: StreamFormat::Json,
            filter: StreamFilter::default(),
            path: None,
            url: None,
            address: None,
            transport: None,
            ca_file: None,
            server_name: None,
            subject: None,
            auth: None,
            header: None,
            secret: None,
            timeout: None,
            batch_size: None,
        })
    }

    #[test]
    fn issue_example_is_valid() {
        let parsed = stream(
            "{name: siem, kind: syslog, address: 127.0.0.1:1514, transport: tcp, format: ocsf}",
        );
        assert_eq!(parsed.validate(), Ok(()));
        assert_eq!(parsed.format, StreamFormat::Ocsf);
    }

    #[test]
    fn field_of_other_kind_is_rejected() {
        let parsed = stream("{name: f, kind: file, path: /tmp/x, url: http://a.example}");
        assert_eq!(
            parsed.validate().map_err(|error| error.field),
            Err("url".to_string())
        );
    }

    #[test]
    fn webhook_needs_secret_and_header_name() {
        let missing = stream("{name: w, kind: webhook, url: http://127.0.0.1:9/x}");
        assert_eq!(
            missing.validate().map_err(|error| error.field),
            Err("secret".to_string())
        );
        let no_header =
            stream("{name: w, kind: webhook, url: http://127.0.0.1:9/x, secret: s, auth: header}");
        assert_eq!(
            no_header.validate().map_err(|error| error.field),
            Err("header".to_string())
        );
        let good = stream(
            "{name: w, kind: webhook, url: http://127.0.0.1:9/x, secret: s, auth: header, header: X-Key}",
        );
        assert_eq!(good.validate(), Ok(()));
    }

    #[test]
    fn limits_are_checked() {
        let batch = stream("{name: f, kind: file, path: /tmp/x, batch_size: 5000}");
        assert_eq!(
            batch.validate().map_err(|error| error.field),
            Err("batch_size".to_string())
        );
        let timeout = stream("{name: f, kind: file, path: /tmp/x, timeout: 1h}");
        assert_eq!(
            timeout.validate().map_err(|error| error.field),
            Err("timeout".to_string())
        );
        let subject = stream("{name: n, kind: nats, address: 127.0.0.1:4222, subject: audit.>}");
        assert_eq!(
            subject.validate().map_err(|error| error.field),
            Err("subject".to_string())
        );
    }

    #[test]
    fn tls_syslog_needs_ca_file() {
        let parsed = stream("{name: s, kind: syslog, address: 127.0.0.1:6514, transport: tls}");
        assert_eq!(
            parsed.validate().map_err(|error| error.field),
            Err("ca_file".to_string())
        );
    }

    #[test]
    fn debug_hides_secret() {
        let parsed =
            stream("{name: w, kind: http_hec, url: http://127.0.0.1:9/x, secret: hec-token-value}");
        assert_eq!(
            parsed.secret.as_ref().map(StreamSecret::expose),
            Some("hec-token-value")
        );
        assert!(!format!("{parsed:?}").contains("hec-token-value"));
    }

    #[test]
    fn unknown_field_is_rejected() {
        let parsed = stream("{name: f, kind: file, path: /tmp/x, colour: blue}");
        assert!(parsed.name.starts_with("parse error"), "{}", parsed.name);
    }
}

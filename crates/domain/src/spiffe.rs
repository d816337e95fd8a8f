//! SPIFFE IDs and trust domains, parsed by the rules of the SPIFFE ID standard.
//!
//! `spiffe://` is followed by a trust domain of lowercase letters, digits, `.`, `-` and `_` (no port,
//! no userinfo, at most 255 bytes) and an optional path of non-empty segments of letters, digits,
//! `.`, `-` and `_`, where `.` and `..` are not segments and there is no trailing `/`. Scheme and
//! trust domain compare case-insensitively, so both are lowercased; the path is case-sensitive.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SCHEME: &str = "spiffe://";
/// Longest SPIFFE ID accepted, in bytes.
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;
/// Longest trust domain name accepted, in bytes.
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// Why a SPIFFE ID or trust domain was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The value does not start with `spiffe://`.
    #[error("invalid SPIFFE ID {0:?}: it must start with spiffe://")]
    WrongScheme(String),
    /// The trust domain part is empty.
    #[error("invalid SPIFFE ID {0:?}: the trust domain is empty")]
    EmptyTrustDomain(String),
    /// The trust domain has a character outside `[a-z0-9._-]` (this covers ports and userinfo).
    #[error(
        "invalid trust domain {value:?}: character {character:?} is not allowed (only a-z, 0-9, '.', '-', '_')"
    )]
    TrustDomainCharacter { value: String, character: char },
    /// The trust domain is longer than 255 bytes.
    #[error("invalid trust domain: {0} bytes is longer than the maximum of 255")]
    TrustDomainTooLong(usize),
    /// The whole ID is longer than 2,048 bytes.
    #[error("invalid SPIFFE ID: {0} bytes is longer than the maximum of 2048")]
    TooLong(usize),
    /// A path segment is empty (`//`) or the path ends in `/`.
    #[error("invalid SPIFFE ID {0:?}: the path has an empty segment or a trailing '/'")]
    EmptySegment(String),
    /// A path segment is `.` or `..`.
    #[error("invalid SPIFFE ID {0:?}: the path may not contain '.' or '..' segments")]
    DotSegment(String),
    /// A path segment has a character outside `[a-zA-Z0-9._-]` (this covers `%`, `?` and `#`).
    #[error(
        "invalid SPIFFE ID {value:?}: character {character:?} is not allowed in the path (only a-z, A-Z, 0-9, '.', '-', '_')"
    )]
    PathCharacter { value: String, character: char },
}

/// A validated trust domain name, always lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain name such as `prod.example.com`. Uppercase letters are lowercased.
    pub fn parse(value: &str) -> Result<TrustDomain, SpiffeIdError> {
        let lower = value.to_ascii_lowercase();
        if lower.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain(value.to_string()));
        }
        if lower.len() > MAX_TRUST_DOMAIN_BYTES {
            return Err(SpiffeIdError::TrustDomainTooLong(lower.len()));
        }
        if let Some(character) = lower.chars().find(|c| !is_trust_domain_char(*c)) {
            return Err(SpiffeIdError::TrustDomainCharacter {
                value: value.to_string(),
                character,
            });
        }
        Ok(TrustDomain(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns `spiffe://<trust domain>`, the key of this trust domain's bundle.
    pub fn id_string(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated SPIFFE ID in its normal form (lowercase scheme and trust domain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    value: String,
    trust_domain_end: usize,
}

impl SpiffeId {
    /// Parses and normalizes a SPIFFE ID.
    pub fn parse(value: &str) -> Result<SpiffeId, SpiffeIdError> {
        if value.len() > MAX_SPIFFE_ID_BYTES {
            return Err(SpiffeIdError::TooLong(value.len()));
        }
        let has_scheme = value.len() >= SCHEME.len()
            && value.is_char_boundary(SCHEME.len())
            && value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME);
        if !has_scheme {
            return Err(SpiffeIdError::WrongScheme(value.to_string()));
        }
        let rest = &value[SCHEME.len()..];
        let (domain, path) = match rest.find('/') {
            Some(index) => (&rest[..index], &rest[index..]),
            None => (rest, ""),
        };
        if domain.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain(value.to_string()));
        }
        let trust_domain = TrustDomain::parse(domain)?;
        validate_path(value, path)?;

        let normalized = format!("{SCHEME}{}{path}", trust_domain.as_str());
        Ok(SpiffeId {
            trust_domain_end: SCHEME.len() + trust_domain.as_str().len(),
            value: normalized,
        })
    }

    /// Builds `spiffe://<trust domain>/<path segment>` for a resource name.
    pub fn for_workload(trust_domain: &TrustDomain, name: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::parse(&format!("{SCHEME}{}/{name}", trust_domain.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    pub fn trust_domain(&self) -> &str {
        &self.value[SCHEME.len()..self.trust_domain_end]
    }

    /// The path, empty for the trust domain's own ID, otherwise starting with `/`.
    pub fn path(&self) -> &str {
        &self.value[self.trust_domain_end..]
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.value)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        SpiffeId::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

fn validate_path(value: &str, path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment(value.to_string()));
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment(value.to_string()));
        }
        if let Some(character) = segment.chars().find(|c| !is_path_char(*c)) {
            return Err(SpiffeIdError::PathCharacter {
                value: value.to_string(),
                character,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for text in [
            "spiffe://td",
            "spiffe://td/a",
            "spiffe://prod.example.com/ns/billing",
            "spiffe://t-d_1/A.b-c_9",
        ] {
            let id = SpiffeId::parse(text);
            assert!(id.is_ok(), "{text}: {id:?}");
        }
    }

    #[test]
    fn rejects_ids_the_standard_forbids() {
        let cases = [
            "spiffe://td/a/",
            "spiffe://td//a",
            "spiffe://td/./a",
            "spiffe://td/../a",
            "spiffe://td:8443/a",
            "spiffe://u@td/a",
            "spiffe://td/a%20b",
            "spiffe://td/a?x=1",
            "spiffe://td/a#f",
            "spiffe:///a",
            "https://td/a",
            "spiffe://t!d/a",
            "spiffe://",
            "spiffe:/td/a",
            "",
        ];
        for text in cases {
            assert!(SpiffeId::parse(text).is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn lowercases_scheme_and_trust_domain_only() {
        let id = SpiffeId::parse("SPIFFE://Prod.Example.COM/Billing/API");
        assert_eq!(
            id.map(|id| id.to_string()),
            Ok("spiffe://prod.example.com/Billing/API".to_string())
        );
    }

    #[test]
    fn splits_trust_domain_and_path() {
        let id = SpiffeId::parse("spiffe://td.example/a/b").ok();
        assert_eq!(id.as_ref().map(SpiffeId::trust_domain), Some("td.example"));
        assert_eq!(id.as_ref().map(SpiffeId::path), Some("/a/b"));
    }

    #[test]
    fn enforces_length_limits() {
        let long_domain = "a".repeat(256);
        assert_eq!(
            SpiffeId::parse(&format!("spiffe://{long_domain}/x")),
            Err(SpiffeIdError::TrustDomainTooLong(256))
        );
        let long_path = "a".repeat(2048);
        assert!(matches!(
            SpiffeId::parse(&format!("spiffe://td/{long_path}")),
            Err(SpiffeIdError::TooLong(_))
        ));
        let fits = format!(
            "spiffe://td/{}",
            "a".repeat(MAX_SPIFFE_ID_BYTES - "spiffe://td/".len())
        );
        assert!(SpiffeId::parse(&fits).is_ok());
    }

    #[test]
    fn multibyte_input_is_rejected_without_panic() {
        assert!(SpiffeId::parse("spiffé://td/a").is_err());
        assert!(SpiffeId::parse("spiffe://td/é").is_err());
        assert!(SpiffeId::parse("ééééééééé").is_err());
    }
}

//! The response of AWS STS `AssumeRoleWithWebIdentity`: an XML document whose `Credentials`
//! element has `AccessKeyId`, `SecretAccessKey`, `SessionToken` and `Expiration`, or an
//! `ErrorResponse` whose `Error/Code` names the failure.
//!
//! Only these leaf elements are read, by name, so a small scanner replaces an XML library: it
//! finds `<Name>text</Name>` and decodes the five predefined entities.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use zeroize::Zeroizing;

use crate::providers::Failure;
use crate::providers::cache::CachedToken;
use crate::providers::oauth::{rejected, sanitize_error_code};

/// Reads the temporary credentials from a successful response, or the error code of a failed one.
pub(super) fn parse_response(
    url: &str,
    status: reqwest::StatusCode,
    body: Option<&[u8]>,
    now: Timestamp,
    sent_at: Instant,
) -> Result<CachedToken, Failure> {
    let text = body
        .and_then(|body| std::str::from_utf8(body).ok())
        .unwrap_or_default();
    if !status.is_success() {
        let code = element(text, "Code").map(|code| sanitize_error_code(&code));
        return Err(rejected(url, status, code));
    }

    let invalid = |what: &str| {
        Failure::from(format!(
            "token endpoint {url} returned an invalid AssumeRoleWithWebIdentity response: {what}"
        ))
    };
    let credentials = section(text, "Credentials").ok_or_else(|| invalid("Credentials missing"))?;
    let field = |name: &str| {
        element(credentials, name)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| invalid(&format!("{name} missing")))
    };
    let access_key_id = field("AccessKeyId")?;
    let secret_access_key = Zeroizing::new(field("SecretAccessKey")?);
    let session_token = Zeroizing::new(field("SessionToken")?);
    let expires_at: Timestamp = field("Expiration")?
        .parse()
        .map_err(|_| invalid("Expiration is not an RFC 3339 time"))?;

    let seconds = expires_at.as_second().saturating_sub(now.as_second());
    let lifetime = u64::try_from(seconds)
        .ok()
        .filter(|seconds| *seconds > 0)
        .ok_or_else(|| invalid("Expiration is not in the future"))?;
    Ok(CachedToken {
        access_token: session_token,
        extra: vec![
            ("access_key_id", Zeroizing::new(access_key_id)),
            ("secret_access_key", secret_access_key),
        ],
        token_type: "aws_session".to_string(),
        scope: None,
        obtained: sent_at,
        lifetime: Duration::from_secs(lifetime),
        expires_at,
    })
}

/// Returns the text between `<name>` and `</name>`, the first such element, entities decoded.
fn element(text: &str, name: &str) -> Option<String> {
    section(text, name).map(decode_entities)
}

fn section<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(text[start..end].trim())
}

fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SUCCESS: &str = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>\
        <Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>s3cr&amp;t</SecretAccessKey>\
        <SessionToken>session-token</SessionToken><Expiration>2030-01-01T01:00:00Z</Expiration></Credentials>\
        </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";

    #[test]
    fn reads_credentials() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let token = parse_response(
            "u",
            reqwest::StatusCode::OK,
            Some(SUCCESS.as_bytes()),
            now,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(token.access_token.as_str(), "session-token");
        assert_eq!(token.extra[0].1.as_str(), "ASIAEXAMPLE");
        assert_eq!(token.extra[1].1.as_str(), "s3cr&t");
        assert_eq!(token.lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn error_response_yields_code_only() {
        let body = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\
            <Message>secret detail</Message></Error></ErrorResponse>";
        let failure = parse_response(
            "u",
            reqwest::StatusCode::BAD_REQUEST,
            Some(body.as_bytes()),
            Timestamp::UNIX_EPOCH,
            Instant::now(),
        )
        .unwrap_err();
        assert_eq!(failure.audit["upstream_error"], "InvalidIdentityToken");
        assert!(!failure.reason.contains("secret detail"));
    }
}

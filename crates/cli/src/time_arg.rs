//! Time arguments such as `--since 24h` or `--until 2026-12-01T00:00:00Z`.

use jiff::{SignedDuration, Timestamp};
use mayfly_domain::duration::Seconds;

/// An invalid time argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeArgError {
    /// The text is neither a relative duration nor an RFC 3339 time.
    #[error(
        "invalid time {0:?}: expected a duration before now such as 30m, 24h or 7d, or an RFC 3339 time such as 2026-12-01T00:00:00Z"
    )]
    Invalid(String),
    /// The duration reaches before the earliest representable time.
    #[error("invalid time {0:?}: the duration reaches too far into the past")]
    OutOfRange(String),
}

/// Parses a time bound: an RFC 3339 time, or a duration (`300s`, `30m`, `24h`, `7d`) counted
/// back from `now`. A day is 24 hours.
pub fn parse_time_bound(text: &str, now: Timestamp) -> Result<Timestamp, TimeArgError> {
    let text = text.trim();
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Ok(timestamp);
    }

    let seconds = Seconds::parse(text).map_err(|_| TimeArgError::Invalid(text.to_string()))?;
    let out_of_range = || TimeArgError::OutOfRange(text.to_string());
    let seconds = i64::try_from(seconds.as_secs()).map_err(|_| out_of_range())?;
    now.checked_sub(SignedDuration::from_secs(seconds))
        .map_err(|_| out_of_range())
}

/// Formats a timestamp as RFC 3339 in UTC with whole seconds, the form sent to the API.
pub fn format_rfc3339(timestamp: Timestamp) -> String {
    timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-04T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn relative_durations_count_back_from_now() {
        let cases = [
            ("24h", "2026-12-03T12:00:00Z"),
            ("30m", "2026-12-04T11:30:00Z"),
            ("7d", "2026-11-27T12:00:00Z"),
            ("90s", "2026-12-04T11:58:30Z"),
            ("0s", "2026-12-04T12:00:00Z"),
        ];
        for (text, expected) in cases {
            let parsed = parse_time_bound(text, now()).map(format_rfc3339);
            assert_eq!(parsed.as_deref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rfc3339_times_pass_through() {
        let parsed = parse_time_bound("2026-12-01T08:30:00+01:00", now()).map(format_rfc3339);
        assert_eq!(parsed.as_deref(), Ok("2026-12-01T07:30:00Z"));
    }

    #[test]
    fn malformed_times_are_rejected() {
        for text in [
            "",
            "yesterday",
            "-24h",
            "24",
            "1w",
            "2026-12-01",
            "2026-12-01T00:00:00",
        ] {
            let parsed = parse_time_bound(text, now());
            assert!(
                matches!(parsed, Err(TimeArgError::Invalid(_))),
                "{text:?} gave {parsed:?}"
            );
        }
    }

    #[test]
    fn huge_duration_is_out_of_range() {
        let parsed = parse_time_bound("99999999999d", now());
        assert!(
            matches!(parsed, Err(TimeArgError::OutOfRange(_))),
            "{parsed:?}"
        );
    }
}

//! Durations written as `300s`, `5m`, `1h` or `90d`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is not a number followed by one of `s`, `m`, `h`, `d`.
    #[error(
        "invalid duration {0:?}: expected a whole number followed by s, m, h or d, such as 300s, 5m, 1h or 90d"
    )]
    Invalid(String),
}

/// A whole number of seconds, written in configuration as `300s`, `5m`, `1h` or `90d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seconds(pub u64);

impl Seconds {
    pub fn parse(text: &str) -> Result<Seconds, DurationError> {
        let invalid = || DurationError::Invalid(text.to_string());
        let trimmed = text.trim();
        let unit_at = trimmed.len().checked_sub(1).ok_or_else(invalid)?;
        if !trimmed.is_char_boundary(unit_at) {
            return Err(invalid());
        }
        let (number, unit) = trimmed.split_at(unit_at);
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let value: u64 = number.parse().map_err(|_| invalid())?;
        let factor = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(invalid()),
        };
        value.checked_mul(factor).map(Seconds).ok_or_else(invalid)
    }

    pub fn as_secs(self) -> u64 {
        self.0
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl fmt::Display for Seconds {
    /// Writes the largest unit that divides the value exactly, so `300` reads `5m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value != 0 && value.is_multiple_of(86_400) {
            write!(f, "{}d", value / 86_400)
        } else if value != 0 && value.is_multiple_of(3600) {
            write!(f, "{}h", value / 3600)
        } else if value != 0 && value.is_multiple_of(60) {
            write!(f, "{}m", value / 60)
        } else {
            write!(f, "{value}s")
        }
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Seconds::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(Seconds::parse("300s"), Ok(Seconds(300)));
        assert_eq!(Seconds::parse("5m"), Ok(Seconds(300)));
        assert_eq!(Seconds::parse("1h"), Ok(Seconds(3600)));
        assert_eq!(Seconds::parse("90d"), Ok(Seconds(90 * 86_400)));
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "",
            "5",
            "m",
            "-5m",
            "5 m",
            "1.5h",
            "5w",
            "99999999999999999999d",
            "5é",
        ] {
            assert!(Seconds::parse(text).is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn displays_largest_exact_unit() {
        assert_eq!(Seconds(300).to_string(), "5m");
        assert_eq!(Seconds(90).to_string(), "90s");
        assert_eq!(Seconds(86_400 * 2).to_string(), "2d");
        assert_eq!(Seconds(0).to_string(), "0s");
    }
}

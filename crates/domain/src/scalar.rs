//! Numbers and booleans of configuration resources that may also be written as text, so that a
//! `${NAME}` placeholder, which always expands to text, can fill them: `port: ${PORT}`.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Reads a whole number given as a number or as its decimal text.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i128, D::Error> {
    struct WholeNumber;

    impl Visitor<'_> for WholeNumber {
        type Value = i128;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a whole number")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<i128, E> {
            Ok(i128::from(value))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<i128, E> {
            Ok(i128::from(value))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<i128, E> {
            text.trim()
                .parse::<i128>()
                .map_err(|_| E::custom(format!("invalid value {text:?}: expected a whole number")))
        }
    }

    deserializer.deserialize_any(WholeNumber)
}

/// Reads a TCP port, 1 to 65535, given as a number or as text.
pub fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let value = whole_number(deserializer)?;
    u16::try_from(value)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| de::Error::custom(format!("{value} must be between 1 and 65535")))
}

/// Reads an optional `u32` given as a number or as text; use with `#[serde(default)]`.
pub fn option_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let value = whole_number(deserializer)?;
    u32::try_from(value).map(Some).map_err(|_| {
        de::Error::custom(format!(
            "invalid value {value}: expected a whole number from 0 to {}",
            u32::MAX
        ))
    })
}

/// Reads a boolean given as `true`/`false` or as that text.
pub fn boolean<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct Boolean;

    impl Visitor<'_> for Boolean {
        type Value = bool;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("true or false")
        }

        fn visit_bool<E: de::Error>(self, value: bool) -> Result<bool, E> {
            Ok(value)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<bool, E> {
            match text.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(E::custom(format!(
                    "invalid value {text:?}: expected true or false"
                ))),
            }
        }
    }

    deserializer.deserialize_any(Boolean)
}

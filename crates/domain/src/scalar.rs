//! Numbers and booleans of configuration resources that may also be written as text, so that a
//! `${NAME}` placeholder, which always expands to text, can fill them: `port: ${PORT}`.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Reads an unsigned whole number given as a number or as its decimal text.
fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded,
{
    struct WholeNumber<T>(PhantomData<T>);

    impl<T: TryFrom<u64> + Bounded> WholeNumber<T> {
        fn checked<E: de::Error>(value: u64) -> Result<T, E> {
            T::try_from(value).map_err(|_| E::custom(format!("invalid value {value}: expected a whole number from 0 to {}", T::MAX)))
        }
    }

    impl<T: TryFrom<u64> + Bounded> Visitor<'_> for WholeNumber<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            write!(formatter, "a whole number from 0 to {}", T::MAX)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
            Self::checked(value)
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
            let value = u64::try_from(value)
                .map_err(|_| E::custom(format!("invalid value {value}: expected a whole number from 0 to {}", T::MAX)))?;
            Self::checked(value)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            let value = text
                .trim()
                .parse::<u64>()
                .map_err(|_| E::custom(format!("invalid value {text:?}: expected a whole number from 0 to {}", T::MAX)))?;
            Self::checked(value)
        }
    }

    deserializer.deserialize_any(WholeNumber(PhantomData))
}

/// The largest value of an integer type, for error messages.
pub trait Bounded {
    const MAX: u64;
}

impl Bounded for u16 {
    const MAX: u64 = u16::MAX as u64;
}

impl Bounded for u32 {
    const MAX: u64 = u32::MAX as u64;
}

/// Reads a `u16` given as a number or as text.
pub fn u16<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    whole_number(deserializer)
}

/// Reads an optional `u32` given as a number or as text; use with `#[serde(default)]`.
pub fn option_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    whole_number(deserializer).map(Some)
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
                _ => Err(E::custom(format!("invalid value {text:?}: expected true or false"))),
            }
        }
    }

    deserializer.deserialize_any(Boolean)
}

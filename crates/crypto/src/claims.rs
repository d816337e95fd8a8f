//! Reading registered JWT claims (RFC 7519): `aud`, NumericDate claims and string claims.

use serde_json::{Map, Number, Value};

use crate::jws::quote_untrusted;

/// Largest number of values quoted in one error message.
const MAX_QUOTED_VALUES: usize = 5;

/// A claim that is missing or has the wrong type or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// A required claim is absent.
    #[error("token has no {claim} claim")]
    Missing {
        /// Name of the claim.
        claim: &'static str,
    },
    /// A claim has the wrong type or an unusable value.
    #[error("token claim {claim} is invalid: {reason}")]
    Invalid {
        /// Name of the claim.
        claim: &'static str,
        /// Description of the problem.
        reason: String,
    },
}

/// Returns a string claim, `None` when absent, or an error when it is not a string.
pub(crate) fn string_claim<'a>(
    claims: &'a Map<String, Value>,
    claim: &'static str,
) -> Result<Option<&'a str>, ClaimError> {
    match claims.get(claim) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(ClaimError::Invalid {
            claim,
            reason: "must be a string".to_owned(),
        }),
    }
}

/// Returns the audiences of `aud`, which may be one string or an array of strings.
pub(crate) fn audiences(claims: &Map<String, Value>) -> Result<Vec<&str>, ClaimError> {
    match claims.get("aud") {
        None => Err(ClaimError::Missing { claim: "aud" }),
        Some(Value::String(audience)) => Ok(vec![audience.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().ok_or_else(|| ClaimError::Invalid {
                    claim: "aud",
                    reason: "array entries must be strings".to_owned(),
                })
            })
            .collect(),
        Some(_) => Err(ClaimError::Invalid {
            claim: "aud",
            reason: "must be a string or an array of strings".to_owned(),
        }),
    }
}

/// Returns a NumericDate claim in whole Unix seconds, `None` when absent.
///
/// Integers and floats are accepted; a float is rounded down, so a fractional `exp` counts as
/// expired up to one second early, never late.
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<i64>, ClaimError> {
    let invalid = |reason: &str| ClaimError::Invalid {
        claim,
        reason: reason.to_owned(),
    };

    match claims.get(claim) {
        None => Ok(None),
        Some(Value::Number(number)) => seconds(number)
            .map(Some)
            .ok_or_else(|| invalid("number is out of range for Unix seconds")),
        Some(_) => Err(invalid("must be a number of seconds since the Unix epoch")),
    }
}

/// Formats untrusted strings, such as audiences, for an error message: each quoted, at most
/// five, with a count of the rest.
pub(crate) fn quote_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values
        .iter()
        .take(MAX_QUOTED_VALUES)
        .map(|value| quote_untrusted(value))
        .collect();
    let rest = values.len().saturating_sub(MAX_QUOTED_VALUES);

    match rest {
        0 => format!("[{}]", quoted.join(", ")),
        _ => format!("[{}, and {rest} more]", quoted.join(", ")),
    }
}

fn seconds(number: &Number) -> Option<i64> {
    if let Some(integer) = number.as_i64() {
        return Some(integer);
    }

    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
    let float = number.as_f64()?.floor();
    let in_range = float.is_finite() && float >= i64::MIN as f64 && float < i64::MAX as f64;
    in_range.then_some(float as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn audiences_accepts_string_and_array() {
        assert_eq!(audiences(&claims(json!({"aud": "a"}))).unwrap(), ["a"]);
        assert_eq!(
            audiences(&claims(json!({"aud": ["a", "b"]}))).unwrap(),
            ["a", "b"]
        );
    }

    #[test]
    fn audiences_rejects_missing_and_wrong_types() {
        assert_eq!(
            audiences(&claims(json!({}))).unwrap_err(),
            ClaimError::Missing { claim: "aud" }
        );
        assert!(matches!(
            audiences(&claims(json!({"aud": ["a", 5]}))).unwrap_err(),
            ClaimError::Invalid { claim: "aud", .. }
        ));
        assert!(matches!(
            audiences(&claims(json!({"aud": {"a": 1}}))).unwrap_err(),
            ClaimError::Invalid { claim: "aud", .. }
        ));
    }

    #[test]
    fn numeric_date_accepts_integer_and_float() {
        let values = claims(json!({"i": 1_700_000_000, "f": 1_700_000_000.9, "neg": -1.5}));

        assert_eq!(numeric_date(&values, "i").unwrap(), Some(1_700_000_000));
        assert_eq!(numeric_date(&values, "f").unwrap(), Some(1_700_000_000));
        assert_eq!(numeric_date(&values, "neg").unwrap(), Some(-2));
        assert_eq!(numeric_date(&values, "absent").unwrap(), None);
    }

    #[test]
    fn numeric_date_rejects_strings_and_huge_numbers() {
        let values = claims(json!({"s": "1700000000", "big": 1e30, "u": u64::MAX}));

        for claim in ["s", "big", "u"] {
            assert!(
                matches!(
                    numeric_date(&values, claim),
                    Err(ClaimError::Invalid { .. })
                ),
                "{claim}"
            );
        }
    }

    #[test]
    fn quote_list_limits_output() {
        assert_eq!(quote_list(&["a", "b"]), r#"["a", "b"]"#);
        assert_eq!(
            quote_list(&["1", "2", "3", "4", "5", "6", "7"]),
            r#"["1", "2", "3", "4", "5", and 2 more]"#
        );
        assert_eq!(quote_list(&[]), "[]");
    }
}

//! Validation errors that name the field and the value at fault.

use std::fmt;

/// A field of a resource contains an invalid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FieldError {
    /// Field path within the resource, such as `schedule[0].start`.
    pub field: String,
    /// The rejected value as written, or empty when the field is missing or the value too large
    /// to quote.
    pub value: String,
    /// The rule the value breaks, such as "must not be empty".
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &str, value: &str, reason: &str) -> FieldError {
        let value = if value.len() > 200 {
            format!("{}...", truncate(value, 200))
        } else {
            value.to_string()
        };
        FieldError {
            field: field.to_string(),
            value,
            reason: reason.to_string(),
        }
    }

    /// Prefixes the field path, as in `schedule[0]` + `start`.
    pub fn within(mut self, prefix: &str) -> FieldError {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.field, self.reason)
        } else {
            write!(f, "{} {:?}: {}", self.field, self.value, self.reason)
        }
    }
}

fn truncate(value: &str, max: usize) -> &str {
    let mut end = max.min(value.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

//! A string that must not reach logs or debug output: admin tokens, OIDC evidence tokens and
//! issued credentials.

use std::fmt;

use zeroize::Zeroize;

/// A secret string. `Debug` prints a placeholder and the memory is zeroized on drop.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// Returns the secret value, for the one place that must send or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_value() {
        let secret = Secret::new("s3cr3t-token".to_string());
        let printed = format!("{secret:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert_eq!(secret.expose(), "s3cr3t-token");
    }
}

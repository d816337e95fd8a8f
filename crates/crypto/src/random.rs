//! Random bytes from the aws-lc-rs system generator, for keys, key ids, token ids and tokens.

use aws_lc_rs::rand;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

/// Failure of the operating system's random number generator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RandomError {
    /// The system random number generator returned an error, so no secret or identifier could
    /// be generated.
    #[error("the system random number generator failed; no random value was generated")]
    Unavailable,
}

/// Returns `N` random bytes, zeroized when dropped because callers use them as key material.
pub(crate) fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, RandomError> {
    let mut bytes = Zeroizing::new([0_u8; N]);
    rand::fill(bytes.as_mut_slice()).map_err(|_| RandomError::Unavailable)?;
    Ok(bytes)
}

/// Returns `N` random bytes as unpadded base64url text (`ceil(4 * N / 3)` characters).
pub(crate) fn random_base64url<const N: usize>() -> Result<String, RandomError> {
    let bytes = random_bytes::<N>()?;
    Ok(URL_SAFE_NO_PAD.encode(bytes.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ_between_calls() {
        let first = random_bytes::<32>().unwrap();
        let second = random_bytes::<32>().unwrap();

        assert_ne!(*first, *second);
        assert_ne!(*first, [0_u8; 32]);
    }

    #[test]
    fn random_base64url_has_expected_length_and_alphabet() {
        let text = random_base64url::<12>().unwrap();

        assert_eq!(text.len(), 16);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}

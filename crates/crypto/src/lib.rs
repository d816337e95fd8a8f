//! Cryptography for Mayfly: JWT-SVID signing and validation, the published JWKS, verification of
//! OIDC evidence tokens from other issuers, signed audit checkpoints, admin and agent bearer
//! tokens, encryption of signing keys at rest, and the SPIFFE X.509 CA.
//!
//! The crate performs no I/O and never reads the clock: functions that depend on time take
//! `now` as Unix seconds.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod claims;
pub mod evidence;
pub mod jwk;
pub mod jws;
pub mod jwt_svid;
pub mod kek;
pub mod random;
pub mod signing;
pub mod token;
pub mod x509;

#[cfg(test)]
mod test_support;

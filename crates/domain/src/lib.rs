//! Mayfly's domain: configuration resources and their validation, SPIFFE IDs, access conditions,
//! the credential decision and the audit chain. No I/O happens here and the clock is never read:
//! callers pass the current time.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod audit;
pub mod conditions;
pub mod config;
pub mod config_file;
pub mod decide;
pub mod duration;
pub mod error;
pub mod federation;
pub mod log_format;
pub mod log_stream;
pub mod notification;
pub mod oauth;
pub mod resources;
pub mod scalar;
pub mod secret;
pub mod spiffe;
pub mod static_secret;

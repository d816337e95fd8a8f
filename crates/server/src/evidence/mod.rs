//! Evidence verification: turning what a caller presents into attested attributes.

pub mod cache;
pub mod oidc;
pub mod unix;

pub use cache::EvidenceCache;

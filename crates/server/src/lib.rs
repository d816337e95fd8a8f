//! The Mayfly server: HTTP API, workload socket and background tasks (key rotation, audit
//! checkpoints, retention purge, configuration reload, log stream shipping, alert
//! evaluation and notifications).
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod audit_log;
pub mod auth;
pub mod changes;
pub mod clock;
pub mod credentials;
pub mod evidence;
pub mod geoip;
pub mod http;
pub mod keys;
pub mod log_streams;
pub mod notifications;
pub mod problem;
pub mod providers;
pub mod secrets;
pub mod settings;
mod startup;
pub mod state;
pub mod x509_ca;

pub use startup::{RunningServer, run, start};

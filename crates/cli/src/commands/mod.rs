//! One module per subcommand: its clap arguments and what it does.

pub mod admin_token;
pub mod agent;
pub mod alerts;
pub mod apply;
pub mod audit;
pub mod credential;
pub mod incident;
pub mod keys;
pub mod resources;
pub mod server;
pub mod server_workload;
pub mod x509_ca;

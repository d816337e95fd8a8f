//! The Mayfly agent runs beside workloads and authenticates to the server with its own
//! short-lived credential. It attests the processes that call its Unix socket and serves them the
//! SPIFFE Workload API (JWT-SVIDs and JWT bundles), with a cache in front of the server, and the
//! HTTP credential endpoint of the server's workload socket.
#![forbid(unsafe_code)]

pub mod audience;
mod authority;
pub mod bundles;
pub mod cache;
pub mod client;
pub mod config;
pub mod http_socket;
pub mod identity;
pub mod peer;
mod run;
pub mod workload_api;

pub use run::{AgentSettings, RunningAgent, start};

/// The Workload API's generated gRPC code.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("_");
}

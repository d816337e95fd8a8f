//! The Mayfly agent runs beside workloads and authenticates to the server with its own
//! short-lived credential. It attests the processes that call its Unix socket and serves them the
//! SPIFFE Workload API (X.509-SVIDs, JWT-SVIDs and their bundles), with a cache in front of the
//! server, and the HTTP credential endpoint of the server's workload socket. On request it also
//! runs an HTTP proxy on loopback that injects credentials into requests to server workloads.
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
pub mod proxy;
mod run;
pub mod workload_api;
pub mod x509;

pub use run::{AgentSettings, ProxyHandle, RunningAgent, start};

/// The Workload API's generated gRPC code.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("_");
}

//! The destinations the proxy intercepts: the enabled server workloads' (host, port) pairs and
//! schemes from `GET /v1/agents/targets`, refreshed periodically.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use crate::client::ServerClient;
use crate::identity::Identity;
use crate::proxy::ca::InterceptionCa;

/// A server workload's destination and scheme, as `GET /v1/agents/targets` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Target {
    pub server_workload: String,
    pub host: String,
    pub port: u16,
    /// `https` for a server workload reached through CONNECT, `http` for plain HTTP.
    pub scheme: String,
}

#[derive(Deserialize)]
struct TargetsBody {
    targets: Vec<Target>,
}

/// The cached target list.
#[derive(Default)]
pub struct Targets {
    by_destination: RwLock<HashMap<(String, u16), Target>>,
}

impl Targets {
    /// Returns the server workload at `host`:`port` (host compared without case).
    pub fn lookup(&self, host: &str, port: u16) -> Option<Target> {
        let targets = self.by_destination.read().ok()?;
        targets.get(&(host.to_ascii_lowercase(), port)).cloned()
    }

    /// Returns the hosts of the `https` server workloads, which the interception CA must cover.
    pub fn https_hosts(&self) -> Vec<String> {
        let Ok(targets) = self.by_destination.read() else {
            return Vec::new();
        };
        let mut hosts: Vec<String> = targets
            .values()
            .filter(|target| target.scheme == "https")
            .map(|target| target.host.clone())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    fn replace(&self, list: Vec<Target>) {
        let map = list
            .into_iter()
            .map(|target| ((target.host.to_ascii_lowercase(), target.port), target))
            .collect();
        if let Ok(mut targets) = self.by_destination.write() {
            *targets = map;
        }
    }

    /// Fetches the list once.
    pub async fn load(&self, client: &ServerClient, identity: &Identity) -> Result<(), String> {
        let (credential, _) = identity.credential().await;
        let body = client
            .targets(&credential)
            .await
            .map_err(|error| error.to_string())?;
        let parsed: TargetsBody = serde_json::from_value(body)
            .map_err(|error| format!("invalid target list from the server: {error}"))?;
        self.replace(parsed.targets);
        Ok(())
    }

    /// Fetches the list once and has the CA cover its hosts.
    pub async fn refresh(
        &self,
        client: &ServerClient,
        identity: &Identity,
        ca: &InterceptionCa,
    ) -> Result<(), String> {
        self.load(client, identity).await?;
        ca.cover(&self.https_hosts())
            .map_err(|error| error.to_string())?;
        Ok(())
    }

    /// Refreshes the list every `every`, forever; failures keep the last list.
    pub async fn refresh_forever(
        self: Arc<Self>,
        client: ServerClient,
        identity: Arc<Identity>,
        ca: Arc<InterceptionCa>,
        every: Duration,
    ) {
        let mut failing = false;
        loop {
            tokio::time::sleep(every).await;
            match self.refresh(&client, &identity, &ca).await {
                Ok(()) if failing => {
                    tracing::info!("proxy target list refresh recovered");
                    failing = false;
                }
                Ok(()) => {}
                Err(error) if failing => {
                    tracing::debug!(error = %error, "proxy target list refresh failed again");
                }
                Err(error) => {
                    tracing::warn!(error = %error, "proxy target list refresh failed; keeping the last list");
                    failing = true;
                }
            }
        }
    }
}

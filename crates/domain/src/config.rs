//! The whole configuration at one moment: every resource, whether each server workload is
//! enabled, and the checks that need more than one resource.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::alerts::AlertRule;
use crate::log_stream::LogStream;
use crate::notification::NotificationTarget;
use crate::resources::{
    AccessCondition, AccessPolicy, ClientWorkload, CredentialProvider, Reference, Resource,
    ResourceKind, ServerWorkload, TrustProvider,
};

/// A configuration problem that involves more than one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum ConfigError {
    /// A resource refers to one that does not exist.
    #[error("{kind} {name:?}: {field} refers to {ref_kind} {ref_name:?}, which does not exist")]
    MissingReference {
        kind: ResourceKind,
        name: String,
        field: String,
        ref_kind: ResourceKind,
        ref_name: String,
    },
    /// A policy names a trust provider that none of the client workload's identities uses, so the
    /// policy could never match.
    #[error(
        "access_policy {name:?}: trust_providers names {trust_provider:?}, but client_workload {client_workload:?} has no identity from it"
    )]
    UnusableTrustProvider {
        name: String,
        trust_provider: String,
        client_workload: String,
    },
    /// Two server workloads share a host and port.
    #[error(
        "server_workload {name:?}: host and port {host}:{port} are already used by server_workload {other:?}"
    )]
    DuplicateTarget {
        name: String,
        other: String,
        host: String,
        port: u16,
    },
    /// Two policies cover the same client and server workload pair.
    #[error(
        "access_policy {other:?} and access_policy {name:?} both cover client_workload {client_workload:?} and server_workload {server_workload:?}, but only one policy per pair is allowed: remove or change one of them"
    )]
    DuplicatePolicy {
        name: String,
        other: String,
        client_workload: String,
        server_workload: String,
    },
    /// Two client workloads share a SPIFFE ID.
    #[error(
        "client_workload {name:?}: spiffe_id {spiffe_id} is already used by client_workload {other:?}"
    )]
    DuplicateSpiffeId {
        name: String,
        other: String,
        spiffe_id: String,
    },
    /// A client workload's SPIFFE ID lies in another trust domain, which this server does not
    /// issue identities for.
    #[error(
        "client_workload {name:?}: spiffe_id {spiffe_id} is outside the trust domain {trust_domain}; use spiffe://{trust_domain}/..."
    )]
    ForeignSpiffeId {
        name: String,
        spiffe_id: String,
        trust_domain: String,
    },
    /// A unix identity rule uses an attribute that unix attestation does not provide.
    #[error(
        "client_workload {name:?}: identities[{index}].match has attribute {attribute:?}, which trust provider {trust_provider:?} (unix) does not attest; use uid, gid, groups, pid, path, sha256 or agent"
    )]
    UnknownUnixAttribute {
        name: String,
        index: usize,
        attribute: String,
        trust_provider: String,
    },
    /// A unix identity rule value that no attested process can have.
    #[error("client_workload {name:?}: identities[{index}].match.{attribute} {value:?} {reason}")]
    InvalidUnixMatchValue {
        name: String,
        index: usize,
        attribute: String,
        value: String,
        reason: &'static str,
    },
}

/// Every resource, by kind and name, with each server workload's enabled flag.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub trust_providers: BTreeMap<String, TrustProvider>,
    pub client_workloads: BTreeMap<String, ClientWorkload>,
    pub server_workloads: BTreeMap<String, ServerWorkload>,
    pub credential_providers: BTreeMap<String, CredentialProvider>,
    pub access_conditions: BTreeMap<String, AccessCondition>,
    pub access_policies: BTreeMap<String, AccessPolicy>,
    pub log_streams: BTreeMap<String, LogStream>,
    pub notification_targets: BTreeMap<String, NotificationTarget>,
    pub alert_rules: BTreeMap<String, AlertRule>,
    /// Server workload name to enabled flag; a missing entry means enabled.
    pub enabled: BTreeMap<String, bool>,
    index: Index,
}

/// Lookups that decisions need, built once per configuration.
#[derive(Debug, Clone, Default)]
struct Index {
    targets: HashMap<(String, u16), String>,
    policies: HashMap<(String, String), String>,
}

impl Config {
    /// Builds a configuration from resources. Later entries replace earlier ones of the same kind
    /// and name.
    pub fn from_resources(resources: impl IntoIterator<Item = Resource>) -> Config {
        let mut config = Config::default();
        for resource in resources {
            config.insert(resource);
        }
        config.reindex();
        config
    }

    /// Adds or replaces one resource. Call [`Config::reindex`] after a batch of changes.
    pub fn insert(&mut self, resource: Resource) {
        match resource {
            Resource::TrustProvider(r) => {
                self.trust_providers.insert(r.name().to_string(), r);
            }
            Resource::ClientWorkload(r) => {
                self.client_workloads.insert(r.name.clone(), r);
            }
            Resource::ServerWorkload(r) => {
                self.server_workloads.insert(r.name.clone(), r);
            }
            Resource::CredentialProvider(r) => {
                self.credential_providers.insert(r.name().to_string(), r);
            }
            Resource::AccessCondition(r) => {
                self.access_conditions.insert(r.name().to_string(), r);
            }
            Resource::AccessPolicy(r) => {
                self.access_policies.insert(r.name.clone(), r);
            }
            Resource::LogStream(r) => {
                self.log_streams.insert(r.name.clone(), r);
            }
            Resource::NotificationTarget(r) => {
                self.notification_targets.insert(r.name.clone(), r);
            }
            Resource::AlertRule(r) => {
                self.alert_rules.insert(r.name.clone(), r);
            }
        }
    }

    /// Removes one resource; returns whether it existed.
    pub fn remove(&mut self, kind: ResourceKind, name: &str) -> bool {
        match kind {
            ResourceKind::TrustProvider => self.trust_providers.remove(name).is_some(),
            ResourceKind::ClientWorkload => self.client_workloads.remove(name).is_some(),
            ResourceKind::ServerWorkload => self.server_workloads.remove(name).is_some(),
            ResourceKind::CredentialProvider => self.credential_providers.remove(name).is_some(),
            ResourceKind::AccessCondition => self.access_conditions.remove(name).is_some(),
            ResourceKind::AccessPolicy => self.access_policies.remove(name).is_some(),
            ResourceKind::LogStream => self.log_streams.remove(name).is_some(),
            ResourceKind::NotificationTarget => self.notification_targets.remove(name).is_some(),
            ResourceKind::AlertRule => self.alert_rules.remove(name).is_some(),
        }
    }

    /// Returns one resource.
    pub fn get(&self, kind: ResourceKind, name: &str) -> Option<Resource> {
        match kind {
            ResourceKind::TrustProvider => self
                .trust_providers
                .get(name)
                .cloned()
                .map(Resource::TrustProvider),
            ResourceKind::ClientWorkload => self
                .client_workloads
                .get(name)
                .cloned()
                .map(Resource::ClientWorkload),
            ResourceKind::ServerWorkload => self
                .server_workloads
                .get(name)
                .cloned()
                .map(Resource::ServerWorkload),
            ResourceKind::CredentialProvider => self
                .credential_providers
                .get(name)
                .cloned()
                .map(Resource::CredentialProvider),
            ResourceKind::AccessCondition => self
                .access_conditions
                .get(name)
                .cloned()
                .map(Resource::AccessCondition),
            ResourceKind::AccessPolicy => self
                .access_policies
                .get(name)
                .cloned()
                .map(Resource::AccessPolicy),
            ResourceKind::LogStream => self.log_streams.get(name).cloned().map(Resource::LogStream),
            ResourceKind::NotificationTarget => self
                .notification_targets
                .get(name)
                .cloned()
                .map(Resource::NotificationTarget),
            ResourceKind::AlertRule => self.alert_rules.get(name).cloned().map(Resource::AlertRule),
        }
    }

    /// Lists every resource of every kind, in dependency order.
    pub fn resources(&self) -> Vec<Resource> {
        let mut all = Vec::new();
        for kind in ResourceKind::ALL {
            all.extend(
                self.names(kind)
                    .into_iter()
                    .filter_map(|name| self.get(kind, &name)),
            );
        }
        all
    }

    /// Lists the names of one kind, sorted.
    pub fn names(&self, kind: ResourceKind) -> Vec<String> {
        match kind {
            ResourceKind::TrustProvider => self.trust_providers.keys().cloned().collect(),
            ResourceKind::ClientWorkload => self.client_workloads.keys().cloned().collect(),
            ResourceKind::ServerWorkload => self.server_workloads.keys().cloned().collect(),
            ResourceKind::CredentialProvider => self.credential_providers.keys().cloned().collect(),
            ResourceKind::AccessCondition => self.access_conditions.keys().cloned().collect(),
            ResourceKind::AccessPolicy => self.access_policies.keys().cloned().collect(),
            ResourceKind::LogStream => self.log_streams.keys().cloned().collect(),
            ResourceKind::NotificationTarget => self.notification_targets.keys().cloned().collect(),
            ResourceKind::AlertRule => self.alert_rules.keys().cloned().collect(),
        }
    }

    pub fn contains(&self, kind: ResourceKind, name: &str) -> bool {
        match kind {
            ResourceKind::TrustProvider => self.trust_providers.contains_key(name),
            ResourceKind::ClientWorkload => self.client_workloads.contains_key(name),
            ResourceKind::ServerWorkload => self.server_workloads.contains_key(name),
            ResourceKind::CredentialProvider => self.credential_providers.contains_key(name),
            ResourceKind::AccessCondition => self.access_conditions.contains_key(name),
            ResourceKind::AccessPolicy => self.access_policies.contains_key(name),
            ResourceKind::LogStream => self.log_streams.contains_key(name),
            ResourceKind::NotificationTarget => self.notification_targets.contains_key(name),
            ResourceKind::AlertRule => self.alert_rules.contains_key(name),
        }
    }

    pub fn is_enabled(&self, server_workload: &str) -> bool {
        self.enabled.get(server_workload).copied().unwrap_or(true)
    }

    /// Rebuilds the lookup tables after resources changed.
    pub fn reindex(&mut self) {
        let mut index = Index::default();
        for workload in self.server_workloads.values() {
            index
                .targets
                .insert((workload.host_key(), workload.port), workload.name.clone());
        }
        for policy in self.access_policies.values() {
            index.policies.insert(
                (
                    policy.client_workload.clone(),
                    policy.server_workload.clone(),
                ),
                policy.name.clone(),
            );
        }
        self.index = index;
    }

    /// Finds the server workload listening on a host and port.
    pub fn server_workload_for_target(&self, host: &str, port: u16) -> Option<&ServerWorkload> {
        let name = self
            .index
            .targets
            .get(&(crate::resources::normalize_host(host), port))?;
        self.server_workloads.get(name)
    }

    /// Finds the policy for a client and server workload pair.
    pub fn policy_for(
        &self,
        client_workload: &str,
        server_workload: &str,
    ) -> Option<&AccessPolicy> {
        let name = self
            .index
            .policies
            .get(&(client_workload.to_string(), server_workload.to_string()))?;
        self.access_policies.get(name)
    }

    /// Lists the resources that refer to `kind`/`name`, as (kind, name) pairs.
    pub fn referrers(&self, kind: ResourceKind, name: &str) -> Vec<(ResourceKind, String)> {
        let mut found = BTreeSet::new();
        for resource in self.resources() {
            if resource
                .references()
                .iter()
                .any(|r| r.kind == kind && r.name == name)
            {
                found.insert((resource.kind(), resource.name().to_string()));
            }
        }
        found.into_iter().collect()
    }

    /// Checks everything that involves more than one resource. Returns every problem found.
    pub fn validate(&self, trust_domain: &crate::spiffe::TrustDomain) -> Vec<ConfigError> {
        let mut errors = Vec::new();

        for resource in self.resources() {
            for Reference { kind, name, field } in resource.references() {
                if !self.contains(kind, &name) {
                    errors.push(ConfigError::MissingReference {
                        kind: resource.kind(),
                        name: resource.name().to_string(),
                        field: field.to_string(),
                        ref_kind: kind,
                        ref_name: name,
                    });
                }
            }
        }

        let mut targets: BTreeMap<(String, u16), &str> = BTreeMap::new();
        for workload in self.server_workloads.values() {
            let key = (workload.host_key(), workload.port);
            if let Some(other) = targets.insert(key, &workload.name) {
                errors.push(ConfigError::DuplicateTarget {
                    name: workload.name.clone(),
                    other: other.to_string(),
                    host: workload.host.clone(),
                    port: workload.port,
                });
            }
        }

        let mut pairs: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        for policy in self.access_policies.values() {
            let key = (
                policy.client_workload.as_str(),
                policy.server_workload.as_str(),
            );
            if let Some(other) = pairs.insert(key, &policy.name) {
                errors.push(ConfigError::DuplicatePolicy {
                    name: policy.name.clone(),
                    other: other.to_string(),
                    client_workload: policy.client_workload.clone(),
                    server_workload: policy.server_workload.clone(),
                });
            }
            if let Some(client) = self.client_workloads.get(&policy.client_workload) {
                for provider in &policy.trust_providers {
                    let used = client
                        .identities
                        .iter()
                        .any(|identity| &identity.trust_provider == provider);
                    if !used && self.trust_providers.contains_key(provider) {
                        errors.push(ConfigError::UnusableTrustProvider {
                            name: policy.name.clone(),
                            trust_provider: provider.clone(),
                            client_workload: client.name.clone(),
                        });
                    }
                }
            }
        }

        let mut spiffe_ids: BTreeMap<String, &str> = BTreeMap::new();
        for client in self.client_workloads.values() {
            if let Some(id) = &client.spiffe_id
                && id.trust_domain() != trust_domain.as_str()
            {
                errors.push(ConfigError::ForeignSpiffeId {
                    name: client.name.clone(),
                    spiffe_id: id.to_string(),
                    trust_domain: trust_domain.to_string(),
                });
            }
            let spiffe_id = self.spiffe_id_of(client, trust_domain);
            if let Some(other) = spiffe_ids.insert(spiffe_id.clone(), &client.name) {
                errors.push(ConfigError::DuplicateSpiffeId {
                    name: client.name.clone(),
                    other: other.to_string(),
                    spiffe_id,
                });
            }
            for (index, identity) in client.identities.iter().enumerate() {
                let Some(TrustProvider::Unix(_)) =
                    self.trust_providers.get(&identity.trust_provider)
                else {
                    continue;
                };
                for (attribute, value) in &identity.match_rules {
                    if !crate::resources::UNIX_ATTRIBUTES.contains(&attribute.as_str()) {
                        errors.push(ConfigError::UnknownUnixAttribute {
                            name: client.name.clone(),
                            index,
                            attribute: attribute.clone(),
                            trust_provider: identity.trust_provider.clone(),
                        });
                    } else if let Some(reason) = unix_match_value_problem(attribute, &value.0) {
                        errors.push(ConfigError::InvalidUnixMatchValue {
                            name: client.name.clone(),
                            index,
                            attribute: attribute.clone(),
                            value: value.0.clone(),
                            reason,
                        });
                    }
                }
            }
        }

        errors
    }

    /// Returns the client workload's SPIFFE ID: its own, or `spiffe://<trust domain>/<name>`.
    pub fn spiffe_id_of(
        &self,
        client: &ClientWorkload,
        trust_domain: &crate::spiffe::TrustDomain,
    ) -> String {
        match &client.spiffe_id {
            Some(id) => id.to_string(),
            None => format!("{}/{}", trust_domain.id_string(), client.name),
        }
    }
}

/// Returns why a unix rule value can never match what unix attestation reports, if it cannot.
/// Ids are decimal numbers, and `sha256` is the lower-case hex digest that `sha256sum` prints.
fn unix_match_value_problem(attribute: &str, value: &str) -> Option<&'static str> {
    let is_number = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    let is_digest = value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match attribute {
        "uid" | "gid" | "groups" | "pid" if value != "*" && !is_number => {
            Some("must be a decimal number or *")
        }
        "sha256" if !is_digest => {
            Some("must be 64 lower-case hex digits, as sha256sum prints them")
        }
        _ => None,
    }
}

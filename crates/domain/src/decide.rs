//! The credential decision: from attested evidence and a target to a grant or a denial.
//!
//! The steps run in the order of the credential request flow: identify the client workload from
//! the attested attributes, find the server workload and the access policy for the pair, check that
//! the policy accepts the trust provider that attested the evidence, check that the server workload
//! is enabled, then evaluate the access conditions. Verifying the evidence itself (signatures, key
//! fetches) and producing the credential happen in the server, around this function.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::conditions::{self, RequestContext};
use crate::config::Config;
use crate::resources::{
    AccessPolicy, ClientWorkload, CredentialProvider, Identity, MatchValue, ServerWorkload,
    TrustProvider, UNIX_AGENT_ATTRIBUTE,
};
use crate::spiffe::TrustDomain;

/// A step of the credential request flow; a denial names the step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// No trust provider accepted the evidence.
    Evidence,
    /// The attested attributes identify no client workload, or more than one.
    ClientWorkload,
    /// The requested server workload does not exist.
    ServerWorkload,
    /// No access policy covers the client and server workload pair, or it does not accept the
    /// trust provider that attested the caller.
    AccessPolicy,
    /// The server workload is disabled.
    ServerWorkloadEnabled,
    /// An access condition did not pass.
    AccessCondition,
    /// The credential provider could not produce a credential.
    CredentialProvider,
    /// The audit event could not be written, so no credential was released.
    Audit,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Evidence => "evidence",
            Step::ClientWorkload => "client_workload",
            Step::ServerWorkload => "server_workload",
            Step::AccessPolicy => "access_policy",
            Step::ServerWorkloadEnabled => "server_workload_enabled",
            Step::AccessCondition => "access_condition",
            Step::CredentialProvider => "credential_provider",
            Step::Audit => "audit",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Attributes that one trust provider attested about the caller. A claim may carry several
/// values (an array claim); a rule matches when any of them matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attestation {
    pub trust_provider: String,
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// The server workload a request names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Name(String),
    HostPort { host: String, port: u16 },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Name(name) => f.write_str(name),
            Target::HostPort { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Everything a decision reads about the request.
#[derive(Debug, Clone)]
pub struct DecisionInput<'a> {
    pub target: &'a Target,
    pub attestations: &'a [Attestation],
    pub context: RequestContext,
    pub trust_domain: &'a TrustDomain,
}

/// A granted request: which resources matched.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    pub client_workload: &'a ClientWorkload,
    pub spiffe_id: String,
    pub server_workload: &'a ServerWorkload,
    pub policy: &'a AccessPolicy,
    pub credential_provider: &'a CredentialProvider,
    pub trust_provider: String,
}

/// A denied request: the failing step, the reason for the operator, and what was known by then.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Denial {
    pub step: Step,
    pub reason: String,
    pub client_workload: Option<String>,
    pub server_workload: Option<String>,
    pub policy: Option<String>,
}

impl Denial {
    pub fn new(step: Step, reason: impl Into<String>) -> Denial {
        Denial {
            step,
            reason: reason.into(),
            client_workload: None,
            server_workload: None,
            policy: None,
        }
    }
}

/// Finds the server workload that a target names, by name or by host and port.
pub fn server_workload_for<'a>(config: &'a Config, target: &Target) -> Option<&'a ServerWorkload> {
    match target {
        Target::Name(name) => config.server_workloads.get(name),
        Target::HostPort { host, port } => config.server_workload_for_target(host, *port),
    }
}

/// Decides a credential request against a configuration.
///
/// A denial before the server workload step (no evidence, no client workload) still names the
/// server workload that the target resolves to, so per-server-workload views see the attempt.
pub fn decide<'a>(config: &'a Config, input: &DecisionInput<'_>) -> Result<Grant<'a>, Denial> {
    let requested = server_workload_for(config, input.target).map(|server| server.name.clone());
    if input.attestations.is_empty() {
        let mut denial = Denial::new(Step::Evidence, "no trust provider accepted the evidence");
        denial.server_workload = requested;
        return Err(denial);
    }

    let (client, trust_provider) = identify(config, input.attestations).map_err(|mut denial| {
        denial.server_workload = requested;
        denial
    })?;
    let denial_context = |step, reason: String| Denial {
        step,
        reason,
        client_workload: Some(client.name.clone()),
        server_workload: None,
        policy: None,
    };

    let Some(server) = server_workload_for(config, input.target) else {
        return Err(denial_context(
            Step::ServerWorkload,
            format!("no server workload matches {}", input.target),
        ));
    };

    let denial = |step, reason: String, policy: Option<&AccessPolicy>| Denial {
        step,
        reason,
        client_workload: Some(client.name.clone()),
        server_workload: Some(server.name.clone()),
        policy: policy.map(|p| p.name.clone()),
    };

    let Some(policy) = config.policy_for(&client.name, &server.name) else {
        return Err(denial(
            Step::AccessPolicy,
            format!(
                "no access policy allows client workload {:?} to reach server workload {:?}",
                client.name, server.name
            ),
            None,
        ));
    };

    let Some(trust_provider) = trust_provider
        .into_iter()
        .find(|name| policy.trust_providers.contains(name))
    else {
        return Err(denial(
            Step::AccessPolicy,
            format!(
                "access policy {:?} accepts evidence only from trust providers {:?}",
                policy.name, policy.trust_providers
            ),
            Some(policy),
        ));
    };

    if !config.is_enabled(&server.name) {
        return Err(denial(
            Step::ServerWorkloadEnabled,
            format!("server workload {:?} is disabled", server.name),
            Some(policy),
        ));
    }

    for name in &policy.access_conditions {
        let Some(condition) = config.access_conditions.get(name) else {
            return Err(denial(
                Step::AccessCondition,
                format!("access condition {name:?} does not exist"),
                Some(policy),
            ));
        };
        if let Err(reason) = conditions::evaluate(condition, &input.context) {
            return Err(denial(Step::AccessCondition, reason, Some(policy)));
        }
    }

    let Some(credential_provider) = config.credential_providers.get(&policy.credential_provider)
    else {
        return Err(denial(
            Step::CredentialProvider,
            format!(
                "credential provider {:?} does not exist",
                policy.credential_provider
            ),
            Some(policy),
        ));
    };

    Ok(Grant {
        spiffe_id: config.spiffe_id_of(client, input.trust_domain),
        client_workload: client,
        server_workload: server,
        policy,
        credential_provider,
        trust_provider,
    })
}

/// Finds the one client workload whose identity rules match the attested attributes. Returns it
/// with the trust providers through which it matched.
fn identify<'a>(
    config: &'a Config,
    attestations: &[Attestation],
) -> Result<(&'a ClientWorkload, Vec<String>), Denial> {
    let mut matches: Vec<(&ClientWorkload, Vec<String>)> = Vec::new();
    for client in config.client_workloads.values() {
        let mut via = Vec::new();
        for identity in &client.identities {
            let attested = attestations
                .iter()
                .find(|a| a.trust_provider == identity.trust_provider);
            if let Some(attestation) = attested
                && unix_scope_matches(config, identity, attestation)
                && rules_match(&identity.match_rules, &attestation.attributes)
                && !via.contains(&identity.trust_provider)
            {
                via.push(identity.trust_provider.clone());
            }
        }
        if !via.is_empty() {
            matches.push((client, via));
        }
    }

    let providers: Vec<&str> = attestations
        .iter()
        .map(|a| a.trust_provider.as_str())
        .collect();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(Denial::new(
            Step::ClientWorkload,
            format!("the evidence attested by {providers:?} matches no client workload"),
        )),
        _ => {
            let names: Vec<&str> = matches
                .iter()
                .map(|(client, _)| client.name.as_str())
                .collect();
            Err(Denial::new(
                Step::ClientWorkload,
                format!(
                    "ambiguous evidence: it matches client workloads {names:?}; make their identity rules exclusive"
                ),
            ))
        }
    }
}

/// Checks that a `unix` identity and the evidence come from the same kind of socket. A rule that
/// names an agent applies only to processes an agent attested. A rule without `agent` applies
/// only to processes on the server's own socket, so a rule for uid 1000 does not match uid 1000
/// on every host that runs an agent. Identities of other trust providers always pass.
fn unix_scope_matches(config: &Config, identity: &Identity, attestation: &Attestation) -> bool {
    let Some(TrustProvider::Unix(_)) = config.trust_providers.get(&identity.trust_provider) else {
        return true;
    };
    let rule_names_agent = identity.match_rules.contains_key(UNIX_AGENT_ATTRIBUTE);
    let attested_by_agent = attestation.attributes.contains_key(UNIX_AGENT_ATTRIBUTE);
    rule_names_agent == attested_by_agent
}

/// Checks that every rule matches at least one attested value of its attribute.
pub fn rules_match(
    rules: &BTreeMap<String, MatchValue>,
    attributes: &BTreeMap<String, Vec<String>>,
) -> bool {
    rules.iter().all(|(attribute, expected)| {
        attributes
            .get(attribute)
            .is_some_and(|values| values.iter().any(|value| glob_match(&expected.0, value)))
    })
}

/// Matches `value` against `pattern`, where `*` stands for any run of characters (possibly
/// empty) and every other character matches itself.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == value;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return value.is_empty(),
    };
    let Some(mut remaining) = value.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = match rest.split_last() {
        Some(split) => split,
        None => return remaining.is_empty(),
    };
    for part in middle {
        match remaining.find(part) {
            Some(index) => remaining = &remaining[index + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

mod audience;
mod x509;
pub use audience::decide_audiences;
pub use x509::decide_x509;

#[cfg(test)]
mod tests;

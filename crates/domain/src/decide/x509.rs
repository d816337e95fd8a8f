//! The decision for an X.509-SVID, as the SPIFFE Workload API's FetchX509SVID requests it: the
//! caller names no server workload, only itself.

use super::{Attestation, DecisionInput, Denial, Grant, Step, Target, decide, identify};
use crate::conditions::RequestContext;
use crate::config::Config;
use crate::resources::CredentialProvider;
use crate::spiffe::TrustDomain;

/// Decides an X.509-SVID request.
///
/// It is granted through an access policy of the identified client workload whose credential
/// provider is an `x509_svid` provider, and which passes every other step of [`decide`] (trust
/// provider, enabled server workload, access conditions). When several policies qualify, the
/// first by name that passes wins, and its provider sets the lifetime. Without such a policy
/// the request is denied at the access policy step.
pub fn decide_x509<'a>(
    config: &'a Config,
    attestations: &[Attestation],
    context: RequestContext,
    trust_domain: &TrustDomain,
) -> Result<Grant<'a>, Denial> {
    if attestations.is_empty() {
        return Err(Denial::new(
            Step::Evidence,
            "no trust provider accepted the evidence",
        ));
    }
    let (client, _) = identify(config, attestations)?;

    let mut first_denial = None;
    for policy in config
        .access_policies
        .values()
        .filter(|policy| policy.client_workload == client.name)
    {
        let is_x509 = matches!(
            config.credential_providers.get(&policy.credential_provider),
            Some(CredentialProvider::X509Svid(_))
        );
        if !is_x509 {
            continue;
        }
        let target = Target::Name(policy.server_workload.clone());
        let input = DecisionInput {
            target: &target,
            attestations,
            context: context.clone(),
            trust_domain,
        };
        match decide(config, &input) {
            Ok(grant) => return Ok(grant),
            Err(denial) => {
                first_denial.get_or_insert(denial);
            }
        }
    }

    Err(first_denial.unwrap_or_else(|| Denial {
        step: Step::AccessPolicy,
        reason: format!(
            "no access policy of client workload {:?} uses an x509_svid credential provider",
            client.name
        ),
        client_workload: Some(client.name.clone()),
        server_workload: None,
        policy: None,
    }))
}

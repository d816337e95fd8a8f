//! The decision for a JWT-SVID requested by audience, as the SPIFFE Workload API's FetchJWTSVID
//! requests it: the caller names audiences, not a server workload.

use super::{Attestation, DecisionInput, Denial, Grant, Step, Target, decide, identify};
use crate::conditions::RequestContext;
use crate::config::Config;
use crate::resources::CredentialProvider;
use crate::spiffe::TrustDomain;

/// Decides a JWT-SVID request for `audiences`.
///
/// It is granted through an access policy of the identified client workload whose credential
/// provider is a `jwt_svid` provider naming every requested audience, and which passes every
/// other step of [`decide`] (trust provider, enabled server workload, access conditions). When
/// several policies qualify, the first by name that passes wins. Any audience that no such
/// policy names is denied at the access policy step.
pub fn decide_audiences<'a>(
    config: &'a Config,
    attestations: &[Attestation],
    context: RequestContext,
    trust_domain: &TrustDomain,
    audiences: &[String],
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
        let names_every_audience = matches!(
            config.credential_providers.get(&policy.credential_provider),
            Some(CredentialProvider::JwtSvid(provider))
                if audiences.iter().all(|audience| provider.audience.contains(audience))
        );
        if !names_every_audience {
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
            "no access policy of client workload {:?} has a jwt_svid credential provider naming every audience of {audiences:?}",
            client.name
        ),
        client_workload: Some(client.name.clone()),
        server_workload: None,
        policy: None,
    }))
}

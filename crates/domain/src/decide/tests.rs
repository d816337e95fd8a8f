use std::collections::BTreeMap;
use std::net::IpAddr;

use jiff::Timestamp;

use super::*;
use crate::config_file;

const CONFIG: &str = r#"
trust_providers:
  - {name: ci, kind: oidc, issuer: "https://ci.example", audience: mayfly, discovery: true}
  - {name: local, kind: unix}
client_workloads:
  - name: billing
    identities:
      - {trust_provider: ci, match: {sub: "repo:acme/billing:*"}}
      - {trust_provider: local, match: {uid: 1000}}
  - name: reports
    identities:
      - {trust_provider: ci, match: {sub: "repo:acme/reports:ref:refs/heads/main"}}
server_workloads:
  - {name: payments, host: Payments.Example, port: 443}
  - {name: ledger, host: ledger.example, port: 8443}
credential_providers:
  - {name: jwt, kind: jwt_svid, audience: [payments]}
access_conditions:
  - {name: office, kind: source_ip, allow: [10.0.0.0/8]}
access_policies:
  - {name: billing-payments, client_workload: billing, server_workload: payments, credential_provider: jwt, trust_providers: [ci], access_conditions: [office]}
  - {name: reports-payments, client_workload: reports, server_workload: payments, credential_provider: jwt, trust_providers: [ci]}
"#;

fn config() -> Config {
    let file = config_file::parse("test.yaml", CONFIG).unwrap_or_default();
    Config::from_resources(file.into_resources())
}

fn attestation(provider: &str, pairs: &[(&str, &str)]) -> Attestation {
    let attributes: BTreeMap<String, Vec<String>> = pairs
        .iter()
        .map(|(key, value)| (key.to_string(), vec![value.to_string()]))
        .collect();
    Attestation {
        trust_provider: provider.to_string(),
        attributes,
    }
}

fn run(
    config: &Config,
    target: Target,
    attestations: &[Attestation],
    source: &str,
) -> Result<String, Denial> {
    let trust_domain = TrustDomain::parse("mayfly.local").unwrap_or_else(|_| unreachable_domain());
    let input = DecisionInput {
        target: &target,
        attestations,
        context: RequestContext {
            now: Timestamp::UNIX_EPOCH,
            source_ip: source.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            location: None,
        },
        trust_domain: &trust_domain,
    };
    decide(config, &input).map(|grant| {
        format!(
            "{} {} {}",
            grant.spiffe_id, grant.policy.name, grant.trust_provider
        )
    })
}

fn unreachable_domain() -> TrustDomain {
    TrustDomain::parse("fallback").unwrap_or_else(|_| unreachable_domain())
}

#[test]
fn config_is_valid() {
    let trust_domain = unreachable_domain();
    assert_eq!(config().validate(&trust_domain), Vec::new());
}

#[test]
fn grants_matching_policy() {
    let evidence = [attestation(
        "ci",
        &[("sub", "repo:acme/billing:ref:refs/heads/main")],
    )];
    let result = run(
        &config(),
        Target::Name("payments".into()),
        &evidence,
        "10.1.1.1",
    );
    assert_eq!(
        result,
        Ok("spiffe://mayfly.local/billing billing-payments ci".to_string())
    );
}

#[test]
fn target_by_host_is_case_insensitive() {
    let evidence = [attestation(
        "ci",
        &[("sub", "repo:acme/reports:ref:refs/heads/main")],
    )];
    let target = Target::HostPort {
        host: "payments.example".into(),
        port: 443,
    };
    assert!(run(&config(), target, &evidence, "192.0.2.1").is_ok());
}

#[test]
fn no_policy_denies() {
    let evidence = [attestation("ci", &[("sub", "repo:acme/billing:x")])];
    let denial = run(
        &config(),
        Target::Name("ledger".into()),
        &evidence,
        "10.1.1.1",
    )
    .err();
    assert_eq!(denial.as_ref().map(|d| d.step), Some(Step::AccessPolicy));
    assert_eq!(
        denial.and_then(|d| d.server_workload),
        Some("ledger".to_string())
    );
}

#[test]
fn unknown_target_denies() {
    let evidence = [attestation("ci", &[("sub", "repo:acme/billing:x")])];
    let denial = run(
        &config(),
        Target::Name("nothing".into()),
        &evidence,
        "10.1.1.1",
    )
    .err();
    assert_eq!(denial.map(|d| d.step), Some(Step::ServerWorkload));
}

#[test]
fn unmatched_evidence_denies() {
    let evidence = [attestation("ci", &[("sub", "repo:evil/billing:x")])];
    let denial = run(
        &config(),
        Target::Name("payments".into()),
        &evidence,
        "10.1.1.1",
    )
    .err();
    assert_eq!(denial.map(|d| d.step), Some(Step::ClientWorkload));
}

#[test]
fn early_denials_name_requested_server_workload() {
    let stranger = [attestation("ci", &[("sub", "repo:evil/billing:x")])];
    let by_name = run(
        &config(),
        Target::Name("payments".into()),
        &stranger,
        "10.1.1.1",
    )
    .err();
    assert_eq!(by_name.as_ref().map(|d| d.step), Some(Step::ClientWorkload));
    assert_eq!(
        by_name.and_then(|d| d.server_workload),
        Some("payments".to_string())
    );

    let by_host = Target::HostPort {
        host: "ledger.example".into(),
        port: 8443,
    };
    let no_evidence = run(&config(), by_host, &[], "10.1.1.1").err();
    assert_eq!(no_evidence.as_ref().map(|d| d.step), Some(Step::Evidence));
    assert_eq!(
        no_evidence.and_then(|d| d.server_workload),
        Some("ledger".to_string())
    );

    let unknown = run(
        &config(),
        Target::Name("nothing".into()),
        &stranger,
        "10.1.1.1",
    )
    .err();
    assert_eq!(unknown.as_ref().map(|d| d.step), Some(Step::ClientWorkload));
    assert_eq!(
        unknown.and_then(|d| d.server_workload),
        None,
        "a name that is no server workload is not recorded"
    );
}

#[test]
fn ambiguous_client_denies() {
    let mut config = config();
    let mut twin = config.client_workloads.get("billing").cloned();
    if let Some(twin) = twin.as_mut() {
        twin.name = "billing-twin".to_string();
        config.insert(crate::resources::Resource::ClientWorkload(twin.clone()));
    }
    config.reindex();
    let evidence = [attestation("ci", &[("sub", "repo:acme/billing:main")])];
    let denial = run(
        &config,
        Target::Name("payments".into()),
        &evidence,
        "10.1.1.1",
    )
    .err();
    assert_eq!(denial.as_ref().map(|d| d.step), Some(Step::ClientWorkload));
    assert!(denial.is_some_and(|d| d.reason.contains("ambiguous")));
}

#[test]
fn trust_provider_outside_policy_denies() {
    // billing matches through the unix provider, but its policy accepts only ci.
    let evidence = [attestation("local", &[("uid", "1000")])];
    let denial = run(
        &config(),
        Target::Name("payments".into()),
        &evidence,
        "10.1.1.1",
    )
    .err();
    assert_eq!(denial.as_ref().map(|d| d.step), Some(Step::AccessPolicy));
    assert_eq!(
        denial.and_then(|d| d.policy),
        Some("billing-payments".to_string())
    );
}

#[test]
fn disabled_server_workload_denies() {
    let mut config = config();
    config.enabled.insert("payments".to_string(), false);
    let evidence = [attestation(
        "ci",
        &[("sub", "repo:acme/reports:ref:refs/heads/main")],
    )];
    let denial = run(
        &config,
        Target::Name("payments".into()),
        &evidence,
        "10.1.1.1",
    )
    .err();
    assert_eq!(denial.map(|d| d.step), Some(Step::ServerWorkloadEnabled));
}

#[test]
fn failing_access_condition_denies() {
    let evidence = [attestation("ci", &[("sub", "repo:acme/billing:main")])];
    let denial = run(
        &config(),
        Target::Name("payments".into()),
        &evidence,
        "192.0.2.1",
    )
    .err();
    assert_eq!(denial.as_ref().map(|d| d.step), Some(Step::AccessCondition));
    assert!(denial.is_some_and(|d| d.reason.contains("192.0.2.1")));
}

#[test]
fn no_attestation_denies_at_evidence() {
    let denial = run(&config(), Target::Name("payments".into()), &[], "10.1.1.1").err();
    assert_eq!(denial.map(|d| d.step), Some(Step::Evidence));
}

#[test]
fn array_claims_match_any_element() {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "sub".to_string(),
        vec!["other".to_string(), "repo:acme/billing:x".to_string()],
    );
    let evidence = [Attestation {
        trust_provider: "ci".to_string(),
        attributes,
    }];
    assert!(
        run(
            &config(),
            Target::Name("payments".into()),
            &evidence,
            "10.0.0.1"
        )
        .is_ok()
    );
}

#[test]
fn glob_patterns() {
    assert!(glob_match("a*", "abc"));
    assert!(glob_match("*c", "abc"));
    assert!(glob_match("a*c", "abc"));
    assert!(glob_match("a*b*c", "a-b-c"));
    assert!(glob_match("*", ""));
    assert!(!glob_match("a*c", "ab"));
    assert!(!glob_match("ab*ba", "aba"));
    assert!(!glob_match("abc", "abcd"));
    assert!(!glob_match("repo:acme/*", "repo:acme2/x"));
}

const AGENT_CONFIG: &str = r#"
trust_providers:
  - {name: local, kind: unix}
client_workloads:
  - name: host-only
    identities:
      - {trust_provider: local, match: {uid: 1000}}
  - name: on-web-1
    identities:
      - {trust_provider: local, match: {uid: 2000, agent: web-1}}
  - name: on-any-agent
    identities:
      - {trust_provider: local, match: {uid: 3000, agent: "*"}}
server_workloads:
  - {name: payments, host: payments.example, port: 443}
credential_providers:
  - {name: jwt, kind: jwt_svid, audience: [payments]}
access_policies:
  - {name: host-only, client_workload: host-only, server_workload: payments, credential_provider: jwt, trust_providers: [local]}
  - {name: on-web-1, client_workload: on-web-1, server_workload: payments, credential_provider: jwt, trust_providers: [local]}
  - {name: on-any-agent, client_workload: on-any-agent, server_workload: payments, credential_provider: jwt, trust_providers: [local]}
"#;

fn agent_config() -> Config {
    let file = config_file::parse("agent.yaml", AGENT_CONFIG).unwrap_or_default();
    Config::from_resources(file.into_resources())
}

/// Returns the name of the policy that granted, which here is also the client workload's name.
fn granted_policy(result: Result<String, Denial>) -> Option<String> {
    result
        .ok()
        .and_then(|text| text.split(' ').nth(1).map(str::to_string))
}

#[test]
fn unix_rule_without_agent_rejects_agent_attested_uid() {
    let config = agent_config();
    let from_agent = attestation("local", &[("uid", "1000"), ("agent", "web-1")]);
    let result = run(
        &config,
        Target::Name("payments".into()),
        &[from_agent],
        "127.0.0.1",
    );
    assert_eq!(
        result.map_err(|denial| denial.step),
        Err(Step::ClientWorkload)
    );
}

#[test]
fn unix_rule_without_agent_matches_server_socket() {
    let config = agent_config();
    let local = attestation("local", &[("uid", "1000")]);
    let result = run(
        &config,
        Target::Name("payments".into()),
        &[local],
        "127.0.0.1",
    );
    assert_eq!(granted_policy(result).as_deref(), Some("host-only"));
}

#[test]
fn unix_rule_naming_agent_matches_only_that_agent() {
    let config = agent_config();
    let web_1 = attestation("local", &[("uid", "2000"), ("agent", "web-1")]);
    let result = run(
        &config,
        Target::Name("payments".into()),
        &[web_1],
        "127.0.0.1",
    );
    assert_eq!(granted_policy(result).as_deref(), Some("on-web-1"));

    let web_2 = attestation("local", &[("uid", "2000"), ("agent", "web-2")]);
    let result = run(
        &config,
        Target::Name("payments".into()),
        &[web_2],
        "127.0.0.1",
    );
    assert_eq!(
        result.map_err(|denial| denial.step),
        Err(Step::ClientWorkload)
    );
}

#[test]
fn unix_rule_naming_agent_rejects_server_socket() {
    let config = agent_config();
    let local = attestation("local", &[("uid", "2000")]);
    let result = run(
        &config,
        Target::Name("payments".into()),
        &[local],
        "127.0.0.1",
    );
    assert_eq!(
        result.map_err(|denial| denial.step),
        Err(Step::ClientWorkload)
    );
}

#[test]
fn unix_rule_any_agent_matches_every_agent() {
    let config = agent_config();
    let on_agent = attestation("local", &[("uid", "3000"), ("agent", "db-7")]);
    let result = run(
        &config,
        Target::Name("payments".into()),
        &[on_agent],
        "127.0.0.1",
    );
    assert_eq!(granted_policy(result).as_deref(), Some("on-any-agent"));

    let local = attestation("local", &[("uid", "3000")]);
    let result = run(
        &config,
        Target::Name("payments".into()),
        &[local],
        "127.0.0.1",
    );
    assert_eq!(
        result.map_err(|denial| denial.step),
        Err(Step::ClientWorkload)
    );
}

fn run_audiences(
    config: &Config,
    attestations: &[Attestation],
    audiences: &[&str],
) -> Result<String, Denial> {
    let trust_domain = TrustDomain::parse("mayfly.local").unwrap_or_else(|_| unreachable_domain());
    let context = RequestContext {
        now: Timestamp::UNIX_EPOCH,
        source_ip: IpAddr::from([127, 0, 0, 1]),
        location: None,
    };
    let audiences: Vec<String> = audiences
        .iter()
        .map(|audience| audience.to_string())
        .collect();
    decide_audiences(config, attestations, context, &trust_domain, &audiences)
        .map(|grant| format!("{} {}", grant.spiffe_id, grant.policy.name))
}

#[test]
fn audience_named_by_policy_is_granted() {
    let config = agent_config();
    let web_1 = attestation("local", &[("uid", "2000"), ("agent", "web-1")]);
    let result = run_audiences(&config, &[web_1], &["payments"]);
    assert_eq!(
        result,
        Ok("spiffe://mayfly.local/on-web-1 on-web-1".to_string())
    );
}

#[test]
fn audience_no_policy_names_is_denied() {
    let config = agent_config();
    let web_1 = attestation("local", &[("uid", "2000"), ("agent", "web-1")]);
    let denial = run_audiences(&config, std::slice::from_ref(&web_1), &["vault"]).err();
    assert_eq!(
        denial.as_ref().map(|denial| denial.step),
        Some(Step::AccessPolicy)
    );
    assert_eq!(
        denial.and_then(|denial| denial.client_workload).as_deref(),
        Some("on-web-1")
    );

    let mixed = run_audiences(&config, &[web_1], &["payments", "vault"]);
    assert_eq!(mixed.map_err(|denial| denial.step), Err(Step::AccessPolicy));
}

#[test]
fn audience_for_disabled_server_workload_is_denied() {
    let mut config = agent_config();
    config.enabled.insert("payments".to_string(), false);
    let web_1 = attestation("local", &[("uid", "2000"), ("agent", "web-1")]);
    let result = run_audiences(&config, &[web_1], &["payments"]);
    assert_eq!(
        result.map_err(|denial| denial.step),
        Err(Step::ServerWorkloadEnabled)
    );
}

#[test]
fn audience_request_from_unknown_caller_is_denied() {
    let config = agent_config();
    let stranger = attestation("local", &[("uid", "9999"), ("agent", "web-1")]);
    let result = run_audiences(&config, &[stranger], &["payments"]);
    assert_eq!(
        result.map_err(|denial| denial.step),
        Err(Step::ClientWorkload)
    );
}

const X509_CONFIG: &str = r#"
trust_providers:
  - {name: local, kind: unix}
client_workloads:
  - name: billing
    identities:
      - {trust_provider: local, match: {uid: 1000}}
  - name: reports
    identities:
      - {trust_provider: local, match: {uid: 2000}}
server_workloads:
  - {name: mesh, host: mesh.example, port: 443}
credential_providers:
  - {name: svid, kind: x509_svid, ttl: 30m}
  - {name: jwt, kind: jwt_svid, audience: [mesh]}
access_conditions:
  - {name: office, kind: source_ip, allow: [10.0.0.0/8]}
access_policies:
  - {name: billing-mesh, client_workload: billing, server_workload: mesh, credential_provider: svid, trust_providers: [local], access_conditions: [office]}
  - {name: reports-mesh, client_workload: reports, server_workload: mesh, credential_provider: jwt, trust_providers: [local]}
"#;

fn run_x509(uid: &str, source: &str) -> Result<String, Denial> {
    let file = config_file::parse("x509.yaml", X509_CONFIG).unwrap_or_default();
    let config = Config::from_resources(file.into_resources());
    let trust_domain = TrustDomain::parse("mayfly.local").unwrap_or_else(|_| unreachable_domain());
    let context = RequestContext {
        now: Timestamp::UNIX_EPOCH,
        source_ip: source.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        location: None,
    };
    let attestations = [attestation("local", &[("uid", uid)])];
    decide_x509(&config, &attestations, context, &trust_domain).map(|grant| {
        format!(
            "{} {} {}",
            grant.spiffe_id,
            grant.policy.name,
            grant.credential_provider.name()
        )
    })
}

#[test]
fn x509_granted_through_x509_svid_policy() {
    assert_eq!(
        run_x509("1000", "10.1.2.3"),
        Ok("spiffe://mayfly.local/billing billing-mesh svid".to_string())
    );
}

#[test]
fn x509_denied_without_x509_svid_policy() {
    let denial = run_x509("2000", "10.1.2.3").err();
    assert_eq!(
        denial.as_ref().map(|denial| denial.step),
        Some(Step::AccessPolicy)
    );
    assert_eq!(
        denial.and_then(|denial| denial.client_workload),
        Some("reports".to_string())
    );
}

#[test]
fn x509_denied_by_access_condition() {
    let denial = run_x509("1000", "192.0.2.1").err();
    assert_eq!(
        denial.as_ref().map(|denial| denial.step),
        Some(Step::AccessCondition)
    );
    assert_eq!(
        denial.and_then(|denial| denial.policy),
        Some("billing-mesh".to_string())
    );
}

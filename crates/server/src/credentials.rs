//! `POST /v1/credentials`: evidence in, credential out, one durable audit event per request.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use mayfly_crypto::jwt_svid::{JwtSvidClaims, mint, new_jti};
use mayfly_domain::audit::{AuditKind, NewAuditEvent, Outcome};
use mayfly_domain::conditions::RequestContext;
use mayfly_domain::decide::{Attestation, DecisionInput, Denial, Grant, Step, Target, decide, decide_audiences};
use mayfly_domain::resources::{Authentication, CredentialProvider, UNIX_AGENT_ATTRIBUTE, UNIX_ATTRIBUTES};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::clock;
use crate::evidence::unix::{self, PeerAtAccept};
use crate::problem::ApiError;
use crate::state::{AppState, ConfigSnapshot, signing_algorithm};

/// The body of a credential request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRequest {
    #[serde(default)]
    pub server_workload: Option<String>,
    #[serde(default)]
    pub target: Option<TargetBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetBody {
    pub host: String,
    pub port: u16,
}

/// What the caller presented.
#[derive(Debug)]
pub enum Evidence {
    /// An OIDC/JWT bearer token from the `Authorization` header.
    Bearer(String),
    /// The kernel's view of a process on the workload socket.
    Unix(PeerAtAccept),
    /// Unix attributes of a process that the authenticated agent `agent` attested on its own
    /// socket.
    Agent { agent: String, attributes: BTreeMap<String, Vec<String>> },
    /// Nothing.
    None,
}

/// A credential request after transport details are extracted.
pub struct Call {
    pub request_id: String,
    pub evidence: Evidence,
    pub source_ip: IpAddr,
    pub transport: &'static str,
}

/// The response to a granted request.
#[derive(Debug, Serialize)]
pub struct CredentialResponse {
    pub credential_type: &'static str,
    pub token: String,
    pub spiffe_id: String,
    pub server_workload: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub presentation: Value,
    pub request_id: String,
}

/// The credential that a request is for.
enum Wanted {
    /// The credential that the access policy for this server workload yields.
    Target(Target),
    /// A JWT-SVID for exactly these audiences, as the SPIFFE Workload API requests it.
    Audiences(Vec<String>),
}

/// Runs the whole credential flow and writes its audit event before the response.
pub async fn handle(state: &AppState, call: Call, request: CredentialRequest) -> Result<CredentialResponse, ApiError> {
    let target = parse_target(request)?;
    issue(state, call, Wanted::Target(target)).await
}

/// Runs the credential flow for a JWT-SVID requested by audience: it is granted only through an
/// access policy whose `jwt_svid` credential provider names every audience in `audiences`.
pub async fn handle_jwt_svid(state: &AppState, call: Call, audiences: Vec<String>) -> Result<CredentialResponse, ApiError> {
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(ApiError::invalid("audience", &audiences.join(","), "needs at least one non-empty audience"));
    }
    issue(state, call, Wanted::Audiences(audiences)).await
}

async fn issue(state: &AppState, call: Call, wanted: Wanted) -> Result<CredentialResponse, ApiError> {
    let started = Instant::now();
    let now = clock::now();
    let snapshot = state.config();
    let config = &snapshot.config;

    let mut detail = Map::new();
    detail.insert("request_id".into(), json!(call.request_id));
    detail.insert("source_ip".into(), json!(call.source_ip.to_string()));
    detail.insert("transport".into(), json!(call.transport));
    match &wanted {
        Wanted::Target(target) => detail.insert("target".into(), json!(target.to_string())),
        Wanted::Audiences(audiences) => detail.insert("audience".into(), json!(audiences)),
    };

    let attestations = match collect_evidence(state, &snapshot, &call.evidence, now, &mut detail).await {
        Ok(attestations) => attestations,
        Err(reason) => {
            let denial = Denial::new(Step::Evidence, reason);
            return deny(state, &call, now, denial, detail, started).await;
        }
    };

    let context = RequestContext { now, source_ip: call.source_ip };
    let decision = match &wanted {
        Wanted::Target(target) => {
            let input = DecisionInput { target, attestations: &attestations, context, trust_domain: &state.trust_domain };
            decide(config, &input)
        }
        Wanted::Audiences(audiences) => decide_audiences(config, &attestations, context, &state.trust_domain, audiences),
    };
    let grant = match decision {
        Ok(grant) => grant,
        Err(denial) => return deny(state, &call, now, denial, detail, started).await,
    };

    detail.insert("spiffe_id".into(), json!(grant.spiffe_id));
    detail.insert("policy".into(), json!(grant.policy.name));
    detail.insert("trust_provider".into(), json!(grant.trust_provider));
    detail.insert("credential_provider".into(), json!(grant.credential_provider.name()));

    let audience_override = match &wanted {
        Wanted::Target(_) => None,
        Wanted::Audiences(audiences) => Some(audiences.as_slice()),
    };
    let issued = match produce(state, &grant, audience_override, now) {
        Ok(issued) => issued,
        Err(reason) => {
            let denial = Denial {
                step: Step::CredentialProvider,
                reason,
                client_workload: Some(grant.client_workload.name.clone()),
                server_workload: Some(grant.server_workload.name.clone()),
                policy: Some(grant.policy.name.clone()),
            };
            return deny(state, &call, now, denial, detail, started).await;
        }
    };

    detail.insert("credential_type".into(), json!(issued.credential_type));
    detail.insert("token_id".into(), json!(issued.token_id));
    detail.insert("expires_at".into(), json!(issued.expires_at.to_string()));

    let mut event = NewAuditEvent::new(clock::new_event_id(), now, AuditKind::CredentialRequest, Value::Object(detail));
    event.outcome = Some(Outcome::Success);
    event.client_workload = Some(grant.client_workload.name.clone());
    event.server_workload = Some(grant.server_workload.name.clone());

    if let Err(error) = state.audit.write(event).await {
        // Fail closed: without a durable audit event the credential never leaves.
        tracing::error!(request_id = %call.request_id, error = %error, "audit write failed; credential withheld");
        record_denied(&grant.server_workload.name, Step::Audit, started);
        return Err(ApiError::Denied { step: Step::Audit, request_id: call.request_id });
    }

    tracing::debug!(
        request_id = %call.request_id,
        client_workload = %grant.client_workload.name,
        server_workload = %grant.server_workload.name,
        policy = %grant.policy.name,
        decision = "allow",
        "credential issued"
    );
    metrics::counter!("mayfly_credentials_issued_total", "server_workload" => grant.server_workload.name.clone(), "credential_type" => issued.credential_type).increment(1);
    metrics::histogram!("mayfly_credential_issuance_seconds").record(started.elapsed().as_secs_f64());

    Ok(CredentialResponse {
        credential_type: issued.credential_type,
        presentation: presentation(&grant, &issued.token),
        token: issued.token,
        spiffe_id: grant.spiffe_id,
        server_workload: grant.server_workload.name.clone(),
        issued_at: now,
        expires_at: issued.expires_at,
        request_id: call.request_id,
    })
}

fn parse_target(request: CredentialRequest) -> Result<Target, ApiError> {
    match (request.server_workload, request.target) {
        (Some(name), None) if !name.is_empty() => Ok(Target::Name(name)),
        (None, Some(target)) if !target.host.is_empty() && target.port != 0 => {
            Ok(Target::HostPort { host: target.host, port: target.port })
        }
        (None, Some(target)) => Err(ApiError::invalid(
            "target",
            &format!("{}:{}", target.host, target.port),
            "needs a non-empty host and a port from 1 to 65535",
        )),
        _ => Err(ApiError::invalid(
            "server_workload",
            "",
            "set exactly one of server_workload (a name) or target ({\"host\", \"port\"})",
        )),
    }
}

async fn collect_evidence(
    state: &AppState,
    snapshot: &ConfigSnapshot,
    evidence: &Evidence,
    now: Timestamp,
    detail: &mut Map<String, Value>,
) -> Result<Vec<Attestation>, String> {
    match evidence {
        Evidence::None => {
            Err("no evidence: send an OIDC token as Authorization: Bearer, or call through the workload socket".to_string())
        }
        Evidence::Bearer(token) => {
            let now_seconds = now.as_second();
            if let Some(attestations) = state.evidence_cache.get(token, now_seconds, snapshot.version) {
                detail.insert("evidence".into(), evidence_summary(&attestations, true));
                return Ok(attestations);
            }
            let outcome = state.oidc.verify(&snapshot.config, token, now_seconds).await;
            if outcome.attestations.is_empty() {
                return Err(outcome.rejections.join("; "));
            }
            state.evidence_cache.insert(token, outcome.attestations.clone(), outcome.expires_at, now_seconds, snapshot.version);
            detail.insert("evidence".into(), evidence_summary(&outcome.attestations, false));
            Ok(outcome.attestations)
        }
        Evidence::Unix(peer) => {
            let peer = *peer;
            let attributes = tokio::task::spawn_blocking({
                let hasher = state.hasher.clone();
                move || unix::attest(peer, &hasher)
            })
            .await
            .map_err(|error| format!("unix attestation failed: {error}"))?
            .map_err(|error| error.to_string())?;
            detail.insert("evidence".into(), json!({"kind": "unix", "attributes": attributes}));
            let attestations = unix::attestations(&snapshot.config, &attributes);
            if attestations.is_empty() {
                return Err("no unix trust provider is configured, so processes on the workload socket cannot be attested".to_string());
            }
            Ok(attestations)
        }
        Evidence::Agent { agent, attributes } => {
            let attributes = agent_attributes(agent, attributes)?;
            detail.insert("evidence".into(), json!({"kind": "agent", "agent": agent, "attributes": attributes}));
            let attestations = unix::attestations(&snapshot.config, &attributes);
            if attestations.is_empty() {
                return Err("no unix trust provider is configured, so processes attested by agents cannot be identified".to_string());
            }
            Ok(attestations)
        }
    }
}

/// Maximum length of one attribute value that an agent sends, in bytes.
const MAX_AGENT_ATTRIBUTE_BYTES: usize = 4096;

/// Maximum number of supplementary groups that an agent sends; Linux allows 65,536.
const MAX_AGENT_GROUPS: usize = 65_536;

/// Checks the attributes an agent sent and adds the agent's name. The name comes from the
/// agent's credential: an `agent` attribute in the request is rejected, so an agent cannot
/// pose as another.
fn agent_attributes(agent: &str, sent: &BTreeMap<String, Vec<String>>) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut attributes = BTreeMap::new();
    for (name, values) in sent {
        let known = UNIX_ATTRIBUTES.contains(&name.as_str()) && name != UNIX_AGENT_ATTRIBUTE;
        if !known {
            return Err(format!("agent {agent:?} sent attribute {name:?}, which is not a unix attribute an agent may attest"));
        }
        let max_values = if name == "groups" { MAX_AGENT_GROUPS } else { 1 };
        if values.is_empty() || values.len() > max_values {
            return Err(format!("agent {agent:?} sent attribute {name:?} with {} values, expected 1 to {max_values}", values.len()));
        }
        if values.iter().any(|value| value.is_empty() || value.len() > MAX_AGENT_ATTRIBUTE_BYTES) {
            return Err(format!(
                "agent {agent:?} sent attribute {name:?} with an empty value or one longer than {MAX_AGENT_ATTRIBUTE_BYTES} bytes"
            ));
        }
        attributes.insert(name.clone(), values.clone());
    }
    if !attributes.contains_key("uid") {
        return Err(format!("agent {agent:?} sent no uid attribute"));
    }
    attributes.insert(UNIX_AGENT_ATTRIBUTE.to_string(), vec![agent.to_string()]);
    Ok(attributes)
}

/// Summarizes verified token claims for the audit event: who the token names, never the token.
fn evidence_summary(attestations: &[Attestation], cached: bool) -> Value {
    let providers: Vec<Value> = attestations
        .iter()
        .map(|attestation| {
            let pick = |name: &str| attestation.attributes.get(name).and_then(|values| values.first()).cloned();
            json!({
                "trust_provider": attestation.trust_provider,
                "iss": pick("iss"),
                "sub": pick("sub"),
                "jti": pick("jti"),
            })
        })
        .collect();
    json!({"kind": "oidc", "cached": cached, "accepted_by": providers})
}

struct Issued {
    credential_type: &'static str,
    token: String,
    token_id: String,
    expires_at: Timestamp,
}

/// Produces the credential; `audience_override` replaces a JWT-SVID's configured audiences.
fn produce(state: &AppState, grant: &Grant<'_>, audience_override: Option<&[String]>, now: Timestamp) -> Result<Issued, String> {
    match grant.credential_provider {
        CredentialProvider::JwtSvid(provider) => {
            let algorithm = signing_algorithm(provider.algorithm);
            let keys = state.keys.current();
            let key = keys.active(algorithm).ok_or_else(|| format!("no active {} signing key", algorithm.as_str()))?;
            let iat = now.as_second();
            let exp = iat + i64::try_from(provider.ttl.as_secs()).unwrap_or(300);
            let jti = new_jti().map_err(|error| format!("generating a token id failed: {error}"))?;
            let claims = JwtSvidClaims {
                sub: grant.spiffe_id.clone(),
                aud: audience_override.map_or_else(|| provider.audience.clone(), <[String]>::to_vec),
                exp,
                iat,
                iss: state.issuer.clone(),
                jti: jti.clone(),
            };
            let token = mint(key, &claims).map_err(|error| format!("signing failed: {error}"))?;
            let expires_at = Timestamp::from_second(exp).map_err(|error| error.to_string())?;
            Ok(Issued { credential_type: "jwt_svid", token, token_id: jti, expires_at })
        }
    }
}

/// How to present the credential to the server workload.
fn presentation(grant: &Grant<'_>, token: &str) -> Value {
    let mut headers = BTreeMap::new();
    let mut query = BTreeMap::new();
    match &grant.server_workload.authentication {
        Authentication::Bearer => {
            headers.insert("Authorization".to_string(), format!("Bearer {token}"));
        }
        Authentication::Header { header } => {
            headers.insert(header.clone(), token.to_string());
        }
        Authentication::Basic { username } => {
            let username = username.clone().unwrap_or_else(|| grant.spiffe_id.clone());
            let encoded = STANDARD.encode(format!("{username}:{token}"));
            headers.insert("Authorization".to_string(), format!("Basic {encoded}"));
        }
        Authentication::Query { parameter } => {
            query.insert(parameter.clone(), token.to_string());
        }
    }
    let mut value = json!({});
    if !headers.is_empty() {
        value["headers"] = json!(headers);
    }
    if !query.is_empty() {
        value["query"] = json!(query);
    }
    value
}

async fn deny(
    state: &AppState,
    call: &Call,
    now: Timestamp,
    denial: Denial,
    mut detail: Map<String, Value>,
    started: Instant,
) -> Result<CredentialResponse, ApiError> {
    detail.insert("step".into(), json!(denial.step.as_str()));
    detail.insert("reason".into(), json!(denial.reason));
    if let Some(policy) = &denial.policy {
        detail.insert("policy".into(), json!(policy));
    }

    let mut event = NewAuditEvent::new(clock::new_event_id(), now, AuditKind::CredentialRequest, Value::Object(detail));
    event.outcome = Some(Outcome::Failure);
    event.client_workload = denial.client_workload.clone();
    event.server_workload = denial.server_workload.clone();

    tracing::info!(
        request_id = %call.request_id,
        client_workload = denial.client_workload.as_deref().unwrap_or("-"),
        server_workload = denial.server_workload.as_deref().unwrap_or("-"),
        policy = denial.policy.as_deref().unwrap_or("-"),
        decision = "deny",
        step = denial.step.as_str(),
        reason = %denial.reason,
        "credential denied"
    );
    let server_workload = denial.server_workload.clone().unwrap_or_else(|| "-".to_string());

    if let Err(error) = state.audit.write(event).await {
        tracing::error!(request_id = %call.request_id, error = %error, "audit write of a denial failed");
        record_denied(&server_workload, Step::Audit, started);
        return Err(ApiError::Denied { step: Step::Audit, request_id: call.request_id.clone() });
    }
    record_denied(&server_workload, denial.step, started);
    Err(ApiError::Denied { step: denial.step, request_id: call.request_id.clone() })
}

fn record_denied(server_workload: &str, step: Step, started: Instant) {
    metrics::counter!("mayfly_credentials_denied_total", "server_workload" => server_workload.to_string(), "reason" => step.as_str()).increment(1);
    metrics::histogram!("mayfly_credential_issuance_seconds").record(started.elapsed().as_secs_f64());
}

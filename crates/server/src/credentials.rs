//! `POST /v1/credentials`: evidence in, credential out, one durable audit event per request.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use mayfly_domain::audit::{AuditKind, NewAuditEvent, Outcome};
use mayfly_domain::conditions::RequestContext;
use mayfly_domain::decide::{
    Attestation, DecisionInput, Denial, Grant, Step, Target, decide, decide_audiences, decide_x509,
    server_workload_for,
};
use mayfly_domain::resources::{
    Authentication, CredentialProvider, UNIX_AGENT_ATTRIBUTE, UNIX_ATTRIBUTES,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::clock;
use crate::evidence::unix::{self, PeerAtAccept};
use crate::problem::ApiError;
use crate::providers::{self, Delivery, Issued};
use crate::state::{AppState, ConfigSnapshot};

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
    Agent {
        agent: String,
        attributes: BTreeMap<String, Vec<String>>,
    },
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

/// Runs the credential flow for an agent's proxy. The proxy injects the credential rather than
/// hand it to the workload, so a `static_secret` provider without `allow_workload_delivery`
/// serves it too.
pub async fn handle_for_proxy(
    state: &AppState,
    call: Call,
    request: CredentialRequest,
) -> Result<CredentialResponse, ApiError> {
    let target = parse_target(request)?;
    issue(state, call, Wanted::Target(target), Delivery::Proxy).await
}

/// The response to a granted request.
#[derive(Debug, Serialize)]
pub struct CredentialResponse {
    pub credential_type: &'static str,
    pub token: String,
    /// The username to present with a `password` credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// More fields of the credential, such as `access_key_id` and `secret_access_key` of
    /// `aws_credentials` (whose `token` is the session token).
    #[serde(flatten)]
    pub fields: BTreeMap<String, String>,
    pub spiffe_id: String,
    pub server_workload: String,
    pub issued_at: Timestamp,
    /// `null` for a credential valid until an operator rotates it.
    pub expires_at: Option<Timestamp>,
    pub presentation: Value,
    pub request_id: String,
}

/// The credential that a request is for.
enum Wanted {
    /// The credential that the access policy for this server workload yields.
    Target(Target),
    /// A JWT-SVID for exactly these audiences, as the SPIFFE Workload API requests it.
    Audiences(Vec<String>),
    /// An X.509-SVID for the public key of this DER CSR, as the agent requests it for the SPIFFE
    /// Workload API.
    X509Svid(Vec<u8>),
}

/// Runs the whole credential flow and writes its audit event before the response.
pub async fn handle(
    state: &AppState,
    call: Call,
    request: CredentialRequest,
) -> Result<CredentialResponse, ApiError> {
    let target = parse_target(request)?;
    issue(state, call, Wanted::Target(target), Delivery::Workload).await
}

/// Runs the credential flow for a JWT-SVID requested by audience: it is granted only through an
/// access policy whose `jwt_svid` credential provider names every audience in `audiences`.
pub async fn handle_jwt_svid(
    state: &AppState,
    call: Call,
    audiences: Vec<String>,
) -> Result<CredentialResponse, ApiError> {
    check_audiences(&audiences)?;
    issue(
        state,
        call,
        Wanted::Audiences(audiences),
        Delivery::Workload,
    )
    .await
}

/// Runs the credential flow for an X.509-SVID: it is granted only through an access policy whose
/// credential provider is an `x509_svid` provider. A CSR that is not DER, whose signature does not
/// verify or whose key is not P-256 is rejected before the decision, naming the field `csr`.
pub async fn handle_x509_svid(
    state: &AppState,
    call: Call,
    csr_der: Vec<u8>,
) -> Result<CredentialResponse, ApiError> {
    if let Err(error) = mayfly_crypto::x509::verify_csr(&csr_der, None) {
        return Err(ApiError::invalid(
            "csr",
            &format!("{} bytes", csr_der.len()),
            &error.to_string(),
        ));
    }
    issue(state, call, Wanted::X509Svid(csr_der), Delivery::Workload).await
}

/// Maximum number of audiences in one JWT-SVID request.
const MAX_AUDIENCES: usize = 32;
/// Maximum length of one requested audience, in bytes.
const MAX_AUDIENCE_BYTES: usize = 255;

/// Checks requested audiences before anything is audited, so a caller cannot make the audit log
/// store arbitrary amounts of data.
fn check_audiences(audiences: &[String]) -> Result<(), ApiError> {
    if audiences.is_empty() {
        return Err(ApiError::invalid(
            "audience",
            "",
            "must name at least one audience",
        ));
    }
    if audiences.len() > MAX_AUDIENCES {
        let reason = format!(
            "names {} audiences, more than the maximum of {MAX_AUDIENCES}",
            audiences.len()
        );
        return Err(ApiError::invalid("audience", "", &reason));
    }
    for (index, audience) in audiences.iter().enumerate() {
        let field = format!("audience[{index}]");
        if audience.is_empty() {
            return Err(ApiError::invalid(&field, "", "must not be empty"));
        }
        if audience.len() > MAX_AUDIENCE_BYTES {
            let reason = format!(
                "is {} bytes, longer than the maximum of {MAX_AUDIENCE_BYTES}",
                audience.len()
            );
            return Err(ApiError::invalid(&field, &shorten(audience), &reason));
        }
        if audience.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                &field,
                &shorten(audience),
                "must not contain control characters",
            ));
        }
    }
    Ok(())
}

async fn issue(
    state: &AppState,
    call: Call,
    wanted: Wanted,
    delivery: Delivery,
) -> Result<CredentialResponse, ApiError> {
    let started = Instant::now();
    let now = clock::now();
    let evidence_snapshot = state.config();

    let mut detail = Map::new();
    detail.insert("request_id".into(), json!(call.request_id));
    detail.insert("source_ip".into(), json!(call.source_ip.to_string()));
    let location = state
        .geoip
        .as_ref()
        .and_then(|geoip| geoip.locate(call.source_ip));
    if let Some(location) = &location {
        detail.insert("source_country".into(), json!(location.country));
        if !location.subdivisions.is_empty() {
            detail.insert("source_subdivisions".into(), json!(location.subdivisions));
        }
    }
    detail.insert("transport".into(), json!(call.transport));
    if delivery == Delivery::Proxy {
        detail.insert("delivery".into(), json!(delivery.as_str()));
    }
    match &wanted {
        Wanted::Target(target) => detail.insert("target".into(), json!(target.to_string())),
        Wanted::Audiences(audiences) => detail.insert("audience".into(), json!(audiences)),
        Wanted::X509Svid(_) => detail.insert("requested".into(), json!("x509_svid")),
    };

    let attestations =
        match collect_evidence(state, &evidence_snapshot, &call.evidence, now, &mut detail).await {
            Ok(attestations) => attestations,
            Err(reason) => {
                let mut denial = Denial::new(Step::Evidence, reason);
                denial.server_workload = requested_server_workload(&evidence_snapshot, &wanted);
                return deny(state, &call, now, denial, detail, started).await;
            }
        };

    // Verifying evidence may wait on an issuer for seconds, so the decision reads the
    // configuration in force after it. The issuance gate stays locked for reading until the audit
    // event is written, so a configuration change (such as a disable) that has returned is seen by
    // every decision made after it.
    let _issuing = state.issuance.read().await;
    let snapshot = state.config();
    let config = &snapshot.config;
    if snapshot.version != evidence_snapshot.version
        && config.trust_providers != evidence_snapshot.config.trust_providers
    {
        let reason =
            "trust providers changed while the evidence was verified; send the request again"
                .to_string();
        let mut denial = Denial::new(Step::Evidence, reason);
        denial.server_workload = requested_server_workload(&snapshot, &wanted);
        return deny(state, &call, now, denial, detail, started).await;
    }

    let context = RequestContext {
        now,
        source_ip: call.source_ip,
        location,
    };
    let decision = match &wanted {
        Wanted::Target(target) => {
            let input = DecisionInput {
                target,
                attestations: &attestations,
                context,
                trust_domain: &state.trust_domain,
            };
            decide(config, &input)
        }
        Wanted::Audiences(audiences) => decide_audiences(
            config,
            &attestations,
            context,
            &state.trust_domain,
            audiences,
        ),
        Wanted::X509Svid(_) => decide_x509(config, &attestations, context, &state.trust_domain),
    };
    let grant = match decision {
        Ok(grant) => grant,
        Err(denial) => return deny(state, &call, now, denial, detail, started).await,
    };

    detail.insert("spiffe_id".into(), json!(grant.spiffe_id));
    detail.insert("policy".into(), json!(grant.policy.name));
    detail.insert("trust_provider".into(), json!(grant.trust_provider));
    detail.insert(
        "credential_provider".into(),
        json!(grant.credential_provider.name()),
    );

    let audience_override = match &wanted {
        Wanted::Target(_) | Wanted::X509Svid(_) => None,
        Wanted::Audiences(audiences) => Some(audiences.as_slice()),
    };
    let produced = match (&wanted, grant.credential_provider) {
        (Wanted::X509Svid(csr), CredentialProvider::X509Svid(provider)) => {
            providers::x509_svid(state, &grant, provider, csr, now)
                .map_err(providers::Failure::from)
        }
        (_, CredentialProvider::X509Svid(provider)) => {
            let reason = format!(
                "access policy {:?} uses x509_svid credential provider {:?}, which issues X.509-SVIDs only through an agent's SPIFFE Workload API (FetchX509SVID), because the request needs a CSR",
                grant.policy.name, provider.name
            );
            detail.insert("step".into(), json!(Step::CredentialProvider.as_str()));
            detail.insert("reason".into(), json!(reason));
            detail.insert("policy".into(), json!(grant.policy.name));
            let mut event = NewAuditEvent::new(
                clock::new_event_id(),
                now,
                AuditKind::CredentialRequest,
                Value::Object(detail),
            );
            event.outcome = Some(Outcome::Failure);
            event.client_workload = Some(grant.client_workload.name.clone());
            event.server_workload = Some(grant.server_workload.name.clone());
            if let Err(error) = state.audit.write(event).await {
                tracing::error!(request_id = %call.request_id, error = %error, "audit write of a rejected request failed");
                return Err(ApiError::Denied {
                    step: Step::Audit,
                    request_id: call.request_id,
                });
            }
            record_denied(
                &grant.server_workload.name,
                Step::CredentialProvider,
                started,
            );
            // The response names no policy or provider: those stay in the audit event.
            let public_reason = "its credential is an X.509-SVID (credential provider kind x509_svid), which is issued only through an agent's SPIFFE Workload API (FetchX509SVID), because the request needs a CSR";
            return Err(ApiError::invalid(
                "server_workload",
                &grant.server_workload.name,
                public_reason,
            ));
        }
        _ => providers::produce(state, &grant, audience_override, delivery, now).await,
    };
    let issued = match produced {
        Ok(issued) => issued,
        Err(failure) => {
            detail.extend(failure.audit);
            let denial = Denial {
                step: Step::CredentialProvider,
                reason: failure.reason,
                client_workload: Some(grant.client_workload.name.clone()),
                server_workload: Some(grant.server_workload.name.clone()),
                policy: Some(grant.policy.name.clone()),
            };
            return deny(state, &call, now, denial, detail, started).await;
        }
    };

    detail.insert("credential_type".into(), json!(issued.credential_type));
    detail.insert("token_id".into(), json!(issued.token_id));
    detail.insert(
        "expires_at".into(),
        json!(issued.expires_at.map(|at| at.to_string())),
    );
    detail.extend(issued.audit.clone());

    let mut event = NewAuditEvent::new(
        clock::new_event_id(),
        now,
        AuditKind::CredentialRequest,
        Value::Object(detail),
    );
    event.outcome = Some(Outcome::Success);
    event.client_workload = Some(grant.client_workload.name.clone());
    event.server_workload = Some(grant.server_workload.name.clone());

    if let Err(error) = state.audit.write(event).await {
        // Fail closed: without a durable audit event the credential never leaves.
        tracing::error!(request_id = %call.request_id, error = %error, "audit write failed; credential withheld");
        record_denied(&grant.server_workload.name, Step::Audit, started);
        return Err(ApiError::Denied {
            step: Step::Audit,
            request_id: call.request_id,
        });
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
    metrics::histogram!("mayfly_credential_issuance_seconds")
        .record(started.elapsed().as_secs_f64());

    Ok(CredentialResponse {
        credential_type: issued.credential_type,
        presentation: presentation(&grant, &issued),
        token: issued.token.to_string(),
        username: issued.username.clone(),
        fields: issued.fields.iter().cloned().collect(),
        spiffe_id: grant.spiffe_id,
        server_workload: grant.server_workload.name.clone(),
        issued_at: now,
        expires_at: issued.expires_at,
        request_id: call.request_id,
    })
}

/// Returns the name of the server workload that a request by target resolves to, if any, so a
/// denial before the decision is still recorded against it.
fn requested_server_workload(snapshot: &ConfigSnapshot, wanted: &Wanted) -> Option<String> {
    match wanted {
        Wanted::Target(target) => {
            server_workload_for(&snapshot.config, target).map(|server| server.name.clone())
        }
        Wanted::Audiences(_) | Wanted::X509Svid(_) => None,
    }
}

/// Maximum length of a requested server workload name, in bytes: resource names are DNS labels.
const MAX_NAME_BYTES: usize = 63;
/// Maximum length of a requested target host, in bytes, as for a DNS name.
const MAX_HOST_BYTES: usize = 253;

/// Reads the target of a request. Names and hosts longer than any resource can have are
/// rejected here, before they would be copied into an audit event.
fn parse_target(request: CredentialRequest) -> Result<Target, ApiError> {
    match (request.server_workload, request.target) {
        (Some(name), None) if name.len() > MAX_NAME_BYTES => Err(ApiError::invalid(
            "server_workload",
            &shorten(&name),
            &format!(
                "is {} bytes, longer than the maximum of {MAX_NAME_BYTES}",
                name.len()
            ),
        )),
        (Some(name), None) if name.chars().any(char::is_control) => Err(ApiError::invalid(
            "server_workload",
            &shorten(&name),
            "must not contain control characters",
        )),
        (Some(name), None) if !name.is_empty() => Ok(Target::Name(name)),
        (None, Some(target)) if target.host.len() > MAX_HOST_BYTES => Err(ApiError::invalid(
            "target",
            &shorten(&target.host),
            &format!(
                "host is {} bytes, longer than the maximum of {MAX_HOST_BYTES}",
                target.host.len()
            ),
        )),
        (None, Some(target)) if target.host.chars().any(char::is_control) => {
            Err(ApiError::invalid(
                "target",
                &shorten(&target.host),
                "host must not contain control characters",
            ))
        }
        (None, Some(target)) if !target.host.is_empty() && target.port != 0 => {
            Ok(Target::HostPort {
                host: target.host,
                port: target.port,
            })
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

/// Cuts an untrusted value to its first 64 characters for an error message.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_string(),
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
fn agent_attributes(
    agent: &str,
    sent: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut attributes = BTreeMap::new();
    for (name, values) in sent {
        let known = UNIX_ATTRIBUTES.contains(&name.as_str()) && name != UNIX_AGENT_ATTRIBUTE;
        if !known {
            let name = shorten(name);
            return Err(format!(
                "agent {agent:?} sent attribute {name:?}, which is not a unix attribute an agent may attest"
            ));
        }
        let max_values = if name == "groups" {
            MAX_AGENT_GROUPS
        } else {
            1
        };
        if values.is_empty() || values.len() > max_values {
            return Err(format!(
                "agent {agent:?} sent attribute {name:?} with {} values, expected 1 to {max_values}",
                values.len()
            ));
        }
        if values
            .iter()
            .any(|value| value.is_empty() || value.len() > MAX_AGENT_ATTRIBUTE_BYTES)
        {
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
            let pick = |name: &str| {
                attestation
                    .attributes
                    .get(name)
                    .and_then(|values| values.first())
                    .cloned()
            };
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

/// Builds the presentation: the headers, query parameters or environment variables that carry
/// the credential to the server workload.
fn presentation(grant: &Grant<'_>, issued: &Issued) -> Value {
    let token = issued.token.as_str();
    // AWS requests are signed with the credentials rather than carrying them, so AWS SDKs take
    // them from these environment variables.
    if issued.credential_type == "aws_credentials" {
        let field = |name: &str| {
            issued
                .fields
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        return json!({"environment": {
            "AWS_ACCESS_KEY_ID": field("access_key_id"),
            "AWS_SECRET_ACCESS_KEY": field("secret_access_key"),
            "AWS_SESSION_TOKEN": token,
        }});
    }
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
            let username = issued
                .username
                .clone()
                .or_else(|| username.clone())
                .unwrap_or_else(|| grant.spiffe_id.clone());
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

    let mut event = NewAuditEvent::new(
        clock::new_event_id(),
        now,
        AuditKind::CredentialRequest,
        Value::Object(detail),
    );
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
    let server_workload = denial
        .server_workload
        .clone()
        .unwrap_or_else(|| "-".to_string());

    if let Err(error) = state.audit.write(event).await {
        tracing::error!(request_id = %call.request_id, error = %error, "audit write of a denial failed");
        record_denied(&server_workload, Step::Audit, started);
        return Err(ApiError::Denied {
            step: Step::Audit,
            request_id: call.request_id.clone(),
        });
    }
    record_denied(&server_workload, denial.step, started);
    Err(ApiError::Denied {
        step: denial.step,
        request_id: call.request_id.clone(),
    })
}

fn record_denied(server_workload: &str, step: Step, started: Instant) {
    metrics::counter!("mayfly_credentials_denied_total", "server_workload" => server_workload.to_string(), "reason" => step.as_str()).increment(1);
    metrics::histogram!("mayfly_credential_issuance_seconds")
        .record(started.elapsed().as_secs_f64());
}

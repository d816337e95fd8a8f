//! Agents: join tokens (created by admins), joining and credential renewal (by agents), the agent
//! list and eviction (by admins), and the JWT-SVID, X.509-SVID and credential requests that agents
//! make for the processes they attested.
//!
//! An agent authenticates with `Authorization: Bearer <credential>`. The credential is a random
//! token stored only as a hash, lives `AGENT_CREDENTIAL_TTL` and is replaced on every renewal,
//! so the previous one stops working at once. An evicted agent has no credential, and its
//! unused join tokens are revoked.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Extension, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use mayfly_crypto::token::{SecretString, generate_token, hash_token};
use mayfly_domain::audit::{AuditKind, NewAuditEvent};
use mayfly_domain::duration::Seconds;
use mayfly_domain::resources::validate_name;
use mayfly_store::{AgentCredentialHash, AgentJoinTokenRecord, AgentRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, PeerAddr, RequestId, client_ip};
use crate::auth::Admin;
use crate::clock;
use crate::credentials::{self, Call, CredentialRequest, Evidence};
use crate::problem::{ApiError, json_rejection};
use crate::providers::{X509_AUTHORITY_FIELD, X509_CHAIN_FIELD};
use crate::state::SharedState;

/// Lifetime of an agent credential. Agents renew at about half of it.
pub const AGENT_CREDENTIAL_TTL: Duration = Duration::from_secs(3600);

/// Lifetime of a join token when the request names none.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(600);

/// Maximum lifetime of a join token.
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// An authenticated agent: its credential is current, unexpired and the agent is not evicted.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub name: String,
    credential_hash: String,
}

impl FromRequestParts<SharedState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers, "agent credential")?;
        let credential_hash = hash_token(token.expose());
        let record = state
            .store
            .find_agent_by_credential(&credential_hash)
            .await
            .map_err(|error| ApiError::from_store(error, &clock::new_request_id()))?;
        let now = clock::now();
        let Some(record) = record.filter(|record| {
            record
                .credential_expires_at
                .is_some_and(|expires| expires > now)
        }) else {
            return Err(ApiError::Unauthorized(
                "the agent credential is unknown, expired or evicted: join again with a new join token".to_string(),
            ));
        };
        Ok(AgentCaller {
            name: record.name,
            credential_hash,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    /// The name the agent will have, as `match: {agent: NAME}` rules name it.
    agent: String,
    /// Lifetime such as `10m`; `DEFAULT_JOIN_TOKEN_TTL` when absent.
    #[serde(default)]
    ttl: Option<String>,
}

/// `POST /v1/agent-tokens`: creates a one-time join token; the token is in this response only.
pub async fn create_token(
    state: AppState,
    admin: Admin,
    body: Result<Json<CreateTokenBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let Json(body) =
        body.map_err(|rejection| json_rejection(rejection, state.settings.max_body_bytes))?;
    validate_name("agent", &body.agent)
        .map_err(|error| ApiError::invalid(&error.field, &error.value, &error.reason))?;
    let ttl = match &body.ttl {
        None => DEFAULT_JOIN_TOKEN_TTL,
        Some(text) => Seconds::parse(text)
            .map_err(|error| ApiError::invalid("ttl", text, &error.to_string()))?
            .as_duration(),
    };
    if ttl.is_zero() || ttl > MAX_JOIN_TOKEN_TTL {
        return Err(ApiError::invalid(
            "ttl",
            body.ttl.as_deref().unwrap_or_default(),
            &format!("must be between 1s and {}s", MAX_JOIN_TOKEN_TTL.as_secs()),
        ));
    }

    let token = new_secret("mfy_join_")?;
    let now = clock::now();
    let record = AgentJoinTokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        agent: body.agent.clone(),
        token_hash: hash_token(token.expose()),
        created_at: now,
        expires_at: later(now, ttl)?,
        used_at: None,
        revoked_at: None,
    };
    let audit = agent_event(
        &admin.actor(),
        "create_join_token",
        &record.agent,
        json!({"expires_at": record.expires_at.to_string()}),
    );
    state
        .store
        .insert_agent_join_token(&record, vec![audit])
        .await
        .map_err(|e| ApiError::from_store(e, "agent-token"))?;
    Ok(Json(json!({
        "agent": record.agent,
        "token": token.expose(),
        "expires_at": record.expires_at.to_string(),
    })))
}

/// `POST /v1/agents/join`: exchanges a join token (as the bearer token) for an agent credential.
pub async fn join(state: AppState, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let join_token = bearer(&headers, "join token")?;
    let join_hash = hash_token(join_token.expose());
    let rejected = || {
        ApiError::Unauthorized(
            "the join token is unknown, used, revoked or expired: create a new one".to_string(),
        )
    };
    let found = state
        .store
        .find_agent_join_token(&join_hash)
        .await
        .map_err(|e| ApiError::from_store(e, "agent"))?;
    let Some(found) = found else {
        return Err(rejected());
    };

    let now = clock::now();
    let (credential, stored) = new_credential(now)?;
    let audit = agent_event(
        &format!("agent:{}", found.agent),
        "join",
        &found.agent,
        json!({"join_token_id": found.id}),
    );
    let joined = state
        .store
        .redeem_agent_join_token(&join_hash, now, &stored, vec![audit])
        .await
        .map_err(|e| ApiError::from_store(e, "agent"))?;
    let Some(agent) = joined else {
        return Err(rejected());
    };
    tracing::info!(agent = %agent.name, "agent joined");
    Ok(Json(credential_body(
        &state,
        &agent.name,
        &credential,
        stored.expires_at,
    )))
}

/// `POST /v1/agents/renew`: replaces the caller's credential with a new one.
pub async fn renew(state: AppState, agent: AgentCaller) -> Result<Json<Value>, ApiError> {
    let now = clock::now();
    let (credential, stored) = new_credential(now)?;
    let renewed = state
        .store
        .renew_agent_credential(&agent.name, &agent.credential_hash, &stored, now)
        .await
        .map_err(|e| ApiError::from_store(e, "agent"))?;
    if !renewed {
        return Err(ApiError::Unauthorized(
            "the agent credential was replaced, expired or evicted meanwhile".to_string(),
        ));
    }
    Ok(Json(credential_body(
        &state,
        &agent.name,
        &credential,
        stored.expires_at,
    )))
}

/// `GET /v1/agents`: every agent, evicted ones included.
pub async fn list(state: AppState, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let agents = state
        .store
        .list_agents()
        .await
        .map_err(|e| ApiError::from_store(e, "agent"))?;
    let now = clock::now();
    let items: Vec<Value> = agents.iter().map(|agent| agent_json(agent, now)).collect();
    Ok(Json(json!({"items": items})))
}

/// `POST /v1/agents/{name}/evict`: the agent's credential stops working at once.
pub async fn evict(
    state: AppState,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let audit = agent_event(&admin.actor(), "evict", &name, json!({}));
    let evicted = state
        .store
        .evict_agent(&name, clock::now(), vec![audit])
        .await
        .map_err(|e| ApiError::from_store(e, "agent"))?;
    if !evicted {
        return Err(ApiError::NotFound {
            kind: "agent".to_string(),
            name,
        });
    }
    tracing::info!(agent = %name, actor = %admin.actor(), "agent evicted");
    Ok(Json(json!({"name": name, "evicted": true})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidBody {
    /// The unix attributes the agent attested for the calling process.
    attributes: BTreeMap<String, Vec<String>>,
    audience: Vec<String>,
}

/// `POST /v1/agents/jwt-svids`: a JWT-SVID for a process the calling agent attested.
pub async fn jwt_svid(
    state: AppState,
    agent: AgentCaller,
    Extension(RequestId(request_id)): Extension<RequestId>,
    ConnectInfo(peer): PeerAddr,
    headers: HeaderMap,
    body: Result<Json<JwtSvidBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) =
        body.map_err(|rejection| json_rejection(rejection, state.settings.max_body_bytes))?;
    let call = Call {
        request_id,
        evidence: Evidence::Agent {
            agent: agent.name,
            attributes: body.attributes,
        },
        source_ip: client_ip(&state, peer, &headers),
        transport: "agent",
    };
    let issued = credentials::handle_jwt_svid(&state, call, body.audience).await?;
    Ok(Json(json!({
        "token": issued.token,
        "spiffe_id": issued.spiffe_id,
        "issued_at": issued.issued_at.to_string(),
        "expires_at": issued.expires_at.map(|time| time.to_string()),
        "request_id": issued.request_id,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509SvidBody {
    /// The unix attributes the agent attested for the calling process.
    attributes: BTreeMap<String, Vec<String>>,
    /// The PKCS#10 certificate signing request, DER in standard base64. The key pair stays on
    /// the agent's host.
    csr: String,
}

/// `POST /v1/agents/x509-svids`: an X.509-SVID for a process the calling agent attested, for
/// the public key of the CSR the agent generated for it.
pub async fn x509_svid(
    state: AppState,
    agent: AgentCaller,
    Extension(RequestId(request_id)): Extension<RequestId>,
    ConnectInfo(peer): PeerAddr,
    headers: HeaderMap,
    body: Result<Json<X509SvidBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    use base64::Engine as _;

    let Json(body) =
        body.map_err(|rejection| json_rejection(rejection, state.settings.max_body_bytes))?;
    let csr = base64::engine::general_purpose::STANDARD
        .decode(body.csr.trim())
        .map_err(|error| {
            ApiError::invalid("csr", "", &format!("is not standard base64: {error}"))
        })?;
    let call = Call {
        request_id,
        evidence: Evidence::Agent {
            agent: agent.name,
            attributes: body.attributes,
        },
        source_ip: client_ip(&state, peer, &headers),
        transport: "agent",
    };
    let issued = credentials::handle_x509_svid(&state, call, csr).await?;
    let chain: Vec<&str> = issued
        .fields
        .get(X509_CHAIN_FIELD)
        .map(|chain| chain.split(',').collect())
        .unwrap_or_default();
    Ok(Json(json!({
        "spiffe_id": issued.spiffe_id,
        "certificates": chain,
        "x509_authority": issued.fields.get(X509_AUTHORITY_FIELD),
        "issued_at": issued.issued_at.to_string(),
        "expires_at": issued.expires_at.map(|time| time.to_string()),
        "request_id": issued.request_id,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    /// The unix attributes the agent attested for the calling process.
    attributes: BTreeMap<String, Vec<String>>,
    /// The process's request, as it sent it to the agent's HTTP socket or as the agent's proxy
    /// built it from the destination.
    request: CredentialRequest,
    /// `proxy` when the agent's proxy requests the credential to inject it, or `workload` (the
    /// default) when the credential goes back to the process.
    #[serde(default)]
    delivery: DeliveryBody,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DeliveryBody {
    #[default]
    Workload,
    Proxy,
}

/// `POST /v1/agents/credentials`: the credential that `POST /v1/credentials` yields, for a
/// process the calling agent attested.
pub async fn credential(
    state: AppState,
    agent: AgentCaller,
    Extension(RequestId(request_id)): Extension<RequestId>,
    ConnectInfo(peer): PeerAddr,
    headers: HeaderMap,
    body: Result<Json<CredentialBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) =
        body.map_err(|rejection| json_rejection(rejection, state.settings.max_body_bytes))?;
    let call = Call {
        request_id,
        evidence: Evidence::Agent {
            agent: agent.name,
            attributes: body.attributes,
        },
        source_ip: client_ip(&state, peer, &headers),
        transport: "agent",
    };
    let issued = match body.delivery {
        DeliveryBody::Workload => credentials::handle(&state, call, body.request).await?,
        DeliveryBody::Proxy => credentials::handle_for_proxy(&state, call, body.request).await?,
    };
    let mut response = Json(issued).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn agent_json(agent: &AgentRecord, now: Timestamp) -> Value {
    let state = match (agent.evicted_at, agent.credential_expires_at) {
        (Some(_), _) => "evicted",
        (None, Some(expires)) if expires > now => "active",
        _ => "expired",
    };
    json!({
        "name": agent.name,
        "state": state,
        "joined_at": agent.joined_at.to_string(),
        "renewed_at": agent.renewed_at.to_string(),
        "credential_expires_at": agent.credential_expires_at.map(|time| time.to_string()),
        "evicted_at": agent.evicted_at.map(|time| time.to_string()),
    })
}

fn credential_body(
    state: &SharedState,
    agent: &str,
    credential: &SecretString,
    expires_at: Timestamp,
) -> Value {
    json!({
        "agent": agent,
        "credential": credential.expose(),
        "expires_at": expires_at.to_string(),
        "trust_domain": state.trust_domain.to_string(),
    })
}

fn bearer(headers: &HeaderMap, what: &str) -> Result<SecretString, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "missing Authorization header: send Authorization: Bearer <{what}>"
            ))
        })?;
    header
        .to_str()
        .ok()
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(|token| SecretString::new(token.to_string()))
        .ok_or_else(|| {
            ApiError::Unauthorized(format!("the Authorization header must be Bearer <{what}>"))
        })
}

fn new_credential(now: Timestamp) -> Result<(SecretString, AgentCredentialHash), ApiError> {
    let credential = new_secret("mfy_agent_")?;
    let stored = AgentCredentialHash {
        hash: hash_token(credential.expose()),
        expires_at: later(now, AGENT_CREDENTIAL_TTL)?,
    };
    Ok((credential, stored))
}

fn new_secret(prefix: &str) -> Result<SecretString, ApiError> {
    generate_token(prefix).map_err(|error| {
        let request_id = clock::new_request_id();
        tracing::error!(request_id, error = %error, "generating an agent secret failed");
        ApiError::Internal { request_id }
    })
}

fn later(now: Timestamp, ttl: Duration) -> Result<Timestamp, ApiError> {
    let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    Timestamp::from_second(now.as_second().saturating_add(seconds))
        .map_err(|_| ApiError::invalid("ttl", &seconds.to_string(), "is out of range"))
}

/// Audit event for an agent change; it names the agent, never a secret.
fn agent_event(actor: &str, action: &str, agent: &str, extra: Value) -> NewAuditEvent {
    let mut detail = json!({"actor": actor, "action": action, "agent": agent});
    if let (Some(detail), Value::Object(extra)) = (detail.as_object_mut(), extra) {
        detail.extend(extra);
    }
    NewAuditEvent::new(
        clock::new_event_id(),
        clock::now(),
        AuditKind::AgentChange,
        detail,
    )
}

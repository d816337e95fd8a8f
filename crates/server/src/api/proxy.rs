//! Routes for the agent's credential-injecting proxy: the destinations it intercepts
//! (`GET /v1/agents/targets`) and the record of every injection
//! (`POST /v1/agents/injection-events`), which joins the audit log.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::Extension;
use axum::extract::rejection::JsonRejection;
use jiff::Timestamp;
use mayfly_domain::audit::{AuditKind, NewAuditEvent, Outcome};
use mayfly_domain::resources::{Scheme, UNIX_AGENT_ATTRIBUTE, UNIX_ATTRIBUTES};
use serde::Deserialize;
use serde_json::{Value, json};

use super::agents::AgentCaller;
use super::{AppState, RequestId};
use crate::clock;
use crate::problem::{ApiError, json_rejection};

/// Maximum number of injection events in one request.
pub const MAX_INJECTION_BATCH: usize = 100;

/// Maximum length of a text field of an injection event, in bytes.
const MAX_FIELD_BYTES: usize = 2048;

/// `GET /v1/agents/targets`: the host, port and scheme of every enabled server workload, which
/// an agent's proxy intercepts. The list contains no secret.
pub async fn targets(state: AppState, _agent: AgentCaller) -> Json<Value> {
    let snapshot = state.config();
    let config = &snapshot.config;
    let targets: Vec<Value> = config
        .server_workloads
        .values()
        .filter(|workload| config.is_enabled(&workload.name))
        .map(|workload| {
            let scheme = match workload.scheme {
                Scheme::Http => "http",
                Scheme::Https => "https",
            };
            json!({"server_workload": workload.name, "host": workload.host_key(), "port": workload.port, "scheme": scheme})
        })
        .collect();
    Json(json!({"targets": targets}))
}

/// One injection as the agent's proxy recorded it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionEventBody {
    /// The agent's id of the event, kept so that a batch sent twice can be recognized.
    id: String,
    /// When the proxy injected the credential, by the agent's clock.
    time: Timestamp,
    /// The unix attributes the agent attested for the process that sent the request.
    attributes: BTreeMap<String, Vec<String>>,
    host: String,
    port: u16,
    method: String,
    /// The request path, without the query string.
    path: String,
    server_workload: String,
    /// The request id of the credential request that produced the injected credential.
    credential_request_id: String,
    /// The credential's presentation: `headers`, `query` or `headers+query`.
    mode: String,
    #[serde(default)]
    spiffe_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionBatch {
    events: Vec<InjectionEventBody>,
}

/// `POST /v1/agents/injection-events`: appends the calling agent's injection events to the audit
/// log, one `credential_injection` event each. The agent retries a batch whose response it did
/// not receive, so an event may be written twice. Its `event_id` identifies the copies.
pub async fn injection_events(
    state: AppState,
    agent: AgentCaller,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Result<Json<InjectionBatch>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(batch) =
        body.map_err(|rejection| json_rejection(rejection, state.settings.max_body_bytes))?;
    if batch.events.len() > MAX_INJECTION_BATCH {
        return Err(ApiError::invalid(
            "events",
            &batch.events.len().to_string(),
            &format!("a batch holds at most {MAX_INJECTION_BATCH} events"),
        ));
    }
    for (index, event) in batch.events.iter().enumerate() {
        validate(event).map_err(|(field, value, reason)| {
            ApiError::invalid(&format!("events[{index}].{field}"), &value, &reason)
        })?;
    }

    let received_at = clock::now();
    for event in &batch.events {
        let mut attributes = event.attributes.clone();
        attributes.insert(UNIX_AGENT_ATTRIBUTE.to_string(), vec![agent.name.clone()]);
        let detail = json!({
            "agent": agent.name,
            "event_id": event.id,
            "injected_at": event.time.to_string(),
            "attributes": attributes,
            "host": event.host,
            "port": event.port,
            "method": event.method,
            "path": event.path,
            "credential_request_id": event.credential_request_id,
            "mode": event.mode,
            "spiffe_id": event.spiffe_id,
            "request_id": request_id,
        });
        let mut record = NewAuditEvent::new(
            clock::new_event_id(),
            received_at,
            AuditKind::CredentialInjection,
            detail,
        );
        record.outcome = Some(Outcome::Success);
        record.server_workload = Some(event.server_workload.clone());
        if let Err(error) = state.audit.write(record).await {
            tracing::error!(request_id = %request_id, agent = %agent.name, error = %error, "audit write of an injection event failed");
            return Err(ApiError::Unavailable { request_id });
        }
    }
    Ok(Json(json!({"accepted": batch.events.len()})))
}

/// Checks one event's fields; the error names the field, the value and the rule.
fn validate(event: &InjectionEventBody) -> Result<(), (&'static str, String, String)> {
    let bounded = |field: &'static str, value: &str, max: usize| {
        if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
            Err((
                field,
                shorten(value),
                format!("must be 1 to {max} bytes without control characters"),
            ))
        } else {
            Ok(())
        }
    };

    bounded("id", &event.id, 64)?;
    bounded("host", &event.host, 253)?;
    bounded("method", &event.method, 32)?;
    bounded("path", &event.path, MAX_FIELD_BYTES)?;
    bounded("server_workload", &event.server_workload, 63)?;
    bounded("credential_request_id", &event.credential_request_id, 64)?;
    bounded("mode", &event.mode, 32)?;
    if let Some(spiffe_id) = &event.spiffe_id {
        bounded("spiffe_id", spiffe_id, MAX_FIELD_BYTES)?;
    }

    if event.port == 0 {
        return Err((
            "port",
            "0".to_string(),
            "must be between 1 and 65535".to_string(),
        ));
    }
    // Query values may carry the injected credential, so an event never contains one.
    if event.path.contains('?') {
        return Err((
            "path",
            shorten(&event.path),
            "must not contain a query string".to_string(),
        ));
    }

    for (name, values) in &event.attributes {
        if !UNIX_ATTRIBUTES.contains(&name.as_str()) || name == UNIX_AGENT_ATTRIBUTE {
            return Err((
                "attributes",
                shorten(name),
                "is not a unix attribute an agent may attest".to_string(),
            ));
        }
        let max_values = if name == "groups" { 65_536 } else { 1 };
        if values.is_empty() || values.len() > max_values {
            return Err((
                "attributes",
                name.clone(),
                format!("needs 1 to {max_values} values"),
            ));
        }
        for value in values {
            bounded("attributes", value, MAX_FIELD_BYTES)?;
        }
    }
    Ok(())
}

/// Cuts an untrusted value to its first 64 characters for an error message.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_string(),
    }
}

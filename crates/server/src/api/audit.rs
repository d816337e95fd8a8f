//! Audit queries and chain verification.

use axum::Json;
use axum::extract::Query;
use jiff::Timestamp;
use mayfly_domain::audit::{AuditKind, Outcome};
use mayfly_store::AuditFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::auth::Admin;
use crate::problem::ApiError;

/// Most events one page returns.
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    server_workload: Option<String>,
    client_workload: Option<String>,
    outcome: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list(
    state: AppState,
    _admin: Admin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    })?;
    let outcome = match &query.outcome {
        Some(text) => Some(
            Outcome::parse(text)
                .ok_or_else(|| ApiError::invalid("outcome", text, "must be success or failure"))?,
        ),
        None => None,
    };
    let kind = match &query.kind {
        Some(text) => Some(AuditKind::parse(text).ok_or_else(|| {
            let names: Vec<&str> = AuditKind::ALL.iter().map(|kind| kind.as_str()).collect();
            ApiError::invalid(
                "kind",
                text,
                &format!("must be one of {}", names.join(", ")),
            )
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid(
            "limit",
            &limit.to_string(),
            &format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let before_seq =
        match &query.cursor {
            Some(text) => Some(text.parse::<i64>().ok().filter(|seq| *seq > 0).ok_or_else(
                || ApiError::invalid("cursor", text, "must be a cursor returned as next_cursor"),
            )?),
            None => None,
        };

    let filter = AuditFilter {
        server_workload: query.server_workload.clone(),
        client_workload: query.client_workload.clone(),
        outcome,
        kind,
        since: parse_time("since", query.since.as_deref())?,
        until: parse_time("until", query.until.as_deref())?,
        after_seq: None,
        before_seq,
        limit,
        descending: true,
    };
    let events = state
        .store
        .list_audit(&filter)
        .await
        .map_err(|e| ApiError::from_store(e, "audit"))?;
    let next_cursor = if events.len() == limit as usize {
        events.last().map(|event| event.seq.to_string())
    } else {
        None
    };
    Ok(Json(json!({"events": events, "next_cursor": next_cursor})))
}

fn parse_time(field: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    match text {
        None => Ok(None),
        Some(text) => text.parse::<Timestamp>().map(Some).map_err(|_| {
            ApiError::invalid(
                field,
                text,
                "must be an RFC 3339 timestamp such as 2026-12-04T10:00:00Z",
            )
        }),
    }
}

pub async fn verify(state: AppState, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let report = crate::audit_log::verify(state.store.as_ref(), &state.keys)
        .await
        .map_err(|e| ApiError::from_store(e, "verify"))?;
    Ok(Json(json!(report)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    server_workload: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
}

/// Lists fired alerts, newest first: the audit events of kind `alert`, flattened.
pub async fn alerts(
    state: AppState,
    _admin: Admin,
    query: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    })?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid(
            "limit",
            &limit.to_string(),
            &format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let filter = AuditFilter {
        server_workload: query.server_workload.clone(),
        kind: Some(AuditKind::Alert),
        since: parse_time("since", query.since.as_deref())?,
        until: parse_time("until", query.until.as_deref())?,
        limit,
        ..AuditFilter::default()
    };
    let events = state
        .store
        .list_audit(&filter)
        .await
        .map_err(|e| ApiError::from_store(e, "alerts"))?;
    let ids: Vec<String> = events.iter().map(|event| event.event.id.clone()).collect();
    let acknowledgements = state
        .store
        .alert_acknowledgements(&ids)
        .await
        .map_err(|e| ApiError::from_store(e, "alerts"))?;
    let alerts: Vec<Value> = events
        .iter()
        .map(|event| {
            let detail = &event.event.detail;
            let acknowledgement = acknowledgements
                .iter()
                .find(|ack| ack.alert_id == event.event.id);
            json!({
                "acknowledged": acknowledgement.is_some(),
                "acknowledged_by": acknowledgement.map(|ack| ack.actor.clone()),
                "acknowledged_at": acknowledgement.map(|ack| ack.acknowledged_at.to_string()),
                "id": event.event.id,
                "seq": event.seq,
                "time": event.event.time.to_string(),
                "rule": detail.get("rule"),
                "rule_kind": detail.get("rule_kind"),
                "severity": detail.get("severity"),
                "notify": detail.get("notify"),
                "key": detail.get("key"),
                "message": detail.get("message"),
                "server_workload": event.event.server_workload,
                "client_workload": event.event.client_workload,
                "trigger_seq": detail.get("trigger_seq"),
            })
        })
        .collect();
    Ok(Json(json!({"alerts": alerts})))
}

/// Most events one rule test reads.
const MAX_TESTED_EVENTS: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTestBody {
    /// A stored rule to try, by name.
    name: Option<String>,
    /// A rule to try that need not be stored yet.
    rule: Option<Value>,
    /// Start of the past events to replay, RFC 3339.
    since: String,
}

/// Replays past audit events through one alert rule and returns the alerts it would have raised,
/// writing nothing.
pub async fn test_rule(
    state: AppState,
    _admin: Admin,
    body: Result<Json<RuleTestBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|rejection| {
        crate::problem::json_rejection(rejection, state.settings.max_body_bytes)
    })?;
    let rule: mayfly_domain::alerts::AlertRule = match (&body.name, body.rule) {
        (Some(name), None) => state
            .config()
            .config
            .alert_rules
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound {
                kind: "alert_rule".to_string(),
                name: name.clone(),
            })?,
        (None, Some(spec)) => serde_json::from_value(spec)
            .map_err(|error| ApiError::invalid("rule", "", &error.to_string()))?,
        _ => {
            return Err(ApiError::invalid(
                "name",
                "",
                "set exactly one of name and rule",
            ));
        }
    };
    rule.validate().map_err(|error| ApiError::Invalid {
        detail: format!("alert_rule {:?}: {error}", rule.name),
        field: Some(error.field.clone()),
        value: Some(error.value.clone()),
    })?;
    let since = parse_time("since", Some(&body.since))?;

    let mut engine = mayfly_domain::alerts::AlertEngine::default();
    let rules = [rule];
    let mut alerts = Vec::new();
    let mut after_seq = None;
    let mut read = 0;
    loop {
        let filter = AuditFilter {
            since,
            after_seq,
            limit: MAX_LIMIT,
            descending: false,
            ..AuditFilter::default()
        };
        let page = state
            .store
            .list_audit(&filter)
            .await
            .map_err(|e| ApiError::from_store(e, "rule test"))?;
        for event in &page {
            for alert in engine.observe(&rules, event) {
                alerts.push(json!({
                    "time": alert.time.to_string(),
                    "severity": alert.severity.as_str(),
                    "key": alert.key,
                    "message": alert.message,
                    "trigger_seq": alert.trigger_seq,
                }));
            }
        }
        read += page.len();
        match page.last() {
            Some(last) if page.len() == MAX_LIMIT as usize && read < MAX_TESTED_EVENTS => {
                after_seq = Some(last.seq)
            }
            _ => break,
        }
    }
    Ok(Json(
        json!({"rule": rules[0].name, "events_read": read, "alerts": alerts}),
    ))
}

/// Acknowledges a fired alert: records who did it and when, with an audit event.
pub async fn acknowledge(
    state: AppState,
    admin: Admin,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let now = crate::clock::now();
    let detail = json!({"actor": admin.actor(), "action": "acknowledge", "resource_kind": "alert", "resource_name": id});
    let audit = mayfly_domain::audit::NewAuditEvent::new(
        crate::clock::new_event_id(),
        now,
        AuditKind::ConfigChange,
        detail,
    );
    let acknowledged = state
        .store
        .acknowledge_alert(&id, &admin.actor(), now, vec![audit])
        .await
        .map_err(|e| ApiError::from_store(e, "acknowledge"))?;
    if acknowledged {
        tracing::info!(alert = %id, actor = %admin.actor(), "alert acknowledged");
    }
    Ok(Json(
        json!({"id": id, "acknowledged": true, "changed": acknowledged}),
    ))
}

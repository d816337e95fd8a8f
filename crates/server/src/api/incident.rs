//! The incident report: the audit log's record of one server workload over a time range.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::Query;
use jiff::Timestamp;
use mayfly_domain::audit::{AuditEvent, AuditKind, Outcome};
use mayfly_store::AuditFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::auth::Admin;
use crate::problem::ApiError;

/// Maximum number of events one report reads. A report that reaches it sets `truncated`.
const MAX_EVENTS: usize = 100_000;
/// Maximum number of entries of each list in a report.
const MAX_LISTED: usize = 1000;
/// Events read per store query.
const PAGE: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    server_workload: String,
    since: String,
    until: Option<String>,
}

/// A client workload's part in the incident.
#[derive(Default)]
struct ClientSummary {
    credentials: u64,
    failures: u64,
    off_hours: u64,
    source_ips: BTreeSet<String>,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

/// Builds the report of `GET /v1/incidents/report`.
pub async fn report(state: AppState, _admin: Admin, query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(format!("invalid query: {}", rejection.body_text())))?;
    let since = parse("since", &query.since)?;
    let until = query.until.as_deref().map(|text| parse("until", text)).transpose()?;
    let rules: Vec<_> = state
        .config()
        .config
        .alert_rules
        .values()
        .filter(|rule| rule.server_workloads.is_empty() || rule.server_workloads.contains(&query.server_workload))
        .cloned()
        .collect();

    let mut clients: BTreeMap<String, ClientSummary> = BTreeMap::new();
    let (mut credentials, mut failures, mut changes, mut alerts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut read = 0;
    let mut after_seq = None;
    loop {
        let filter = AuditFilter {
            server_workload: Some(query.server_workload.clone()),
            since: Some(since),
            until,
            after_seq,
            limit: PAGE,
            descending: false,
            ..AuditFilter::default()
        };
        let page = state.store.list_audit(&filter).await.map_err(|e| ApiError::from_store(e, "incident report"))?;
        for event in &page {
            match event.event.kind {
                AuditKind::CredentialRequest => {
                    let off_hours: Vec<String> = rules.iter().filter_map(|rule| rule.outside_business_hours(event.event.time)).collect();
                    let entry = request_entry(event, &off_hours);
                    let client = clients.entry(event.event.client_workload.clone().unwrap_or_else(|| "(unidentified)".to_string())).or_default();
                    client.first.get_or_insert(event.event.time);
                    client.last = Some(event.event.time);
                    if let Some(ip) = event.event.detail.get("source_ip").and_then(Value::as_str) {
                        client.source_ips.insert(ip.to_string());
                    }
                    if !off_hours.is_empty() {
                        client.off_hours += 1;
                    }
                    if event.event.outcome == Some(Outcome::Success) {
                        client.credentials += 1;
                        push_capped(&mut credentials, entry);
                    } else {
                        client.failures += 1;
                        push_capped(&mut failures, entry);
                    }
                }
                AuditKind::ConfigChange => push_capped(&mut changes, json!({"seq": event.seq, "time": event.event.time.to_string(), "detail": event.event.detail})),
                AuditKind::Alert => push_capped(&mut alerts, json!({"seq": event.seq, "id": event.event.id, "time": event.event.time.to_string(), "detail": event.event.detail})),
                AuditKind::KeyChange | AuditKind::AdminTokenChange | AuditKind::AgentChange | AuditKind::CredentialInjection => {}
            }
        }
        read += page.len();
        match page.last() {
            Some(last) if page.len() == PAGE as usize && read < MAX_EVENTS => after_seq = Some(last.seq),
            _ => break,
        }
    }

    let clients: Vec<Value> = clients
        .into_iter()
        .map(|(name, summary)| {
            json!({
                "client_workload": name,
                "credentials": summary.credentials,
                "failures": summary.failures,
                "off_hours_requests": summary.off_hours,
                "source_ips": summary.source_ips,
                "first_request": summary.first.map(|time| time.to_string()),
                "last_request": summary.last.map(|time| time.to_string()),
            })
        })
        .collect();
    Ok(Json(json!({
        "server_workload": query.server_workload,
        "since": since.to_string(),
        "until": until.map(|time| time.to_string()),
        "events_read": read,
        "truncated": read >= MAX_EVENTS,
        "client_workloads": clients,
        "credentials": credentials,
        "failures": failures,
        "config_changes": changes,
        "alerts": alerts,
    })))
}

fn request_entry(event: &AuditEvent, off_hours: &[String]) -> Value {
    let detail = &event.event.detail;
    json!({
        "seq": event.seq,
        "time": event.event.time.to_string(),
        "client_workload": event.event.client_workload,
        "source_ip": detail.get("source_ip"),
        "step": detail.get("step"),
        "reason": detail.get("reason"),
        "off_hours": !off_hours.is_empty(),
        "off_hours_reasons": off_hours,
    })
}

fn push_capped(list: &mut Vec<Value>, entry: Value) {
    if list.len() < MAX_LISTED {
        list.push(entry);
    }
}

fn parse(field: &str, text: &str) -> Result<Timestamp, ApiError> {
    text.parse::<Timestamp>()
        .map_err(|_| ApiError::invalid(field, text, "must be an RFC 3339 timestamp such as 2026-12-04T10:00:00Z"))
}

//! The incident report: the audit log's record of one server workload over a time range.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::Query;
use jiff::Timestamp;
use mayfly_domain::alerts::{AlertRule, AlertRuleKind};
use mayfly_domain::audit::{AuditEvent, AuditKind, Outcome};
use mayfly_domain::conditions::Location;
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
    unexpected_location: u64,
    source_ips: BTreeSet<String>,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

/// The requests from one source address.
#[derive(Default)]
struct SourceSummary {
    credentials: u64,
    failures: u64,
    off_hours: u64,
    unexpected_location: u64,
    location: Option<Location>,
    client_workloads: BTreeSet<String>,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

/// The flags the report sets on one credential request.
struct Flags {
    off_hours: Vec<String>,
    location: Option<Location>,
    unexpected_location: Vec<String>,
}

/// Rejects a name that is neither a server workload now nor named by any audit event. A deleted
/// server workload keeps its history (its creation and deletion are audited), so it is reported.
async fn check_known(state: &AppState, server_workload: &str) -> Result<(), ApiError> {
    if state
        .config()
        .config
        .server_workloads
        .contains_key(server_workload)
    {
        return Ok(());
    }
    let filter = AuditFilter {
        server_workload: Some(server_workload.to_string()),
        limit: 1,
        ..AuditFilter::default()
    };
    let named = state
        .store
        .list_audit(&filter)
        .await
        .map_err(|e| ApiError::from_store(e, "incident report"))?;
    if named.is_empty() {
        return Err(ApiError::NotFound {
            kind: "server_workload".to_string(),
            name: server_workload.to_string(),
        });
    }
    Ok(())
}

/// Builds the report of `GET /v1/incidents/report`.
pub async fn report(
    state: AppState,
    _admin: Admin,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    })?;
    let since = parse("since", &query.since)?;
    let until = query
        .until
        .as_deref()
        .map(|text| parse("until", text))
        .transpose()?;
    check_known(&state, &query.server_workload).await?;
    let rules: Vec<_> = state
        .config()
        .config
        .alert_rules
        .values()
        .filter(|rule| {
            rule.server_workloads.is_empty()
                || rule.server_workloads.contains(&query.server_workload)
        })
        .cloned()
        .collect();
    let location_rules: Vec<&AlertRule> = rules
        .iter()
        .filter(|rule| rule.kind == AlertRuleKind::UnexpectedLocation)
        .collect();

    let mut clients: BTreeMap<String, ClientSummary> = BTreeMap::new();
    let mut sources: BTreeMap<String, SourceSummary> = BTreeMap::new();
    let (mut credentials, mut failures, mut changes, mut alerts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
        let page = state
            .store
            .list_audit(&filter)
            .await
            .map_err(|e| ApiError::from_store(e, "incident report"))?;
        for event in &page {
            match event.event.kind {
                AuditKind::CredentialRequest => {
                    let flags = flag_request(&state, &rules, &location_rules, event);
                    let entry = request_entry(event, &flags);
                    let success = event.event.outcome == Some(Outcome::Success);
                    let client_name = event
                        .event
                        .client_workload
                        .clone()
                        .unwrap_or_else(|| "(unidentified)".to_string());
                    let client = clients.entry(client_name.clone()).or_default();
                    client.first.get_or_insert(event.event.time);
                    client.last = Some(event.event.time);
                    if let Some(ip) = event.event.detail.get("source_ip").and_then(Value::as_str) {
                        client.source_ips.insert(ip.to_string());
                        let source = sources.entry(ip.to_string()).or_default();
                        source.first.get_or_insert(event.event.time);
                        source.last = Some(event.event.time);
                        source.client_workloads.insert(client_name);
                        if source.location.is_none() {
                            source.location = flags.location.clone();
                        }
                        source.off_hours += u64::from(!flags.off_hours.is_empty());
                        source.unexpected_location +=
                            u64::from(!flags.unexpected_location.is_empty());
                        if success {
                            source.credentials += 1;
                        } else {
                            source.failures += 1;
                        }
                    }
                    client.off_hours += u64::from(!flags.off_hours.is_empty());
                    client.unexpected_location += u64::from(!flags.unexpected_location.is_empty());
                    if success {
                        client.credentials += 1;
                        push_capped(&mut credentials, entry);
                    } else {
                        client.failures += 1;
                        push_capped(&mut failures, entry);
                    }
                }
                AuditKind::ConfigChange => push_capped(
                    &mut changes,
                    json!({"seq": event.seq, "time": event.event.time.to_string(), "detail": event.event.detail}),
                ),
                AuditKind::Alert => push_capped(
                    &mut alerts,
                    json!({"seq": event.seq, "id": event.event.id, "time": event.event.time.to_string(), "detail": event.event.detail}),
                ),
                AuditKind::KeyChange
                | AuditKind::AdminTokenChange
                | AuditKind::AgentChange
                | AuditKind::CredentialInjection => {}
            }
        }
        read += page.len();
        match page.last() {
            Some(last) if page.len() == PAGE as usize && read < MAX_EVENTS => {
                after_seq = Some(last.seq)
            }
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
                "unexpected_location_requests": summary.unexpected_location,
                "source_ips": summary.source_ips,
                "first_request": summary.first.map(|time| time.to_string()),
                "last_request": summary.last.map(|time| time.to_string()),
            })
        })
        .collect();
    let sources: Vec<Value> = sources
        .into_iter()
        .map(|(address, summary)| {
            json!({
                "source_ip": address,
                "location": summary.location.as_ref().map(location_value),
                "client_workloads": summary.client_workloads,
                "credentials": summary.credentials,
                "failures": summary.failures,
                "off_hours_requests": summary.off_hours,
                "unexpected_location_requests": summary.unexpected_location,
                "first_request": summary.first.map(|time| time.to_string()),
                "last_request": summary.last.map(|time| time.to_string()),
            })
        })
        .collect();
    let location_checked = state.geoip.is_some();
    let location_note = if location_checked {
        None
    } else {
        Some(
            "location was not checked: the server has no geoip_database setting, so requests are flagged by the networks of unexpected_location rules only, and their countries are unknown",
        )
    };
    Ok(Json(json!({
        "server_workload": query.server_workload,
        "since": since.to_string(),
        "until": until.map(|time| time.to_string()),
        "events_read": read,
        "truncated": read >= MAX_EVENTS,
        "location_checked": location_checked,
        "location_note": location_note,
        "location_rules": location_rules.iter().map(|rule| &rule.name).collect::<Vec<_>>(),
        "client_workloads": clients,
        "source_addresses": sources,
        "credentials": credentials,
        "failures": failures,
        "config_changes": changes,
        "alerts": alerts,
    })))
}

/// Flags a credential request: outside the business hours of `off_hours` rules, and outside the
/// allowlists of `unexpected_location` rules. The location is the one the server recorded when
/// it decided the request, or else the one the GeoIP database gives now.
fn flag_request(
    state: &crate::state::AppState,
    rules: &[AlertRule],
    location_rules: &[&AlertRule],
    event: &AuditEvent,
) -> Flags {
    let off_hours = rules
        .iter()
        .filter_map(|rule| rule.outside_business_hours(event.event.time))
        .collect();
    let detail = &event.event.detail;
    let source = detail.get("source_ip").and_then(Value::as_str);
    let recorded = detail
        .get("source_country")
        .and_then(Value::as_str)
        .map(|country| Location {
            country: Some(country.to_string()),
            subdivisions: detail
                .get("source_subdivisions")
                .and_then(Value::as_array)
                .map(|codes| {
                    codes
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        });
    let looked_up = || {
        let address = source?.parse().ok()?;
        state.geoip.as_ref()?.locate(address)
    };
    let location = recorded.or_else(looked_up);
    let country = location
        .as_ref()
        .and_then(|location| location.country.as_deref());
    let unexpected_location = match source {
        Some(source) => location_rules
            .iter()
            .filter_map(|rule| rule.unexpected_location(source, country))
            .collect(),
        None => Vec::new(),
    };
    Flags {
        off_hours,
        location,
        unexpected_location,
    }
}

fn location_value(location: &Location) -> Value {
    json!({"country": location.country, "subdivisions": location.subdivisions})
}

fn request_entry(event: &AuditEvent, flags: &Flags) -> Value {
    let detail = &event.event.detail;
    json!({
        "seq": event.seq,
        "time": event.event.time.to_string(),
        "client_workload": event.event.client_workload,
        "source_ip": detail.get("source_ip"),
        "location": flags.location.as_ref().map(location_value),
        "step": detail.get("step"),
        "reason": detail.get("reason"),
        "off_hours": !flags.off_hours.is_empty(),
        "off_hours_reasons": flags.off_hours,
        "unexpected_location": !flags.unexpected_location.is_empty(),
        "unexpected_location_reasons": flags.unexpected_location,
    })
}

fn push_capped(list: &mut Vec<Value>, entry: Value) {
    if list.len() < MAX_LISTED {
        list.push(entry);
    }
}

fn parse(field: &str, text: &str) -> Result<Timestamp, ApiError> {
    text.parse::<Timestamp>().map_err(|_| {
        ApiError::invalid(
            field,
            text,
            "must be an RFC 3339 timestamp such as 2026-12-04T10:00:00Z",
        )
    })
}

//! Alert rules and their evaluation over the stream of audit events.
//!
//! Windows are sliding and measured in event time (each event's `time`), not in the time the
//! evaluator runs. After a rule fires for a key (a client or server workload), it stays silent
//! for that key during its suppression period, so one incident is one alert.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::{AuditEvent, AuditKind, Outcome};
use crate::conditions::{RequestContext, evaluate, validate_time_window};
use crate::duration::Seconds;
use crate::error::FieldError;
use crate::resources::{AccessCondition, ScheduleEntry, TimeWindowCondition, validate_name};

/// Failed requests a `failed_requests` rule tolerates in its window when it sets no threshold.
pub const DEFAULT_FAILED_THRESHOLD: u32 = 5;
/// Window of a `failed_requests` rule that sets none: 10 minutes.
pub const DEFAULT_WINDOW: Seconds = Seconds(600);
/// Suppression period of `failed_requests` and `off_hours` rules that set none: 10 minutes.
pub const DEFAULT_SUPPRESSION: Seconds = Seconds(600);

/// The pattern an alert rule looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRuleKind {
    /// More than `threshold` failed credential requests in `window`, per client workload and
    /// per server workload (per source address when the request names neither).
    FailedRequests,
    /// Any configuration change of a server workload, enabling and disabling included.
    ConfigChange,
    /// A credential request outside the business hours that `timezone` and `schedule` set.
    OffHours,
}

impl AlertRuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertRuleKind::FailedRequests => "failed_requests",
            AlertRuleKind::ConfigChange => "config_change",
            AlertRuleKind::OffHours => "off_hours",
        }
    }
}

/// An alert rule resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub name: String,
    pub kind: AlertRuleKind,
    /// `failed_requests`: the rule fires when the window contains more failures than this, 5 by
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// `failed_requests`: length of the sliding window, 10m by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Seconds>,
    /// Silence after an alert for the same key: 10m by default, none for `config_change`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppression: Option<Seconds>,
    /// `off_hours`: IANA time zone of the business hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `off_hours`: the business hours; a request outside all entries fires the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduleEntry>,
    /// Only events of these server workloads count; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_workloads: Vec<String>,
}

impl AlertRule {
    /// Checks the fields the rule's kind needs and rejects those it does not use.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", &self.name)?;
        let failed = self.kind == AlertRuleKind::FailedRequests;
        let off_hours = self.kind == AlertRuleKind::OffHours;
        if !failed && self.threshold.is_some() {
            return Err(FieldError::new("threshold", "", "is only used by failed_requests rules"));
        }
        if !failed && self.window.is_some() {
            return Err(FieldError::new("window", "", "is only used by failed_requests rules"));
        }
        if !off_hours && (self.timezone.is_some() || !self.schedule.is_empty()) {
            let field = if self.timezone.is_some() { "timezone" } else { "schedule" };
            return Err(FieldError::new(field, "", "is only used by off_hours rules"));
        }
        if self.threshold == Some(0) {
            return Err(FieldError::new("threshold", "0", "must be at least 1"));
        }
        if let Some(window) = self.window
            && !(60..=86_400).contains(&window.as_secs())
        {
            return Err(FieldError::new("window", &window.to_string(), "must be between 1m and 24h"));
        }
        if off_hours {
            validate_time_window(&self.business_hours())?;
        }
        for (index, name) in self.server_workloads.iter().enumerate() {
            validate_name(&format!("server_workloads[{index}]"), name)?;
        }
        Ok(())
    }

    fn threshold(&self) -> u32 {
        self.threshold.unwrap_or(DEFAULT_FAILED_THRESHOLD)
    }

    fn window(&self) -> Seconds {
        self.window.unwrap_or(DEFAULT_WINDOW)
    }

    fn suppression(&self) -> Seconds {
        match (self.suppression, self.kind) {
            (Some(suppression), _) => suppression,
            (None, AlertRuleKind::ConfigChange) => Seconds(0),
            (None, _) => DEFAULT_SUPPRESSION,
        }
    }

    /// Returns the business hours as a time window condition, to reuse its evaluation.
    fn business_hours(&self) -> TimeWindowCondition {
        TimeWindowCondition {
            name: self.name.clone(),
            timezone: self.timezone.clone().unwrap_or_default(),
            schedule: self.schedule.clone(),
        }
    }
}

/// An alert that a rule raised, before it is written as an audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub rule: String,
    pub rule_kind: AlertRuleKind,
    /// The subject of the alert, such as `client_workload=billing`.
    pub key: String,
    pub client_workload: Option<String>,
    pub server_workload: Option<String>,
    pub message: String,
    /// The event that made the rule fire.
    pub trigger_seq: i64,
    pub trigger_id: String,
    pub time: Timestamp,
}

impl Alert {
    /// Returns the `detail` of the alert's audit event.
    pub fn detail(&self) -> Value {
        json!({
            "rule": self.rule,
            "rule_kind": self.rule_kind.as_str(),
            "key": self.key,
            "message": self.message,
            "trigger_seq": self.trigger_seq,
            "trigger_id": self.trigger_id,
        })
    }
}

/// The state of every rule's windows and suppression periods.
#[derive(Debug, Default)]
pub struct AlertEngine {
    /// Failure times per (rule, key), oldest first.
    windows: BTreeMap<(String, String), VecDeque<Timestamp>>,
    /// Time of the last alert per (rule, key).
    fired: BTreeMap<(String, String), Timestamp>,
}

impl AlertEngine {
    /// Feeds one event to every rule and returns the alerts it raises. Alert events themselves
    /// are ignored, so an alert never triggers another.
    pub fn observe(&mut self, rules: &[AlertRule], event: &AuditEvent) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if event.event.kind == AuditKind::Alert {
            return alerts;
        }
        for rule in rules {
            let in_scope = rule.server_workloads.is_empty()
                || event.event.server_workload.as_ref().is_some_and(|name| rule.server_workloads.contains(name));
            if !in_scope {
                continue;
            }
            match rule.kind {
                AlertRuleKind::FailedRequests => self.failed_requests(rule, event, &mut alerts),
                AlertRuleKind::ConfigChange => self.config_change(rule, event, &mut alerts),
                AlertRuleKind::OffHours => self.off_hours(rule, event, &mut alerts),
            }
        }
        alerts
    }

    fn failed_requests(&mut self, rule: &AlertRule, event: &AuditEvent, alerts: &mut Vec<Alert>) {
        let inner = &event.event;
        if inner.kind != AuditKind::CredentialRequest || inner.outcome != Some(Outcome::Failure) {
            return;
        }
        let window = SignedDuration::from_secs(i64::try_from(rule.window().as_secs()).unwrap_or(i64::MAX));
        let mut keys: Vec<(&str, String)> = Vec::new();
        if let Some(name) = &inner.client_workload {
            keys.push(("client_workload", name.clone()));
        }
        if let Some(name) = &inner.server_workload {
            keys.push(("server_workload", name.clone()));
        }
        // A caller that matched no client workload and named no known server workload is
        // still counted, by its source address, so probing from one host raises an alert.
        if keys.is_empty()
            && let Some(source) = inner.detail.get("source_ip").and_then(Value::as_str)
        {
            keys.push(("source_ip", source.to_string()));
        }
        for (field, name) in keys {
            let key = format!("{field}={name}");
            let times = self.windows.entry((rule.name.clone(), key.clone())).or_default();
            times.push_back(inner.time);
            while times.front().is_some_and(|oldest| *oldest <= inner.time - window) {
                times.pop_front();
            }
            let count = times.len();
            if count as u64 > u64::from(rule.threshold()) {
                let message = format!(
                    "{count} failed credential requests for {field} {name} within {}, more than the threshold of {}",
                    rule.window(),
                    rule.threshold()
                );
                self.fire(rule, event, key, message, alerts);
            }
        }
    }

    fn config_change(&mut self, rule: &AlertRule, event: &AuditEvent, alerts: &mut Vec<Alert>) {
        let inner = &event.event;
        let detail = &inner.detail;
        let is_workload = detail.get("resource_kind").and_then(Value::as_str) == Some("server_workload");
        if inner.kind != AuditKind::ConfigChange || !is_workload {
            return;
        }
        let name = detail.get("resource_name").and_then(Value::as_str).unwrap_or("unknown");
        let action = detail.get("action").and_then(Value::as_str).unwrap_or("change");
        let actor = detail.get("actor").and_then(Value::as_str).unwrap_or("unknown");
        let message = format!("server workload {name} configuration change: {action} by {actor}");
        self.fire(rule, event, format!("server_workload={name}"), message, alerts);
    }

    fn off_hours(&mut self, rule: &AlertRule, event: &AuditEvent, alerts: &mut Vec<Alert>) {
        let inner = &event.event;
        if inner.kind != AuditKind::CredentialRequest {
            return;
        }
        let context = RequestContext { now: inner.time, source_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        let Err(reason) = evaluate(&AccessCondition::TimeWindow(rule.business_hours()), &context) else {
            return;
        };
        let client = inner.client_workload.as_deref().unwrap_or("unknown");
        let server = inner.server_workload.as_deref().unwrap_or("unknown");
        let message = format!("credential request from {client} for {server} outside business hours: {reason}");
        self.fire(rule, event, format!("client_workload={client}"), message, alerts);
    }

    /// Raises an alert for `key` unless the rule fired for it within its suppression period.
    fn fire(&mut self, rule: &AlertRule, event: &AuditEvent, key: String, message: String, alerts: &mut Vec<Alert>) {
        let suppression = SignedDuration::from_secs(i64::try_from(rule.suppression().as_secs()).unwrap_or(i64::MAX));
        let slot = (rule.name.clone(), key.clone());
        let time = event.event.time;
        if suppression > SignedDuration::ZERO && self.fired.get(&slot).is_some_and(|last| time < *last + suppression) {
            return;
        }
        self.fired.insert(slot, time);

        let field = |prefix: &str| key.strip_prefix(prefix).map(str::to_string);
        alerts.push(Alert {
            rule: rule.name.clone(),
            rule_kind: rule.kind,
            client_workload: field("client_workload=").or_else(|| event.event.client_workload.clone()),
            server_workload: field("server_workload=").or_else(|| event.event.server_workload.clone()),
            key,
            message,
            trigger_seq: event.seq,
            trigger_id: event.event.id.clone(),
            time,
        });
    }
}

#[cfg(test)]
mod tests;

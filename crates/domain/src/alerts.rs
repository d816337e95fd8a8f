//! Alert rules and their evaluation over the stream of audit events.
//!
//! Windows are sliding and measured in event time (each event's `time`), not in the time the
//! evaluator runs. After a rule fires for a key (a client or server workload), it stays silent
//! for that key during its suppression period, so one incident is one alert.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::{AuditEvent, AuditKind, Outcome};
use crate::conditions::{
    canonical_ip, evaluate_time_window, validate_country, validate_time_window,
};
use crate::duration::Seconds;
use crate::error::FieldError;
use crate::resources::{Network, ScheduleEntry, TimeWindowCondition, validate_name};

/// Failed requests a `failed_requests` rule tolerates in its window when it sets no threshold.
pub const DEFAULT_FAILED_THRESHOLD: u32 = 5;
/// Window of a `failed_requests` rule that sets none: 10 minutes.
pub const DEFAULT_WINDOW: Seconds = Seconds(600);
/// Window of a `rate_spike` rule that sets none: 1 hour.
pub const DEFAULT_SPIKE_WINDOW: Seconds = Seconds(3600);
/// Baseline percentage above which a `rate_spike` rule fires when it sets none.
pub const DEFAULT_SPIKE_PERCENT: u32 = 200;
/// Past windows in a `rate_spike` baseline when the rule sets none.
pub const DEFAULT_BASELINE_WINDOWS: u32 = 24;
/// Smallest window count a `rate_spike` rule treats as a possible spike when it sets none.
pub const DEFAULT_MIN_VOLUME: u32 = 10;
/// Suppression period of `failed_requests`, `off_hours` and `unexpected_location` rules that set
/// none: 10 minutes.
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
    /// More credentials issued for a server workload in the sliding `window` than `percent` of
    /// its baseline, the mean count of the `baseline_windows` windows before.
    RateSpike,
    /// A credential request from a source address outside `allow_networks` whose country is not
    /// in `allow_countries`.
    UnexpectedLocation,
}

impl AlertRuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertRuleKind::FailedRequests => "failed_requests",
            AlertRuleKind::ConfigChange => "config_change",
            AlertRuleKind::OffHours => "off_hours",
            AlertRuleKind::RateSpike => "rate_spike",
            AlertRuleKind::UnexpectedLocation => "unexpected_location",
        }
    }
}

/// The urgency of an alert, for the receivers of notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
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
    #[serde(
        default,
        deserialize_with = "crate::scalar::option_u32",
        skip_serializing_if = "Option::is_none"
    )]
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
    /// `rate_spike`: the rule fires when the window's count is above this percentage of the
    /// baseline, 200 by default.
    #[serde(
        default,
        deserialize_with = "crate::scalar::option_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub percent: Option<u32>,
    /// `rate_spike`: number of past windows averaged into the baseline, 24 by default. The rule
    /// stays silent until that much history has been seen.
    #[serde(
        default,
        deserialize_with = "crate::scalar::option_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub baseline_windows: Option<u32>,
    /// `rate_spike`: the smallest window count that can be a spike, 10 by default, so that a
    /// single request at night is not one.
    #[serde(
        default,
        deserialize_with = "crate::scalar::option_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_volume: Option<u32>,
    /// `unexpected_location`: networks (CIDR) whose requests are expected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_networks: Vec<Network>,
    /// `unexpected_location`: ISO 3166-1 alpha-2 codes of the countries whose requests are
    /// expected. The server needs a GeoIP database to use them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_countries: Vec<String>,
    /// Only events of these server workloads count; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_workloads: Vec<String>,
    /// Severity of the rule's alerts. The default depends on the kind: `high` for
    /// `failed_requests` and `unexpected_location`, `medium` for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Names of the notification targets that receive the rule's alerts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
}

impl AlertRule {
    /// Checks the fields the rule's kind needs and rejects those it does not use.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", &self.name)?;
        let failed = self.kind == AlertRuleKind::FailedRequests;
        let off_hours = self.kind == AlertRuleKind::OffHours;
        let spike = self.kind == AlertRuleKind::RateSpike;
        let location = self.kind == AlertRuleKind::UnexpectedLocation;

        if !failed && self.threshold.is_some() {
            return Err(FieldError::new(
                "threshold",
                "",
                "is only used by failed_requests rules",
            ));
        }
        if !failed && !spike && self.window.is_some() {
            return Err(FieldError::new(
                "window",
                "",
                "is only used by failed_requests and rate_spike rules",
            ));
        }
        let spike_fields = [
            ("percent", self.percent.is_some()),
            ("baseline_windows", self.baseline_windows.is_some()),
            ("min_volume", self.min_volume.is_some()),
        ];
        if let Some((field, _)) = spike_fields.iter().find(|(_, set)| *set && !spike) {
            return Err(FieldError::new(
                field,
                "",
                "is only used by rate_spike rules",
            ));
        }

        if self.percent.is_some_and(|percent| percent <= 100) {
            return Err(FieldError::new(
                "percent",
                &self.percent.unwrap_or_default().to_string(),
                "must be above 100",
            ));
        }
        if let Some(windows) = self.baseline_windows
            && !(1..=1000).contains(&windows)
        {
            return Err(FieldError::new(
                "baseline_windows",
                &windows.to_string(),
                "must be between 1 and 1000",
            ));
        }
        if !off_hours && (self.timezone.is_some() || !self.schedule.is_empty()) {
            let field = if self.timezone.is_some() {
                "timezone"
            } else {
                "schedule"
            };
            return Err(FieldError::new(
                field,
                "",
                "is only used by off_hours rules",
            ));
        }
        if !location && (!self.allow_networks.is_empty() || !self.allow_countries.is_empty()) {
            let field = if self.allow_networks.is_empty() {
                "allow_countries"
            } else {
                "allow_networks"
            };
            return Err(FieldError::new(
                field,
                "",
                "is only used by unexpected_location rules",
            ));
        }
        if location && self.allow_networks.is_empty() && self.allow_countries.is_empty() {
            return Err(FieldError::new(
                "allow_networks",
                "[]",
                "or allow_countries must list at least one entry",
            ));
        }
        for (index, country) in self.allow_countries.iter().enumerate() {
            validate_country(&format!("allow_countries[{index}]"), country)?;
        }
        if self.threshold == Some(0) {
            return Err(FieldError::new("threshold", "0", "must be at least 1"));
        }
        if let Some(window) = self.window
            && !(60..=86_400).contains(&window.as_secs())
        {
            return Err(FieldError::new(
                "window",
                &window.to_string(),
                "must be between 1m and 24h",
            ));
        }

        if off_hours {
            validate_time_window(&self.business_hours())?;
        }
        for (index, name) in self.server_workloads.iter().enumerate() {
            validate_name(&format!("server_workloads[{index}]"), name)?;
        }
        for (index, name) in self.notify.iter().enumerate() {
            validate_name(&format!("notify[{index}]"), name)?;
            if self.notify[..index].contains(name) {
                return Err(FieldError::new(
                    &format!("notify[{index}]"),
                    name,
                    "is listed twice",
                ));
            }
        }
        Ok(())
    }

    /// Returns the severity of the rule's alerts.
    pub fn severity(&self) -> Severity {
        match (self.severity, self.kind) {
            (Some(severity), _) => severity,
            (None, AlertRuleKind::FailedRequests | AlertRuleKind::UnexpectedLocation) => {
                Severity::High
            }
            (None, _) => Severity::Medium,
        }
    }

    /// Returns why a request from `source` (with the country the GeoIP database gave, if any)
    /// is outside this `unexpected_location` rule's allowlists, or `None` when it is inside them
    /// or the rule is of another kind. An address that does not parse and an unknown country
    /// are both outside.
    pub fn unexpected_location(&self, source: &str, country: Option<&str>) -> Option<String> {
        if self.kind != AlertRuleKind::UnexpectedLocation {
            return None;
        }
        let address = source.parse::<IpAddr>().ok().map(canonical_ip);
        if address.is_some_and(|address| {
            self.allow_networks
                .iter()
                .any(|network| network.0.contains(&address))
        }) {
            return None;
        }
        if country.is_some_and(|country| {
            self.allow_countries
                .iter()
                .any(|allowed| allowed == country)
        }) {
            return None;
        }
        let location = country.map_or_else(
            || "an unknown country".to_string(),
            |country| format!("country {country}"),
        );
        Some(format!(
            "source address {source} in {location} is outside the allowlists of rule {}",
            self.name
        ))
    }

    /// Tells whether the rule reads the country of source addresses.
    pub fn needs_location(&self) -> bool {
        self.kind == AlertRuleKind::UnexpectedLocation && !self.allow_countries.is_empty()
    }

    fn threshold(&self) -> u32 {
        self.threshold.unwrap_or(DEFAULT_FAILED_THRESHOLD)
    }

    fn window(&self) -> Seconds {
        match (self.window, self.kind) {
            (Some(window), _) => window,
            (None, AlertRuleKind::RateSpike) => DEFAULT_SPIKE_WINDOW,
            (None, _) => DEFAULT_WINDOW,
        }
    }

    fn suppression(&self) -> Seconds {
        match (self.suppression, self.kind) {
            (Some(suppression), _) => suppression,
            (None, AlertRuleKind::ConfigChange) => Seconds(0),
            (None, _) => DEFAULT_SUPPRESSION,
        }
    }

    /// Returns why `time` is outside this `off_hours` rule's business hours, or `None` when it is
    /// inside them or the rule is of another kind.
    pub fn outside_business_hours(&self, time: Timestamp) -> Option<String> {
        if self.kind != AlertRuleKind::OffHours {
            return None;
        }
        evaluate_time_window(&self.business_hours(), time, "business hours of alert rule").err()
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
    pub severity: Severity,
    /// The notification targets that receive the alert, copied from the rule when it fired.
    pub notify: Vec<String>,
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
            "severity": self.severity.as_str(),
            "key": self.key,
            "message": self.message,
            "trigger_seq": self.trigger_seq,
            "trigger_id": self.trigger_id,
            "notify": self.notify,
        })
    }
}

/// The state of every rule's windows and suppression periods.
#[derive(Debug, Default)]
pub struct AlertEngine {
    /// Failure times per (rule, key), oldest first.
    windows: BTreeMap<(String, String), VecDeque<Timestamp>>,
    /// Issuance history of `rate_spike` rules per (rule, server workload).
    rates: BTreeMap<(String, String), RateHistory>,
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
                || event
                    .event
                    .server_workload
                    .as_ref()
                    .is_some_and(|name| rule.server_workloads.contains(name));
            if !in_scope {
                continue;
            }
            match rule.kind {
                AlertRuleKind::FailedRequests => self.failed_requests(rule, event, &mut alerts),
                AlertRuleKind::ConfigChange => self.config_change(rule, event, &mut alerts),
                AlertRuleKind::OffHours => self.off_hours(rule, event, &mut alerts),
                AlertRuleKind::RateSpike => self.rate_spike(rule, event, &mut alerts),
                AlertRuleKind::UnexpectedLocation => {
                    self.unexpected_location(rule, event, &mut alerts)
                }
            }
        }
        alerts
    }

    fn failed_requests(&mut self, rule: &AlertRule, event: &AuditEvent, alerts: &mut Vec<Alert>) {
        let inner = &event.event;
        if inner.kind != AuditKind::CredentialRequest || inner.outcome != Some(Outcome::Failure) {
            return;
        }
        let window =
            SignedDuration::from_secs(i64::try_from(rule.window().as_secs()).unwrap_or(i64::MAX));
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
            let times = self
                .windows
                .entry((rule.name.clone(), key.clone()))
                .or_default();
            times.push_back(inner.time);
            while times
                .front()
                .is_some_and(|oldest| *oldest <= inner.time - window)
            {
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
        let is_workload =
            detail.get("resource_kind").and_then(Value::as_str) == Some("server_workload");
        if inner.kind != AuditKind::ConfigChange || !is_workload {
            return;
        }
        let name = detail
            .get("resource_name")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let action = detail
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("change");
        let actor = detail
            .get("actor")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let message = format!("server workload {name} configuration change: {action} by {actor}");
        self.fire(
            rule,
            event,
            format!("server_workload={name}"),
            message,
            alerts,
        );
    }

    fn off_hours(&mut self, rule: &AlertRule, event: &AuditEvent, alerts: &mut Vec<Alert>) {
        let inner = &event.event;
        if inner.kind != AuditKind::CredentialRequest {
            return;
        }
        let Some(reason) = rule.outside_business_hours(inner.time) else {
            return;
        };
        let client = inner.client_workload.as_deref().unwrap_or("unknown");
        let server = inner.server_workload.as_deref().unwrap_or("unknown");
        let message = format!(
            "credential request from {client} for {server} outside business hours: {reason}"
        );
        self.fire(
            rule,
            event,
            format!("client_workload={client}"),
            message,
            alerts,
        );
    }

    /// Reads `source_ip` and `source_country` from the event's detail. A request whose address is
    /// outside `allow_networks` and whose country is unknown or not allowed fires the rule.
    fn unexpected_location(
        &mut self,
        rule: &AlertRule,
        event: &AuditEvent,
        alerts: &mut Vec<Alert>,
    ) {
        let inner = &event.event;
        if inner.kind != AuditKind::CredentialRequest {
            return;
        }
        let Some(source) = inner.detail.get("source_ip").and_then(Value::as_str) else {
            return;
        };
        let country = inner.detail.get("source_country").and_then(Value::as_str);
        if rule.unexpected_location(source, country).is_none() {
            return;
        }

        let client = inner.client_workload.as_deref().unwrap_or("unknown");
        let server = inner.server_workload.as_deref().unwrap_or("unknown");
        let location = country.map_or_else(
            || "an unknown country".to_string(),
            |country| format!("country {country}"),
        );
        let message = format!(
            "credential request from {client} for {server} from source address {source} in {location}, outside the expected networks and countries"
        );
        let key = match &inner.client_workload {
            Some(name) => format!("client_workload={name}"),
            None => format!("source_ip={source}"),
        };
        self.fire(rule, event, key, message, alerts);
    }

    fn rate_spike(&mut self, rule: &AlertRule, event: &AuditEvent, alerts: &mut Vec<Alert>) {
        let inner = &event.event;
        if inner.kind != AuditKind::CredentialRequest || inner.outcome != Some(Outcome::Success) {
            return;
        }
        let Some(server) = inner.server_workload.clone() else {
            return;
        };
        let window_secs = i64::try_from(rule.window().as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let windows = i64::from(rule.baseline_windows.unwrap_or(DEFAULT_BASELINE_WINDOWS));
        let history = self
            .rates
            .entry((rule.name.clone(), server.clone()))
            .or_insert_with(|| RateHistory::new(inner.time));
        let (count, baseline) = history.record(inner.time, window_secs, windows);

        let Some(baseline) = baseline else {
            return;
        };
        let percent = u64::from(rule.percent.unwrap_or(DEFAULT_SPIKE_PERCENT));
        let min_volume = u64::from(rule.min_volume.unwrap_or(DEFAULT_MIN_VOLUME));
        // count > baseline * percent / 100, in integers: baseline is the sum over `windows`.
        let above = u128::from(count) * 100 * windows.unsigned_abs() as u128
            > u128::from(baseline) * u128::from(percent);
        if count >= min_volume && above {
            let mean = baseline as f64 / windows as f64;
            let message = format!(
                "{count} credentials issued for server workload {server} within {}, above {percent}% of its baseline of {mean:.1}",
                rule.window()
            );
            self.fire(
                rule,
                event,
                format!("server_workload={server}"),
                message,
                alerts,
            );
        }
    }

    /// Raises an alert for `key` unless the rule fired for it within its suppression period.
    fn fire(
        &mut self,
        rule: &AlertRule,
        event: &AuditEvent,
        key: String,
        message: String,
        alerts: &mut Vec<Alert>,
    ) {
        let suppression = SignedDuration::from_secs(
            i64::try_from(rule.suppression().as_secs()).unwrap_or(i64::MAX),
        );
        let slot = (rule.name.clone(), key.clone());
        let time = event.event.time;
        if suppression > SignedDuration::ZERO
            && self
                .fired
                .get(&slot)
                .is_some_and(|last| time < *last + suppression)
        {
            return;
        }
        self.fired.insert(slot, time);

        let field = |prefix: &str| key.strip_prefix(prefix).map(str::to_string);
        alerts.push(Alert {
            rule: rule.name.clone(),
            rule_kind: rule.kind,
            severity: rule.severity(),
            notify: rule.notify.clone(),
            client_workload: field("client_workload=")
                .or_else(|| event.event.client_workload.clone()),
            server_workload: field("server_workload=")
                .or_else(|| event.event.server_workload.clone()),
            key,
            message,
            trigger_seq: event.seq,
            trigger_id: event.event.id.clone(),
            time,
        });
    }
}

/// Issue times of one server workload for a `rate_spike` rule: the sliding current window, and
/// counts per fixed past window for the baseline.
#[derive(Debug)]
struct RateHistory {
    first_seen: Timestamp,
    current: VecDeque<Timestamp>,
    /// Count per window index (`seconds since the epoch / window`).
    buckets: BTreeMap<i64, u64>,
}

impl RateHistory {
    fn new(first_seen: Timestamp) -> RateHistory {
        RateHistory {
            first_seen,
            current: VecDeque::new(),
            buckets: BTreeMap::new(),
        }
    }

    /// Records one issuance at `time`. Returns the count of the sliding window ending at `time`,
    /// and the total count of the `windows` whole windows before it, or `None` while the history
    /// is shorter than that.
    fn record(&mut self, time: Timestamp, window_secs: i64, windows: i64) -> (u64, Option<u64>) {
        let window = SignedDuration::from_secs(window_secs);
        self.current.push_back(time);
        while self
            .current
            .front()
            .is_some_and(|oldest| *oldest <= time - window)
        {
            self.current.pop_front();
        }

        let index = time.as_second().div_euclid(window_secs);
        *self.buckets.entry(index).or_default() += 1;
        // The sliding window overlaps this fixed window and the one before, so the baseline
        // uses the `windows` fixed windows before those two.
        let last = index - 2;
        let first = last - windows + 1;
        self.buckets.retain(|bucket, _| *bucket >= first);

        let enough_history = self.first_seen.as_second().div_euclid(window_secs) <= first;
        let baseline = enough_history.then(|| {
            self.buckets
                .range(first..=last)
                .map(|(_, count)| count)
                .sum()
        });
        (self.current.len() as u64, baseline)
    }
}

#[cfg(test)]
mod tests;

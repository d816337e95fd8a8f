//! Access conditions evaluated per request: time windows and source networks.

use std::net::IpAddr;

use jiff::Timestamp;
use jiff::civil::{Time, Weekday as CivilWeekday};
use jiff::tz::TimeZone;

use crate::error::FieldError;
use crate::resources::{AccessCondition, SourceIpCondition, TimeWindowCondition, Weekday};

/// The request attributes that access conditions read.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    pub now: Timestamp,
    pub source_ip: IpAddr,
}

/// Evaluates a condition. `Err` carries the reason the request does not pass, for the audit log.
pub fn evaluate(condition: &AccessCondition, context: &RequestContext) -> Result<(), String> {
    match condition {
        AccessCondition::TimeWindow(window) => evaluate_time_window(window, context.now),
        AccessCondition::SourceIp(allowlist) => evaluate_source_ip(allowlist, context.source_ip),
    }
}

fn evaluate_source_ip(condition: &SourceIpCondition, source_ip: IpAddr) -> Result<(), String> {
    let source_ip = canonical_ip(source_ip);
    if condition.allow.iter().any(|network| network.0.contains(&source_ip)) {
        return Ok(());
    }
    Err(format!("source address {source_ip} is not in the allowed networks of access condition {:?}", condition.name))
}

/// Maps IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) to IPv4, so a dual-stack listener does not
/// slip past an IPv4 allowlist.
pub fn canonical_ip(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
        IpAddr::V4(_) => address,
    }
}

fn evaluate_time_window(condition: &TimeWindowCondition, now: Timestamp) -> Result<(), String> {
    let zone = TimeZone::get(&condition.timezone)
        .map_err(|_| format!("time zone {:?} of access condition {:?} is unknown", condition.timezone, condition.name))?;
    let local = now.to_zoned_datetime(zone);
    let today = weekday_of(local.weekday());
    let yesterday = weekday_of(local.weekday().previous());
    let minute = u32::from(local.hour().unsigned_abs()) * 60 + u32::from(local.minute().unsigned_abs());

    for entry in &condition.schedule {
        let (Some(start), Some(end)) = (parse_minutes(&entry.start), parse_minutes(&entry.end)) else {
            continue;
        };
        let inside = if start < end {
            entry.days.contains(&today) && minute >= start && minute < end
        } else {
            // The window runs past midnight: the evening part belongs to a listed day, the early
            // part to the day after one.
            (entry.days.contains(&today) && minute >= start) || (entry.days.contains(&yesterday) && minute < end)
        };
        if inside {
            return Ok(());
        }
    }
    Err(format!(
        "{} ({}) is outside the schedule of access condition {:?}",
        local.strftime("%a %H:%M"),
        condition.timezone,
        condition.name
    ))
}

/// Checks the time zone, days and `HH:MM` times of a time window.
pub fn validate_time_window(condition: &TimeWindowCondition) -> Result<(), FieldError> {
    if TimeZone::get(&condition.timezone).is_err() {
        return Err(FieldError::new(
            "timezone",
            &condition.timezone,
            "is not a known IANA time zone name (such as Europe/Berlin or UTC)",
        ));
    }
    if condition.schedule.is_empty() {
        return Err(FieldError::new("schedule", "[]", "must have at least one entry"));
    }
    for (index, entry) in condition.schedule.iter().enumerate() {
        let prefix = format!("schedule[{index}]");
        if entry.days.is_empty() {
            return Err(FieldError::new("days", "[]", "must list at least one day").within(&prefix));
        }
        let start = parse_minutes(&entry.start)
            .filter(|minutes| *minutes < 24 * 60)
            .ok_or_else(|| FieldError::new("start", &entry.start, "must be a time HH:MM from 00:00 to 23:59").within(&prefix))?;
        let end = parse_minutes(&entry.end)
            .ok_or_else(|| FieldError::new("end", &entry.end, "must be a time HH:MM from 00:00 to 24:00").within(&prefix))?;
        if start == end {
            return Err(FieldError::new("end", &entry.end, "must differ from start").within(&prefix));
        }
    }
    Ok(())
}

/// Parses `HH:MM` (00:00 to 24:00) into minutes after midnight.
fn parse_minutes(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: u32 = hours.parse().ok()?;
    let minutes: u32 = minutes.parse().ok()?;
    if minutes >= 60 || hours > 24 || (hours == 24 && minutes != 0) {
        return None;
    }
    // Checked so the parser also rejects text such as "+1:00" that `parse` would accept.
    Time::new(i8::try_from(hours % 24).ok()?, i8::try_from(minutes).ok()?, 0, 0).ok()?;
    Some(hours * 60 + minutes)
}

fn weekday_of(day: CivilWeekday) -> Weekday {
    match day {
        CivilWeekday::Monday => Weekday::Mon,
        CivilWeekday::Tuesday => Weekday::Tue,
        CivilWeekday::Wednesday => Weekday::Wed,
        CivilWeekday::Thursday => Weekday::Thu,
        CivilWeekday::Friday => Weekday::Fri,
        CivilWeekday::Saturday => Weekday::Sat,
        CivilWeekday::Sunday => Weekday::Sun,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Network, ScheduleEntry};

    fn window(timezone: &str, days: &[Weekday], start: &str, end: &str) -> TimeWindowCondition {
        TimeWindowCondition {
            name: "hours".to_string(),
            timezone: timezone.to_string(),
            schedule: vec![ScheduleEntry { days: days.to_vec(), start: start.to_string(), end: end.to_string() }],
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn business_hours_in_berlin() {
        let hours = window("Europe/Berlin", &[Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri], "08:00", "18:00");
        // 2026-12-07 is a Monday; Berlin is UTC+1 in December.
        assert!(evaluate_time_window(&hours, at("2026-12-07T07:00:00Z")).is_ok());
        assert!(evaluate_time_window(&hours, at("2026-12-07T06:59:00Z")).is_err());
        assert!(evaluate_time_window(&hours, at("2026-12-07T16:59:00Z")).is_ok());
        assert!(evaluate_time_window(&hours, at("2026-12-07T17:00:00Z")).is_err());
        // Saturday.
        assert!(evaluate_time_window(&hours, at("2026-12-05T10:00:00Z")).is_err());
    }

    #[test]
    fn overnight_window_belongs_to_start_day() {
        let night = window("UTC", &[Weekday::Fri], "22:00", "06:00");
        // 2026-12-04 is a Friday.
        assert!(evaluate_time_window(&night, at("2026-12-04T23:00:00Z")).is_ok());
        assert!(evaluate_time_window(&night, at("2026-12-05T05:59:00Z")).is_ok());
        assert!(evaluate_time_window(&night, at("2026-12-05T06:00:00Z")).is_err());
        assert!(evaluate_time_window(&night, at("2026-12-04T05:00:00Z")).is_err());
    }

    #[test]
    fn daylight_saving_shift_follows_local_time() {
        let hours = window("Europe/Berlin", &[Weekday::Mon], "08:00", "09:00");
        // Summer time: UTC+2, so 08:30 local is 06:30 UTC.
        assert!(evaluate_time_window(&hours, at("2026-07-06T06:30:00Z")).is_ok());
        assert!(evaluate_time_window(&hours, at("2026-07-06T07:30:00Z")).is_err());
    }

    #[test]
    fn validation_names_the_bad_field() {
        let error = validate_time_window(&window("Mars/Olympus", &[Weekday::Mon], "08:00", "09:00"));
        assert_eq!(error.map_err(|e| e.field), Err("timezone".to_string()));
        let error = validate_time_window(&window("UTC", &[Weekday::Mon], "8:00", "09:00"));
        assert_eq!(error.map_err(|e| e.field), Err("schedule[0].start".to_string()));
        let error = validate_time_window(&window("UTC", &[Weekday::Mon], "08:00", "24:01"));
        assert_eq!(error.map_err(|e| e.field), Err("schedule[0].end".to_string()));
        assert!(validate_time_window(&window("UTC", &[Weekday::Mon], "08:00", "24:00")).is_ok());
    }

    #[test]
    fn source_ip_allowlist() {
        let allowlist = SourceIpCondition {
            name: "office".to_string(),
            allow: vec![Network("10.0.0.0/8".parse().unwrap_or_default())],
        };
        assert!(evaluate_source_ip(&allowlist, "10.1.2.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))).is_ok());
        assert!(evaluate_source_ip(&allowlist, "11.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))).is_err());
    }

    #[test]
    fn mapped_ipv6_does_not_bypass_ipv4_allowlist() {
        let allowlist = SourceIpCondition {
            name: "office".to_string(),
            allow: vec![Network("10.0.0.0/8".parse().unwrap_or_default())],
        };
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(evaluate_source_ip(&allowlist, mapped).is_ok());
        let outside: IpAddr = "::ffff:11.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(evaluate_source_ip(&allowlist, outside).is_err());
    }
}

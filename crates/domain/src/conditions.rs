//! Access conditions evaluated per request: time windows, source networks and locations.

use std::net::IpAddr;

use jiff::Timestamp;
use jiff::civil::{Time, Weekday as CivilWeekday};
use jiff::tz::TimeZone;

use crate::error::FieldError;
use crate::resources::{
    AccessCondition, GeoCondition, SourceIpCondition, TimeWindowCondition, Weekday,
};

/// The request attributes that access conditions read.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub now: Timestamp,
    pub source_ip: IpAddr,
    /// Location of `source_ip` that the server resolved. It is `None` when no GeoIP database is
    /// configured or the database has no entry for the address.
    pub location: Option<Location>,
}

/// The location of a source address, as a GeoIP database records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// ISO 3166-1 alpha-2 country code, such as `DE`.
    pub country: Option<String>,
    /// ISO 3166-2 subdivision codes with their country prefix, such as `DE-BE`, largest first.
    pub subdivisions: Vec<String>,
}

/// Evaluates a condition. `Err` carries the reason the request does not pass, for the audit log.
pub fn evaluate(condition: &AccessCondition, context: &RequestContext) -> Result<(), String> {
    match condition {
        AccessCondition::TimeWindow(window) => {
            evaluate_time_window(window, context.now, "schedule of access condition")
        }
        AccessCondition::SourceIp(allowlist) => evaluate_source_ip(allowlist, context.source_ip),
        AccessCondition::Geo(condition) => {
            evaluate_geo(condition, context.source_ip, context.location.as_ref())
        }
    }
}

/// Fails closed: an address without a known country never passes.
fn evaluate_geo(
    condition: &GeoCondition,
    source_ip: IpAddr,
    location: Option<&Location>,
) -> Result<(), String> {
    let source_ip = canonical_ip(source_ip);
    let Some(country) = location.and_then(|location| location.country.as_deref()) else {
        return Err(format!(
            "source address {source_ip} has no known location, so it cannot pass access condition {:?}",
            condition.name
        ));
    };
    if !condition
        .allow_countries
        .iter()
        .any(|allowed| allowed == country)
    {
        return Err(format!(
            "source address {source_ip} is in country {country}, which access condition {:?} does not allow",
            condition.name
        ));
    }
    let prefix = format!("{country}-");
    let listed: Vec<&String> = condition
        .allow_subdivisions
        .iter()
        .filter(|code| code.starts_with(&prefix))
        .collect();
    if listed.is_empty() {
        return Ok(());
    }
    let subdivisions = location
        .map(|location| location.subdivisions.as_slice())
        .unwrap_or_default();
    if subdivisions.iter().any(|code| listed.contains(&code)) {
        return Ok(());
    }
    let found = if subdivisions.is_empty() {
        "no known subdivision".to_string()
    } else {
        subdivisions.join(", ")
    };
    Err(format!(
        "source address {source_ip} is in {country} ({found}), outside the subdivisions of {country} that access condition {:?} allows",
        condition.name
    ))
}

/// Checks that countries are ISO 3166-1 alpha-2 codes and subdivisions ISO 3166-2 codes of a
/// listed country.
pub fn validate_geo(condition: &GeoCondition) -> Result<(), FieldError> {
    if condition.allow_countries.is_empty() {
        return Err(FieldError::new(
            "allow_countries",
            "[]",
            "must list at least one country",
        ));
    }
    for (index, country) in condition.allow_countries.iter().enumerate() {
        validate_country(&format!("allow_countries[{index}]"), country)?;
    }
    for (index, code) in condition.allow_subdivisions.iter().enumerate() {
        let field = format!("allow_subdivisions[{index}]");
        let valid = code.split_once('-').is_some_and(|(country, part)| {
            is_country_code(country)
                && (1..=3).contains(&part.len())
                && part
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        });
        if !valid {
            return Err(FieldError::new(
                &field,
                code,
                "must be an ISO 3166-2 code in upper case, such as DE-BE",
            ));
        }
        if !condition
            .allow_countries
            .iter()
            .any(|country| code.starts_with(&format!("{country}-")))
        {
            return Err(FieldError::new(
                &field,
                code,
                "must be a subdivision of a country in allow_countries",
            ));
        }
    }
    Ok(())
}

/// Checks an ISO 3166-1 alpha-2 country code, such as `DE`.
pub fn validate_country(field: &str, code: &str) -> Result<(), FieldError> {
    if !is_country_code(code) {
        return Err(FieldError::new(
            field,
            code,
            "must be an ISO 3166-1 alpha-2 country code in upper case, such as DE",
        ));
    }
    Ok(())
}

fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

fn evaluate_source_ip(condition: &SourceIpCondition, source_ip: IpAddr) -> Result<(), String> {
    let source_ip = canonical_ip(source_ip);
    if condition
        .allow
        .iter()
        .any(|network| network.0.contains(&source_ip))
    {
        return Ok(());
    }
    Err(format!(
        "source address {source_ip} is not in the allowed networks of access condition {:?}",
        condition.name
    ))
}

/// Maps IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) to IPv4, so a dual-stack listener does not
/// slip past an IPv4 allowlist.
pub fn canonical_ip(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
        IpAddr::V4(_) => address,
    }
}

/// Checks `now` against a schedule. `window_of` names the schedule in the reason, such as
/// "schedule of access condition" or "business hours of alert rule".
pub(crate) fn evaluate_time_window(
    condition: &TimeWindowCondition,
    now: Timestamp,
    window_of: &str,
) -> Result<(), String> {
    let zone = TimeZone::get(&condition.timezone).map_err(|_| {
        format!(
            "time zone {:?} of the {window_of} {:?} is unknown",
            condition.timezone, condition.name
        )
    })?;
    let local = now.to_zoned_datetime(zone);
    let today = weekday_of(local.weekday());
    let yesterday = weekday_of(local.weekday().previous());
    let minute =
        u32::from(local.hour().unsigned_abs()) * 60 + u32::from(local.minute().unsigned_abs());

    for entry in &condition.schedule {
        let (Some(start), Some(end)) = (parse_minutes(&entry.start), parse_minutes(&entry.end))
        else {
            continue;
        };
        let inside = if start < end {
            entry.days.contains(&today) && minute >= start && minute < end
        } else {
            // The window runs past midnight: the evening part belongs to a listed day, the early
            // part to the day after one.
            (entry.days.contains(&today) && minute >= start)
                || (entry.days.contains(&yesterday) && minute < end)
        };
        if inside {
            return Ok(());
        }
    }
    Err(format!(
        "{} ({}) is outside the {window_of} {:?}",
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
        return Err(FieldError::new(
            "schedule",
            "[]",
            "must have at least one entry",
        ));
    }
    for (index, entry) in condition.schedule.iter().enumerate() {
        let prefix = format!("schedule[{index}]");
        if entry.days.is_empty() {
            return Err(FieldError::new("days", "[]", "must list at least one day").within(&prefix));
        }
        let start = parse_minutes(&entry.start)
            .filter(|minutes| *minutes < 24 * 60)
            .ok_or_else(|| {
                FieldError::new(
                    "start",
                    &entry.start,
                    "must be a time HH:MM from 00:00 to 23:59",
                )
                .within(&prefix)
            })?;
        let end = parse_minutes(&entry.end).ok_or_else(|| {
            FieldError::new(
                "end",
                &entry.end,
                "must be a time HH:MM from 00:00 to 24:00",
            )
            .within(&prefix)
        })?;
        if start == end {
            return Err(
                FieldError::new("end", &entry.end, "must differ from start").within(&prefix)
            );
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
    Time::new(
        i8::try_from(hours % 24).ok()?,
        i8::try_from(minutes).ok()?,
        0,
        0,
    )
    .ok()?;
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
            schedule: vec![ScheduleEntry {
                days: days.to_vec(),
                start: start.to_string(),
                end: end.to_string(),
            }],
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn business_hours_in_berlin() {
        let hours = window(
            "Europe/Berlin",
            &[
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            "08:00",
            "18:00",
        );
        // 2026-12-07 is a Monday; Berlin is UTC+1 in December.
        assert!(evaluate_time_window(&hours, at("2026-12-07T07:00:00Z"), "schedule").is_ok());
        assert!(evaluate_time_window(&hours, at("2026-12-07T06:59:00Z"), "schedule").is_err());
        assert!(evaluate_time_window(&hours, at("2026-12-07T16:59:00Z"), "schedule").is_ok());
        assert!(evaluate_time_window(&hours, at("2026-12-07T17:00:00Z"), "schedule").is_err());
        // Saturday.
        assert!(evaluate_time_window(&hours, at("2026-12-05T10:00:00Z"), "schedule").is_err());
    }

    #[test]
    fn overnight_window_belongs_to_start_day() {
        let night = window("UTC", &[Weekday::Fri], "22:00", "06:00");
        // 2026-12-04 is a Friday.
        assert!(evaluate_time_window(&night, at("2026-12-04T23:00:00Z"), "schedule").is_ok());
        assert!(evaluate_time_window(&night, at("2026-12-05T05:59:00Z"), "schedule").is_ok());
        assert!(evaluate_time_window(&night, at("2026-12-05T06:00:00Z"), "schedule").is_err());
        assert!(evaluate_time_window(&night, at("2026-12-04T05:00:00Z"), "schedule").is_err());
    }

    #[test]
    fn daylight_saving_shift_follows_local_time() {
        let hours = window("Europe/Berlin", &[Weekday::Mon], "08:00", "09:00");
        // Summer time: UTC+2, so 08:30 local is 06:30 UTC.
        assert!(evaluate_time_window(&hours, at("2026-07-06T06:30:00Z"), "schedule").is_ok());
        assert!(evaluate_time_window(&hours, at("2026-07-06T07:30:00Z"), "schedule").is_err());
    }

    #[test]
    fn validation_names_the_bad_field() {
        let error =
            validate_time_window(&window("Mars/Olympus", &[Weekday::Mon], "08:00", "09:00"));
        assert_eq!(error.map_err(|e| e.field), Err("timezone".to_string()));
        let error = validate_time_window(&window("UTC", &[Weekday::Mon], "8:00", "09:00"));
        assert_eq!(
            error.map_err(|e| e.field),
            Err("schedule[0].start".to_string())
        );
        let error = validate_time_window(&window("UTC", &[Weekday::Mon], "08:00", "24:01"));
        assert_eq!(
            error.map_err(|e| e.field),
            Err("schedule[0].end".to_string())
        );
        assert!(validate_time_window(&window("UTC", &[Weekday::Mon], "08:00", "24:00")).is_ok());
    }

    #[test]
    fn source_ip_allowlist() {
        let allowlist = SourceIpCondition {
            name: "office".to_string(),
            allow: vec![Network("10.0.0.0/8".parse().unwrap_or_default())],
        };
        assert!(
            evaluate_source_ip(
                &allowlist,
                "10.1.2.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
            )
            .is_ok()
        );
        assert!(
            evaluate_source_ip(
                &allowlist,
                "11.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
            )
            .is_err()
        );
    }

    #[test]
    fn mapped_ipv6_does_not_bypass_ipv4_allowlist() {
        let allowlist = SourceIpCondition {
            name: "office".to_string(),
            allow: vec![Network("10.0.0.0/8".parse().unwrap_or_default())],
        };
        let mapped: IpAddr = "::ffff:10.0.0.1"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(evaluate_source_ip(&allowlist, mapped).is_ok());
        let outside: IpAddr = "::ffff:11.0.0.1"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(evaluate_source_ip(&allowlist, outside).is_err());
    }

    fn geo(countries: &[&str], subdivisions: &[&str]) -> GeoCondition {
        GeoCondition {
            name: "europe".to_string(),
            allow_countries: countries.iter().map(ToString::to_string).collect(),
            allow_subdivisions: subdivisions.iter().map(ToString::to_string).collect(),
        }
    }

    fn location(country: &str, subdivisions: &[&str]) -> Option<Location> {
        Some(Location {
            country: Some(country.to_string()),
            subdivisions: subdivisions.iter().map(ToString::to_string).collect(),
        })
    }

    const ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn geo_allows_listed_countries() {
        let condition = geo(&["DE", "FR"], &[]);
        assert!(evaluate_geo(&condition, ADDRESS, location("FR", &[]).as_ref()).is_ok());
        let denied = evaluate_geo(&condition, ADDRESS, location("US", &["US-CA"]).as_ref());
        assert!(
            denied
                .as_ref()
                .is_err_and(|reason| reason.contains("country US")),
            "{denied:?}"
        );
    }

    #[test]
    fn geo_unknown_location_fails_closed() {
        let condition = geo(&["DE"], &[]);
        let denied = evaluate_geo(&condition, ADDRESS, None);
        assert!(
            denied
                .as_ref()
                .is_err_and(|reason| reason.contains("no known location")),
            "{denied:?}"
        );
        let no_country = Location {
            country: None,
            subdivisions: vec!["DE-BE".to_string()],
        };
        assert!(evaluate_geo(&condition, ADDRESS, Some(&no_country)).is_err());
    }

    #[test]
    fn geo_subdivisions_restrict_only_their_country() {
        let condition = geo(&["DE", "FR"], &["DE-BE"]);
        assert!(evaluate_geo(&condition, ADDRESS, location("DE", &["DE-BE"]).as_ref()).is_ok());
        assert!(evaluate_geo(&condition, ADDRESS, location("FR", &["FR-IDF"]).as_ref()).is_ok());
        let denied = evaluate_geo(&condition, ADDRESS, location("DE", &["DE-BY"]).as_ref());
        assert!(
            denied
                .as_ref()
                .is_err_and(|reason| reason.contains("DE-BY")),
            "{denied:?}"
        );
        assert!(evaluate_geo(&condition, ADDRESS, location("DE", &[]).as_ref()).is_err());
    }

    #[test]
    fn geo_validation_names_the_bad_field() {
        let field = |condition: GeoCondition| validate_geo(&condition).map_err(|error| error.field);
        assert_eq!(field(geo(&[], &[])), Err("allow_countries".to_string()));
        assert_eq!(
            field(geo(&["de"], &[])),
            Err("allow_countries[0]".to_string())
        );
        assert_eq!(
            field(geo(&["DE", "DEU"], &[])),
            Err("allow_countries[1]".to_string())
        );
        assert_eq!(
            field(geo(&["DE"], &["DEBE"])),
            Err("allow_subdivisions[0]".to_string())
        );
        assert_eq!(
            field(geo(&["DE"], &["DE-BERLIN"])),
            Err("allow_subdivisions[0]".to_string())
        );
        assert_eq!(
            field(geo(&["DE"], &["FR-IDF"])),
            Err("allow_subdivisions[0]".to_string())
        );
        assert_eq!(field(geo(&["DE", "FR"], &["DE-BE", "FR-IDF"])), Ok(()));
    }

    #[test]
    fn geo_condition_parses_from_yaml() {
        let yaml = "{kind: geo, name: europe, allow_countries: [DE], allow_subdivisions: [DE-BE]}";
        let parsed: Result<AccessCondition, _> = serde_yaml_ng::from_str(yaml);
        assert_eq!(
            parsed.ok(),
            Some(AccessCondition::Geo(geo(&["DE"], &["DE-BE"])))
        );
        let unknown: Result<AccessCondition, _> =
            serde_yaml_ng::from_str("{kind: geo, name: e, allow_countries: [DE], cities: [x]}");
        assert!(unknown.is_err());
    }
}

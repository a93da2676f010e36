//! CronJob schedules: the standard 5-field cron parser with upstream's
//! (robfig/cron v3 `ParseStandard`) acceptance rules and error texts, and
//! the schedule it yields, which computes activation times as that library
//! does (in a time zone, DST included). Validation and the CronJob
//! controller both use it.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::errors::go_quote;

/// The bit robfig sets on a field written `*` or `?` (matters for day-of-month vs day-of-week).
const STAR: u64 = 1 << 63;

/// A parsed schedule: its fields as bit sets, or a constant delay (`@every`),
/// and the zone a `TZ=`/`CRON_TZ=` prefix named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
    /// The zone from the spec's prefix, if any; else the caller's zone applies.
    pub location: Option<Tz>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Spec { minute: u64, hour: u64, dom: u64, month: u64, dow: u64 },
    Every(Duration),
}

struct Bounds {
    min: u64,
    max: u64,
    names: &'static [&'static str],
    /// The value of `names[0]`.
    names_base: u64,
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
    names_base: 0,
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
    names_base: 0,
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
    names_base: 0,
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    names_base: 1,
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    names_base: 0,
};

/// Go's `strconv.Atoi` restricted to what cron needs, with its error text.
fn atoi(expr: &str) -> Result<i64, String> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "strconv.Atoi: parsing {}: invalid syntax",
            go_quote(expr)
        ));
    }
    expr.parse::<i64>().map_err(|_| {
        format!(
            "strconv.Atoi: parsing {}: value out of range",
            go_quote(expr)
        )
    })
}

fn must_parse_int(expr: &str) -> Result<u64, String> {
    let n = atoi(expr).map_err(|e| format!("failed to parse int from {expr}: {e}"))?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {expr}"));
    }
    Ok(n as u64)
}

fn parse_int_or_name(expr: &str, b: &Bounds) -> Result<u64, String> {
    let lower = expr.to_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(i as u64 + b.names_base);
    }
    must_parse_int(expr)
}

fn get_range(expr: &str, b: &Bounds) -> Result<u64, String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end);
    let mut extra = 0;
    if low_and_high[0] == "*" || low_and_high[0] == "?" {
        start = b.min;
        end = b.max;
        extra = STAR;
    } else {
        start = parse_int_or_name(low_and_high[0], b)?;
        end = match low_and_high.len() {
            1 => start,
            2 => parse_int_or_name(low_and_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            if single {
                end = b.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok((start..=end).step_by(step.min(64) as usize).fold(extra, |bits, i| bits | 1 << i))
}

fn get_field(field: &str, b: &Bounds) -> Result<u64, String> {
    let mut bits = 0;
    for expr in field.split(',').filter(|e| !e.is_empty()) {
        bits |= get_range(expr, b)?;
    }
    Ok(bits)
}

/// Every value of a field, as `*` sets it.
fn all(b: &Bounds) -> u64 {
    (b.min..=b.max).fold(STAR, |bits, i| bits | 1 << i)
}

/// Go's `time.ParseDuration`, with its error texts.
fn parse_duration(orig: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(orig));
    let negative = orig.starts_with('-');
    let mut s = orig.strip_prefix(['-', '+']).unwrap_or(orig);
    if s == "0" {
        return Ok(Duration::zero());
    }
    let mut nanos = 0f64;
    if s.is_empty() {
        return Err(invalid());
    }
    while !s.is_empty() {
        let num_len = s
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        let num = &s[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        s = &s[num_len..];
        let unit_len = s
            .chars()
            .take_while(|c| *c != '.' && !c.is_ascii_digit())
            .map(char::len_utf8)
            .sum::<usize>();
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        let unit = &s[..unit_len];
        let scale = match unit {
            "ns" => 1e0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit),
                    go_quote(orig)
                ))
            }
        };
        nanos += num.parse::<f64>().map_err(|_| invalid())? * scale;
        s = &s[unit_len..];
    }
    if nanos > i64::MAX as f64 {
        return Err(invalid());
    }
    let d = Duration::nanoseconds(nanos as i64);
    Ok(if negative { -d } else { d })
}

/// Whether an IANA zone name is known (the zone database is built in, as
/// upstream's API server embeds Go's).
pub(crate) fn known_time_zone(name: &str) -> bool {
    name == "Local" || zone(name).is_some()
}

/// A zone by IANA name; "Local" is this host's zone.
pub fn zone(name: &str) -> Option<Tz> {
    match name {
        "Local" => Some(local_zone()),
        "" | "UTC" => Some(Tz::UTC),
        _ => name.parse().ok(),
    }
}

/// This host's zone, as Go finds `time.Local`: `$TZ`, else the zone
/// `/etc/localtime` links to, else UTC.
pub fn local_zone() -> Tz {
    let from_env = std::env::var("TZ").ok().and_then(|v| v.trim_start_matches(':').parse().ok());
    let from_link = || {
        let target = std::fs::read_link("/etc/localtime").ok()?;
        let target = target.to_string_lossy().into_owned();
        target.split_once("zoneinfo/")?.1.parse().ok()
    };
    from_env.or_else(from_link).unwrap_or(Tz::UTC)
}

/// Parses a standard cron spec; the error text is upstream's.
pub fn parse_standard(spec: &str) -> Result<Schedule, String> {
    if spec.is_empty() {
        return Err("empty spec string".to_string());
    }
    let mut spec = spec;
    let mut location = None;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let eq = spec.find('=').unwrap_or(0);
        let Some(sp) = spec.find(' ') else {
            return Err(format!(
                "provided bad location {}: unknown time zone {}",
                &spec[eq + 1..],
                &spec[eq + 1..]
            ));
        };
        let loc = &spec[eq + 1..sp];
        location = Some(zone(loc).ok_or_else(|| {
            format!("provided bad location {loc}: unknown time zone {loc}")
        })?);
        spec = spec[sp..].trim();
    }
    let fields = |minute, hour, dom, month, dow| Kind::Spec { minute, hour, dom, month, dow };
    if spec.starts_with('@') {
        let kind = match spec {
            "@yearly" | "@annually" => fields(1, 1, 1 << 1, 1 << 1, all(&DOW)),
            "@monthly" => fields(1, 1, 1 << 1, all(&MONTHS), all(&DOW)),
            "@weekly" => fields(1, 1, all(&DOM), all(&MONTHS), 1),
            "@daily" | "@midnight" => fields(1, 1, all(&DOM), all(&MONTHS), all(&DOW)),
            "@hourly" => fields(1, all(&HOURS), all(&DOM), all(&MONTHS), all(&DOW)),
            _ => match spec.strip_prefix("@every ") {
                Some(d) => {
                    let d = parse_duration(d)
                        .map_err(|e| format!("failed to parse duration {spec}: {e}"))?;
                    // robfig rounds down to whole seconds, and waits at least one.
                    Kind::Every(Duration::seconds(d.num_seconds().max(1)))
                }
                None => return Err(format!("unrecognized descriptor: {spec}")),
            },
        };
        return Ok(Schedule { kind, location });
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let mut bits = [0u64; 5];
    for ((f, b), out) in fields.iter().zip([&MINUTES, &HOURS, &DOM, &MONTHS, &DOW]).zip(&mut bits) {
        *out = get_field(f, b)?;
    }
    let [minute, hour, dom, month, dow] = bits;
    Ok(Schedule { kind: Kind::Spec { minute, hour, dom, month, dow }, location })
}

impl Schedule {
    /// The first activation strictly after `after`, reckoned in the spec's
    /// zone or else in `zone` (robfig's `Next`); None when there is none
    /// within five years (e.g. February 30th).
    pub fn next(&self, after: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let (minute, hour, dom, month, dow) = match self.kind {
            Kind::Every(d) => {
                let t = after.with_nanosecond(0)? + d;
                return Some(t);
            }
            Kind::Spec { minute, hour, dom, month, dow } => (minute, hour, dom, month, dow),
        };
        let tz = self.location.unwrap_or(zone);
        // The next whole second; seconds are always 0 in a standard spec.
        let mut t = (after.with_nanosecond(0)? + Duration::seconds(1)).with_timezone(&tz);
        let year_limit = t.year() + 5;
        let mut added = false;
        'wrap: loop {
            if t.year() > year_limit {
                return None;
            }
            while month & 1 << t.month() == 0 {
                if !added {
                    added = true;
                    t = local(&tz, t.year(), t.month(), 1, 0, 0)?;
                }
                t = add_months(&tz, &t)?;
                if t.month() == 1 {
                    continue 'wrap;
                }
            }
            while !day_matches(dom, dow, &t) {
                if !added {
                    added = true;
                    t = local(&tz, t.year(), t.month(), t.day(), 0, 0)?;
                }
                let next = t.date_naive().succ_opt()?;
                t = local(&tz, next.year(), next.month(), next.day(), 0, 0)?;
                if t.day() == 1 {
                    continue 'wrap;
                }
            }
            while hour & 1 << t.hour() == 0 {
                if !added {
                    added = true;
                    t = local(&tz, t.year(), t.month(), t.day(), t.hour(), 0)?;
                }
                t += Duration::hours(1);
                if t.hour() == 0 {
                    continue 'wrap;
                }
            }
            while minute & 1 << t.minute() == 0 {
                if !added {
                    added = true;
                    t = t.with_second(0)?;
                }
                t += Duration::minutes(1);
                if t.minute() == 0 {
                    continue 'wrap;
                }
            }
            if t.second() != 0 {
                // Only reachable before anything was added: move to the next minute.
                t = t.with_second(0)? + Duration::minutes(1);
                added = true;
                continue 'wrap;
            }
            return Some(t.with_timezone(&Utc));
        }
    }
}

/// robfig's dayMatches: both day fields must match when either is `*`, else either may.
fn day_matches<T: TimeZone>(dom: u64, dow: u64, t: &DateTime<T>) -> bool {
    let dom_match = dom & 1 << t.day() != 0;
    let dow_match = dow & 1 << t.weekday().num_days_from_sunday() != 0;
    if dom & STAR != 0 || dow & STAR != 0 {
        dom_match && dow_match
    } else {
        dom_match || dow_match
    }
}

/// A wall-clock time in `tz`; a time skipped by a DST change moves past the
/// gap, a repeated one takes its first occurrence (as Go's time.Date).
fn local(tz: &Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Option<DateTime<Tz>> {
    let naive = NaiveDate::from_ymd_opt(y, mo, d)?.and_hms_opt(h, mi, 0)?;
    tz.from_local_datetime(&naive).earliest().or_else(|| tz.from_local_datetime(&(naive + Duration::hours(1))).earliest())
}

/// The first of the next month, midnight.
fn add_months(tz: &Tz, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
    let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    local(tz, y, m, 1, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(spec: &str, after: &str, zone: &str) -> String {
        let s = parse_standard(spec).unwrap();
        s.next(at(after), zone.parse().unwrap()).map(|t| t.to_rfc3339()).unwrap_or_default()
    }

    #[test]
    fn next_activation_times_follow_robfig() {
        assert_eq!(next("* * * * *", "2024-01-01T10:00:00Z", "UTC"), "2024-01-01T10:01:00+00:00");
        assert_eq!(next("* * * * *", "2024-01-01T10:00:30.5Z", "UTC"), "2024-01-01T10:01:00+00:00");
        assert_eq!(next("*/15 * * * *", "2024-01-01T10:07:00Z", "UTC"), "2024-01-01T10:15:00+00:00");
        assert_eq!(next("0 0 29 2 *", "2024-03-01T00:00:00Z", "UTC"), "2028-02-29T00:00:00+00:00");
        assert_eq!(next("0 0 30 2 *", "2024-03-01T00:00:00Z", "UTC"), "");
        // Day of month OR day of week when neither is `*`; AND when one is.
        assert_eq!(next("0 0 13 * 5", "2024-09-01T00:00:00Z", "UTC"), "2024-09-06T00:00:00+00:00");
        assert_eq!(next("0 0 */1 * 5", "2024-09-01T00:00:00Z", "UTC"), "2024-09-06T00:00:00+00:00");
        assert_eq!(next("@monthly", "2024-01-15T00:00:00Z", "UTC"), "2024-02-01T00:00:00+00:00");
        assert_eq!(next("@weekly", "2024-01-01T00:00:00Z", "UTC"), "2024-01-07T00:00:00+00:00");
        assert_eq!(next("@hourly", "2024-01-01T00:59:59Z", "UTC"), "2024-01-01T01:00:00+00:00");
        assert_eq!(next("@every 90s", "2024-01-01T00:00:00.7Z", "UTC"), "2024-01-01T00:01:30+00:00");
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 09:00 in New York is 14:00 UTC in winter and 13:00 in summer.
        assert_eq!(next("0 9 * * *", "2024-01-10T15:00:00Z", "America/New_York"), "2024-01-11T14:00:00+00:00");
        assert_eq!(next("0 9 * * *", "2024-07-10T15:00:00Z", "America/New_York"), "2024-07-11T13:00:00+00:00");
        assert_eq!(next("CRON_TZ=Asia/Tokyo 0 9 * * *", "2024-01-10T00:00:00Z", "UTC"), "2024-01-11T00:00:00+00:00");
        // 02:30 does not exist on 2024-03-10 in New York: that day is skipped, as robfig does.
        assert_eq!(next("30 2 * * *", "2024-03-09T12:00:00Z", "America/New_York"), "2024-03-11T06:30:00+00:00");
        assert!(parse_standard("TZ=Mars/Base 0 9 * * *").unwrap_err().contains("unknown time zone Mars/Base"));
    }
}

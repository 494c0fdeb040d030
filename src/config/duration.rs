//! Durations as Spring reads them (`500ms`, `2s`, ISO-8601 `PT2S`) and as Java's
//! `Duration.toString` writes them.

use std::time::Duration;

/// The longest duration accepted, `i64::MAX` nanoseconds (about 292 years): where Java's
/// `Duration.toNanos` overflows, and far enough from where adding it to `Instant::now()` would
/// (a deadline past that panics; fuzzing found `PT18446744073709551615S` accepted).
const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);
const TOO_LARGE: &str = "duration too large (at most 292 years)";

/// Parses a duration as Spring does: `500ms`, `2s`, `5m`, `1h`, `1d`, `10us`, `10ns`, ISO-8601
/// (`PT2S`, `PT0.5S`, `P1DT2H`), or a bare number in `bare_unit`.
pub fn parse_duration(text: &str, bare_unit: Duration) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".to_owned());
    }
    if t.starts_with(['P', 'p']) {
        return match parse_iso_unbounded(t) {
            None => Err("not an ISO-8601 duration".to_owned()),
            Some(d) if d > MAX_DURATION => Err(TOO_LARGE.to_owned()),
            Some(d) => Ok(d),
        };
    }
    let split = t.find(|c: char| !(c.is_ascii_digit())).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a duration such as 500ms, 2s, 5m or PT2S".to_owned())?;
    let d = match unit.trim().to_ascii_lowercase().as_str() {
        "" => bare_unit.checked_mul(u32::try_from(n).map_err(|_| "duration too large")?),
        "ns" => Some(Duration::from_nanos(n)),
        "us" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(86_400).map(Duration::from_secs),
        _ => return Err(format!("unknown duration unit '{unit}'")),
    };
    d.filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| TOO_LARGE.to_owned())
}

/// Parses the ISO-8601 duration forms Java's `Duration.parse` accepts (`PnDTnHnMn.nS`), without a
/// sign, up to [`MAX_DURATION`]. Returns `None` for anything else, including negative durations.
pub fn parse_iso_duration(text: &str) -> Option<Duration> {
    parse_iso_unbounded(text).filter(|d| *d <= MAX_DURATION)
}

fn parse_iso_unbounded(text: &str) -> Option<Duration> {
    let upper = text.trim().to_ascii_uppercase();
    let rest = upper.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return None;
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    if date.is_empty() && time.is_none() {
        return None;
    }
    // Checked: 26 digits of days overflow even u128 (found by fuzzing: P9999999999999999999999999D).
    let in_nanos = |number: &str, seconds: u128| {
        number
            .parse::<u128>()
            .ok()?
            .checked_mul(seconds * 1_000_000_000)
    };
    let mut nanos: u128 = 0;
    if !date.is_empty() {
        let days = date.strip_suffix('D')?;
        nanos = in_nanos(days, 86_400)?;
    }
    if let Some(mut t) = time {
        for (unit, scale) in [('H', 3600u128), ('M', 60), ('S', 1)] {
            if let Some(pos) = t.find(unit) {
                let number = &t[..pos];
                t = &t[pos + 1..];
                if unit == 'S' {
                    let (whole, frac) = number.split_once(['.', ',']).unwrap_or((number, ""));
                    if whole.is_empty() || frac.len() > 9 {
                        return None;
                    }
                    let f = if frac.is_empty() {
                        0
                    } else {
                        format!("{frac:0<9}").parse::<u128>().ok()?
                    };
                    nanos = nanos.checked_add(in_nanos(whole, 1)?.checked_add(f)?)?;
                } else {
                    nanos = nanos.checked_add(in_nanos(number, scale)?)?;
                }
            }
        }
        if !t.is_empty() {
            return None;
        }
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration as Java's `Duration.toString` does: `PT2S`, `PT0.5S`, `PT1M30S`, `PT0S`.
pub fn format_iso_duration(d: Duration) -> String {
    let total = d.as_secs();
    let nanos = d.subsec_nanos();
    if total == 0 && nanos == 0 {
        return "PT0S".to_owned();
    }
    let hours = total / 3600;
    let minutes = (total % 3600) / 60;
    let secs = total % 60;
    let mut out = String::from("PT");
    if hours > 0 {
        out.push_str(&format!("{hours}H"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}M"));
    }
    if secs > 0 || nanos > 0 {
        out.push_str(&secs.to_string());
        if nanos > 0 {
            let frac = format!("{nanos:09}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('S');
    }
    out
}

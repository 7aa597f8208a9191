//! JSON forms of the apimachinery types that do not marshal as objects: `Time`,
//! `MicroTime` and `Duration`, formatted exactly as Go's `encoding/json` does.

/// `meta/v1.Time`: RFC 3339 in UTC with whole seconds (`2024-01-02T03:04:05Z`).
/// `None` when the instant is outside the years 0..=9999 that RFC 3339 can write.
pub(crate) fn rfc3339(seconds: i64, nanos: i32) -> Option<String> {
    let ts = jiff::Timestamp::new(seconds, nanos.clamp(0, 999_999_999)).ok()?;
    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    if dt.year() < 0 {
        return None;
    }
    Some(dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// `meta/v1.MicroTime`: RFC 3339 in UTC with six fractional digits.
pub(crate) fn rfc3339_micro(seconds: i64, nanos: i32) -> Option<String> {
    let whole = rfc3339(seconds, nanos)?;
    let micros = nanos.clamp(0, 999_999_999) / 1000;
    let stem = whole.strip_suffix('Z')?;
    Some(format!("{stem}.{micros:06}Z"))
}

/// Go's `time.Duration.String()` of a count of nanoseconds: `1h2m3.5s`, `1.5ms`, `0s`.
pub(crate) fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".to_string();
    }
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000_000 {
        let (unit, scale) = if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{}{unit}", u / scale, fraction(u % scale, scale));
    }
    let secs = u / 1_000_000_000;
    let frac = fraction(u % 1_000_000_000, 1_000_000_000);
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}{frac}s"));
    out
}

/// `.5` for 500 of 1000; empty for 0. Trailing zeros are dropped, as Go does.
fn fraction(rest: u64, scale: u64) -> String {
    if rest == 0 {
        return String::new();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!(".{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats_like_go_rfc3339() {
        assert_eq!(rfc3339(1_704_164_645, 0).unwrap(), "2024-01-02T03:04:05Z");
        assert_eq!(
            rfc3339(1_704_164_645, 999_000_000).unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(rfc3339(0, 0).unwrap(), "1970-01-01T00:00:00Z");
        assert!(rfc3339(i64::MAX, 0).is_none());
    }

    #[test]
    fn micro_time_keeps_six_fractional_digits() {
        assert_eq!(
            rfc3339_micro(1_704_164_645, 120_000).unwrap(),
            "2024-01-02T03:04:05.000120Z"
        );
        assert_eq!(
            rfc3339_micro(1_704_164_645, 0).unwrap(),
            "2024-01-02T03:04:05.000000Z"
        );
    }

    #[test]
    fn durations_match_go_time_duration_string() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(999), "999ns");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(2_000_000), "2ms");
        assert_eq!(go_duration(1_000_000_000), "1s");
        assert_eq!(go_duration(90 * 1_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600 * 1_000_000_000), "1h0m0s");
        assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration(-1_500_000_000), "-1.5s");
        assert_eq!(go_duration(i64::MIN), "-2562047h47m16.854775808s");
    }
}

//! Human-readable ages, exactly as Kubernetes' `k8s.io/apimachinery/pkg/util/duration`.
//!
//! `kubectl get` shows what the server puts in the Table cells, so the AGE column must
//! read `3m20s`, `5h`, `2d3h` the way users know it from a real cluster.

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// `duration.HumanDuration`: about two or three significant figures, e.g. `90s`,
/// `3m20s`, `15m`, `5h10m`, `20h`, `2d3h`, `30d`, `2y45d`, `9y`.
pub fn human_duration(d: SignedDuration) -> String {
    // Go: `int(d.Seconds())`, truncating toward zero.
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{h}h", hours / 24)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{dy}d", hours / 24 / 365)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// `duration.ShortHumanDuration`: one unit only, e.g. `59s`, `5m`, `3h`, `12d`, `2y`.
pub fn short_human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        "<invalid>".to_string()
    } else if seconds < 0 {
        "0s".to_string()
    } else if seconds < 60 {
        format!("{seconds}s")
    } else if seconds / 60 < 60 {
        format!("{}m", seconds / 60)
    } else if seconds / 3600 < 24 {
        format!("{}h", seconds / 3600)
    } else if seconds / 3600 < 24 * 365 {
        format!("{}d", seconds / 3600 / 24)
    } else {
        format!("{}y", seconds / 3600 / 24 / 365)
    }
}

/// Parses a Kubernetes `Time` / `MicroTime` JSON value (RFC 3339); `None` when absent,
/// null or unparsable (Kubernetes' zero time).
pub(crate) fn parse_time(value: Option<&Value>) -> Option<Timestamp> {
    value?.as_str()?.parse().ok()
}

/// `translateTimestampSince`: the age of `ts` at `now`, `<unknown>` for a missing time.
pub(crate) fn since(now: Timestamp, ts: Option<Timestamp>) -> String {
    match ts {
        Some(ts) => human_duration(now.duration_since(ts)),
        None => "<unknown>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    #[test]
    fn human_duration_matches_kubernetes_breakpoints() {
        let cases = [
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (7 * 3600 + 59 * 60, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (7 * 86400 + 23 * 3600, "7d23h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (775 * 86400, "2y45d"),
            (8 * 365 * 86400, "8y"),
            (9 * 365 * 86400 + 5 * 86400, "9y"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(secs(s)), want, "{s} seconds");
        }
    }

    #[test]
    fn human_duration_truncates_sub_second_parts_toward_zero() {
        assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
        assert_eq!(human_duration(SignedDuration::from_millis(59_999)), "59s");
    }

    #[test]
    fn short_human_duration_uses_one_unit() {
        let cases = [
            (59, "59s"),
            (60, "1m"),
            (3599, "59m"),
            (3600, "1h"),
            (86400 * 3, "3d"),
            (86400 * 366, "1y"),
        ];
        for (s, want) in cases {
            assert_eq!(short_human_duration(secs(s)), want, "{s} seconds");
        }
    }

    #[test]
    fn since_reports_unknown_for_a_missing_or_bad_timestamp() {
        let now: Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
        assert_eq!(since(now, parse_time(None)), "<unknown>");
        assert_eq!(since(now, parse_time(Some(&Value::Null))), "<unknown>");
        assert_eq!(since(now, parse_time(Some(&"garbage".into()))), "<unknown>");
        let created = parse_time(Some(&"2025-01-01T00:06:40Z".into()));
        assert_eq!(since(now, created), "3m20s");
    }
}

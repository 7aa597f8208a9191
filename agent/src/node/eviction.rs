//! Hard eviction thresholds, as the kubelet's `--eviction-hard`: below them the node reports
//! MemoryPressure or DiskPressure (and the node lifecycle controller taints it), and they are
//! held back from allocatable.
//!
//! The syntax is the kubelet's: `memory.available<100Mi,nodefs.available<10%`. As in Kubernetes,
//! a flag that is given replaces the defaults: a signal it does not name has no threshold.
//! Test clusters (kind, and this project's harness) set `nodefs.available<0%` so that a shared
//! machine's disk does not taint their nodes.

use std::str::FromStr;

/// The kubelet's default: `memory.available<100Mi,nodefs.available<10%`.
pub const DEFAULT_EVICTION_HARD: &str = "memory.available<100Mi,nodefs.available<10%";

/// One threshold: an amount of a resource, or a percentage of its capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Bytes.
    Quantity(i64),
    /// Percent of capacity, 0-100.
    Percentage(f64),
}

impl Threshold {
    /// The threshold in bytes for a resource of `capacity` bytes.
    pub fn bytes(&self, capacity: i64) -> i64 {
        match *self {
            Threshold::Quantity(bytes) => bytes,
            Threshold::Percentage(percent) => (capacity as f64 * percent / 100.0) as i64,
        }
    }
}

/// The hard eviction thresholds of a node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvictionHard {
    /// `memory.available`.
    pub memory_available: Option<Threshold>,
    /// `nodefs.available`: the filesystem of the agent's data directory.
    pub nodefs_available: Option<Threshold>,
}

impl Default for EvictionHard {
    fn default() -> Self {
        DEFAULT_EVICTION_HARD
            .parse()
            .expect("the default eviction thresholds parse")
    }
}

impl EvictionHard {
    /// Whether `available` bytes of a resource of `capacity` bytes is under `threshold`.
    /// A resource the agent could not measure (`capacity` 0) is never under pressure.
    pub fn under(threshold: Option<Threshold>, available: i64, capacity: i64) -> bool {
        match threshold {
            Some(t) if capacity > 0 => available < t.bytes(capacity),
            _ => false,
        }
    }
}

/// Why an `--eviction-hard` value does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0} (expected e.g. memory.available<100Mi,nodefs.available<10%)")]
pub struct ParseEvictionError(String);

impl FromStr for EvictionHard {
    type Err = ParseEvictionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut hard = EvictionHard {
            memory_available: None,
            nodefs_available: None,
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((signal, value)) = item.split_once('<') else {
                return Err(ParseEvictionError(format!(
                    "{item:?}: a threshold is SIGNAL<VALUE"
                )));
            };
            let threshold = parse_threshold(value.trim())
                .map_err(|why| ParseEvictionError(format!("{item:?}: {why}")))?;
            let slot = match signal.trim() {
                "memory.available" => &mut hard.memory_available,
                // One filesystem holds both the agent's data and its images.
                "nodefs.available" | "imagefs.available" => &mut hard.nodefs_available,
                other => {
                    return Err(ParseEvictionError(format!(
                        "unknown eviction signal {other:?}; supported: memory.available, \
                         nodefs.available, imagefs.available"
                    )));
                }
            };
            *slot = Some(threshold);
        }
        Ok(hard)
    }
}

fn parse_threshold(value: &str) -> Result<Threshold, String> {
    if let Some(percent) = value.strip_suffix('%') {
        let p: f64 = percent
            .parse()
            .map_err(|_| format!("{value:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("{value:?} is not between 0% and 100%"));
        }
        return Ok(Threshold::Percentage(p));
    }
    let q = wasmkube_api::parse_quantity(value)
        .map_err(|_| format!("{value:?} is neither a quantity nor a percentage"))?;
    let bytes = i64::try_from(q.value()).map_err(|_| format!("{value:?} is too large"))?;
    if bytes < 0 {
        return Err(format!("{value:?} is negative"));
    }
    Ok(Threshold::Quantity(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_kubelets() {
        let d = EvictionHard::default();
        assert_eq!(d.memory_available, Some(Threshold::Quantity(100 << 20)));
        assert_eq!(d.nodefs_available, Some(Threshold::Percentage(10.0)));
    }

    #[test]
    fn a_given_flag_replaces_the_defaults() {
        let h: EvictionHard = "nodefs.available<0%".parse().unwrap();
        assert_eq!(h.memory_available, None);
        assert!(!EvictionHard::under(h.nodefs_available, 0, 100));
        assert!(!EvictionHard::under(h.memory_available, 1, 100));
        let h: EvictionHard = "memory.available<1Gi, imagefs.available<2Gi"
            .parse()
            .unwrap();
        assert_eq!(h.memory_available, Some(Threshold::Quantity(1 << 30)));
        assert_eq!(h.nodefs_available, Some(Threshold::Quantity(2 << 30)));
    }

    #[test]
    fn pressure_is_available_under_the_threshold() {
        let d = EvictionHard::default();
        assert!(EvictionHard::under(d.nodefs_available, 9, 100));
        assert!(!EvictionHard::under(d.nodefs_available, 10, 100));
        assert!(!EvictionHard::under(d.nodefs_available, 0, 0), "unmeasured");
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        for (bad, says) in [
            ("memory.available=1Gi", "SIGNAL<VALUE"),
            ("pid.available<10", "unknown eviction signal"),
            ("nodefs.available<110%", "between 0% and 100%"),
            ("nodefs.available<lots", "neither a quantity"),
        ] {
            let e = bad.parse::<EvictionHard>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

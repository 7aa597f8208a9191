//! The open-file limit (`RLIMIT_NOFILE`).
//!
//! An idle pod with a listener holds three descriptors (its listening socket and two handles
//! on its ServiceAccount token volume), a pod with a running instance four (its log file and
//! three on the volume), and the apiserver one per client connection: a node of 10,000 pods
//! needs more than 30,000 (docs/benchmarks.md). Most systems start a process with a soft
//! limit of 1,024 and a much higher hard limit (systemd: 1,024 / 524,288), so at start the
//! soft limit is raised to the hard one, as Go's runtime does for every program since Go 1.19
//! and systemd recommends for services that need many descriptors. Raising the hard limit itself needs privilege: `LimitNOFILE=` in a systemd
//! unit, `ulimit -Hn` in the starting shell, or `--ulimit nofile=` for a container.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The highest soft limit Linux accepts when the hard limit is unlimited: `fs.nr_open`'s
/// default.
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// The soft limit before and after [`raise_to_hard_limit`]; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFileLimit {
    /// The soft limit the process started with.
    pub(crate) previous: Option<u64>,
    /// The soft limit now.
    pub(crate) current: Option<u64>,
    /// The hard limit.
    pub(crate) hard: Option<u64>,
}

/// Raises the soft open-file limit to the hard limit (or, when that is unlimited, to
/// `fs.nr_open`, the most the kernel allows).
pub(crate) fn raise_to_hard_limit() -> Result<OpenFileLimit, rustix::io::Errno> {
    let start = getrlimit(Resource::Nofile);
    let target = start.maximum.unwrap_or_else(nr_open);
    if start.current.is_none_or(|soft| soft >= target) {
        return Ok(OpenFileLimit {
            previous: start.current,
            current: start.current,
            hard: start.maximum,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: start.maximum,
        },
    )?;
    let now = getrlimit(Resource::Nofile);
    Ok(OpenFileLimit {
        previous: start.current,
        current: now.current,
        hard: now.maximum,
    })
}

/// [`raise_to_hard_limit`], logged: the limit bounds how many pods with listeners a node runs.
pub(crate) fn raise_and_log() {
    match raise_to_hard_limit() {
        Ok(limit) if limit.previous != limit.current => tracing::info!(
            from = %as_ulimit(limit.previous),
            to = %as_ulimit(limit.current),
            hard = %as_ulimit(limit.hard),
            "raised the open-file limit (RLIMIT_NOFILE) to the hard limit"
        ),
        Ok(limit) => tracing::info!(
            soft = %as_ulimit(limit.current),
            hard = %as_ulimit(limit.hard),
            "open-file limit (RLIMIT_NOFILE)"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot raise the open-file limit (RLIMIT_NOFILE); pods may run out of descriptors"
        ),
    }
}

/// A limit as `ulimit` prints it.
fn as_ulimit(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

/// `fs.nr_open`, the most descriptors a process may be allowed.
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NR_OPEN_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let start = getrlimit(Resource::Nofile);
        let hard = start.maximum.unwrap_or_else(nr_open);
        // One below the hard limit: low enough to be raised, high enough that tests running
        // beside this one cannot run out of descriptors meanwhile.
        let lowered = hard.saturating_sub(1).max(1);
        if let Err(e) = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(lowered),
                maximum: start.maximum,
            },
        ) {
            panic!("lowering the soft limit: {e}");
        }
        let limit = raise_to_hard_limit().unwrap_or_else(|e| panic!("raising: {e}"));
        assert_eq!(limit.previous, Some(lowered));
        assert_eq!(limit.current, Some(hard));
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
        // Already at the hard limit: nothing changes.
        let again = raise_to_hard_limit().unwrap_or_else(|e| panic!("raising again: {e}"));
        assert_eq!(again.previous, again.current);
    }

    #[test]
    fn limits_are_shown_as_ulimit_shows_them() {
        assert_eq!(as_ulimit(None), "unlimited");
        assert_eq!(as_ulimit(Some(20_000)), "20000");
    }
}

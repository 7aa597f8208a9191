//! CrashLoopBackOff: how long a container that keeps exiting waits before its next restart.
//!
//! This follows the kubelet (`flowcontrol.Backoff` keyed by pod and container): the first
//! restart after an exit is immediate; each restart after that waits twice as long as the
//! previous one, starting at 10 s and capped at 5 min. A container that ran for longer than
//! 10 min (twice the cap) since its last restart starts over at the beginning: it restarts at
//! once and the next wait is 10 s again.
//!
//! Pure: every method takes the current `Instant`, so the math is tested without clocks.

use std::time::{Duration, Instant};

/// The first back-off delay.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The longest back-off delay.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long since its last restart has its back-off reset.
pub(crate) const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// Back-off state of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CrashBackoff {
    /// The delay in force, once the container has been restarted at least once.
    delay: Option<Duration>,
    /// When the container was last restarted.
    last_restart: Option<Instant>,
}

impl CrashBackoff {
    /// A fresh state: the next restart is immediate.
    pub(crate) fn new() -> CrashBackoff {
        CrashBackoff::default()
    }

    /// How long after `now` a container that finished at `finished_at` must wait before it
    /// may restart. `Duration::ZERO` means restart now.
    pub(crate) fn remaining(&self, finished_at: Instant, now: Instant) -> Duration {
        let (Some(delay), Some(last)) = (self.delay, self.last_restart) else {
            return Duration::ZERO;
        };
        if now.saturating_duration_since(last) > BACKOFF_RESET_AFTER {
            return Duration::ZERO;
        }
        (finished_at + delay).saturating_duration_since(now)
    }

    /// Records that the container is being restarted at `now`; it finished at `finished_at`.
    /// The delay for the exit after this restart doubles (up to [`MAX_BACKOFF`]), or starts
    /// over at [`INITIAL_BACKOFF`] when the container had run long enough.
    pub(crate) fn record_restart(&mut self, finished_at: Instant, now: Instant) {
        let expired = self
            .last_restart
            .is_none_or(|last| finished_at.saturating_duration_since(last) > BACKOFF_RESET_AFTER);
        self.delay = match self.delay {
            Some(delay) if !expired => Some((delay * 2).min(MAX_BACKOFF)),
            _ => Some(INITIAL_BACKOFF),
        };
        self.last_restart = Some(now);
    }

    /// The delay in force (for messages such as "back-off 20s restarting failed container").
    pub(crate) fn current_delay(&self) -> Duration {
        self.delay.unwrap_or(Duration::ZERO)
    }
}

/// Formats a back-off delay like Go's `time.Duration.String()` for whole seconds and
/// minutes (`10s`, `40s`, `2m40s`, `5m0s`), as the kubelet's messages show it.
pub(crate) fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a container that exits `run` after each start, returning the waits.
    fn waits(run: Duration, exits: usize) -> Vec<Duration> {
        let mut b = CrashBackoff::new();
        let mut now = Instant::now();
        let mut out = Vec::new();
        for _ in 0..exits {
            now += run;
            let finished = now;
            let wait = b.remaining(finished, now);
            out.push(wait);
            now += wait;
            b.record_restart(finished, now);
        }
        out
    }

    #[test]
    fn first_restart_is_immediate_then_doubles_from_ten_seconds() {
        let w = waits(Duration::from_millis(5), 5);
        let secs: Vec<u64> = w.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![0, 10, 20, 40, 80]);
    }

    #[test]
    fn delay_is_capped_at_five_minutes() {
        let w = waits(Duration::from_millis(5), 10);
        assert_eq!(w.last().copied(), Some(MAX_BACKOFF));
        assert!(w.iter().all(|d| *d <= MAX_BACKOFF));
    }

    #[test]
    fn a_container_that_ran_ten_minutes_restarts_at_once_and_starts_over() {
        let mut b = CrashBackoff::new();
        let t0 = Instant::now();
        // Crash twice quickly: the delay is now 10 s, then 20 s.
        b.record_restart(t0, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.remaining(t1, t1), INITIAL_BACKOFF);
        b.record_restart(t1, t1 + INITIAL_BACKOFF);
        assert_eq!(b.current_delay(), Duration::from_secs(20));
        // Then run for 11 minutes.
        let t2 = t1 + INITIAL_BACKOFF + Duration::from_secs(660);
        assert_eq!(b.remaining(t2, t2), Duration::ZERO);
        b.record_restart(t2, t2);
        assert_eq!(b.current_delay(), INITIAL_BACKOFF);
    }

    #[test]
    fn remaining_shrinks_as_time_passes() {
        let mut b = CrashBackoff::new();
        let t0 = Instant::now();
        b.record_restart(t0, t0);
        let finished = t0 + Duration::from_secs(2);
        let later = finished + Duration::from_secs(4);
        assert_eq!(b.remaining(finished, later), Duration::from_secs(6));
        assert_eq!(
            b.remaining(finished, finished + Duration::from_secs(30)),
            Duration::ZERO
        );
    }

    #[test]
    fn go_duration_formats_like_the_kubelet() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(160)), "2m40s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}

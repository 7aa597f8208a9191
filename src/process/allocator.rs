//! Handing the memory glibc's malloc keeps after a burst of work back to the kernel.
//!
//! glibc gives freed memory back only from the top of an arena; what is freed below a live
//! allocation stays resident in the arena's free lists for reuse. A burst — 1,000 pods
//! created, a large LIST — frees tens of MiB that way, and a process that then sits idle
//! keeps it: after 1,000 idle pods were created, 28 KiB per pod of the server's RSS was such
//! free memory (docs/benchmarks.md). `malloc_trim(0)` walks every arena and `madvise`s its
//! free pages away.
//!
//! When: [`run`] reads the process's CPU time every second; a second with at least 100 ms
//! of it is busy, and once two quiet seconds follow a busy one the allocator is trimmed,
//! once, on a blocking thread (the walk takes milliseconds on a large heap and takes each
//! arena's lock in turn, so it never runs while the process is busy: its free memory is
//! about to be reused). An idle process is not trimmed again until it has been busy.
//!
//! Only with glibc (`target_env = "gnu"`); with another C library this does nothing.
//! `WASMKUBE_MALLOC_TRIM=0` turns it off.

use std::sync::Arc;
use std::time::Duration;

/// The environment variable that turns the trim off (`0`, `false` or `off`).
const DISABLE_ENV: &str = "WASMKUBE_MALLOC_TRIM";

/// When to trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrimPolicy {
    /// How often the process's CPU time is read.
    pub(crate) sample: Duration,
    /// CPU time within one sample at or above which the process is busy.
    pub(crate) busy_cpu: Duration,
    /// Quiet samples in a row after a busy one before the trim.
    pub(crate) quiet_samples: u32,
}

impl Default for TrimPolicy {
    fn default() -> Self {
        Self {
            sample: Duration::from_secs(1),
            busy_cpu: Duration::from_millis(100),
            quiet_samples: 2,
        }
    }
}

/// Decides, one CPU-time sample at a time, when a burst has ended.
#[derive(Debug)]
struct BurstTracker {
    policy: TrimPolicy,
    /// Whether the process was busy since the last trim.
    busy_since_trim: bool,
    /// Quiet samples since the last busy one.
    quiet: u32,
}

impl BurstTracker {
    fn new(policy: TrimPolicy) -> Self {
        Self {
            policy,
            busy_since_trim: false,
            quiet: 0,
        }
    }

    /// Takes the CPU time used during one sample; true when the allocator should be trimmed
    /// now.
    fn observe(&mut self, cpu: Duration) -> bool {
        if cpu >= self.policy.busy_cpu {
            self.busy_since_trim = true;
            self.quiet = 0;
            return false;
        }
        if !self.busy_since_trim {
            return false;
        }
        self.quiet += 1;
        if self.quiet < self.policy.quiet_samples {
            return false;
        }
        self.busy_since_trim = false;
        self.quiet = 0;
        true
    }
}

/// Starts [`run`] with the default policy, glibc's `malloc_trim` and the process's CPU
/// clock, unless [`DISABLE_ENV`] turns it off or the C library is not glibc.
pub(crate) fn start(stopped: impl Future<Output = ()> + Send + 'static) {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    if std::env::var(DISABLE_ENV).is_ok_and(|v| matches!(v.trim(), "0" | "false" | "off")) {
        tracing::info!("{DISABLE_ENV} is off: freed heap memory is left to the allocator");
        return;
    }
    tokio::spawn(run(
        TrimPolicy::default(),
        process_cpu_time,
        Arc::new(malloc_trim),
        stopped,
    ));
}

/// Samples `cpu_time` (a monotonic clock of the CPU the process used) every
/// `policy.sample` and calls `trim` on a blocking thread whenever a burst has ended, until
/// `stopped` resolves.
pub(crate) async fn run(
    policy: TrimPolicy,
    mut cpu_time: impl FnMut() -> Duration + Send,
    trim: Arc<dyn Fn() -> bool + Send + Sync>,
    stopped: impl Future<Output = ()> + Send,
) {
    let mut tracker = BurstTracker::new(policy);
    let mut ticks = tokio::time::interval(policy.sample);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = cpu_time();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = ticks.tick() => {}
        }
        let now = cpu_time();
        let used = now.saturating_sub(last);
        last = now;
        if !tracker.observe(used) {
            continue;
        }
        let trim = Arc::clone(&trim);
        let trimmed = tokio::task::spawn_blocking(move || {
            let before = resident_kib();
            let released = trim();
            (before, released, resident_kib())
        })
        .await;
        if let Ok((before, released, after)) = trimmed {
            tracing::debug!(
                rss_before_kib = before,
                rss_after_kib = after,
                released,
                "a burst ended: returned the allocator's free memory to the kernel"
            );
        }
        // The trim's own CPU time is not a burst.
        last = cpu_time();
    }
}

/// The CPU time the whole process has used (`CLOCK_PROCESS_CPUTIME_ID`).
fn process_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The process's resident set (`VmRSS`), in KiB; 0 if unreadable.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `malloc_trim(0)`: glibc returns the free pages of every arena to the kernel. True when
/// it released anything.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn malloc_trim() -> bool {
    // SAFETY: malloc_trim(3) takes no pointer and has no precondition; glibc takes each
    // arena's lock while it trims it, so other threads may allocate and free meanwhile.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Without glibc there is no `malloc_trim`.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

    use super::*;

    const BUSY: Duration = Duration::from_millis(500);
    const QUIET: Duration = Duration::from_millis(10);

    fn tracker() -> BurstTracker {
        BurstTracker::new(TrimPolicy::default())
    }

    #[test]
    fn an_idle_process_is_never_trimmed() {
        let mut t = tracker();
        assert!((0..100).all(|_| !t.observe(QUIET)));
    }

    #[test]
    fn a_burst_is_trimmed_once_after_two_quiet_samples() {
        let mut t = tracker();
        assert!(!t.observe(BUSY));
        assert!(!t.observe(BUSY));
        assert!(!t.observe(QUIET));
        assert!(t.observe(QUIET));
        assert!((0..100).all(|_| !t.observe(QUIET)));
    }

    #[test]
    fn a_busy_sample_between_quiet_ones_restarts_the_wait() {
        let mut t = tracker();
        assert!(!t.observe(BUSY));
        assert!(!t.observe(QUIET));
        assert!(!t.observe(BUSY));
        assert!(!t.observe(QUIET));
        assert!(t.observe(QUIET));
    }

    #[test]
    fn the_next_burst_is_trimmed_again() {
        let mut t = tracker();
        for _ in 0..2 {
            assert!(!t.observe(BUSY));
            assert!(!t.observe(QUIET));
            assert!(t.observe(QUIET));
        }
    }

    #[tokio::test]
    async fn the_trim_runs_once_the_process_is_quiet_after_a_burst() {
        let policy = TrimPolicy {
            sample: Duration::from_millis(2),
            ..TrimPolicy::default()
        };
        // A CPU clock that is busy for its first three samples, then quiet.
        let reads = Arc::new(AtomicU32::new(0));
        let clock = {
            let reads = Arc::clone(&reads);
            let mut cpu = Duration::ZERO;
            move || {
                if reads.fetch_add(1, Ordering::SeqCst) <= 3 {
                    cpu += BUSY;
                }
                cpu
            }
        };
        let trims = Arc::new(AtomicUsize::new(0));
        let trim = {
            let trims = Arc::clone(&trims);
            Arc::new(move || {
                trims.fetch_add(1, Ordering::SeqCst);
                true
            })
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(policy, clock, trim, async move {
            let _ = stopped.await;
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while trims.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no trim after the burst"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Many quiet samples later there has been no second trim.
        let seen = reads.load(Ordering::SeqCst);
        while reads.load(Ordering::SeqCst) < seen + 20 {
            assert!(tokio::time::Instant::now() < deadline, "sampling stopped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(trims.load(Ordering::SeqCst), 1);
        let _ = stop.send(());
        if let Err(e) = task.await {
            panic!("the trim task failed: {e}");
        }
    }

    #[test]
    fn glibc_trims_memory_freed_below_live_allocations() {
        // Many small blocks, fifteen of every sixteen freed (the last one kept): free runs of
        // whole pages below live allocations, which glibc's own trimming at the top of the
        // heap cannot return.
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![(i % 251) as u8; 2048]).collect();
        let kept: Vec<Vec<u8>> = blocks
            .drain(..)
            .enumerate()
            .filter_map(|(i, b)| (i % 16 == 15).then_some(b))
            .collect();
        let released = malloc_trim();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(released, "malloc_trim released nothing");
        }
        assert_eq!(kept.len(), 1_250);
        assert!(kept.iter().all(|b| b.len() == 2048));
    }

    #[test]
    fn the_process_cpu_clock_and_rss_are_readable() {
        let first = process_cpu_time();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time() >= first);
        assert!(resident_kib() > 0);
    }
}

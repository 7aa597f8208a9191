//! CPU quotas: `resources.limits.cpu` as a CFS bandwidth limit.
//!
//! A [`CpuQuota`] of `m` millicores allows `m / 1000 * period` of CPU time per period (Linux
//! CFS's `cpu.cfs_quota_us` over `cpu.cfs_period_us`, which the kubelet derives from
//! `limits.cpu` the same way: 100m is 10 ms every 100 ms). [`Throttled`] wraps the future
//! that runs a guest: each poll is charged the CPU time its thread spent in it (the thread's
//! own CPU clock, so time the operating system gave to other threads is not counted), and
//! once the quota of a period is spent the future is not polled again before the next
//! period. One quota may be shared: every instance of an HTTP handler draws on its
//! container's.
//!
//! Guests give the executor back their thread at every epoch tick (the epoch-deadline
//! callback yields), so a spinning guest returns from a poll at least once a tick and
//! overshoots its quota by at most about a tick. The overshoot is carried over as debt into
//! the following periods, so over a few periods the guest gets its share and no more.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};

/// The CPU bandwidth of one container: a quota per period, and what was used of it.
#[derive(Debug)]
pub(crate) struct CpuQuota {
    quota: Duration,
    period: Duration,
    state: Mutex<QuotaState>,
}

#[derive(Debug)]
struct QuotaState {
    /// Start of the current period.
    period_start: Instant,
    /// CPU time charged to the current period (debt of earlier ones included).
    used: Duration,
}

impl CpuQuota {
    /// A quota of `millicores` per `period`; `None` for 0 (no limit, as the kubelet sets no
    /// CFS quota for a zero limit).
    pub(crate) fn new(millicores: u64, period: Duration) -> Option<Arc<Self>> {
        if millicores == 0 || period.is_zero() {
            return None;
        }
        let period_nanos = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        let quota = Duration::from_nanos(period_nanos.saturating_mul(millicores) / 1000);
        Some(Arc::new(Self {
            quota: quota.max(Duration::from_micros(1)),
            period,
            state: Mutex::new(QuotaState {
                period_start: Instant::now(),
                used: Duration::ZERO,
            }),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QuotaState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the state to the period holding `now`, paying a quota of debt per period passed.
    fn roll(&self, state: &mut QuotaState, now: Instant) {
        let elapsed = now.saturating_duration_since(state.period_start);
        if elapsed < self.period {
            return;
        }
        let periods = elapsed.as_nanos() / self.period.as_nanos();
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        state.period_start += self.period.saturating_mul(periods);
        state.used = state
            .used
            .saturating_sub(self.quota.saturating_mul(periods));
    }

    /// When the guest may run again, if its quota is spent at `now`.
    pub(crate) fn throttled_until(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        self.roll(&mut state, now);
        if state.used < self.quota {
            return None;
        }
        // Debt beyond this period's quota keeps the guest off for as many more periods.
        let periods = state.used.as_nanos() / self.quota.as_nanos();
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        Some(state.period_start + self.period.saturating_mul(periods))
    }

    /// Charges `cpu` of CPU time used at `now`.
    pub(crate) fn charge(&self, cpu: Duration, now: Instant) {
        let mut state = self.state();
        self.roll(&mut state, now);
        state.used = state.used.saturating_add(cpu);
    }
}

/// The CPU time the calling thread has used so far.
fn thread_cpu_time() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A future run within a [`CpuQuota`] (or without one: then it is polled as is).
pub(crate) struct Throttled<'a, T> {
    inner: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
    quota: Option<Arc<CpuQuota>>,
    /// Set while the quota is spent: the wait for the next period.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a, T> Throttled<'a, T> {
    /// Runs `inner` within `quota`.
    pub(crate) fn new(
        inner: impl Future<Output = T> + Send + 'a,
        quota: Option<Arc<CpuQuota>>,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
            quota,
            wait: None,
        }
    }
}

impl<T> Future for Throttled<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        let Some(quota) = this.quota.clone() else {
            return this.inner.as_mut().poll(cx);
        };
        loop {
            if let Some(wait) = this.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                this.wait = None;
            }
            match quota.throttled_until(Instant::now()) {
                Some(until) => {
                    this.wait = Some(Box::pin(tokio::time::sleep_until(until.into())));
                }
                None => break,
            }
        }
        let before = thread_cpu_time();
        let result = this.inner.as_mut().poll(cx);
        quota.charge(thread_cpu_time().saturating_sub(before), Instant::now());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(100);

    #[test]
    fn a_quota_is_its_share_of_the_period() {
        let quota = CpuQuota::new(100, PERIOD).expect("a quota");
        assert_eq!(quota.quota, Duration::from_millis(10));
        let two_cores = CpuQuota::new(2000, PERIOD).expect("a quota");
        assert_eq!(two_cores.quota, Duration::from_millis(200));
        assert!(CpuQuota::new(0, PERIOD).is_none());
    }

    #[test]
    fn a_guest_is_throttled_once_its_quota_is_spent_until_the_next_period() {
        let quota = CpuQuota::new(100, PERIOD).expect("a quota");
        let start = quota.state().period_start;
        assert_eq!(quota.throttled_until(start), None);
        quota.charge(Duration::from_millis(6), start);
        assert_eq!(quota.throttled_until(start), None);
        quota.charge(Duration::from_millis(6), start + Duration::from_millis(20));
        assert_eq!(
            quota.throttled_until(start + Duration::from_millis(30)),
            Some(start + PERIOD)
        );
        // The 2 ms overshoot is carried into the next period.
        assert_eq!(quota.throttled_until(start + PERIOD), None);
        quota.charge(Duration::from_millis(8), start + PERIOD);
        assert_eq!(
            quota.throttled_until(start + PERIOD),
            Some(start + PERIOD * 2)
        );
    }

    #[test]
    fn a_long_overshoot_throttles_for_as_many_periods_as_it_used() {
        let quota = CpuQuota::new(100, PERIOD).expect("a quota");
        let start = quota.state().period_start;
        quota.charge(Duration::from_millis(35), start);
        assert_eq!(quota.throttled_until(start), Some(start + PERIOD * 3));
        assert_eq!(
            quota.throttled_until(start + PERIOD * 3),
            None,
            "30 ms of debt are paid after three periods"
        );
    }

    #[test]
    fn idle_periods_do_not_build_up_credit() {
        let quota = CpuQuota::new(100, PERIOD).expect("a quota");
        let start = quota.state().period_start;
        let later = start + PERIOD * 50;
        quota.charge(Duration::from_millis(10), later);
        assert_eq!(quota.throttled_until(later), Some(start + PERIOD * 51));
    }

    #[test]
    fn the_thread_cpu_clock_counts_work_not_sleep() {
        let before = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time().saturating_sub(before);
        let before = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time().saturating_sub(before) < Duration::from_millis(5) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(slept < Duration::from_millis(5), "sleeping used {slept:?}");
    }
}

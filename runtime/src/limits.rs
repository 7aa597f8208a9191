//! Resource limits of one guest and the bookkeeping that tells, afterwards, which limit
//! ended it.
//!
//! - Memory: [`GuestLimiter`] is the store's `ResourceLimiter`. It sums the growth of every
//!   linear memory in the store (a component has several) and, when a grow would pass the
//!   limit, records the hit and fails the grow with an error, which traps the guest. The
//!   recorded hit is what turns that trap into [`Outcome::OutOfMemory`](crate::Outcome),
//!   rather than guessing from a message. Tables, instances and memories are counted too.
//! - CPU and stops: [`Control`] is shared between the store's epoch-deadline callback and
//!   the caller's [`Stopper`](crate::Stopper). Every epoch tick the guest spends in wasm
//!   code the callback runs: it interrupts the guest when a stop was requested or the CPU
//!   budget is spent, and otherwise yields to the async executor so a busy guest never
//!   holds an executor thread for more than one tick.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use wasmtime::{ResourceLimiter, UpdateDeadline};

/// Most elements a table may grow to.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// Most core instances in one store (a component with the preview1 adapter has a handful).
const MAX_INSTANCES: usize = 64;
/// Most tables in one store.
const MAX_TABLES: usize = 64;
/// Most linear memories in one store.
const MAX_MEMORIES: usize = 16;

/// Limits of one guest (a process, or each instance serving one HTTP request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of linear memory the guest may have (all its memories together); the
    /// runtime's `max_memory_per_instance` applies on top. Growing past it ends the guest
    /// with [`Outcome::OutOfMemory`](crate::Outcome::OutOfMemory).
    pub memory_bytes: Option<u64>,
    /// Total CPU time the guest may spend executing wasm code, in milliseconds, measured
    /// in epoch ticks (so rounded up to the tick and approximate: a tick counts when the guest
    /// ran wasm code during it). Passing it ends the guest with
    /// [`Outcome::CpuTimeExceeded`](crate::Outcome::CpuTimeExceeded). Like `RLIMIT_CPU`,
    /// not a rate limit.
    pub cpu_millis: Option<u64>,
    /// CPU rate limit in millicores (`resources.limits.cpu`): the guest may use
    /// `cpu_millicores / 1000` of [`RuntimeConfig::cpu_period`](crate::RuntimeConfig::cpu_period)
    /// of CPU time per period and waits for the next period once that is spent, as a CFS
    /// quota throttles a container. For an HTTP handler the quota is shared by all the
    /// instances serving its requests. `None` or 0: no limit (guests share the runtime's
    /// threads fairly, each yielding at every epoch tick).
    pub cpu_millicores: Option<u64>,
}

/// The error that fails a memory grow past the limit (and so traps the guest).
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded: the guest asked for {requested} bytes")]
pub(crate) struct MemoryLimitExceeded {
    limit: u64,
    requested: u64,
}

/// The error that interrupts a guest when a stop is requested.
#[derive(Debug, thiserror::Error)]
#[error("the guest was stopped")]
pub(crate) struct StopRequested;

/// The error that interrupts a guest whose CPU budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("CPU time limit of {limit_ms} ms exceeded")]
pub(crate) struct CpuLimitExceeded {
    limit_ms: u64,
}

/// State shared by a running guest's store, its [`Stopper`](crate::Stopper)s and the code
/// that classifies how it ended.
#[derive(Debug, Default)]
pub(crate) struct Control {
    stop_requested: AtomicBool,
    stopped: Notify,
    out_of_memory: AtomicBool,
    cpu_exceeded: AtomicBool,
    ticks: AtomicU64,
}

impl Control {
    /// A fresh control block.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Requests a stop: the guest is interrupted at its next epoch check, and any task
    /// waiting in [`Control::stop_requested`] wakes.
    pub(crate) fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.stopped.notify_waiters();
    }

    /// Whether a stop was requested.
    pub(crate) fn is_stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    /// Resolves once a stop is requested (at once if it already was).
    pub(crate) async fn stop_requested(&self) {
        loop {
            let notified = self.stopped.notified();
            if self.is_stop_requested() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the memory limit was hit.
    pub(crate) fn hit_memory_limit(&self) -> bool {
        self.out_of_memory.load(Ordering::SeqCst)
    }

    /// Whether the CPU budget was spent.
    pub(crate) fn hit_cpu_limit(&self) -> bool {
        self.cpu_exceeded.load(Ordering::SeqCst)
    }

    /// The epoch-deadline callback's decision for one tick.
    pub(crate) fn on_epoch_tick(
        &self,
        cpu_budget_ticks: Option<u64>,
        cpu_limit_ms: u64,
    ) -> wasmtime::Result<UpdateDeadline> {
        if self.is_stop_requested() {
            return Err(wasmtime::Error::new(StopRequested));
        }
        let used = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if cpu_budget_ticks.is_some_and(|budget| used > budget) {
            self.cpu_exceeded.store(true, Ordering::SeqCst);
            return Err(wasmtime::Error::new(CpuLimitExceeded {
                limit_ms: cpu_limit_ms,
            }));
        }
        Ok(UpdateDeadline::Yield(1))
    }
}

/// Installs the epoch-deadline callback of a store: stop checks, CPU accounting and a yield
/// to the executor every tick.
pub(crate) fn install_epoch_callback<T: 'static>(
    store: &mut wasmtime::Store<T>,
    control: &Arc<Control>,
    limits: &Limits,
    tick: Duration,
) {
    let control = control.clone();
    let cpu_limit_ms = limits.cpu_millis.unwrap_or(0);
    let cpu_budget_ticks = limits.cpu_millis.map(|ms| ticks_for(ms, tick));
    store.epoch_deadline_callback(move |_| control.on_epoch_tick(cpu_budget_ticks, cpu_limit_ms));
    store.set_epoch_deadline(1);
}

/// Number of whole ticks a CPU budget of `millis` buys (at least one).
fn ticks_for(millis: u64, tick: Duration) -> u64 {
    let tick_ms = u64::try_from(tick.as_millis()).unwrap_or(u64::MAX).max(1);
    millis.div_ceil(tick_ms).max(1)
}

/// The `ResourceLimiter` of a guest's store.
pub(crate) struct GuestLimiter {
    control: Arc<Control>,
    memory_limit: u64,
    memory_used: u64,
    pending_growth: u64,
}

impl GuestLimiter {
    /// A limiter allowing `memory_limit` bytes of linear memory in total.
    pub(crate) fn new(control: Arc<Control>, memory_limit: u64) -> Self {
        Self {
            control,
            memory_limit,
            memory_used: 0,
            pending_growth: 0,
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = u64::try_from(desired.saturating_sub(current)).unwrap_or(u64::MAX);
        let requested = self.memory_used.saturating_add(growth);
        if requested > self.memory_limit {
            self.control.out_of_memory.store(true, Ordering::SeqCst);
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.memory_limit,
                requested,
            }));
        }
        self.memory_used = requested;
        self.pending_growth = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // The grow we allowed did not happen (for example the pool's slot is smaller):
        // give the bytes back, and let the guest see an ordinary failed `memory.grow`.
        self.memory_used = self.memory_used.saturating_sub(self.pending_growth);
        self.pending_growth = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_growth_across_memories_and_records_the_hit() {
        let control = Control::new();
        let mut limiter = GuestLimiter::new(control.clone(), 10 * 65536);
        assert!(
            limiter
                .memory_growing(0, 4 * 65536, None)
                .is_ok_and(|ok| ok)
        );
        assert!(
            limiter
                .memory_growing(0, 4 * 65536, None)
                .is_ok_and(|ok| ok)
        );
        assert!(!control.hit_memory_limit());
        assert!(limiter.memory_growing(4 * 65536, 7 * 65536, None).is_err());
        assert!(control.hit_memory_limit());
    }

    #[test]
    fn limiter_gives_back_growth_that_failed_elsewhere() {
        let control = Control::new();
        let mut limiter = GuestLimiter::new(control.clone(), 2 * 65536);
        assert!(
            limiter
                .memory_growing(0, 2 * 65536, None)
                .is_ok_and(|ok| ok)
        );
        assert!(
            limiter
                .memory_grow_failed(wasmtime::Error::msg("pool slot too small"))
                .is_ok()
        );
        assert!(
            limiter
                .memory_growing(0, 2 * 65536, None)
                .is_ok_and(|ok| ok)
        );
        assert!(!control.hit_memory_limit());
    }

    #[test]
    fn limiter_refuses_tables_past_the_element_cap() {
        let mut limiter = GuestLimiter::new(Control::new(), 1 << 20);
        assert!(limiter.table_growing(0, 1000, None).is_ok_and(|ok| ok));
        assert!(
            limiter
                .table_growing(1000, MAX_TABLE_ELEMENTS + 1, None)
                .is_ok_and(|ok| !ok)
        );
        assert_eq!(limiter.instances(), MAX_INSTANCES);
        assert_eq!(limiter.memories(), MAX_MEMORIES);
    }

    #[test]
    fn epoch_tick_interrupts_after_a_stop_request() {
        let control = Control::new();
        assert!(matches!(
            control.on_epoch_tick(None, 0),
            Ok(UpdateDeadline::Yield(1))
        ));
        control.request_stop();
        assert!(control.on_epoch_tick(None, 0).is_err());
    }

    #[test]
    fn epoch_tick_interrupts_once_the_cpu_budget_is_spent() {
        let control = Control::new();
        let budget = ticks_for(25, Duration::from_millis(10));
        assert_eq!(budget, 3);
        for _ in 0..budget {
            assert!(control.on_epoch_tick(Some(budget), 25).is_ok());
        }
        assert!(control.on_epoch_tick(Some(budget), 25).is_err());
        assert!(control.hit_cpu_limit());
    }

    #[tokio::test]
    async fn stop_requested_resolves_for_a_stop_made_before_waiting() {
        let control = Control::new();
        control.request_stop();
        control.stop_requested().await;
    }
}

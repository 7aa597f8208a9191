//! Counters of what the scheduler did, readable while it runs (tests, benchmarks, and later
//! the Prometheus endpoint).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmkube_client::EventMetrics;

/// Live counters; share one `Arc<Metrics>` through [`crate::SchedulerConfig::metrics`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// Scheduling cycles run (one per pod attempt).
    pub attempts: AtomicU64,
    /// Pods bound to a node by this scheduler.
    pub bound: AtomicU64,
    /// Attempts that found no node.
    pub unschedulable: AtomicU64,
    /// Bindings refused with 409 Conflict (the pod was bound meanwhile, or replaced).
    pub bind_conflicts: AtomicU64,
    /// Bindings that failed otherwise (network, server errors).
    pub bind_errors: AtomicU64,
    /// What the scheduler's Event recorder did (`wasmkube-client`'s counters).
    pub events: Arc<EventMetrics>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// See [`Metrics::attempts`].
    pub attempts: u64,
    /// See [`Metrics::bound`].
    pub bound: u64,
    /// See [`Metrics::unschedulable`].
    pub unschedulable: u64,
    /// See [`Metrics::bind_conflicts`].
    pub bind_conflicts: u64,
    /// See [`Metrics::bind_errors`].
    pub bind_errors: u64,
    /// Events not written (the queue was full, or the write failed for good); see
    /// [`EventMetrics::dropped`].
    pub events_dropped: u64,
}

impl Metrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            attempts: get(&self.attempts),
            bound: get(&self.bound),
            unschedulable: get(&self.unschedulable),
            bind_conflicts: get(&self.bind_conflicts),
            bind_errors: get(&self.bind_errors),
            events_dropped: get(&self.events.dropped),
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

//! The guests' own threads: a multi-thread Tokio runtime, separate from the caller's, that
//! runs every guest, every HTTP request's instance, the HTTP servers of handlers, WASI's
//! blocking file operations and compilations.
//!
//! In `wasmkube server` the caller's runtime is also the apiserver's, the scheduler's and
//! the controllers': a busy guest there holds one of its worker threads for a whole epoch
//! tick at a time, and with many busy guests every request to the API queues behind them.
//! On threads of their own, guests compete with the control plane only through the
//! operating system's scheduler, and their CPU use is capped by their quotas
//! ([`crate::quota`]). Their threads run at a higher nice value than the control plane's
//! ([`RuntimeConfig::guest_nice`](crate::RuntimeConfig::guest_nice)), so when the guests want
//! more CPU than the machine has left, the scheduler prefers the control plane.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::runtime::{Builder, Handle};

use crate::error::RuntimeError;

/// The guests' Tokio runtime; shut down (without waiting for its tasks) when dropped.
pub(crate) struct GuestExecutor {
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle,
}

impl GuestExecutor {
    /// Starts `threads` worker threads named `wasm-guest` (0 = one per CPU), each (and each
    /// blocking thread) at a nice value `nice` above the calling thread's.
    pub(crate) fn start(threads: usize, nice: u8) -> Result<Self, RuntimeError> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        };
        let priority = guest_priority(nice);
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasm-guest")
            .on_thread_start(move || lower_priority(priority))
            .enable_all()
            .build()
            .map_err(RuntimeError::Executor)?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Where guests are spawned.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// The nice value of the guests' threads: the calling thread's plus `increment`, at most 19;
/// `None` when they keep their creator's (an increment of 0, or not Linux).
fn guest_priority(increment: u8) -> Option<i32> {
    if increment == 0 || !cfg!(target_os = "linux") {
        return None;
    }
    let current = rustix::process::getpriority_process(None).unwrap_or(0);
    Some(current.saturating_add(i32::from(increment)).min(19))
}

/// Sets the calling thread's nice value (on Linux a thread's own: `PRIO_PROCESS` of 0 is the
/// calling thread). Raising it needs no privilege; a failure (a sandbox that forbids it) is
/// logged once and the thread runs at its creator's priority.
fn lower_priority(nice: Option<i32>) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let Some(nice) = nice else { return };
    if let Err(e) = rustix::process::setpriority_process(None, nice)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(nice, error = %e, "cannot lower the priority of the guests' threads");
    }
}

impl Drop for GuestExecutor {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // The last clone of the runtime may be dropped on an async task (of the caller's
            // runtime or of this one), where a blocking shutdown would panic.
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(None).expect("getpriority")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn guests_and_blocking_threads_run_at_a_higher_nice_value_than_their_creator() {
        let creator = nice();
        let executor = GuestExecutor::start(1, 10).expect("the guests' runtime");
        let handle = executor.handle().clone();
        let (worker, blocking) = handle.block_on(async {
            let worker = tokio::spawn(async { nice() }).await.expect("a worker task");
            let blocking = tokio::task::spawn_blocking(nice)
                .await
                .expect("a blocking task");
            (worker, blocking)
        });
        let expected = (creator + 10).min(19);
        assert_eq!(worker, expected, "the worker thread's nice value");
        assert_eq!(blocking, expected, "the blocking thread's nice value");
        assert_eq!(nice(), creator, "the creator's nice value is its own");
    }

    #[test]
    fn an_increment_of_0_leaves_the_guests_at_their_creators_priority() {
        let creator = nice();
        let executor = GuestExecutor::start(1, 0).expect("the guests' runtime");
        let worker = executor
            .handle()
            .block_on(async { tokio::spawn(async { nice() }).await })
            .expect("a worker task");
        assert_eq!(worker, creator);
    }
}

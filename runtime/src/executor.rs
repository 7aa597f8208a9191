//! The guests' own threads: a multi-thread Tokio runtime, separate from the caller's, that
//! runs every guest, every HTTP request's instance, the HTTP servers of handlers, WASI's
//! blocking file operations and compilations.
//!
//! In `wasmkube server` the caller's runtime is also the apiserver's, the scheduler's and
//! the controllers': a busy guest there holds one of its worker threads for a whole epoch
//! tick at a time, and with many busy guests every request to the API queues behind them.
//! On threads of their own, guests compete with the control plane only through the
//! operating system's scheduler, and their CPU use is capped by their quotas
//! ([`crate::quota`]). Their threads run below the control plane's priority, at a higher nice
//! value or at Linux's `SCHED_IDLE` policy
//! ([`RuntimeConfig::guest_scheduling`](crate::RuntimeConfig::guest_scheduling)), and so do the
//! threads they start (a compilation's pool): when the guests want more CPU than the machine
//! has left, the kernel's scheduler prefers the control plane.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::runtime::{Builder, Handle};

use crate::config::GuestScheduling;
use crate::error::RuntimeError;

/// The guests' Tokio runtime; shut down (without waiting for its tasks) when dropped.
pub(crate) struct GuestExecutor {
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle,
}

impl GuestExecutor {
    /// Starts `threads` worker threads named `wasm-guest` (0 = one per CPU), each (and each
    /// blocking thread) scheduled as `scheduling` says.
    pub(crate) fn start(threads: usize, scheduling: GuestScheduling) -> Result<Self, RuntimeError> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        };
        let policy = ThreadPolicy::of(scheduling);
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasm-guest")
            .on_thread_start(move || policy.enter(set_sched_idle))
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

/// What each guest thread does to its own scheduling when it starts, worked out once by the
/// thread that creates the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThreadPolicy {
    /// `SCHED_IDLE`, or nice 19 where the kernel refuses it.
    Idle,
    /// The normal policy at this nice value.
    Nice(i32),
    /// The creator's scheduling, unchanged.
    Inherit,
}

/// The nice value a guest thread falls back to when `SCHED_IDLE` is refused: the lowest
/// priority of the normal policy.
const FALLBACK_NICE: i32 = 19;

impl ThreadPolicy {
    fn of(scheduling: GuestScheduling) -> Self {
        match scheduling {
            GuestScheduling::Idle => Self::Idle,
            GuestScheduling::Nice(0) => Self::Inherit,
            GuestScheduling::Nice(_) if !cfg!(target_os = "linux") => Self::Inherit,
            GuestScheduling::Nice(increment) => {
                let current = rustix::process::getpriority_process(None).unwrap_or(0);
                Self::Nice(
                    current
                        .saturating_add(i32::from(increment))
                        .min(FALLBACK_NICE),
                )
            }
        }
    }

    /// Applies the policy to the calling thread (on Linux both the policy and the nice value
    /// are a thread's own: `PRIO_PROCESS` of 0 is the calling thread). Lowering a thread's
    /// priority needs no privilege; a failure (a sandbox that forbids it) is logged once and
    /// the thread runs at the next best: nice 19 for `SCHED_IDLE`, else its creator's
    /// priority. `set_idle` sets `SCHED_IDLE` ([`set_sched_idle`]; a parameter so the
    /// fallback can be tested).
    fn enter(self, set_idle: fn() -> Result<(), String>) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        let nice = match self {
            Self::Inherit => return,
            Self::Idle => match set_idle() {
                Ok(()) => return,
                Err(e) => {
                    if !WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            nice = FALLBACK_NICE,
                            "cannot run the guests' threads at SCHED_IDLE; they run at the \
                             lowest nice value instead"
                        );
                    }
                    FALLBACK_NICE
                }
            },
            Self::Nice(nice) => nice,
        };
        if let Err(e) = rustix::process::setpriority_process(None, nice)
            && !WARNED.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(nice, error = %e, "cannot lower the priority of the guests' threads");
        }
    }
}

/// Puts the calling thread under `SCHED_IDLE`. Threads it starts inherit the policy.
#[cfg(target_os = "linux")]
fn set_sched_idle() -> Result<(), String> {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id, thread_schedule_policy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    match set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        Ok(()) => Ok(()),
        // The crate sets the policy, then the nice value to 0, which `SCHED_IDLE` ignores
        // and which a process started at a higher nice value may not go back to without
        // privilege: the policy is what counts.
        Err(_) if thread_schedule_policy().is_ok_and(|p| p == idle) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// `SCHED_IDLE` is Linux's.
#[cfg(not(target_os = "linux"))]
fn set_sched_idle() -> Result<(), String> {
    Err("SCHED_IDLE is a Linux scheduling policy".into())
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
    fn idle() -> bool {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        thread_priority::thread_schedule_policy().expect("the thread's policy")
            == ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn guests_blocking_threads_and_the_threads_they_start_run_at_sched_idle() {
        assert!(!idle(), "the test thread starts at the normal policy");
        let executor = GuestExecutor::start(1, GuestScheduling::Idle).expect("the guests' runtime");
        let handle = executor.handle().clone();
        let (worker, blocking, started) = handle.block_on(async {
            let worker = tokio::spawn(async { idle() }).await.expect("a worker task");
            let (blocking, started) = tokio::task::spawn_blocking(|| {
                // As a compilation starts its thread pool.
                let started = std::thread::spawn(idle).join().expect("a started thread");
                (idle(), started)
            })
            .await
            .expect("a blocking task");
            (worker, blocking, started)
        });
        assert!(worker, "the worker thread runs at SCHED_IDLE");
        assert!(blocking, "the blocking thread runs at SCHED_IDLE");
        assert!(started, "a thread a guest thread starts runs at SCHED_IDLE");
        assert!(!idle(), "the creator keeps its own policy");
    }

    #[test]
    fn a_thread_that_may_not_run_at_sched_idle_runs_at_nice_19() {
        let refused = || Err("refused".to_owned());
        let nice = std::thread::spawn(move || {
            ThreadPolicy::Idle.enter(refused);
            nice()
        })
        .join()
        .expect("the thread");
        assert_eq!(nice, FALLBACK_NICE);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn guests_and_blocking_threads_run_at_a_higher_nice_value_than_their_creator() {
        let creator = nice();
        let executor =
            GuestExecutor::start(1, GuestScheduling::Nice(10)).expect("the guests' runtime");
        let handle = executor.handle().clone();
        let (worker, blocking) = handle.block_on(async {
            let worker = tokio::spawn(async { (nice(), idle()) })
                .await
                .expect("a worker task");
            let blocking = tokio::task::spawn_blocking(nice)
                .await
                .expect("a blocking task");
            (worker, blocking)
        });
        let expected = (creator + 10).min(19);
        assert_eq!(worker, (expected, false), "the worker thread's nice value");
        assert_eq!(blocking, expected, "the blocking thread's nice value");
        assert_eq!(nice(), creator, "the creator's nice value is its own");
    }

    #[test]
    fn an_increment_of_0_leaves_the_guests_at_their_creators_priority() {
        let creator = nice();
        let executor =
            GuestExecutor::start(1, GuestScheduling::Nice(0)).expect("the guests' runtime");
        let worker = executor
            .handle()
            .block_on(async { tokio::spawn(async { nice() }).await })
            .expect("a worker task");
        assert_eq!(worker, creator);
    }
}

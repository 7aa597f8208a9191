//! How a guest ended ([`Outcome`]), the handle that ends it early ([`Stopper`]), and the
//! classification of wasmtime's errors into outcomes.
//!
//! Classification relies on facts recorded while the guest ran (the limiter saw the memory
//! limit hit, the epoch callback saw the CPU budget spent, a stop was requested) and on
//! typed errors (`I32Exit` from `proc_exit` / `wasi:cli/exit`, wasmtime's `Trap` codes),
//! never on matching error messages.

use std::fmt;
use std::sync::Arc;

use wasmtime::Trap;
use wasmtime_wasi::I32Exit;

use crate::limits::Control;

/// How a guest ended. Every variant is a workload result, never a runtime error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest exited with this code (returning from `_start` / `run` is 0; `run`
    /// returning an error is 1; `proc_exit(n)` / `exit(n)` is `n`).
    Exited(i32),
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow from deep
    /// recursion, ...) or a host call failed fatally.
    Trapped {
        /// What happened, short (for example `wasm trap: call stack exhausted`).
        message: String,
    },
    /// The guest grew its memory past its limit.
    OutOfMemory,
    /// The guest was stopped through its [`Stopper`].
    Stopped,
    /// The guest spent its CPU budget ([`Limits::cpu_millis`](crate::Limits::cpu_millis)).
    CpuTimeExceeded,
    /// The guest could not be started: a preopened directory is missing, the instance pool
    /// is full, instantiation failed.
    StartFailed {
        /// Why.
        message: String,
    },
}

impl Outcome {
    /// The exit code a process supervisor reports for this outcome: the guest's own code,
    /// 137 (as for SIGKILL) for OOM and stops, 152 (SIGXCPU) for the CPU limit, 128 + 6
    /// (SIGABRT) for traps, 128 for start failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Exited(code) => *code,
            Self::OutOfMemory | Self::Stopped => 137,
            Self::CpuTimeExceeded => 152,
            Self::Trapped { .. } => 134,
            Self::StartFailed { .. } => 128,
        }
    }

    /// Whether the guest exited on its own with code 0.
    pub fn is_success(&self) -> bool {
        *self == Self::Exited(0)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exited with code {code}"),
            Self::Trapped { message } => write!(f, "trapped: {message}"),
            Self::OutOfMemory => f.write_str("out of memory: memory limit exceeded"),
            Self::Stopped => f.write_str("stopped"),
            Self::CpuTimeExceeded => f.write_str("CPU time limit exceeded"),
            Self::StartFailed { message } => write!(f, "failed to start: {message}"),
        }
    }
}

/// Stops a running guest; clones stop the same guest.
///
/// `stop()` interrupts the guest at its next epoch tick even in an infinite loop (the tick
/// is [`RuntimeConfig::epoch_tick`](crate::RuntimeConfig::epoch_tick)), and also ends a
/// guest blocked in a host call; the run then ends with [`Outcome::Stopped`] (unless it had
/// already ended otherwise).
#[derive(Clone)]
pub struct Stopper {
    pub(crate) control: Arc<Control>,
}

impl fmt::Debug for Stopper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stopper")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl Stopper {
    /// Requests the stop; returns at once.
    pub fn stop(&self) {
        self.control.request_stop();
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.control.is_stop_requested()
    }
}

/// Which step of a run failed, for errors that are not the guest's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Instantiate,
    Run,
}

/// Classifies how a run ended.
pub(crate) fn classify(error: &wasmtime::Error, control: &Control, phase: Phase) -> Outcome {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    if control.hit_memory_limit() {
        return Outcome::OutOfMemory;
    }
    if control.is_stop_requested() {
        return Outcome::Stopped;
    }
    if control.hit_cpu_limit() {
        return Outcome::CpuTimeExceeded;
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return Outcome::Trapped {
            message: trap.to_string(),
        };
    }
    let message = error.root_cause().to_string();
    match phase {
        Phase::Instantiate => Outcome::StartFailed { message },
        Phase::Run => Outcome::Trapped { message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_exit_is_an_exit_even_after_a_stop_request() {
        let control = Control::new();
        control.request_stop();
        let error = wasmtime::Error::new(I32Exit(3));
        assert_eq!(classify(&error, &control, Phase::Run), Outcome::Exited(3));
    }

    #[test]
    fn a_trap_is_reported_with_its_code_message() {
        let control = Control::new();
        let error = wasmtime::Error::new(Trap::StackOverflow).context("backtrace here");
        assert_eq!(
            classify(&error, &control, Phase::Run),
            Outcome::Trapped {
                message: "wasm trap: call stack exhausted".into()
            }
        );
    }

    #[test]
    fn an_instantiation_error_is_a_start_failure() {
        let control = Control::new();
        let error = wasmtime::Error::msg("pool exhausted");
        assert_eq!(
            classify(&error, &control, Phase::Instantiate),
            Outcome::StartFailed {
                message: "pool exhausted".into()
            }
        );
    }

    #[test]
    fn exit_codes_follow_process_supervisor_conventions() {
        assert_eq!(Outcome::Exited(3).exit_code(), 3);
        assert_eq!(Outcome::OutOfMemory.exit_code(), 137);
        assert!(Outcome::Exited(0).is_success());
        assert!(!Outcome::Stopped.is_success());
    }
}

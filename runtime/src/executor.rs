//! The guests' own threads: a multi-thread Tokio runtime, separate from the caller's, that
//! runs every guest, every HTTP request's instance, the HTTP servers of handlers, WASI's
//! blocking file operations and compilations.
//!
//! In `wasmkube server` the caller's runtime is also the apiserver's, the scheduler's and
//! the controllers': a busy guest there holds one of its worker threads for a whole epoch
//! tick at a time, and with many busy guests every request to the API queues behind them.
//! On threads of their own, guests compete with the control plane only through the
//! operating system's scheduler, and their CPU use is capped by their quotas
//! ([`crate::quota`]).

use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Handle};

use crate::error::RuntimeError;

/// The guests' Tokio runtime; shut down (without waiting for its tasks) when dropped.
pub(crate) struct GuestExecutor {
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle,
}

impl GuestExecutor {
    /// Starts `threads` worker threads named `wasm-guest` (0 = one per CPU).
    pub(crate) fn start(threads: usize) -> Result<Self, RuntimeError> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        };
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasm-guest")
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

impl Drop for GuestExecutor {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // The last clone of the runtime may be dropped on an async task (of the caller's
            // runtime or of this one), where a blocking shutdown would panic.
            runtime.shutdown_background();
        }
    }
}

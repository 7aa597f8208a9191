//! The runtime's process-wide settings: where compiled code is cached, how big the
//! instance pool is, the largest memory an instance may have and how often the epoch ticks.
//!
//! Everything has a default suited to one agent on one machine; only the cache directory must
//! be given.

use std::path::PathBuf;
use std::time::Duration;

/// Default cap on the memory of one instance (the pooling allocator reserves this much
/// address space per memory slot): 4 GiB, wasm32's whole address space.
pub const DEFAULT_MAX_MEMORY_PER_INSTANCE: u64 = 4 << 30;

/// Default number of instances (running processes plus in-flight HTTP requests) the pool
/// holds at once.
pub const DEFAULT_TOTAL_INSTANCES: u32 = 1000;

/// Default epoch period: the granularity of stops, CPU accounting and cooperative yields.
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(10);

/// Default cap on the size of a wasm binary accepted by [`Runtime::load`](crate::Runtime::load).
pub const DEFAULT_MAX_WASM_BYTES: usize = 100 << 20;

/// Default number of compilations that may run at the same time.
pub const DEFAULT_MAX_CONCURRENT_COMPILATIONS: usize = 2;

/// Settings of a [`Runtime`](crate::Runtime).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory of the on-disk cache of compiled code (created if missing). It must be
    /// private to the agent: its files are loaded as trusted machine code.
    pub cache_dir: PathBuf,
    /// Largest linear memory any one instance may have, whatever its [`Limits`](crate::Limits)
    /// say (bytes).
    pub max_memory_per_instance: u64,
    /// Instances the pooling allocator holds at once: each running process and each in-flight
    /// HTTP request takes one. When the pool is full a start fails with
    /// [`Outcome::StartFailed`](crate::Outcome::StartFailed).
    pub total_instances: u32,
    /// Epoch period.
    pub epoch_tick: Duration,
    /// Largest wasm binary [`Runtime::load`](crate::Runtime::load) accepts (bytes).
    pub max_wasm_bytes: usize,
    /// Compilations allowed to run at once (each on a blocking thread).
    pub max_concurrent_compilations: usize,
}

impl RuntimeConfig {
    /// Default settings with the given cache directory.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            max_memory_per_instance: DEFAULT_MAX_MEMORY_PER_INSTANCE,
            total_instances: DEFAULT_TOTAL_INSTANCES,
            epoch_tick: DEFAULT_EPOCH_TICK,
            max_wasm_bytes: DEFAULT_MAX_WASM_BYTES,
            max_concurrent_compilations: DEFAULT_MAX_CONCURRENT_COMPILATIONS,
        }
    }
}

//! The one wasmtime [`Engine`] of the process and the thread that advances its epoch.
//!
//! The engine uses the pooling instance allocator (instances, memories, tables and fiber
//! stacks come from pre-reserved slots, so starting a guest is a few `madvise`s rather than
//! `mmap`s), epoch interruption (so every guest can be interrupted and made to yield), and
//! the component model. Async support is always on in wasmtime 48: guests run on fibers
//! driven by the Tokio executor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::RuntimeConfig;
use crate::error::RuntimeError;

/// Core instances one pooled instance may use: a component built with the preview1 adapter
/// instantiates a handful of core modules (the program, the adapter and shims).
const CORE_INSTANCES_PER_INSTANCE: u32 = 8;
/// Linear memories per pooled instance (program and adapter).
const MEMORIES_PER_INSTANCE: u32 = 2;
/// Tables per pooled instance (program and adapter shims).
const TABLES_PER_INSTANCE: u32 = 4;
/// Size of the wasm stack before a stack overflow trap (deep recursion ends as a trap,
/// never as a crash of the agent).
const MAX_WASM_STACK: usize = 1 << 20;
/// Size of each fiber stack: the wasm stack plus room for host calls.
const ASYNC_STACK_SIZE: usize = 2 << 20;

/// Builds the engine for the given settings.
pub(crate) fn build_engine(cfg: &RuntimeConfig) -> Result<Engine, RuntimeError> {
    let instances = cfg.total_instances.max(1);
    let max_memory = usize::try_from(cfg.max_memory_per_instance).unwrap_or(usize::MAX);

    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_INSTANCE))
        .total_memories(instances.saturating_mul(MEMORIES_PER_INSTANCE))
        .total_tables(instances.saturating_mul(TABLES_PER_INSTANCE))
        .total_stacks(instances)
        .max_memory_size(max_memory);

    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .wasm_component_model(true)
        .parallel_compilation(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(ASYNC_STACK_SIZE)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

    Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// A thread that increments the engine's epoch every tick until dropped.
pub(crate) struct EpochTicker {
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the ticker.
    pub(crate) fn start(engine: Engine, tick: Duration) -> Result<Self, RuntimeError> {
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(RuntimeError::Ticker)?;
        Ok(Self {
            shutdown,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and increments; a join error would mean it panicked,
            // which nothing here can act on.
            let _ = thread.join();
        }
    }
}

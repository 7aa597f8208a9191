//! The runtime's process-wide settings: where compiled code is cached, how big the
//! instance pool is, the largest memory an instance may have, how often the epoch ticks, how
//! many threads run guests and how the kernel schedules them, how long a compilation may take and the
//! period of CPU quotas.
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

/// Default time a load may wait for its program to be compiled: two minutes, the kubelet's
/// default `--runtime-request-timeout` for a container runtime's calls.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Default period of CPU quotas: 100 ms, the Linux CFS bandwidth default
/// (`cpu.cfs_period_us`) that the kubelet's `limits.cpu` quotas use.
pub const DEFAULT_CPU_PERIOD: Duration = Duration::from_millis(100);

/// How the kernel schedules the guests' threads (and the compilations' threads, which they
/// start) against the control plane's: the threads of the process that creates the
/// [`Runtime`](crate::Runtime) (in `wasmkube server` the apiserver, scheduler, controllers and
/// the agent's own loops) and every other process of the node.
///
/// Quotas cap what each guest uses, but limits may add up to more CPU than the machine has
/// left for the guests; then the guest threads are always runnable, and what matters is how
/// soon a control-plane thread that wakes gets a CPU from them. A Kubernetes node answers
/// with cgroup weights: a pod's CPU is weighed by its requests (10m is a `cpu.weight` of 1)
/// below the node's own daemons. Either policy here weighs the guests low; neither makes a
/// waking thread take the CPU from a running guest at once on Linux 6.18 (EEVDF, 250 Hz): the
/// guest keeps it until its slice ends at a scheduler tick, up to 4 ms later (measured in
/// docs/benchmarks.md, "Guest isolation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestScheduling {
    /// The normal policy at a nice value this much above the creating thread's, up to 19
    /// (0 = the creator's priority). Nice 10 weighs 110 against nice 0's 1024: a guest
    /// competing with one busy control-plane thread still gets about a tenth of a CPU.
    /// Linux only (elsewhere the nice value is per process).
    Nice(u8),
    /// Linux's `SCHED_IDLE` policy: weight 3 against a nice-0 thread's 1024, so a guest runs
    /// only when no other thread of the CPU wants to (on a busy node its probes and HTTP
    /// requests wait for every other process); a CPU that runs only such threads counts as
    /// idle when the kernel places a waking thread. Where the kernel refuses the policy (not
    /// Linux, or a seccomp filter), the threads run at nice 19 instead, with a warning.
    Idle,
}

/// Default [`GuestScheduling`]: nice +10. `SCHED_IDLE` measured no better for the
/// apiserver's latency under busy guests (docs/benchmarks.md) and starves guests on a busy
/// machine, so it is an option, not the default.
pub const DEFAULT_GUEST_SCHEDULING: GuestScheduling = GuestScheduling::Nice(10);

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
    /// Compilations allowed to run at once (each on a blocking thread of the guests'
    /// runtime).
    pub max_concurrent_compilations: usize,
    /// How long a [`Runtime::load`](crate::Runtime::load) waits for its program's
    /// compilation, counted from when the compilation gets one of the
    /// `max_concurrent_compilations` slots, before it fails with
    /// [`LoadError::CompileTimeout`](crate::LoadError::CompileTimeout). A compilation past
    /// its timeout gives its slot to the next one and goes on in the background (wasmtime
    /// cannot interrupt it); its result is cached for the next load of the same code.
    pub compile_timeout: Duration,
    /// Worker threads of the Tokio runtime that runs guests (and HTTP handlers' servers),
    /// separate from the caller's runtime; 0 = one per CPU.
    pub guest_threads: usize,
    /// How the kernel schedules the guests' threads and the compilations' threads against
    /// the control plane's and other processes' ([`GuestScheduling`]).
    pub guest_scheduling: GuestScheduling,
    /// Period of CPU quotas ([`Limits::cpu_millicores`](crate::Limits::cpu_millicores)): a
    /// guest may use `millicores / 1000 * cpu_period` of CPU time per period.
    pub cpu_period: Duration,
    /// What guests' outgoing HTTPS requests trust: the web PKI, plus e.g. the cluster CA.
    pub outgoing_tls_roots: crate::TlsRoots,
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
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
            guest_threads: 0,
            guest_scheduling: DEFAULT_GUEST_SCHEDULING,
            cpu_period: DEFAULT_CPU_PERIOD,
            outgoing_tls_roots: crate::TlsRoots::default(),
        }
    }
}

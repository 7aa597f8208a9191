//! wasmkube's WebAssembly runtime, on wasmtime 48. It knows nothing of Kubernetes: the
//! agent turns pods into [`ProcessSpec`]s and [`HttpSpec`]s and [`Outcome`]s back into
//! container states.
//!
//! # Pieces
//!
//! - [`Runtime`] (one per process, cheap to clone) owns the wasmtime `Engine` (pooling
//!   allocator, epoch interruption, component model, async), a thread ticking the epoch
//!   every [`RuntimeConfig::epoch_tick`], the linkers (WASI preview1 for core modules;
//!   WASIp2 plus `wasi:http` for components), built once, the on-disk cache of compiled
//!   code keyed by the wasm's SHA-256 and `Engine::precompile_compatibility_hash`, and a
//!   Tokio runtime of its own on which every guest runs ([`Runtime::guest_handle`]), so
//!   busy guests never hold the threads of the caller's executor (in `wasmkube server`, the
//!   apiserver's), and its threads run below the caller's priority
//!   ([`RuntimeConfig::guest_scheduling`]: nice +10, or `SCHED_IDLE`).
//! - [`Runtime::load`] turns a binary into a [`Program`] (compiled, linked, classified as a
//!   [`ProgramKind`]). The second load of the same code compiles nothing: it is served by the
//!   programs loaded in this process or by the cache directory ([`Runtime::cache_stats`]),
//!   and loads of the same code at the same time share one compilation. Loading is bounded:
//!   binaries over [`RuntimeConfig::max_wasm_bytes`] are refused, compilation runs on
//!   blocking threads, a few at a time, and a load waits at most
//!   [`RuntimeConfig::compile_timeout`]. A bad binary (invalid, an unsatisfied import such
//!   as ``unknown import: `env::foo` has not been defined``, no entry point) is a
//!   [`LoadError`] whose message is the container's failure reason. Cache files carry a
//!   digest of their code and are checked before use: a torn or corrupt one is recompiled.
//! - [`Runtime::spawn`] runs a command program (preview1 `_start` module or `wasi:cli/run`
//!   component) like a process: argv, env, preopened directories (read-only honoured),
//!   stdout/stderr into [`LogSink`]s; it returns a [`Stopper`] and a task resolving to the
//!   [`Outcome`]: exit code, trap (deep recursion is a trap, not a crash), out of memory
//!   (growth past [`Limits::memory_bytes`], detected by the store's limiter), stop, CPU limit,
//!   or a failed start.
//! - [`Runtime::http_service`] serves a `wasi:http/proxy` component: an [`HttpService`]
//!   instantiates the component afresh for every request, bounds concurrency and time per
//!   request, and can run its own hyper server ([`HttpService::serve`]).
//! - [`GuestNetwork`] puts a guest on the network: its pod IP, the [`NameResolver`] its
//!   names go through, and the [`ConnectPolicy`] asked before every connection in or out
//!   ([`AllowAll`] allows everything).
//!
//! Every guest yields to the executor at each epoch tick, so a busy guest never holds a
//! worker thread for more than a tick, guests without a CPU limit share the guests' threads
//! fairly, and [`Stopper::stop`] interrupts even an infinite loop. A guest with
//! [`Limits::cpu_millicores`] runs within a CFS-style quota: once it has used its share of a
//! [`RuntimeConfig::cpu_period`] (measured with its thread's CPU clock) it waits for the
//! next period.
//!
//! # Good to know
//!
//! - Exit codes: a preview1 module's `proc_exit(n)` is `Exited(n)` (wasmtime refuses
//!   `n >= 126` with a trap). WASIp2's `wasi:cli/exit` only says ok or error, so a component
//!   (including a preview1 program adapted into one) exits 0 or 1.
//! - Guests get no stdin. Their network is what their spec's [`GuestNetwork`] says: with
//!   none, `wasi:sockets` are denied; with one, they get TCP and UDP sockets and
//!   `ip-name-lookup` at their pod IP (wildcard binds become the pod IP), names resolved by
//!   its [`NameResolver`], and every connect, UDP send and accept asked of its
//!   [`ConnectPolicy`] first (details at [`GuestNetwork`]). Outgoing `wasi:http`
//!   requests (from HTTP handlers and commands alike) are sent by the host (`outgoing`),
//!   through the same resolver and policy when there is a network, trusting the web PKI and
//!   [`RuntimeConfig::outgoing_tls_roots`] (the agent adds the cluster CA, so a guest can call
//!   the apiserver with its token); [`HttpService::serve`] closes connections the policy
//!   refuses at once.
//! - The cache directory holds machine code that is loaded as trusted: keep it private to
//!   the agent, never under a guest's preopened directory.
//! - [`Runtime`] reserves address space for its whole instance pool up front (one slot per
//!   memory of [`RuntimeConfig::max_memory_per_instance`] plus guard pages), so
//!   [`Runtime::new`] fails cleanly when the machine cannot hold the pool.
//!
//! # Example
//!
//! ```no_run
//! # async fn example(wasm: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use wasmkube_runtime::{MemorySink, ProcessSpec, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig::new("/var/lib/wasmkube/code-cache"))?;
//! let program = runtime.load(wasm, "").await?;
//! let stdout = MemorySink::new();
//! let mut spec = ProcessSpec::new("hello");
//! spec.stdout = Box::new(stdout.clone());
//! let (_stopper, task) = runtime.spawn(&program, spec);
//! let outcome = task.await?;
//! println!("{outcome}: {}", stdout.text());
//! # Ok(())
//! # }
//! ```

mod cache;
mod config;
mod engine;
mod error;
mod executor;
mod host;
mod http;
mod limits;
mod loader;
mod network;
mod outcome;
mod outgoing;
mod process;
mod program;
mod quota;
mod runtime;
mod sink;
mod sockets;

pub use cache::CacheStats;
pub use config::{
    DEFAULT_COMPILE_TIMEOUT, DEFAULT_CPU_PERIOD, DEFAULT_EPOCH_TICK, DEFAULT_GUEST_SCHEDULING,
    DEFAULT_MAX_CONCURRENT_COMPILATIONS, DEFAULT_MAX_MEMORY_PER_INSTANCE, DEFAULT_MAX_WASM_BYTES,
    DEFAULT_TOTAL_INSTANCES, GuestScheduling, RuntimeConfig,
};
pub use error::{LoadError, RuntimeError};
pub use host::Preopen;
pub use http::{
    BoxError, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_REQUEST_TIMEOUT, HttpService, HttpSpec,
    HttpStats, ResponseBody,
};
pub use limits::Limits;
pub use network::{
    AllowAll, ConnectPolicy, GuestNetwork, HostResolver, NameResolver, Protocol, ResolveError,
    ResolveFuture,
};
pub use outcome::{Outcome, Stopper};
pub use outgoing::TlsRoots;
pub use process::ProcessSpec;
pub use program::{Program, ProgramKind};
pub use runtime::Runtime;
pub use sink::{LogSink, MemorySink, NullSink};

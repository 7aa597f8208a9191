//! [`Runtime`]: the process-wide entry point owning the engine, the epoch ticker, the
//! linkers, the compiled-code cache, the loader and the guests' own threads.

use std::path::Path;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use wasmtime::Engine;

use crate::RuntimeConfig;
use crate::cache::{BinaryKind, CacheStats, CodeCache, sha256_hex};
use crate::engine::{EpochTicker, build_engine};
use crate::error::{LoadError, RuntimeError};
use crate::executor::GuestExecutor;
use crate::host::Linkers;
use crate::http::{HttpService, HttpSpec};
use crate::limits::Control;
use crate::loader::{Found, Loader};
use crate::outcome::{Outcome, Stopper};
use crate::process::{self, ProcessSpec};
use crate::program::Program;
use crate::quota::CpuQuota;

/// The WebAssembly runtime of a process: create one and clone it where needed (clones
/// share everything). Guests run on threads of the runtime's own (see
/// [`Runtime::guest_handle`]), which last as long as the runtime or any of its guests,
/// compilations or [`HttpService`]s.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

/// What the runtime's clones, its running guests and its compilations share; the epoch
/// ticker lives as long as any of them.
pub(crate) struct Shared {
    pub(crate) config: RuntimeConfig,
    pub(crate) engine: Engine,
    pub(crate) linkers: Linkers,
    pub(crate) cache: CodeCache,
    pub(crate) loader: Loader,
    /// Where guests and compilations run.
    pub(crate) guests: Handle,
    _ticker: EpochTicker,
    /// The guests' threads; shut down (without waiting) when the last user is gone, which
    /// may be a guest's own task.
    _executor: GuestExecutor,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine (reserving the instance pool), the linkers, the cache directory,
    /// the epoch ticker thread and the guests' threads.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = build_engine(&config)?;
        let linkers = Linkers::new(&engine)?;
        let cache = CodeCache::open(&config.cache_dir, &engine)?;
        let executor = GuestExecutor::start(config.guest_threads, config.guest_scheduling)?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)?;
        let loader = Loader::new(config.max_concurrent_compilations, config.compile_timeout);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                engine,
                linkers,
                cache,
                loader,
                guests: executor.handle().clone(),
                _ticker: ticker,
                _executor: executor,
            }),
        })
    }

    /// The settings the runtime was created with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// Counters of the compiled-code cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.shared.cache.stats()
    }

    /// The Tokio runtime guests run on, separate from the caller's: spawn here what serves
    /// guests (the listeners of HTTP handlers, see [`HttpService::serve`]), so that guest
    /// traffic never runs on a control plane's executor.
    pub fn guest_handle(&self) -> &Handle {
        &self.shared.guests
    }

    /// Loads a module or component: from this process's loaded programs, else from the
    /// on-disk cache, else by compiling it (and caching the result), then links it.
    ///
    /// `digest` is the expected `sha256:<hex>` (or bare hex) digest of `wasm`, checked; pass
    /// `""` to skip the check. Hashing, reading the cache and compiling run on blocking
    /// threads of the guests' runtime, at most
    /// [`RuntimeConfig::max_concurrent_compilations`] compilations at once, and binaries
    /// above [`RuntimeConfig::max_wasm_bytes`] are refused, so a huge or hostile binary
    /// cannot stall the caller's executor. Concurrent loads of the same code share one
    /// compilation, and none waits longer than [`RuntimeConfig::compile_timeout`]
    /// ([`LoadError::CompileTimeout`]).
    pub async fn load(&self, wasm: &[u8], digest: &str) -> Result<Program, LoadError> {
        let limit = self.shared.config.max_wasm_bytes;
        if wasm.len() > limit {
            return Err(LoadError::TooLarge {
                size: wasm.len(),
                limit,
            });
        }
        let kind = BinaryKind::detect(wasm).ok_or_else(|| {
            LoadError::Invalid("not a WebAssembly module or component (bad preamble)".into())
        })?;
        self.load_shared(Arc::new(wasm.to_vec()), kind, digest)
            .await
    }

    /// [`Runtime::load`] of bytes the caller gives away, after the size and preamble checks.
    async fn load_shared(
        &self,
        wasm: Arc<Vec<u8>>,
        kind: BinaryKind,
        digest: &str,
    ) -> Result<Program, LoadError> {
        let expected = digest.strip_prefix("sha256:").unwrap_or(digest);
        let hashed = wasm.clone();
        let actual = self
            .shared
            .guests
            .spawn_blocking(move || sha256_hex(&hashed))
            .await
            .map_err(|e| LoadError::Internal(format!("the hashing thread failed: {e}")))?;
        if !expected.is_empty() && !expected.eq_ignore_ascii_case(&actual) {
            return Err(LoadError::DigestMismatch {
                expected: format!("sha256:{expected}"),
                actual: format!("sha256:{actual}"),
            });
        }
        let digest = format!("sha256:{actual}");
        match self.shared.find_or_compile(kind, wasm, &digest) {
            Found::Loaded(program) => Ok(program),
            Found::Flight(flight) => self.shared.loader.wait(flight, &digest).await,
        }
    }

    /// [`Runtime::load`] of a file (read on a blocking thread).
    pub async fn load_file(&self, path: &Path, digest: &str) -> Result<Program, LoadError> {
        let limit = self.shared.config.max_wasm_bytes;
        let owned = path.to_owned();
        let wasm = self
            .shared
            .guests
            .spawn_blocking(move || -> Result<Vec<u8>, LoadError> {
                let io = |e: std::io::Error| {
                    LoadError::Internal(format!("cannot read {}: {e}", owned.display()))
                };
                let size = std::fs::metadata(&owned).map_err(io)?.len();
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > limit {
                    return Err(LoadError::TooLarge { size, limit });
                }
                std::fs::read(&owned).map_err(io)
            })
            .await
            .map_err(|e| LoadError::Internal(format!("file reading thread failed: {e}")))??;
        let kind = BinaryKind::detect(&wasm).ok_or_else(|| {
            LoadError::Invalid("not a WebAssembly module or component (bad preamble)".into())
        })?;
        self.load_shared(Arc::new(wasm), kind, digest).await
    }

    /// Starts a command program as a process on the guests' threads. Returns the handle
    /// that stops it and the task that resolves to its [`Outcome`] (awaitable from any
    /// executor).
    ///
    /// A [`ProgramKind::HttpProxy`](crate::ProgramKind::HttpProxy) program is not a
    /// process: it ends at once with [`Outcome::StartFailed`].
    pub fn spawn(&self, program: &Program, spec: ProcessSpec) -> (Stopper, JoinHandle<Outcome>) {
        let control = Control::new();
        let stopper = Stopper {
            control: control.clone(),
        };
        let quota = spec
            .limits
            .cpu_millicores
            .and_then(|m| CpuQuota::new(m, self.shared.config.cpu_period));
        let task = self.shared.guests.spawn(process::run(
            self.shared.clone(),
            program.clone(),
            spec,
            control,
            quota,
        ));
        (stopper, task)
    }

    /// Serves a `wasi:http/proxy` program: see [`HttpService`].
    pub fn http_service(&self, program: &Program, spec: HttpSpec) -> HttpService {
        HttpService::new(self.shared.clone(), program.clone(), spec)
    }
}

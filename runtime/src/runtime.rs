//! [`Runtime`]: the process-wide entry point owning the engine, the epoch ticker, the
//! linkers and the compiled-code cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use wasmtime::Engine;

use crate::RuntimeConfig;
use crate::cache::{BinaryKind, CacheStats, CodeCache, sha256_hex};
use crate::engine::{EpochTicker, build_engine};
use crate::error::{LoadError, RuntimeError};
use crate::host::Linkers;
use crate::http::{HttpService, HttpSpec};
use crate::limits::Control;
use crate::outcome::{Outcome, Stopper};
use crate::process::{self, ProcessSpec};
use crate::program::{Program, ProgramInner};

/// The WebAssembly runtime of a process: create one and clone it where needed (clones
/// share everything).
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

/// What the runtime's clones, its running processes and its HTTP services share; the
/// epoch ticker lives as long as any of them.
pub(crate) struct Shared {
    pub(crate) config: RuntimeConfig,
    pub(crate) engine: Engine,
    linkers: Linkers,
    cache: CodeCache,
    /// Programs loaded and still referenced, by digest: a second load of the same code
    /// shares the first one's compiled code (and memory mapping).
    loaded: Mutex<HashMap<String, Weak<ProgramInner>>>,
    compile_permits: Arc<Semaphore>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine (reserving the instance pool), the linkers, the cache directory
    /// and the epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = build_engine(&config)?;
        let linkers = Linkers::new(&engine)?;
        let cache = CodeCache::open(&config.cache_dir, &engine)?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)?;
        let permits = config.max_concurrent_compilations.max(1);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                engine,
                linkers,
                cache,
                loaded: Mutex::new(HashMap::new()),
                compile_permits: Arc::new(Semaphore::new(permits)),
                _ticker: ticker,
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

    /// Loads a module or component: from this process's loaded programs, else from the
    /// on-disk cache, else by compiling it (and caching the result), then links it.
    ///
    /// `digest` is the expected `sha256:<hex>` (or bare hex) digest of `wasm`, checked; pass
    /// `""` to skip the check. Hashing, reading the cache and compiling run on a blocking
    /// thread, at most [`RuntimeConfig::max_concurrent_compilations`] at once, and binaries
    /// above [`RuntimeConfig::max_wasm_bytes`] are refused, so a huge or hostile binary
    /// cannot stall the caller's executor.
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
        let expected = digest.strip_prefix("sha256:").unwrap_or(digest).to_owned();
        let permit = self
            .shared
            .compile_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| LoadError::Internal(e.to_string()))?;
        let shared = self.shared.clone();
        let wasm = wasm.to_vec();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            shared.load_blocking(kind, &wasm, &expected)
        })
        .await
        .map_err(|e| LoadError::Internal(format!("compilation thread failed: {e}")))?
    }

    /// [`Runtime::load`] of a file (read on a blocking thread).
    pub async fn load_file(&self, path: &Path, digest: &str) -> Result<Program, LoadError> {
        let limit = self.shared.config.max_wasm_bytes;
        let owned = path.to_owned();
        let wasm = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, LoadError> {
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
        self.load(&wasm, digest).await
    }

    /// Starts a command program as a process on the current Tokio runtime. Returns the
    /// handle that stops it and the task that resolves to its [`Outcome`].
    ///
    /// A [`ProgramKind::HttpProxy`](crate::ProgramKind::HttpProxy) program is not a
    /// process: it ends at once with [`Outcome::StartFailed`].
    pub fn spawn(&self, program: &Program, spec: ProcessSpec) -> (Stopper, JoinHandle<Outcome>) {
        let control = Control::new();
        let stopper = Stopper {
            control: control.clone(),
        };
        let task = tokio::spawn(process::run(
            self.shared.clone(),
            program.clone(),
            spec,
            control,
        ));
        (stopper, task)
    }

    /// Serves a `wasi:http/proxy` program: see [`HttpService`].
    pub fn http_service(&self, program: &Program, spec: HttpSpec) -> HttpService {
        HttpService::new(self.shared.clone(), program.clone(), spec)
    }
}

impl Shared {
    fn load_blocking(
        &self,
        kind: BinaryKind,
        wasm: &[u8],
        expected_hex: &str,
    ) -> Result<Program, LoadError> {
        let actual = sha256_hex(wasm);
        if !expected_hex.is_empty() && !expected_hex.eq_ignore_ascii_case(&actual) {
            return Err(LoadError::DigestMismatch {
                expected: format!("sha256:{expected_hex}"),
                actual: format!("sha256:{actual}"),
            });
        }
        let digest = format!("sha256:{actual}");
        if let Some(program) = self.loaded_program(&digest) {
            self.cache.record_memory_hit();
            return Ok(program);
        }
        let compiled = self
            .cache
            .load_or_compile(&self.engine, kind, wasm, &actual)
            .map_err(LoadError::Invalid)?;
        let program = Program::link(&self.linkers, compiled, digest.clone())?;
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        loaded.retain(|_, weak| weak.strong_count() > 0);
        loaded.insert(digest, Arc::downgrade(&program.inner));
        Ok(program)
    }

    fn loaded_program(&self, digest: &str) -> Option<Program> {
        let loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = loaded.get(digest)?.upgrade()?;
        Some(Program { inner })
    }
}

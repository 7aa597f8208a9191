//! Turning binaries into [`Program`]s: one compilation per program at a time, a few
//! compilations at once, and none waited for past a timeout.
//!
//! - **Single flight.** Loads of the same code (the same SHA-256; the engine is the
//!   runtime's, so the same engine hash) share one compilation: the first load starts it as
//!   a task of its own, later ones wait for its result, and once it is done the program is
//!   kept (weakly, while anything uses it) for the loads after. Twenty pods of one new image
//!   starting at once compile it once.
//! - **Bounded.** At most [`RuntimeConfig::max_concurrent_compilations`] compile at once,
//!   each on a blocking thread of the guests' runtime, never on the caller's executor.
//! - **Timed.** A load waits at most [`RuntimeConfig::compile_timeout`] for the compilation
//!   it joined, counted from when that compilation got its slot (or from when the load
//!   joined it, if later), and then fails with [`LoadError::CompileTimeout`]. wasmtime cannot
//!   interrupt Cranelift, so a compilation past the timeout gives its slot to the next one
//!   and goes on in the background; its result lands in the cache, and a load that comes
//!   later (a pod's retry) joins it or finds it done. A slow module fails its own pods' starts
//!   and delays the others' by at most the timeout.
//!
//! [`RuntimeConfig::max_concurrent_compilations`]: crate::RuntimeConfig::max_concurrent_compilations
//! [`RuntimeConfig::compile_timeout`]: crate::RuntimeConfig::compile_timeout

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::cache::BinaryKind;
use crate::error::LoadError;
use crate::program::{Program, ProgramInner};
use crate::runtime::Shared;

/// Where a compilation is.
#[derive(Clone)]
pub(crate) enum Stage {
    /// Waiting for a compilation slot.
    Queued,
    /// Compiling since then.
    Compiling(Instant),
    /// Done.
    Done(Result<Program, LoadError>),
}

/// A compilation under way, as its waiters see it.
pub(crate) type Flight = watch::Receiver<Stage>;

/// Programs loaded or being loaded, by `sha256:<hex>` digest.
#[derive(Default)]
struct Programs {
    /// Programs loaded and still referenced: a later load shares their compiled code.
    loaded: HashMap<String, Weak<ProgramInner>>,
    /// Compilations under way.
    flights: HashMap<String, Flight>,
}

/// The programs of a runtime and its compilation slots.
pub(crate) struct Loader {
    programs: Mutex<Programs>,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// What a load found: a program, or a compilation to wait for.
pub(crate) enum Found {
    /// Loaded before (or by a compilation that just ended).
    Loaded(Program),
    /// Being compiled.
    Flight(Flight),
}

impl Loader {
    /// A loader allowing `compilations` at once, each waited for at most `timeout`.
    pub(crate) fn new(compilations: usize, timeout: Duration) -> Self {
        Self {
            programs: Mutex::new(Programs::default()),
            permits: Arc::new(Semaphore::new(compilations.max(1))),
            timeout,
        }
    }

    fn programs(&self) -> MutexGuard<'_, Programs> {
        self.programs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for `flight` (at most the timeout once it compiles) and returns its program.
    pub(crate) async fn wait(
        &self,
        mut flight: Flight,
        digest: &str,
    ) -> Result<Program, LoadError> {
        let joined = Instant::now();
        let ended = || {
            LoadError::Internal(
                "the compilation task ended without a result (the runtime is shutting down)".into(),
            )
        };
        // Queued behind other compilations: each gives its slot up within the timeout.
        let started = match &*flight
            .wait_for(|stage| !matches!(stage, Stage::Queued))
            .await
            .map_err(|_| ended())?
        {
            Stage::Done(result) => return result.clone(),
            Stage::Compiling(since) => *since,
            Stage::Queued => joined,
        };
        let deadline = started.max(joined) + self.timeout;
        let done = tokio::time::timeout_at(
            deadline,
            flight.wait_for(|stage| matches!(stage, Stage::Done(_))),
        )
        .await;
        match done {
            Ok(Ok(stage)) => match &*stage {
                Stage::Done(result) => result.clone(),
                _ => Err(ended()),
            },
            Ok(Err(_closed)) => Err(ended()),
            Err(_elapsed) => Err(LoadError::CompileTimeout {
                digest: digest.to_owned(),
                timeout: self.timeout,
            }),
        }
    }
}

impl Shared {
    /// The program of `digest` (`sha256:<hex>` of `wasm`): loaded, being compiled (joined),
    /// or, failing both, a compilation started now as a task of the guests' runtime.
    pub(crate) fn find_or_compile(
        self: &Arc<Self>,
        kind: BinaryKind,
        wasm: Arc<Vec<u8>>,
        digest: &str,
    ) -> Found {
        let mut programs = self.loader.programs();
        if let Some(inner) = programs.loaded.get(digest).and_then(Weak::upgrade) {
            self.cache.record_memory_hit();
            return Found::Loaded(Program { inner });
        }
        if let Some(flight) = programs.flights.get(digest) {
            self.cache.record_memory_hit();
            return Found::Flight(flight.clone());
        }
        let (stage, flight) = watch::channel(Stage::Queued);
        programs.flights.insert(digest.to_owned(), flight.clone());
        drop(programs);
        let landing = Landing {
            shared: self.clone(),
            digest: digest.to_owned(),
            flight: flight.clone(),
        };
        self.guests.spawn(async move {
            let compiled = landing
                .shared
                .compile(kind, wasm, &landing.digest, &stage)
                .await;
            landing.land(&compiled);
            stage.send_replace(Stage::Done(compiled));
        });
        Found::Flight(flight)
    }

    /// Compiles (or reads from the disk cache) and links, in a compilation slot.
    async fn compile(
        self: &Arc<Self>,
        kind: BinaryKind,
        wasm: Arc<Vec<u8>>,
        digest: &str,
        stage: &watch::Sender<Stage>,
    ) -> Result<Program, LoadError> {
        let permit = self
            .loader
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| LoadError::Internal(e.to_string()))?;
        stage.send_replace(Stage::Compiling(Instant::now()));
        let shared = self.clone();
        let owned_digest = digest.to_owned();
        let work = tokio::task::spawn_blocking(move || {
            let hex = owned_digest
                .strip_prefix("sha256:")
                .unwrap_or(&owned_digest);
            let compiled = shared
                .cache
                .load_or_compile(&shared.engine, kind, &wasm, hex)
                .map_err(LoadError::Invalid)?;
            Program::link(&shared.linkers, compiled, owned_digest.clone())
        });
        tokio::pin!(work);
        let joined = match tokio::time::timeout(self.loader.timeout, &mut work).await {
            Ok(joined) => joined,
            Err(_elapsed) => {
                drop(permit);
                tracing::warn!(
                    digest,
                    timeout = ?self.loader.timeout,
                    "a compilation is past its timeout: it gives its slot to the next one and goes on in the background"
                );
                work.await
            }
        };
        joined.map_err(|e| LoadError::Internal(format!("the compilation thread failed: {e}")))?
    }
}

/// Ends a compilation's flight: records its program (when it succeeded) for later loads and
/// removes the flight, also when the compilation task is dropped or panics.
struct Landing {
    shared: Arc<Shared>,
    digest: String,
    flight: Flight,
}

impl Landing {
    fn land(&self, compiled: &Result<Program, LoadError>) {
        let mut programs = self.shared.loader.programs();
        if let Ok(program) = compiled {
            programs.loaded.retain(|_, weak| weak.strong_count() > 0);
            programs
                .loaded
                .insert(self.digest.clone(), Arc::downgrade(&program.inner));
        }
        self.remove_flight(&mut programs);
    }

    fn remove_flight(&self, programs: &mut Programs) {
        // Only this compilation's flight: a later one of the same digest may have replaced it.
        if programs
            .flights
            .get(&self.digest)
            .is_some_and(|f| f.same_channel(&self.flight))
        {
            programs.flights.remove(&self.digest);
        }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut programs = self.shared.loader.programs();
        self.remove_flight(&mut programs);
    }
}

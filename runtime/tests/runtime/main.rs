//! Integration tests of wasmkube-runtime, one binary: guests written in WAT (and turned into
//! components) run through the public API, and the samples' real C guests
//! (`samples/out/*.wasm`; a test whose sample is not built fails naming `samples/build --oci`).

mod compile;
mod cpu;
mod guests;
mod http;
mod load;
mod network;
mod process;
mod samples;

use std::time::Duration;

use tempfile::TempDir;
use tokio::task::JoinHandle;
use wasmkube_runtime::{MemorySink, Outcome, ProcessSpec, Program, Runtime, RuntimeConfig};

/// Far longer than anything here should take; only a broken runtime waits this long.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// A runtime with a small pool and a 256 MiB cap on memories, caching into its own
/// temporary directory (kept alive by the returned guard).
pub(crate) fn test_runtime() -> (Runtime, TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}"));
    let runtime = runtime_with_cache(dir.path());
    (runtime, dir)
}

/// A test runtime caching into `cache_dir`.
pub(crate) fn runtime_with_cache(cache_dir: &std::path::Path) -> Runtime {
    let mut config = RuntimeConfig::new(cache_dir);
    config.total_instances = 16;
    config.max_memory_per_instance = 256 << 20;
    Runtime::new(config).unwrap_or_else(|e| panic!("cannot create the runtime: {e}"))
}

/// Loads `wasm`, failing the test on a load error.
pub(crate) async fn load(runtime: &Runtime, wasm: &[u8]) -> Program {
    runtime
        .load(wasm, "")
        .await
        .unwrap_or_else(|e| panic!("load failed: {e}"))
}

/// Captured output of a spawned guest.
pub(crate) struct Captured {
    pub(crate) stdout: MemorySink,
    pub(crate) stderr: MemorySink,
}

/// A spec for `args` whose stdout and stderr are captured.
pub(crate) fn captured_spec(args: &[&str]) -> (ProcessSpec, Captured) {
    let stdout = MemorySink::new();
    let stderr = MemorySink::new();
    let mut spec = ProcessSpec::new(args.first().copied().unwrap_or("guest"));
    spec.args = args.iter().map(|a| (*a).to_owned()).collect();
    spec.stdout = Box::new(stdout.clone());
    spec.stderr = Box::new(stderr.clone());
    (spec, Captured { stdout, stderr })
}

/// Waits for a spawned guest's outcome (failing the test after [`PATIENCE`]).
pub(crate) async fn outcome_of(task: JoinHandle<Outcome>) -> Outcome {
    tokio::time::timeout(PATIENCE, task)
        .await
        .unwrap_or_else(|_| panic!("guest still running after {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("guest task failed: {e}"))
}

/// Runs `wasm` with `spec` to its end.
pub(crate) async fn run(runtime: &Runtime, wasm: &[u8], spec: ProcessSpec) -> Outcome {
    let program = load(runtime, wasm).await;
    let (_stopper, task) = runtime.spawn(&program, spec);
    outcome_of(task).await
}

/// Polls `condition` every few milliseconds until it holds (failing after [`PATIENCE`]).
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

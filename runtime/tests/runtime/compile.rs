//! Compilation under pressure: concurrent loads of one new program compile it once, runtimes
//! sharing a cache directory never see each other's half-written files, a damaged cache file
//! is recompiled instead of run, and a compilation past its timeout fails its loads without
//! holding up the others.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmkube_runtime::{LoadError, Outcome, ProgramKind, Runtime, RuntimeConfig};

use crate::{PATIENCE, captured_spec, guests, load, outcome_of, runtime_with_cache};

/// The compiled files (`*.cwasm`) and anything else (temporary files) in a cache directory.
fn cache_files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut compiled = Vec::new();
    let mut other = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            compiled.push(path);
        } else {
            other.push(path);
        }
    }
    (compiled, other)
}

/// Loads `wasm` `n` times at once on `runtime`; every load must succeed.
async fn load_concurrently(runtime: &Runtime, wasm: &[u8], n: usize) -> Vec<ProgramKind> {
    let loads: Vec<_> = (0..n)
        .map(|_| {
            let runtime = runtime.clone();
            let wasm = wasm.to_vec();
            tokio::spawn(async move { runtime.load(&wasm, "").await.map(|p| p.kind()) })
        })
        .collect();
    let mut kinds = Vec::new();
    for load in loads {
        match load.await {
            Ok(Ok(kind)) => kinds.push(kind),
            Ok(Err(e)) => panic!("a concurrent load failed: {e}"),
            Err(e) => panic!("a load task failed: {e}"),
        }
    }
    kinds
}

/// Runs `program` (a command printing its argv) and checks that it works.
async fn runs(runtime: &Runtime, wasm: &[u8]) {
    let program = load(runtime, wasm).await;
    let (spec, _out) = captured_spec(&["guest"]);
    let (_stopper, task) = runtime.spawn(&program, spec);
    assert_eq!(outcome_of(task).await, Outcome::Exited(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_loads_of_one_new_module_compile_it_once() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let runtime = runtime_with_cache(cache.path());
    let wasm = guests::many_functions(3000);
    let kinds = load_concurrently(&runtime, &wasm, 16).await;
    assert_eq!(kinds, vec![ProgramKind::CommandModule; 16]);
    let stats = runtime.cache_stats();
    assert_eq!(stats.compiled, 1, "{stats:?}");
    assert_eq!(stats.memory_hits, 15, "{stats:?}");
    let (compiled, other) = cache_files(cache.path());
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    assert!(other.is_empty(), "left behind: {other:?}");
    runs(&runtime, &wasm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_loads_of_one_new_component_compile_it_once() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let runtime = runtime_with_cache(cache.path());
    let wasm = guests::command_component(&guests::many_functions(2000));
    let kinds = load_concurrently(&runtime, &wasm, 12).await;
    assert_eq!(kinds, vec![ProgramKind::CommandComponent; 12]);
    assert_eq!(runtime.cache_stats().compiled, 1);
    runs(&runtime, &wasm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_compiling_into_one_cache_at_once_both_succeed() {
    // Before every writer had a temporary file of its own, two compilations of one program
    // wrote the same temporary file, one of them after the other had renamed and mapped it:
    // SIGBUS, and the whole process (in `wasmkube server`, the control plane too) died.
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let first = runtime_with_cache(cache.path());
    let second = runtime_with_cache(cache.path());
    let wasm = guests::many_functions(3000);
    let (a, b) = tokio::join!(
        load_concurrently(&first, &wasm, 6),
        load_concurrently(&second, &wasm, 6)
    );
    assert_eq!(a.len() + b.len(), 12);
    let (compiled, other) = cache_files(cache.path());
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    assert!(other.is_empty(), "left behind: {other:?}");
    runs(&first, &wasm).await;
    runs(&second, &wasm).await;
    // And a third runtime reads what they wrote.
    let third = runtime_with_cache(cache.path());
    runs(&third, &wasm).await;
    assert_eq!(third.cache_stats().compiled, 0);
    assert_eq!(third.cache_stats().disk_hits, 1);
}

/// Compiles `wasm` into a fresh cache, changes its one file with `damage`, and checks that a
/// new runtime recompiles it (and that the result runs).
async fn damaged_cache_file_is_recompiled(damage: impl FnOnce(&mut Vec<u8>)) {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let wasm = guests::say_and_exit("", 0);
    load(&runtime_with_cache(cache.path()), &wasm).await;
    let (compiled, _) = cache_files(cache.path());
    let [file] = compiled.as_slice() else {
        panic!("expected one cache file: {compiled:?}");
    };
    let mut bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{e}"));
    damage(&mut bytes);
    std::fs::write(file, &bytes).unwrap_or_else(|e| panic!("{e}"));

    let runtime = runtime_with_cache(cache.path());
    runs(&runtime, &wasm).await;
    assert_eq!(
        runtime.cache_stats().compiled,
        1,
        "the damaged file was used"
    );
    assert_eq!(runtime.cache_stats().disk_hits, 0);
    // The file was replaced by a good one.
    let again = runtime_with_cache(cache.path());
    runs(&again, &wasm).await;
    assert_eq!(again.cache_stats().disk_hits, 1);
}

#[tokio::test]
async fn a_truncated_cache_file_is_recompiled_not_loaded() {
    damaged_cache_file_is_recompiled(|bytes| bytes.truncate(bytes.len() / 2)).await;
}

#[tokio::test]
async fn a_cache_file_with_a_changed_byte_of_code_is_recompiled_not_loaded() {
    // A flipped byte in the middle of the code still parses as an artifact; only the digest
    // written with it tells that it is not the code that was compiled.
    damaged_cache_file_is_recompiled(|bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
    })
    .await;
}

#[tokio::test]
async fn an_empty_cache_file_is_recompiled() {
    damaged_cache_file_is_recompiled(Vec::clear).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compilation_past_its_timeout_fails_its_loads_but_not_the_next_ones() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = RuntimeConfig::new(cache.path());
    config.total_instances = 8;
    config.max_memory_per_instance = 256 << 20;
    config.max_concurrent_compilations = 1;
    config.compile_timeout = Duration::from_secs(1);
    let runtime = Runtime::new(config).unwrap_or_else(|e| panic!("{e}"));
    // Several seconds of Cranelift's time (1000 x 200 took 2.3 s on the 2-core test
    // machine; this is three times that): far past the timeout, which a tiny module's
    // compilation stays well within even on a busy machine.
    let slow = guests::big_functions(2000, 300);

    let slow_load = tokio::spawn({
        let runtime = runtime.clone();
        let slow = slow.clone();
        async move { runtime.load(&slow, "").await }
    });
    // Queued behind the slow one (one compilation at a time), and loaded once it gives up
    // its slot.
    let quick = guests::say_and_exit("", 0);
    let quick_program = tokio::time::timeout(PATIENCE, runtime.load(&quick, "")).await;
    assert!(
        matches!(quick_program, Ok(Ok(_))),
        "the quick module did not load: {quick_program:?}"
    );
    let error = slow_load
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .err()
        .unwrap_or_else(|| panic!("the slow module compiled within 1 s"));
    assert!(
        matches!(error, LoadError::CompileTimeout { .. }),
        "{error:?}"
    );
    assert!(!error.is_workload_error());
    let message = error.to_string();
    assert!(message.contains("did not finish within 1s"), "{message}");

    // The compilation went on in the background: a later load finds its result.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match runtime.load(&slow, "").await {
            Ok(program) => {
                assert_eq!(program.kind(), ProgramKind::CommandModule);
                break;
            }
            Err(LoadError::CompileTimeout { .. }) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slow module never finished compiling"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        runtime.cache_stats().compiled,
        2,
        "the slow module was compiled once, the quick one once"
    );
}

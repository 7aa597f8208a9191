//! Loading: the compiled-code cache, classification, and bad binaries as load errors.

use wasmkube_runtime::{CacheStats, LoadError, Outcome, ProgramKind, RuntimeConfig};

use crate::{captured_spec, guests, load, outcome_of, runtime_with_cache, test_runtime};

#[tokio::test]
async fn a_second_runtime_on_the_same_cache_compiles_nothing() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let wasm = guests::say_and_exit("cached\n", 0);

    let first = runtime_with_cache(cache.path());
    load(&first, &wasm).await;
    assert_eq!(
        first.cache_stats(),
        CacheStats {
            compiled: 1,
            disk_hits: 0,
            memory_hits: 0
        }
    );
    drop(first);

    let second = runtime_with_cache(cache.path());
    let program = load(&second, &wasm).await;
    assert_eq!(
        second.cache_stats(),
        CacheStats {
            compiled: 0,
            disk_hits: 1,
            memory_hits: 0
        }
    );
    // And the code from the cache runs.
    let (spec, out) = captured_spec(&["cached"]);
    let (_stopper, task) = second.spawn(&program, spec);
    assert_eq!(outcome_of(task).await, Outcome::Exited(0));
    assert_eq!(out.stdout.text(), "cached\n");
}

#[tokio::test]
async fn a_component_is_cached_on_disk_too() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let wasm = guests::command_component(&guests::echo());
    load(&runtime_with_cache(cache.path()), &wasm).await;
    let second = runtime_with_cache(cache.path());
    assert_eq!(
        load(&second, &wasm).await.kind(),
        ProgramKind::CommandComponent
    );
    assert_eq!(second.cache_stats().compiled, 0);
    assert_eq!(second.cache_stats().disk_hits, 1);
}

#[tokio::test]
async fn loading_a_program_twice_in_one_runtime_shares_the_first_load() {
    let (runtime, _dir) = test_runtime();
    let wasm = guests::echo();
    let first = load(&runtime, &wasm).await;
    let second = load(&runtime, &wasm).await;
    assert_eq!(first.digest(), second.digest());
    assert_eq!(runtime.cache_stats().compiled, 1);
    assert_eq!(runtime.cache_stats().memory_hits, 1);
}

#[tokio::test]
async fn a_corrupt_cache_file_is_recompiled() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let wasm = guests::echo();
    load(&runtime_with_cache(cache.path()), &wasm).await;
    for entry in std::fs::read_dir(cache.path()).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        std::fs::write(&path, b"garbage").unwrap_or_else(|e| panic!("{e}"));
    }
    let second = runtime_with_cache(cache.path());
    load(&second, &wasm).await;
    assert_eq!(second.cache_stats().compiled, 1);
}

#[tokio::test]
async fn the_digest_is_checked_and_reported_with_the_program() {
    let (runtime, _dir) = test_runtime();
    let wasm = guests::echo();
    let program = load(&runtime, &wasm).await;
    let digest = program.digest().to_owned();
    assert!(digest.starts_with("sha256:") && digest.len() == 7 + 64);
    assert!(runtime.load(&wasm, &digest).await.is_ok());
    assert!(
        runtime
            .load(&wasm, &digest["sha256:".len()..])
            .await
            .is_ok()
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(
        runtime.load(&wasm, &wrong).await,
        Err(LoadError::DigestMismatch { .. })
    ));
}

#[tokio::test]
async fn an_unsatisfied_import_is_a_load_error_naming_the_import() {
    let (runtime, _dir) = test_runtime();
    let error = runtime
        .load(&guests::unsatisfied_import(), "")
        .await
        .err()
        .unwrap_or_else(|| panic!("an unsatisfied import loaded"));
    assert!(matches!(error, LoadError::Unlinkable(_)), "{error:?}");
    assert!(error.is_workload_error());
    assert!(
        error
            .to_string()
            .contains("unknown import: `env::foo` has not been defined"),
        "{error}"
    );
}

#[tokio::test]
async fn a_binary_over_the_size_cap_is_refused_before_compiling() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = RuntimeConfig::new(cache.path());
    config.total_instances = 4;
    config.max_wasm_bytes = 1024;
    let runtime = wasmkube_runtime::Runtime::new(config).unwrap_or_else(|e| panic!("{e}"));
    let mut wasm = guests::echo();
    wasm.resize(4096, 0);
    let error = runtime.load(&wasm, "").await.err();
    assert!(
        matches!(
            error,
            Some(LoadError::TooLarge {
                size: 4096,
                limit: 1024
            })
        ),
        "{error:?}"
    );
    assert_eq!(runtime.cache_stats().compiled, 0);
}

#[tokio::test]
async fn garbage_and_invalid_wasm_are_invalid() {
    let (runtime, _dir) = test_runtime();
    let garbage = runtime.load(b"#!/bin/sh\necho not wasm\n", "").await.err();
    assert!(
        matches!(garbage, Some(LoadError::Invalid(_))),
        "{garbage:?}"
    );
    // A valid preamble followed by nonsense.
    let broken = runtime.load(b"\0asm\x01\0\0\0\x01\xff\xff", "").await.err();
    assert!(matches!(broken, Some(LoadError::Invalid(_))), "{broken:?}");
}

#[tokio::test]
async fn a_module_without_start_is_unsupported() {
    let (runtime, _dir) = test_runtime();
    let reactor =
        wat::parse_str("(module (func (export \"f\")))").unwrap_or_else(|e| panic!("{e}"));
    let error = runtime.load(&reactor, "").await.err();
    assert!(
        matches!(error, Some(LoadError::Unsupported(_))),
        "{error:?}"
    );
}

#[tokio::test]
async fn programs_are_classified_by_what_they_export() {
    let (runtime, _dir) = test_runtime();
    assert_eq!(
        load(&runtime, &guests::echo()).await.kind(),
        ProgramKind::CommandModule
    );
    assert_eq!(
        load(&runtime, &guests::command_component(&guests::echo()))
            .await
            .kind(),
        ProgramKind::CommandComponent
    );
    let proxy = load(
        &runtime,
        &guests::proxy_component(&guests::Handler::Hello("hi")),
    )
    .await;
    assert_eq!(proxy.kind(), ProgramKind::HttpProxy);
    assert!(!proxy.kind().is_command());
}

#[tokio::test]
async fn spawning_an_http_proxy_fails_to_start() {
    let (runtime, _dir) = test_runtime();
    let proxy = load(
        &runtime,
        &guests::proxy_component(&guests::Handler::Hello("hi")),
    )
    .await;
    let (spec, _out) = captured_spec(&["proxy"]);
    let (_stopper, task) = runtime.spawn(&proxy, spec);
    assert!(matches!(
        outcome_of(task).await,
        Outcome::StartFailed { .. }
    ));
}

#[tokio::test]
async fn load_file_reads_and_loads_a_wasm_file() {
    let (runtime, dir) = test_runtime();
    let path = dir.path().join("hello.wasm");
    std::fs::write(&path, guests::echo()).unwrap_or_else(|e| panic!("{e}"));
    let program = runtime
        .load_file(&path, "")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(program.kind(), ProgramKind::CommandModule);
    let missing = runtime
        .load_file(&dir.path().join("missing.wasm"), "")
        .await;
    assert!(matches!(missing, Err(LoadError::Internal(_))));
}

#[tokio::test(flavor = "current_thread")]
async fn compiling_a_large_module_leaves_the_executor_free() {
    let (runtime, _dir) = test_runtime();
    let wasm = guests::many_functions(4000);
    let loading = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.load(&wasm, "").await.map(|p| p.kind()) }
    });
    // On this single executor thread, a task scheduled after the load still runs while the
    // compilation is under way (it is on a blocking thread, not on this one).
    let other = tokio::spawn(async { 42 });
    assert_eq!(other.await.ok(), Some(42));
    assert!(
        !loading.is_finished(),
        "the load finished before a trivial task could run"
    );
    let kind = loading.await.ok().and_then(Result::ok);
    assert_eq!(kind, Some(ProgramKind::CommandModule));
}

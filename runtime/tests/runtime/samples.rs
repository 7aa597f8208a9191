//! The real C guests of `samples/` (built by `samples/build` into `samples/out/`). A test whose
//! sample is not built fails naming that command (it skips only with
//! `WASMKUBE_ALLOW_MISSING_SAMPLES=1`, see `wasmkube_samples`).

use std::path::PathBuf;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use wasmkube_runtime::{HttpSpec, Limits, Outcome, Preopen, Program, ProgramKind, Runtime};

use crate::{PATIENCE, captured_spec, eventually, outcome_of, test_runtime};

/// `samples/out/<name>`. Panics naming the build command when it is not built; `None` only
/// when `WASMKUBE_ALLOW_MISSING_SAMPLES=1` lets the test skip.
fn sample(name: &str) -> Option<PathBuf> {
    wasmkube_samples::built(&format!("the {name} sample test"), name)
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn load_sample(runtime: &Runtime, name: &str) -> Option<Program> {
    let path = sample(name)?;
    Some(
        runtime
            .load_file(&path, "")
            .await
            .unwrap_or_else(|e| panic!("{name} does not load: {e}")),
    )
}

#[tokio::test]
async fn sample_hello_prints_its_args_and_env_and_exits_zero() {
    let (runtime, _dir) = test_runtime();
    for name in ["hello.wasm", "hello.component.wasm"] {
        let Some(program) = load_sample(&runtime, name).await else {
            continue;
        };
        let (mut spec, out) = captured_spec(&["hello", "first-arg", "second arg"]);
        spec.env = vec![("GREETING".into(), "hi there".into())];
        let (_stopper, task) = runtime.spawn(&program, spec);
        assert_eq!(outcome_of(task).await, Outcome::Exited(0), "{name}");
        let text = out.stdout.text();
        assert!(text.contains("hello from wasm\n"), "{name}: {text}");
        assert!(text.contains("arg[2]=second arg\n"), "{name}: {text}");
        assert!(text.contains("env GREETING=hi there\n"), "{name}: {text}");
    }
}

#[tokio::test]
async fn sample_crash_exits_one_with_a_message_on_stderr() {
    let (runtime, _dir) = test_runtime();
    let Some(program) = load_sample(&runtime, "crash.wasm").await else {
        return;
    };
    let (spec, out) = captured_spec(&["crash"]);
    let (_stopper, task) = runtime.spawn(&program, spec);
    assert_eq!(outcome_of(task).await, Outcome::Exited(1));
    assert!(!out.stderr.text().is_empty());
}

#[tokio::test]
async fn sample_counter_keeps_printing_until_stopped() {
    let (runtime, _dir) = test_runtime();
    let Some(program) = load_sample(&runtime, "counter.wasm").await else {
        return;
    };
    let (spec, out) = captured_spec(&["counter", "10"]);
    let (stopper, task) = runtime.spawn(&program, spec);
    eventually("three lines of output", || {
        out.stdout.text().lines().count() >= 3
    })
    .await;
    stopper.stop();
    assert_eq!(outcome_of(task).await, Outcome::Stopped);
}

#[tokio::test]
async fn sample_memhog_under_a_32_mib_limit_is_out_of_memory() {
    let (runtime, _dir) = test_runtime();
    let Some(program) = load_sample(&runtime, "memhog.wasm").await else {
        return;
    };
    let (mut spec, _out) = captured_spec(&["memhog", "4", "1"]);
    spec.limits = Limits {
        memory_bytes: Some(32 << 20),
        ..Limits::default()
    };
    let (_stopper, task) = runtime.spawn(&program, spec);
    assert_eq!(outcome_of(task).await, Outcome::OutOfMemory);
}

#[tokio::test]
async fn sample_files_reads_a_read_only_volume_and_writes_an_empty_dir() {
    let (runtime, _dir) = test_runtime();
    let Some(program) = load_sample(&runtime, "files.wasm").await else {
        return;
    };
    let config = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        config.path().join("greeting.txt"),
        "hello from a configMap\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (mut spec, out) = captured_spec(&["files"]);
    spec.preopens = vec![
        Preopen {
            host: config.path().to_owned(),
            guest: "/config".into(),
            read_only: true,
        },
        Preopen {
            host: data.path().to_owned(),
            guest: "/data".into(),
            read_only: false,
        },
    ];
    let (_stopper, task) = runtime.spawn(&program, spec);
    let outcome = outcome_of(task).await;
    let text = out.stdout.text();
    assert_eq!(outcome, Outcome::Exited(0), "{text}\n{}", out.stderr.text());
    assert!(text.contains("hello from a configMap"), "{text}");
    assert!(data.path().join("runs.log").is_file());
    assert!(!config.path().join("runs.log").exists());
}

#[tokio::test]
async fn sample_http_hello_answers_requests_with_a_fresh_instance_each() {
    let (runtime, _dir) = test_runtime();
    let Some(program) = load_sample(&runtime, "http-hello.wasm").await else {
        return;
    };
    assert_eq!(program.kind(), ProgramKind::HttpProxy);
    let service = runtime.http_service(
        &program,
        HttpSpec {
            request_timeout: Duration::from_secs(30),
            ..HttpSpec::default()
        },
    );
    for (path, status) in [
        ("/hello", StatusCode::OK),
        ("/status/503", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let request = Request::get(path)
            .header("host", "pod")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let response = service.handle(request).await;
        assert_eq!(response.status(), status, "{path}");
        let body = tokio::time::timeout(PATIENCE, response.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("body still streaming"))
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        if status == StatusCode::OK {
            assert!(String::from_utf8_lossy(&body).starts_with("hello from wasm\n"));
        }
    }
    assert_eq!(service.stats().responses, 2);
}

//! Command programs run like processes: exit codes, argv/env, output capture, preopens,
//! limits, stops and traps.

use wasmkube_runtime::{Limits, Outcome, Preopen, ProgramKind};

use crate::{captured_spec, eventually, guests, load, outcome_of, run, test_runtime};

#[tokio::test]
async fn proc_exit_code_becomes_the_exit_outcome_and_stdout_is_captured() {
    let (runtime, _dir) = test_runtime();
    let (spec, out) = captured_spec(&["exit"]);
    let outcome = run(&runtime, &guests::say_and_exit("bye\n", 7), spec).await;
    assert_eq!(outcome, Outcome::Exited(7));
    assert_eq!(out.stdout.text(), "bye\n");
}

#[tokio::test]
async fn returning_from_start_exits_zero() {
    let (runtime, _dir) = test_runtime();
    let (spec, out) = captured_spec(&["echo"]);
    let outcome = run(&runtime, &guests::echo(), spec).await;
    assert_eq!(outcome, Outcome::Exited(0));
    assert!(outcome.is_success());
    assert_eq!(out.stdout.text(), "echo\0");
}

#[tokio::test]
async fn args_reach_the_guest_in_order_with_argv0_first_and_env_goes_to_its_environ() {
    let (runtime, _dir) = test_runtime();
    let (mut spec, out) = captured_spec(&["prog", "a", "b c"]);
    spec.env = vec![("K".into(), "V".into()), ("X".into(), "1".into())];
    let outcome = run(&runtime, &guests::echo(), spec).await;
    assert_eq!(outcome, Outcome::Exited(0));
    assert_eq!(out.stdout.text(), "prog\0a\0b c\0");
    assert_eq!(out.stderr.text(), "K=V\0X=1\0");
}

#[tokio::test]
async fn a_preopened_directory_can_be_read_and_written() {
    let (runtime, _dir) = test_runtime();
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(data.path().join("in.txt"), "payload").unwrap_or_else(|e| panic!("{e}"));
    let (mut spec, _out) = captured_spec(&["copy"]);
    spec.preopens = vec![Preopen {
        host: data.path().to_owned(),
        guest: "/data".into(),
        read_only: false,
    }];
    let outcome = run(&runtime, &guests::copy_file(), spec).await;
    assert_eq!(outcome, Outcome::Exited(0));
    let copied = std::fs::read_to_string(data.path().join("out.txt")).unwrap_or_default();
    assert_eq!(copied, "payload");
}

#[tokio::test]
async fn a_read_only_preopen_can_be_read_but_not_written() {
    let (runtime, _dir) = test_runtime();
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(data.path().join("in.txt"), "payload").unwrap_or_else(|e| panic!("{e}"));
    let (mut spec, _out) = captured_spec(&["copy"]);
    spec.preopens = vec![Preopen {
        host: data.path().to_owned(),
        guest: "/config".into(),
        read_only: true,
    }];
    let outcome = run(&runtime, &guests::copy_file(), spec).await;
    // The guest exits 2 when it cannot create out.txt (after reading in.txt).
    assert_eq!(outcome, Outcome::Exited(2));
    assert!(!data.path().join("out.txt").exists());
}

#[tokio::test]
async fn a_missing_preopen_directory_is_a_start_failure() {
    let (runtime, _dir) = test_runtime();
    let (mut spec, _out) = captured_spec(&["copy"]);
    spec.preopens = vec![Preopen {
        host: "/nonexistent/wasmkube-test".into(),
        guest: "/data".into(),
        read_only: false,
    }];
    let outcome = run(&runtime, &guests::copy_file(), spec).await;
    assert!(
        matches!(&outcome, Outcome::StartFailed { message } if message.contains("/nonexistent/wasmkube-test")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn growing_memory_past_the_limit_is_out_of_memory() {
    let (runtime, _dir) = test_runtime();
    let (mut spec, out) = captured_spec(&["bomb"]);
    spec.limits = Limits {
        memory_bytes: Some(32 << 20),
        ..Limits::default()
    };
    let outcome = run(&runtime, &guests::memory_bomb(), spec).await;
    assert_eq!(outcome, Outcome::OutOfMemory);
    assert!(
        out.stderr
            .text()
            .contains("memory limit of 33554432 bytes exceeded")
    );
}

#[tokio::test]
async fn without_a_limit_the_runtime_cap_still_ends_a_memory_bomb() {
    let (runtime, _dir) = test_runtime();
    let (spec, _out) = captured_spec(&["bomb"]);
    let outcome = run(&runtime, &guests::memory_bomb(), spec).await;
    assert_eq!(outcome, Outcome::OutOfMemory);
}

#[tokio::test]
async fn an_initial_memory_above_the_limit_is_out_of_memory_at_start() {
    let (runtime, _dir) = test_runtime();
    let (mut spec, _out) = captured_spec(&["big"]);
    spec.limits.memory_bytes = Some(32 << 20);
    // 1000 pages = 62.5 MiB.
    let outcome = run(&runtime, &guests::big_initial_memory(1000), spec).await;
    assert_eq!(outcome, Outcome::OutOfMemory);
}

#[tokio::test]
async fn stop_interrupts_an_infinite_loop() {
    let (runtime, _dir) = test_runtime();
    let program = load(&runtime, &guests::spin()).await;
    let (spec, out) = captured_spec(&["spin"]);
    let (stopper, task) = runtime.spawn(&program, spec);
    eventually("the guest to start spinning", || {
        out.stdout.text() == "spinning\n"
    })
    .await;
    assert!(!task.is_finished());
    stopper.stop();
    assert!(stopper.is_stopped());
    assert_eq!(outcome_of(task).await, Outcome::Stopped);
}

#[tokio::test]
async fn stop_ends_a_guest_blocked_in_a_host_call() {
    let (runtime, _dir) = test_runtime();
    let program = load(&runtime, &guests::sleep_an_hour()).await;
    let (spec, out) = captured_spec(&["sleep"]);
    let (stopper, task) = runtime.spawn(&program, spec);
    eventually("the guest to go to sleep", || {
        out.stdout.text() == "sleeping\n"
    })
    .await;
    stopper.stop();
    assert_eq!(outcome_of(task).await, Outcome::Stopped);
}

#[tokio::test]
async fn a_stop_before_the_guest_runs_still_stops_it() {
    let (runtime, _dir) = test_runtime();
    let program = load(&runtime, &guests::spin()).await;
    let (spec, _out) = captured_spec(&["spin"]);
    let (stopper, task) = runtime.spawn(&program, spec);
    stopper.stop();
    assert_eq!(outcome_of(task).await, Outcome::Stopped);
}

#[tokio::test(flavor = "current_thread")]
async fn a_spinning_guest_does_not_block_a_single_threaded_executor() {
    let (runtime, _dir) = test_runtime();
    let program = load(&runtime, &guests::spin()).await;
    let (spec, out) = captured_spec(&["spin"]);
    let (stopper, task) = runtime.spawn(&program, spec);
    // This task only gets to run if the guest yields the one executor thread.
    let other = tokio::spawn(async { 42 });
    assert_eq!(other.await.ok(), Some(42));
    eventually("the guest to start spinning", || {
        out.stdout.text() == "spinning\n"
    })
    .await;
    stopper.stop();
    assert_eq!(outcome_of(task).await, Outcome::Stopped);
}

#[tokio::test]
async fn spending_the_cpu_budget_is_cpu_time_exceeded() {
    let (runtime, _dir) = test_runtime();
    let (mut spec, _out) = captured_spec(&["spin"]);
    spec.limits.cpu_millis = Some(50);
    let outcome = run(&runtime, &guests::spin(), spec).await;
    assert_eq!(outcome, Outcome::CpuTimeExceeded);
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow_trap() {
    let (runtime, _dir) = test_runtime();
    let (spec, out) = captured_spec(&["recurse"]);
    let outcome = run(&runtime, &guests::recurse(), spec).await;
    assert_eq!(
        outcome,
        Outcome::Trapped {
            message: "wasm trap: call stack exhausted".into()
        }
    );
    assert!(out.stderr.text().contains("call stack exhausted"));
}

#[tokio::test]
async fn unreachable_is_a_trap_reported_on_stderr() {
    let (runtime, _dir) = test_runtime();
    let (spec, out) = captured_spec(&["trap"]);
    let outcome = run(&runtime, &guests::unreachable(), spec).await;
    assert!(
        matches!(&outcome, Outcome::Trapped { message } if message.contains("unreachable")),
        "{outcome:?}"
    );
    assert!(out.stderr.text().starts_with("wasmkube: trapped:"));
}

#[tokio::test]
async fn a_command_component_runs_with_args_env_and_exit_code() {
    let (runtime, _dir) = test_runtime();
    let echo = load(&runtime, &guests::command_component(&guests::echo())).await;
    assert_eq!(echo.kind(), ProgramKind::CommandComponent);
    let (mut spec, out) = captured_spec(&["prog", "x"]);
    spec.env = vec![("K".into(), "V".into())];
    let (_stopper, task) = runtime.spawn(&echo, spec);
    assert_eq!(outcome_of(task).await, Outcome::Exited(0));
    assert_eq!(out.stdout.text(), "prog\0x\0");
    assert_eq!(out.stderr.text(), "K=V\0");

    let exit = load(
        &runtime,
        &guests::command_component(&guests::say_and_exit("from a component\n", 3)),
    )
    .await;
    let (spec, out) = captured_spec(&["exit"]);
    let (_stopper, task) = runtime.spawn(&exit, spec);
    // WASIp2's `exit` carries only ok/err (`exit-with-code` is unstable and the preview1
    // adapter does not use it), so `proc_exit(3)` in a component is exit code 1.
    assert_eq!(outcome_of(task).await, Outcome::Exited(1));
    assert_eq!(out.stdout.text(), "from a component\n");
}

#[tokio::test]
async fn a_command_component_memory_bomb_is_out_of_memory() {
    let (runtime, _dir) = test_runtime();
    let program = load(&runtime, &guests::command_component(&guests::memory_bomb())).await;
    let (mut spec, _out) = captured_spec(&["bomb"]);
    spec.limits.memory_bytes = Some(32 << 20);
    let (_stopper, task) = runtime.spawn(&program, spec);
    assert_eq!(outcome_of(task).await, Outcome::OutOfMemory);
}

#[tokio::test]
async fn a_spinning_command_component_can_be_stopped() {
    let (runtime, _dir) = test_runtime();
    let program = load(&runtime, &guests::command_component(&guests::spin())).await;
    let (spec, out) = captured_spec(&["spin"]);
    let (stopper, task) = runtime.spawn(&program, spec);
    eventually("the guest to start spinning", || {
        out.stdout.text() == "spinning\n"
    })
    .await;
    stopper.stop();
    assert_eq!(outcome_of(task).await, Outcome::Stopped);
}

#[tokio::test]
async fn many_guests_run_side_by_side_from_one_program() {
    let (runtime, _dir) = test_runtime();
    let program = load(&runtime, &guests::say_and_exit("hi\n", 0)).await;
    let mut runs = Vec::new();
    for _ in 0..8 {
        let (spec, out) = captured_spec(&["hi"]);
        runs.push((runtime.spawn(&program, spec).1, out));
    }
    for (task, out) in runs {
        assert_eq!(outcome_of(task).await, Outcome::Exited(0));
        assert_eq!(out.stdout.text(), "hi\n");
    }
}

#[tokio::test]
async fn a_running_guest_stays_stoppable_after_the_runtime_handle_is_dropped() {
    let (runtime, _dir) = test_runtime();
    let program = load(&runtime, &guests::spin()).await;
    let (spec, out) = captured_spec(&["spin"]);
    let (stopper, task) = runtime.spawn(&program, spec);
    drop(runtime);
    eventually("the guest to start spinning", || {
        out.stdout.text() == "spinning\n"
    })
    .await;
    stopper.stop();
    assert_eq!(outcome_of(task).await, Outcome::Stopped);
}

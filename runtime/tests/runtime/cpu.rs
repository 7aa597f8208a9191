//! CPU: quotas (`Limits::cpu_millicores`) throttle a busy guest to its share, guests without
//! one share the guests' threads fairly. Progress is what each guest wrote (a `.` per 2^20
//! rounds of its loop), compared between guests that ran at the same time: nothing here
//! depends on how fast the machine is.

use wasmkube_runtime::{MemorySink, Outcome, Program, Runtime, RuntimeConfig, Stopper};

use crate::{captured_spec, eventually, guests, load, outcome_of};

/// A runtime of `threads` guest threads caching into a temporary directory.
fn runtime_with_threads(threads: usize) -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}"));
    let mut config = RuntimeConfig::new(dir.path());
    config.total_instances = 16;
    config.max_memory_per_instance = 256 << 20;
    config.guest_threads = threads;
    let runtime = Runtime::new(config).unwrap_or_else(|e| panic!("cannot create the runtime: {e}"));
    (runtime, dir)
}

/// A spinner running with an optional CPU limit, and its progress.
struct Spinner {
    stopper: Stopper,
    task: tokio::task::JoinHandle<Outcome>,
    stdout: MemorySink,
}

impl Spinner {
    fn start(runtime: &Runtime, program: &Program, millicores: Option<u64>) -> Spinner {
        let (mut spec, out) = captured_spec(&["spin"]);
        spec.limits.cpu_millicores = millicores;
        let (stopper, task) = runtime.spawn(program, spec);
        Spinner {
            stopper,
            task,
            stdout: out.stdout,
        }
    }

    fn progress(&self) -> usize {
        self.stdout.text().len()
    }

    async fn stop(self) {
        self.stopper.stop();
        assert_eq!(outcome_of(self.task).await, Outcome::Stopped);
    }
}

#[tokio::test]
async fn a_cpu_quota_holds_a_spinner_to_its_share_while_an_unlimited_one_runs_free() {
    // One thread per spinner, so neither waits for the other's thread.
    let (runtime, _dir) = runtime_with_threads(2);
    let program = load(&runtime, &guests::spin_with_progress()).await;
    let free = Spinner::start(&runtime, &program, None);
    // 5m: 0.5 ms of every 100 ms period.
    let limited = Spinner::start(&runtime, &program, Some(5));
    eventually("the unlimited spinner to make progress", || {
        free.progress() >= 2000
    })
    .await;
    let (free_dots, limited_dots) = (free.progress(), limited.progress());
    eprintln!("unlimited: {free_dots} dots; 5m: {limited_dots} dots");
    // Expected about 1:200 on an idle machine. On a busy one the unlimited spinner gets less
    // than a core, so the ratio grows (the limited one's quota is CPU time, whatever the
    // load), but it would take a spinner starved below a hundredth of a core to reach 1:2.
    assert!(
        limited_dots * 2 < free_dots,
        "the limited spinner did {limited_dots} to the unlimited one's {free_dots}"
    );
    eventually("the limited spinner to make progress", || {
        limited.progress() > 0
    })
    .await;
    free.stop().await;
    limited.stop().await;
}

#[tokio::test]
async fn a_throttled_guest_is_stopped_at_once() {
    let (runtime, _dir) = runtime_with_threads(1);
    let program = load(&runtime, &guests::spin_with_progress()).await;
    // 1m: 0.1 ms per 100 ms period, so it spends nearly all its time waiting for a period.
    let throttled = Spinner::start(&runtime, &program, Some(1));
    eventually("the guest to run", || throttled.progress() > 0).await;
    throttled.stop().await;
}

#[tokio::test]
async fn unlimited_guests_on_one_thread_share_it_fairly() {
    let (runtime, _dir) = runtime_with_threads(1);
    let program = load(&runtime, &guests::spin_with_progress()).await;
    let spinners: Vec<Spinner> = (0..3)
        .map(|_| Spinner::start(&runtime, &program, None))
        .collect();
    // Counted from when all three run: one that is still being instantiated while the others
    // spin (tests run in parallel on a 2-core machine) is late, not starved.
    eventually("every spinner to run", || {
        spinners.iter().all(|s| s.progress() > 0)
    })
    .await;
    let start: Vec<usize> = spinners.iter().map(Spinner::progress).collect();
    let since_start = || -> Vec<usize> {
        spinners
            .iter()
            .zip(&start)
            .map(|(s, at)| s.progress() - at)
            .collect()
    };
    eventually("the spinners to make progress together", || {
        since_start().iter().sum::<usize>() >= 1500
    })
    .await;
    let progress = since_start();
    eprintln!("three unlimited spinners on one thread, since all ran: {progress:?} dots");
    let mean = progress.iter().sum::<usize>() / progress.len();
    for dots in &progress {
        assert!(
            dots * 3 >= mean,
            "a spinner got {dots} of a mean of {mean}: {progress:?}"
        );
    }
    for spinner in spinners {
        spinner.stop().await;
    }
}

//! Guest isolation on a `wasmkube server` whose embedded node agent runs the guests in the
//! apiserver's process: busy guests under `limits.cpu` leave the API's latency near idle's
//! (the target is 2x; the test fails past [`MAX_RATIO`]) and each gets about its share of a
//! CPU; pods of one new module starting at once
//! compile it once and never take the server down; a compilation past the agent's timeout
//! fails its container's start (`CreateContainerError`, retried) without holding up other
//! pods; a gzip bomb is refused at import.
//!
//! Nothing here asserts a wall-clock time: latencies are compared with latencies measured in
//! the same run (idle and loaded interleaved, with no other test's cluster running: the
//! harness's `.exclusive()`), and a spinner's share is its own progress compared with an
//! unlimited spinner's in the same run.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{ListParams, LogParams, PostParams};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::harness::{NodeSpec, TestCluster, WasmImage, container_status, poll_until};

/// How long pods may take to reach the state a test waits for.
const DEADLINE: Duration = Duration::from_secs(180);
/// LISTs per latency measurement: enough for a p99 that is not one outlier.
const LISTS: usize = 300;
/// Spinners in the load test, and their CPU limit.
const SPINNERS: usize = 17;
const SPINNER_LIMIT: &str = "100m";
/// The share of a core [`SPINNER_LIMIT`] is.
const SPINNER_SHARE: f64 = 0.1;
/// How long the spinners' progress is measured for, by their own clocks.
const WINDOW_MS: u64 = 4000;
/// The least share of a core a spinner may get, as a part of the spinners' average in its
/// round (runs on a loaded machine measured 0.5-0.7 for the spinner that got least).
const MIN_OF_MEAN: f64 = 0.4;
/// Rounds of idle and loaded measurements at most (the test stops at the first within 2x).
const ROUNDS: usize = 3;
/// The LIST p99 with the spinners over idle's above which the test fails, in the best round.
/// The target is 2x, and runs on a quiet 2-core machine measure 1.7-3.2x: the loaded p99 is
/// idle's p50 plus one scheduler tick (4 ms at 250 Hz), the longest a control-plane thread
/// woken on a CPU where a guest runs waits for it, whatever the guests' nice value or
/// SCHED_IDLE (docs/benchmarks.md, where the figures this test prints go). Guests on the
/// apiserver's own threads, the bug this guards against (review finding 6), were 40x.
const MAX_RATIO: f64 = 4.0;

/// Sorted latencies of `n` LISTs of the test's ConfigMaps, after a few unmeasured ones.
async fn list_latencies(api: &Api<ConfigMap>, n: usize) -> Result<Vec<Duration>> {
    for _ in 0..10 {
        api.list(&ListParams::default()).await?;
    }
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let list = api.list(&ListParams::default()).await?;
        latencies.push(start.elapsed());
        if list.items.len() < 50 {
            bail!("the LIST returned {} ConfigMaps, not 50", list.items.len());
        }
    }
    latencies.sort();
    Ok(latencies)
}

/// The `p`th percentile (0-100) of sorted `latencies`.
fn percentile(latencies: &[Duration], p: usize) -> Duration {
    let i = (latencies.len() * p / 100).min(latencies.len().saturating_sub(1));
    latencies.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The spin sample's pod `name`, reporting every 250 ms, with `cpu_limit` (or none).
fn spinner(cluster: &TestCluster, name: &str, cpu_limit: Option<&str>) -> Result<Value> {
    let mut pod = cluster.sample_pod("spin")?;
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["labels"] = json!({"app": "spin"});
    pod["spec"]["terminationGracePeriodSeconds"] = json!(0);
    let container = &mut pod["spec"]["containers"][0];
    container["args"] = json!(["250"]);
    container["resources"] = json!({
        "requests": {"cpu": "10m", "memory": "16Mi"},
        "limits": {"memory": "32Mi"},
    });
    if let Some(limit) = cpu_limit {
        container["resources"]["limits"]["cpu"] = json!(limit);
    }
    Ok(pod)
}

/// A spinner's reports so far: `(rounds, elapsed_ms)` per line of `spin <rounds> <ms>`.
async fn reports(pods: &Api<Pod>, name: &str) -> Result<Vec<(u64, u64)>> {
    let log = pods
        .logs(
            name,
            &LogParams {
                tail_lines: Some(200),
                ..LogParams::default()
            },
        )
        .await
        .with_context(|| format!("the log of {name}"))?;
    Ok(log
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("spin ")?.split(' ');
            Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
        })
        .collect())
}

/// Waits until spinner `name` has reported for at least `elapsed_ms` of its own time.
async fn wait_reported(pods: &Api<Pod>, name: &str, elapsed_ms: u64) -> Result<(u64, u64)> {
    poll_until(
        &format!("{name} to report {elapsed_ms} ms"),
        DEADLINE,
        || async move {
            Ok(reports(pods, name)
                .await
                .ok()
                .and_then(|r| r.last().copied())
                .filter(|(_, ms)| *ms >= elapsed_ms))
        },
    )
    .await
}

/// Rounds per millisecond between two reports.
fn rate(from: (u64, u64), to: (u64, u64)) -> f64 {
    let rounds = to.0.saturating_sub(from.0) as f64;
    let ms = to.1.saturating_sub(from.1).max(1) as f64;
    rounds / ms
}

/// The fastest rate an unlimited spinner reaches over one report interval: what one core
/// does, with the least interference this run saw.
async fn calibrate(cluster: &TestCluster, pods: &Api<Pod>, name: &str) -> Result<f64> {
    cluster.apply_json(&spinner(cluster, name, None)?).await?;
    wait_reported(pods, name, 3000).await?;
    let reports = reports(pods, name).await?;
    let peak = reports
        .windows(2)
        .map(|w| rate(w[0], w[1]))
        .fold(0.0, f64::max);
    cluster
        .kubectl_ok(&["delete", "pod", name, "--grace-period=0", "--force"])
        .await?;
    cluster.wait_pod_gone(name, DEADLINE).await?;
    Ok(peak)
}

/// One round of the load test: the LISTs' latencies under load, the idle p99s measured just
/// before the spinners started and just after they were gone, and the spinners' reports at the
/// start and the end of their measurement window.
struct Round {
    idle_p99: (Duration, Duration),
    loaded: Vec<Duration>,
    first: Vec<(u64, u64)>,
    last: Vec<(u64, u64)>,
}

impl Round {
    /// The idle p99 the loaded one is compared with: the higher of the two around it.
    fn idle_p99(&self) -> Duration {
        self.idle_p99.0.max(self.idle_p99.1)
    }

    fn ratio(&self) -> f64 {
        percentile(&self.loaded, 99).as_secs_f64() / self.idle_p99().as_secs_f64()
    }
}

/// Starts the spinners `names`, measures LIST latency while they run and their progress over
/// [`WINDOW_MS`], and deletes them. `idle_before` is the idle p99 measured just before;
/// returns the round and the idle latencies measured once the spinners are gone.
async fn round(
    cluster: &TestCluster,
    config_maps: &Api<ConfigMap>,
    pods: &Api<Pod>,
    names: &[String],
    idle_before: Duration,
) -> Result<(Round, Vec<Duration>)> {
    for name in names {
        cluster
            .apply_json(&spinner(cluster, name, Some(SPINNER_LIMIT))?)
            .await?;
    }
    let mut first = Vec::new();
    for name in names {
        first.push(wait_reported(pods, name, 1000).await?);
    }
    let loaded = list_latencies(config_maps, LISTS).await?;
    let mut last = Vec::new();
    for (name, start) in names.iter().zip(&first) {
        last.push(wait_reported(pods, name, start.1 + WINDOW_MS).await?);
    }
    cluster
        .kubectl_ok(&[
            "delete",
            "pods",
            "-l",
            "app=spin",
            "--grace-period=0",
            "--force",
        ])
        .await?;
    for name in names {
        cluster.wait_pod_gone(name, DEADLINE).await?;
    }
    let idle_after = list_latencies(config_maps, LISTS).await?;
    let round = Round {
        idle_p99: (idle_before, percentile(&idle_after, 99)),
        loaded,
        first,
        last,
    };
    Ok((round, idle_after))
}

#[tokio::test]
async fn seventeen_spinners_at_100m_leave_list_latency_near_idle_and_get_their_share() -> Result<()>
{
    // Alone on the machine: another test's servers and guests would load the LISTs measured
    // under load and not the idle ones (or the other way round).
    let Some(cluster) = TestCluster::builder()
        .exclusive()
        .embedded_agent(NodeSpec::named("isolated").cpu("8"))
        .start_with_samples("guest_isolation::seventeen_spinners")
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for i in 0..50 {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("listed-{i}")},
            "data": {"key": "x".repeat(200)},
        }))?;
        config_maps.create(&PostParams::default(), &cm).await?;
    }

    let free_before = calibrate(&cluster, &pods, "spin-free-before").await?;
    let names: Vec<String> = (0..SPINNERS).map(|i| format!("spin-{i}")).collect();
    // Idle and loaded measurements interleaved: each loaded series is compared with the idle
    // ones just before and just after it, so a change in the machine's other load (it is
    // shared with other work) between them spoils one round, not the comparison. Up to
    // ROUNDS rounds until one is within 2x (the target); a guest that holds the apiserver's threads
    // spoils every round (that was 100x, see docs/benchmarks.md).
    let mut idle = list_latencies(&config_maps, LISTS).await?;
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let (done, idle_after) =
            round(&cluster, &config_maps, &pods, &names, percentile(&idle, 99)).await?;
        eprintln!(
            "round {}: LIST of 50 ConfigMaps, {LISTS} each: idle p50 {:.2} ms p99 {:.2} ms \
             (before) / p50 {:.2} ms p99 {:.2} ms (after); {SPINNERS} spinners at \
             {SPINNER_LIMIT}: p50 {:.2} ms p99 {:.2} ms ({:.2}x idle p99)",
            rounds.len() + 1,
            ms(percentile(&idle, 50)),
            ms(done.idle_p99.0),
            ms(percentile(&idle_after, 50)),
            ms(done.idle_p99.1),
            ms(percentile(&done.loaded, 50)),
            ms(percentile(&done.loaded, 99)),
            done.ratio(),
        );
        let within = done.ratio() <= 2.0;
        rounds.push(done);
        idle = idle_after;
        if within {
            break;
        }
    }
    let free_after = calibrate(&cluster, &pods, "spin-free-after").await?;

    let core = free_before.max(free_after);
    eprintln!(
        "one core: {core:.1} rounds/ms (unlimited spinner, before {free_before:.1}, after \
         {free_after:.1})"
    );
    let mut shares = Vec::new();
    for (i, done) in rounds.iter().enumerate() {
        let of_round: Vec<f64> = done
            .first
            .iter()
            .zip(&done.last)
            .map(|(a, b)| rate(*a, *b) / core)
            .collect();
        eprintln!(
            "round {}: spinners' shares of a core: {}; total {:.2} cores",
            i + 1,
            of_round
                .iter()
                .map(|s| format!("{s:.3}"))
                .collect::<Vec<_>>()
                .join(" "),
            of_round.iter().sum::<f64>(),
        );
        shares.push(of_round);
    }

    let best = rounds
        .iter()
        .min_by(|a, b| a.ratio().total_cmp(&b.ratio()))
        .context("no round was measured")?;
    eprintln!(
        "best round: LIST p99 with {SPINNERS} spinners {:.2}x idle's (target 2x)",
        best.ratio()
    );
    assert!(
        best.ratio() <= MAX_RATIO,
        "LIST p99 with {SPINNERS} spinners is more than {MAX_RATIO}x idle's in each of {} \
         rounds; at best {:.2} ms against {:.2} ms",
        rounds.len(),
        ms(percentile(&best.loaded, 99)),
        ms(best.idle_p99())
    );
    for of_round in &shares {
        let mean = of_round.iter().sum::<f64>() / of_round.len().max(1) as f64;
        for (name, share) in names.iter().zip(of_round) {
            // At most its quota (with room for the tick it may overrun by and for a
            // calibration on a busy machine).
            assert!(
                *share <= SPINNER_SHARE * 2.0,
                "{name} got {share:.3} of a core with a {SPINNER_LIMIT} limit: {of_round:?}"
            );
            // About its share: equal limits divide what the guests' threads got equally. On a
            // machine shared with other work (other builds) that is less than the 1.7 cores
            // the quotas allow, for every spinner alike (a quiet machine gives each
            // 0.09-0.1), but no spinner falls far behind the others, nor starves.
            assert!(
                *share >= mean * MIN_OF_MEAN,
                "{name} got {share:.3} of a core, the spinners {mean:.3} on average: {of_round:?}"
            );
            assert!(
                *share >= SPINNER_SHARE / 10.0,
                "{name} got only {share:.3} of a core with a {SPINNER_LIMIT} limit: {of_round:?}"
            );
        }
    }
    Ok(())
}

/// A preview1 command module with `functions` functions of `steps` steps of arithmetic each
/// (Cranelift's time grows with their product: 1000 x 200 took 2.3 s on the 2-core test
/// machine) whose `_start` returns at once.
fn big_module(functions: usize, steps: usize) -> Result<WasmImage> {
    let mut text =
        String::from("(module (memory (export \"memory\") 1) (func (export \"_start\"))");
    for i in 0..functions {
        text.push_str(&format!(
            "(func $f{i} (export \"f{i}\") (param i32) (result i32) (local.get 0)"
        ));
        for j in 0..steps {
            text.push_str(&format!(
                " (i32.const {j}) (i32.add) (i32.const 3) (i32.mul) (local.get 0) (i32.xor)"
            ));
        }
        text.push(')');
    }
    text.push(')');
    WasmImage::from_wat(
        &format!("wasmkube.test/isolation/big-{functions}x{steps}:v1"),
        &text,
    )
}

/// A pod running `image` once.
fn pod(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "big"}},
        "spec": {
            "runtimeClassName": "wasmtime",
            "restartPolicy": "Never",
            "containers": [{
                "name": "guest",
                "image": image,
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
            }],
        },
    })
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

#[tokio::test]
async fn pods_of_one_new_module_starting_at_once_compile_it_once_and_the_server_lives() -> Result<()>
{
    let big = big_module(1000, 200)?;
    let mut cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("compiler").cpu("8"))
        .start()
        .await?;
    cluster.import_image(big.path()).await?;
    // One `kubectl apply` of eight pods: created within milliseconds of each other.
    let stream: Vec<String> = (0..8)
        .map(|i| pod(&format!("big-{i}"), big.name()).to_string())
        .collect();
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &stream.join("\n---\n"))
        .await?;
    for i in 0..8 {
        cluster
            .wait_pod(&format!("big-{i}"), "phase Succeeded", DEADLINE, |p| {
                phase(p) == "Succeeded"
            })
            .await?;
    }
    // The server (apiserver and agent in one process) is still the one that started.
    assert!(cluster.server_is_running()?, "{}", cluster.log_tail(40));
    let cache = cluster.data_dir().join("agent").join("wasm-cache");
    let files: Vec<String> = std::fs::read_dir(&cache)
        .with_context(|| format!("reading {}", cache.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".cwasm")).count(),
        1,
        "one compiled file for one module: {files:?}"
    );
    assert!(
        files.iter().all(|f| f.ends_with(".cwasm")),
        "temporary files left behind: {files:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_compilation_past_the_timeout_is_a_create_container_error_and_other_pods_still_start()
-> Result<()> {
    // Several seconds of Cranelift's time: far past the 1 s timeout the node is given.
    let slow = big_module(2000, 300)?;
    let quick = WasmImage::from_wat(
        "wasmkube.test/isolation/quick:v1",
        r#"(module (memory (export "memory") 1) (func (export "_start")))"#,
    )?;
    let cluster = TestCluster::builder()
        .embedded_agent(
            NodeSpec::named("timeouts")
                .cpu("8")
                .arg("--wasm-compile-timeout")
                .arg("1"),
        )
        .start()
        .await?;
    cluster.import_image(slow.path()).await?;
    cluster.import_image(quick.path()).await?;

    cluster.apply_json(&pod("slow", slow.name())).await?;
    let waiting = cluster
        .wait_pod("slow", "CreateContainerError", DEADLINE, |p| {
            container_status(p)
                .and_then(|s| s.state)
                .and_then(|s| s.waiting)
                .is_some_and(|w| w.reason.as_deref() == Some("CreateContainerError"))
        })
        .await?;
    let message = container_status(&waiting)
        .and_then(|s| s.state)
        .and_then(|s| s.waiting)
        .and_then(|w| w.message)
        .unwrap_or_default();
    assert!(message.contains("did not finish within 1s"), "{message}");
    cluster
        .wait_event_where("slow", "Failed", DEADLINE, |e| {
            e.type_.as_deref() == Some("Warning")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("did not finish within 1s"))
        })
        .await?;
    let table = cluster.kubectl_ok(&["get", "pod", "slow"]).await?;
    assert!(table.contains("CreateContainerError"), "{table}");

    // Another pod starts meanwhile.
    cluster.apply_json(&pod("quick", quick.name())).await?;
    cluster
        .wait_pod("quick", "phase Succeeded", DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    // The compilation went on in the background: a retry of the slow pod finds it done.
    cluster
        .wait_pod("slow", "phase Succeeded", DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    Ok(())
}

/// A tar.gz "layout archive" whose one blob is `zeros` zero bytes: a few hundred kilobytes
/// that expand a thousandfold.
fn gzip_bomb(path: &std::path::Path, zeros: u64) -> Result<()> {
    let file = std::fs::File::create(path)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    for (name, body) in [
        (
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
        ),
        (
            "index.json",
            br#"{"schemaVersion":2,"manifests":[]}"#.as_slice(),
        ),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, body)?;
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(zeros);
    header.set_mode(0o644);
    let name = format!("blobs/sha256/{}", "0".repeat(64));
    tar.append_data(
        &mut header,
        name,
        std::io::Read::take(std::io::repeat(0), zeros),
    )?;
    tar.into_inner()?.finish()?;
    Ok(())
}

#[tokio::test]
async fn wasmkube_image_import_refuses_a_gzip_bomb_with_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bomb = dir.path().join("bomb.tar.gz");
    gzip_bomb(&bomb, 512 << 20)?;
    let compressed = std::fs::metadata(&bomb)?.len();
    assert!(compressed < 2 << 20, "the bomb is {compressed} bytes");
    let data = dir.path().join("data");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(["image", "import", "--data-dir"])
        .arg(&data)
        .arg(&bomb)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the bomb was imported: {stderr}");
    assert!(stderr.contains("decompression bomb"), "{stderr}");
    assert!(stderr.contains("bomb.tar.gz"), "{stderr}");
    // Nothing of it stays on disk.
    let tmp = data.join("agent").join("images").join("tmp");
    let left = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "{} holds leftovers", tmp.display());
    Ok(())
}

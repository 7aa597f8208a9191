//! `wasmkube-bench authz`: what authorization costs a request.
//!
//! Two servers run side by side, one per `--authorization-mode`: `AlwaysAllow` (no
//! authorization work beyond the chain's first link) and `RBAC`. The clients act as a user
//! that is not in `system:masters` (whom the chain allows before RBAC is asked): `bench`, with
//! a client certificate from `wasmkube server kubeconfig --user bench` and bound to `edit` in
//! the benchmark namespace. `--bindings` more RoleBindings in that namespace and
//! ClusterRoleBindings (to other users) give RBAC a busy cluster's bindings to resolve among
//! on every request. The work is cut into `--rounds` rounds; in each, both servers get the same slice
//! (durable creates at `--clients`, then GETs of one ConfigMap), in alternating order, so
//! the noise of a shared machine hits both alike and both stores grow in step. Creates/s and
//! GET/s are over all rounds; latencies are percentiles over all GETs and the median of the
//! rounds' create p99s. The report ends with RBAC's ratio to AlwaysAllow, over all rounds and
//! as the median of the rounds' ratios (which a burst of noise in one round does not move).
//! Beside the rates, the server's CPU time (`/proc/<pid>/stat`, every thread) per create and
//! per GET: on a machine shared with other work it moves far less than the rates do, and on a
//! CPU-bound server it is what the rates come down to.
//! `--modes AlwaysAllow,AlwaysAllow` runs the same against two identical servers: the ratios
//! it reports are the noise floor of the machine.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use futures::future::try_join_all;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::{Value, json};

use super::report::{LatencySummary, latency_histogram, record};
use super::target::Target;
use super::{create_namespace, creates, progress_bar};

/// The namespace the benchmark works in.
const NAMESPACE: &str = "authz-bench";
/// The user the clients act as.
const USER: &str = "bench";

/// Benchmark the cost of authorization: creates/s and GET latency with RBAC vs AlwaysAllow.
#[derive(clap::Args, Debug)]
pub(crate) struct AuthzCommand {
    /// ConfigMaps created per mode.
    #[arg(long, value_name = "N", default_value_t = 16_000, value_parser = clap::value_parser!(u64).range(1..))]
    creates: u64,
    /// GETs per mode.
    #[arg(long, value_name = "N", default_value_t = 160_000, value_parser = clap::value_parser!(u64).range(1..))]
    gets: u64,
    /// Concurrent clients (connections).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    clients: u64,
    /// Extra bindings to other users (half RoleBindings in the namespace, half
    /// ClusterRoleBindings) that RBAC looks through on every request.
    #[arg(long, value_name = "N", default_value_t = 200)]
    bindings: u64,
    /// Rounds the work is cut into; each gives both servers the same slice.
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// The two servers' `--authorization-mode`s; ratios are the second's over the first's.
    /// `AlwaysAllow,AlwaysAllow` measures the noise floor.
    #[arg(long, value_name = "MODE,MODE", default_value = "AlwaysAllow,RBAC", value_delimiter = ',',
          num_args = 1, value_parser = ["AlwaysAllow", "RBAC"])]
    modes: Vec<String>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// The figures of one mode over every round.
#[derive(Clone, Debug, Default)]
struct ModeRun {
    creates_per_s: f64,
    create: LatencySummary,
    gets_per_s: f64,
    get: LatencySummary,
    errors: u64,
    /// The server's CPU time per create and per GET, in microseconds (0 where `/proc`
    /// cannot tell).
    cpu_us_per_create: f64,
    cpu_us_per_get: f64,
    /// Each round's creates/s.
    round_creates_per_s: Vec<f64>,
    /// Each round's GETs/s.
    round_gets_per_s: Vec<f64>,
}

/// The second mode's figures over the first's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Ratios {
    creates_per_s: f64,
    gets_per_s: f64,
    get_p99: f64,
    cpu_per_create: f64,
    cpu_per_get: f64,
    /// The median of the rounds' creates/s ratios.
    median_round_creates_per_s: f64,
    /// The median of the rounds' GETs/s ratios.
    median_round_gets_per_s: f64,
}

/// One mode's server, its client as `bench`, and what it measured so far.
struct Side {
    server: Target,
    user: Target,
    creates: u64,
    create_seconds: f64,
    create_p99s: Vec<f64>,
    gets: Histogram<u64>,
    get_seconds: f64,
    errors: u64,
    round_creates_per_s: Vec<f64>,
    round_gets_per_s: Vec<f64>,
    /// Server CPU seconds spent in the create and the GET slices.
    create_cpu_seconds: f64,
    get_cpu_seconds: f64,
}

impl AuthzCommand {
    /// Starts both servers, runs every round and prints the report.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        if self.modes.len() != 2 {
            bail!(
                "--modes takes two authorization modes, e.g. AlwaysAllow,RBAC (got {})",
                self.modes.join(",")
            );
        }
        let mut sides = Vec::new();
        for mode in &self.modes {
            eprintln!("starting wasmkube server --authorization-mode {mode} ...");
            match self.start_side(wasmkube, mode).await {
                Ok(side) => sides.push(side),
                Err(e) => {
                    for side in sides {
                        side.server.shutdown().await;
                    }
                    return Err(e);
                }
            }
        }
        let outcome = self.run_rounds(&mut sides).await;
        let summary: Vec<ModeRun> = sides.iter().map(Side::summary).collect();
        for side in sides {
            side.server.shutdown().await;
        }
        outcome?;
        let [first, second] = <[ModeRun; 2]>::try_from(summary)
            .map_err(|_| anyhow::anyhow!("two servers, two summaries"))?;
        let summary = [first, second];
        if self.json {
            println!("{}", serde_json::to_string_pretty(&self.to_json(&summary))?);
        } else {
            print!("{}", self.to_table(&summary));
        }
        let errors: u64 = summary.iter().map(|r| r.errors).sum();
        if errors > 0 {
            bail!("{errors} requests failed");
        }
        Ok(())
    }

    async fn run_rounds(&self, sides: &mut [Side]) -> anyhow::Result<()> {
        let clients = usize::try_from(self.clients).context("--clients is too large")?;
        let rounds = usize::try_from(self.rounds).context("--rounds is too large")?;
        let creates = usize::try_from(self.creates).context("--creates is too large")?;
        let gets = usize::try_from(self.gets).context("--gets is too large")?;
        let bar = progress_bar(
            2 * (self.creates + self.gets),
            format!("creates and GETs as {USER}, both modes"),
        );
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let share = |total: usize| total / rounds + usize::from(round < total % rounds);
            for index in order {
                let side = &mut sides[index];
                let cpu_before = side.server.server_cpu_seconds();
                let row =
                    creates::run_level(&side.user, NAMESPACE, round, clients, share(creates), &bar)
                        .await?;
                side.creates += row.creates;
                side.errors += row.errors;
                side.create_seconds += row.elapsed.as_secs_f64();
                side.create_p99s.push(row.latency.p99_ms);
                side.round_creates_per_s
                    .push(ratio(row.creates as f64, row.elapsed.as_secs_f64()));
                let cpu_between = side.server.server_cpu_seconds();
                let (latency, seconds, errors) =
                    get_level(&side.user, clients, share(gets), &bar).await?;
                let cpu_after = side.server.server_cpu_seconds();
                if let (Some(before), Some(between), Some(after)) =
                    (cpu_before, cpu_between, cpu_after)
                {
                    side.create_cpu_seconds += between - before;
                    side.get_cpu_seconds += after - between;
                }
                side.round_gets_per_s
                    .push(ratio(latency.len() as f64, seconds));
                side.gets
                    .add(&latency)
                    .context("merging latency histograms")?;
                side.get_seconds += seconds;
                side.errors += errors;
            }
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Starts a server in `mode` and prepares the namespace, the bindings and the user.
    async fn start_side(&self, wasmkube: &Path, mode: &str) -> anyhow::Result<Side> {
        let args: Vec<String> = [
            "--authorization-mode",
            mode,
            "--disable-agent",
            "--disable-scheduler",
            "--disable-controllers",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = Target::start_server_with(wasmkube, None, &args).await?;
        match self.prepare(wasmkube, &server).await {
            Ok(user) => Ok(Side {
                server,
                user,
                creates: 0,
                create_seconds: 0.0,
                create_p99s: Vec::new(),
                gets: latency_histogram(),
                get_seconds: 0.0,
                errors: 0,
                round_creates_per_s: Vec::new(),
                round_gets_per_s: Vec::new(),
                create_cpu_seconds: 0.0,
                get_cpu_seconds: 0.0,
            }),
            Err(e) => {
                server.shutdown().await;
                Err(e)
            }
        }
    }

    async fn prepare(&self, wasmkube: &Path, server: &Target) -> anyhow::Result<Target> {
        let admin = server.new_client()?;
        create_namespace(&admin, NAMESPACE).await?;
        bind(&admin, "bench-edit", "edit", USER).await?;
        for i in 0..self.bindings {
            let user = format!("someone-{i}");
            if i % 2 == 0 {
                bind(&admin, &format!("filler-{i}"), "view", &user).await?;
            } else {
                cluster_bind(&admin, &format!("filler-{i}"), "view", &user).await?;
            }
        }
        Api::<ConfigMap>::namespaced(admin, NAMESPACE)
            .create(
                &PostParams::default(),
                &creates::bench_config_map("probe".to_owned()),
            )
            .await
            .context("creating the probe ConfigMap")?;
        let data_dir = server
            .server_data_dir()
            .context("the bench started no server")?;
        let kubeconfig = user_kubeconfig(wasmkube, data_dir).await?;
        Target::from_kubeconfig(&kubeconfig).await
    }

    fn to_table(&self, summary: &[ModeRun; 2]) -> String {
        let mut out = format!(
            "authorization cost: user {USER:?} bound to edit, {} more bindings, {} clients, {} creates and {} GETs per mode in {} alternating rounds\n",
            self.bindings, self.clients, self.creates, self.gets, self.rounds
        );
        out.push_str(&format!(
            "{:<12} {:>10} {:>11} {:>8} {:>9} {:>9} {:>15} {:>12}\n",
            "mode",
            "creates/s",
            "create p99",
            "GET/s",
            "GET p50",
            "GET p99",
            "CPU/create",
            "CPU/GET"
        ));
        for (mode, run) in self.modes.iter().zip(summary) {
            out.push_str(&format!(
                "{:<12} {:>10.0} {:>9.2}ms {:>8.0} {:>7.2}ms {:>7.2}ms {:>13.1}us {:>10.1}us\n",
                mode,
                run.creates_per_s,
                run.create.p99_ms,
                run.gets_per_s,
                run.get.p50_ms,
                run.get.p99_ms,
                run.cpu_us_per_create,
                run.cpu_us_per_get
            ));
        }
        let r = ratios(summary);
        out.push_str(&format!(
            "{} / {}: creates/s {:.2}x (median of the rounds' ratios {:.2}x), GET/s {:.2}x ({:.2}x), GET p99 {:.2}x; server CPU per create {:.2}x, per GET {:.2}x (lower is better for p99 and CPU)\n",
            self.modes[1],
            self.modes[0],
            r.creates_per_s,
            r.median_round_creates_per_s,
            r.gets_per_s,
            r.median_round_gets_per_s,
            r.get_p99,
            r.cpu_per_create,
            r.cpu_per_get
        ));
        out
    }

    fn to_json(&self, summary: &[ModeRun; 2]) -> Value {
        let mode = |mode: &str, run: &ModeRun| {
            json!({
                "authorization_mode": mode,
                "creates_per_s": run.creates_per_s,
                "create_latency": run.create.to_json(),
                "gets_per_s": run.gets_per_s,
                "get_latency": run.get.to_json(),
                "server_cpu_us_per_create": run.cpu_us_per_create,
                "server_cpu_us_per_get": run.cpu_us_per_get,
                "round_creates_per_s": run.round_creates_per_s,
                "round_gets_per_s": run.round_gets_per_s,
            })
        };
        let r = ratios(summary);
        json!({
            "user": USER,
            "bindings": self.bindings,
            "clients": self.clients,
            "creates": self.creates,
            "gets": self.gets,
            "rounds": self.rounds,
            "modes": [mode(&self.modes[0], &summary[0]), mode(&self.modes[1], &summary[1])],
            "second_over_first": {
                "creates_per_s": r.creates_per_s,
                "gets_per_s": r.gets_per_s,
                "get_p99": r.get_p99,
                "server_cpu_per_create": r.cpu_per_create,
                "server_cpu_per_get": r.cpu_per_get,
                "median_round_creates_per_s": r.median_round_creates_per_s,
                "median_round_gets_per_s": r.median_round_gets_per_s,
            },
        })
    }
}

impl Side {
    fn summary(&self) -> ModeRun {
        let get = LatencySummary::of(&self.gets);
        ModeRun {
            creates_per_s: ratio(self.creates as f64, self.create_seconds),
            create: LatencySummary {
                count: self.creates,
                p99_ms: median(&self.create_p99s),
                ..LatencySummary::default()
            },
            gets_per_s: ratio(get.count as f64, self.get_seconds),
            get,
            errors: self.errors,
            cpu_us_per_create: ratio(self.create_cpu_seconds * 1e6, self.creates as f64),
            cpu_us_per_get: ratio(self.get_cpu_seconds * 1e6, get.count as f64),
            round_creates_per_s: self.round_creates_per_s.clone(),
            round_gets_per_s: self.round_gets_per_s.clone(),
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn ratios(summary: &[ModeRun; 2]) -> Ratios {
    let [first, second] = summary;
    let round_ratios = |a: &[f64], b: &[f64]| {
        let each: Vec<f64> = a.iter().zip(b).map(|(a, b)| ratio(*b, *a)).collect();
        median(&each)
    };
    Ratios {
        creates_per_s: ratio(second.creates_per_s, first.creates_per_s),
        gets_per_s: ratio(second.gets_per_s, first.gets_per_s),
        get_p99: ratio(second.get.p99_ms, first.get.p99_ms),
        cpu_per_create: ratio(second.cpu_us_per_create, first.cpu_us_per_create),
        cpu_per_get: ratio(second.cpu_us_per_get, first.cpu_us_per_get),
        median_round_creates_per_s: round_ratios(
            &first.round_creates_per_s,
            &second.round_creates_per_s,
        ),
        median_round_gets_per_s: round_ratios(&first.round_gets_per_s, &second.round_gets_per_s),
    }
}

/// The median of some figures (0 for none).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn subject(user: &str) -> Subject {
    Subject {
        kind: "User".to_owned(),
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
        name: user.to_owned(),
        namespace: None,
    }
}

fn role_ref(role: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_owned(),
        kind: "ClusterRole".to_owned(),
        name: role.to_owned(),
    }
}

async fn bind(admin: &kube::Client, name: &str, role: &str, user: &str) -> anyhow::Result<()> {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: role_ref(role),
        subjects: Some(vec![subject(user)]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &binding)
        .await
        .with_context(|| format!("creating RoleBinding {name}"))?;
    Ok(())
}

async fn cluster_bind(
    admin: &kube::Client,
    name: &str,
    role: &str,
    user: &str,
) -> anyhow::Result<()> {
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: role_ref(role),
        subjects: Some(vec![subject(user)]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .with_context(|| format!("creating ClusterRoleBinding {name}"))?;
    Ok(())
}

/// `wasmkube server kubeconfig --user bench` for the server's data dir, in a file there.
async fn user_kubeconfig(wasmkube: &Path, data_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let output = tokio::process::Command::new(wasmkube)
        .args(["server", "kubeconfig", "--user", USER, "--data-dir"])
        .arg(data_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {} server kubeconfig", wasmkube.display()))?;
    if !output.status.success() {
        bail!(
            "wasmkube server kubeconfig failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let path = data_dir.join(format!("kubeconfig-{USER}.yaml"));
    std::fs::write(&path, &output.stdout).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `clients` clients GET the probe ConfigMap `gets` times in total: the latencies, the
/// wall-clock seconds and the failures.
async fn get_level(
    user: &Target,
    clients: usize,
    gets: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(Histogram<u64>, f64, u64)> {
    let apis = try_join_all((0..clients).map(|_| async {
        let api: Api<ConfigMap> = Api::namespaced(user.new_client()?, NAMESPACE);
        api.get("probe").await.context("warm-up GET failed")?;
        anyhow::Ok(api)
    }))
    .await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = apis
        .into_iter()
        .map(|api| {
            let next = Arc::clone(&next);
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut latency: Histogram<u64> = latency_histogram();
                let mut errors = 0u64;
                while next.fetch_add(1, Ordering::Relaxed) < gets {
                    let sent = Instant::now();
                    match api.get("probe").await {
                        Ok(_) => record(&mut latency, sent.elapsed()),
                        Err(_) => errors += 1,
                    }
                    progress.inc(1);
                }
                (latency, errors)
            })
        })
        .collect();
    let results = try_join_all(tasks).await.context("a GET task panicked")?;
    let seconds = started.elapsed().as_secs_f64();
    let mut all = latency_histogram();
    let mut errors = 0;
    for (latency, e) in results {
        all.add(&latency).context("merging latency histograms")?;
        errors += e;
    }
    Ok((all, seconds, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
        let run = |c: f64, p99: f64, rounds: Vec<f64>| ModeRun {
            creates_per_s: c,
            get: LatencySummary {
                p99_ms: p99,
                ..LatencySummary::default()
            },
            round_creates_per_s: rounds,
            ..ModeRun::default()
        };
        let r = ratios(&[
            run(200.0, 2.0, vec![100.0, 200.0, 300.0]),
            run(190.0, 2.2, vec![50.0, 200.0, 330.0]),
        ]);
        assert!((r.creates_per_s - 0.95).abs() < 1e-9 && (r.get_p99 - 1.1).abs() < 1e-9);
        assert!((r.median_round_creates_per_s - 1.0).abs() < 1e-9);
        assert_eq!(r.median_round_gets_per_s, 0.0);
    }
}

//! `wasmkube-bench proxy`: how fast kube-proxy's nftables mode programs Services.
//!
//! The bench starts `wasmkube server --disable-agent` and, in its own process, the agent's
//! kube-proxy (`wasmkube_agent::proxy`, nftables mode) against it, as an agent runs it. The
//! rules go into a network namespace the bench makes (`nft` through `nsenter`) and deletes
//! at the end, never the machine's own tables; no packet is sent, so no pod is needed:
//! Services are selector-less, with hand-made EndpointSlices (addresses in 10.44/16 and,
//! replaced ones, 10.45/16).
//!
//! Figures:
//! - **programming**: `--services` Services of `--endpoints` endpoints each, written by
//!   `--writers` clients (the Service, then its slice); per Service, the time from the start
//!   of its slice's create to the end of the first sync that programmed the Service with all
//!   its endpoints (the proxy's sync reports), p50/p99; and the whole batch's time.
//! - **one endpoint change at that size**: `--changes` times, one endpoint of one slice is
//!   replaced (a merge patch), one after the other: patch start -> rules in place, the
//!   sync's own time (planning and the one nft transaction), of that the time in `nft`,
//!   and the nft command count.
//! - **what nft costs at that size**: over the programmed table, in the same run, `nft -j
//!   -f` of an empty batch (process start), of a batch that needs only nft's table cache
//!   (`add chain`) and of one that adds a rule (nft 1.0.x reads every chain of every table
//!   into its cache before it applies an `add rule`, `add element` or `delete`).
//! - **full sync at that size**: a second proxy started over the programmed table (an agent
//!   restart): its first, full, sync.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{Mutex, broadcast};
use wasmkube_agent::proxy::{self, Nft, ProxyConfig, ProxyMode, SyncReport, SyncStats};

use super::create_namespace;
use super::report::{LatencySummary, latency_histogram, record};
use super::table::{LatencyRow, RunHeader, latency_table};
use super::target::Target;

/// The namespace the benchmark works in.
const NAMESPACE: &str = "proxy-bench";

/// Benchmark kube-proxy's nftables rule programming.
#[derive(clap::Args, Debug)]
pub(crate) struct ProxyCommand {
    /// Services to program.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    services: u64,
    /// Endpoints per Service.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    endpoints: u64,
    /// Single-endpoint changes measured at that size, one at a time.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    changes: u64,
    /// Concurrent writers of the Services and slices.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
    writers: u64,
    /// The whole run's limit, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// A network namespace the bench made; deleted when dropped.
struct Netns(String);

impl Netns {
    fn new() -> anyhow::Result<Netns> {
        let name = format!("wkbench-proxy-{}", std::process::id());
        let status = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .context("running `ip netns add` (the bench needs root and iproute2)")?;
        if !status.success() {
            bail!(
                "ip netns add {name} failed: the proxy bench needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
            );
        }
        Ok(Netns(name))
    }

    fn nft(&self) -> Nft {
        Nft::with_prefix(
            "nsenter",
            vec![format!("--net=/var/run/netns/{}", self.0), "nft".to_owned()],
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// When each Service was programmed with `n` ready endpoints, fed by the sync reports.
#[derive(Default)]
struct Programmed {
    /// `namespace/name` -> (ready endpoints, when, the sync's time, its stats) of each sync
    /// that touched it.
    seen: HashMap<String, Vec<(usize, Instant, Duration, SyncStats)>>,
}

fn follow(mut reports: broadcast::Receiver<SyncReport>, programmed: Arc<Mutex<Programmed>>) {
    tokio::spawn(async move {
        loop {
            match reports.recv().await {
                Ok(report) => {
                    let mut p = programmed.lock().await;
                    for s in &report.services {
                        p.seen.entry(s.name.clone()).or_default().push((
                            s.ready_endpoints,
                            report.at,
                            report.duration,
                            report.stats,
                        ));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("warning: the bench missed {n} sync reports");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

fn service(i: u64) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .unwrap_or_default()
}

/// Endpoint `endpoint` of Service `service`: `10.44.0.0/16`, one address per pair; the first
/// endpoint's replacement in change `generation` (from 1) is in `10.45.0.0/16`, never equal
/// to the address it replaces nor to the previous replacement.
fn endpoint_ip(service: u64, endpoint: u64, generation: u64) -> Ipv4Addr {
    let (base, n) = if generation == 0 {
        (Ipv4Addr::new(10, 44, 0, 0), service * 100 + endpoint)
    } else {
        (Ipv4Addr::new(10, 45, 0, 0), service * 1_000 + generation)
    };
    let offset = u32::try_from(n % 65_000).unwrap_or(0);
    Ipv4Addr::from(u32::from(base) + offset + 1)
}

fn endpoints(service: u64, count: u64, generation: u64) -> serde_json::Value {
    json!((0..count)
        .map(|e| json!({
            "addresses": [endpoint_ip(service, e, if e == 0 { generation } else { 0 }).to_string()],
            "conditions": {"ready": true},
            "nodeName": "bench-node",
        }))
        .collect::<Vec<_>>())
}

fn slice(i: u64, count: u64) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("svc-{i}-1"),
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints(i, count, 0),
    }))
    .unwrap_or_else(|_| EndpointSlice::default())
}

/// Waits until `name` was programmed with `ready` endpoints by a sync that ended after
/// `after`; returns that sync's end, duration and stats.
async fn programmed_after(
    programmed: &Mutex<Programmed>,
    name: &str,
    ready: usize,
    after: Instant,
    deadline: Instant,
) -> anyhow::Result<(Instant, Duration, SyncStats)> {
    loop {
        if let Some(hit) = programmed.lock().await.seen.get(name).and_then(|syncs| {
            syncs
                .iter()
                .find(|(n, at, _, _)| *n == ready && *at >= after)
                .map(|(_, at, d, c)| (*at, *d, *c))
        }) {
            return Ok(hit);
        }
        if Instant::now() > deadline {
            bail!("{name} was not programmed with {ready} endpoints before the deadline");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl ProxyCommand {
    /// Runs the benchmark and prints its report.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        let netns = Netns::new()?;
        let server_args = vec!["--disable-agent".to_owned()];
        eprintln!("starting wasmkube server {} ...", server_args.join(" "));
        let target = Target::start_server_with(wasmkube, None, &server_args).await?;
        let result =
            tokio::time::timeout(Duration::from_secs(self.timeout), self.run(&target, &netns))
                .await;
        target.shutdown().await;
        drop(netns);
        let (rows, notes) = result.map_err(|_| {
            anyhow::anyhow!(
                "the bench did not finish within --timeout {} s",
                self.timeout
            )
        })??;
        let mut header = RunHeader::now("proxy", &server_args);
        header.peer = Some(
            "none; the proxy runs in the bench's process, nft in a network namespace".to_owned(),
        );
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "header": header.to_json(),
                    "services": self.services,
                    "endpoints_per_service": self.endpoints,
                    "rows": rows.iter().map(LatencyRow::to_json).collect::<Vec<_>>(),
                    "notes": notes,
                }))?
            );
        } else {
            let mut out = String::new();
            header.write(&mut out);
            out.push_str(&format!(
                "kube-proxy nftables, {} Services x {} endpoints, in a network namespace\n",
                self.services, self.endpoints
            ));
            latency_table(&mut out, &rows);
            for note in notes {
                out.push_str(&format!("  {note}\n"));
            }
            print!("{out}");
        }
        Ok(())
    }

    async fn run(
        &self,
        target: &Target,
        netns: &Netns,
    ) -> anyhow::Result<(Vec<LatencyRow>, Vec<String>)> {
        let client = target.new_client()?;
        create_namespace(&client, NAMESPACE).await?;
        let node_ips = vec![Ipv4Addr::new(10, 77, 0, 1)];
        let mut config = ProxyConfig::new(ProxyMode::Nftables, "bench-node", node_ips.clone());
        config.nft = netns.nft();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |rx: tokio::sync::watch::Receiver<bool>| async move {
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        };
        let running = proxy::start(
            target.new_client()?,
            config.clone(),
            stopped(stop_rx.clone()),
        );
        let programmed = Arc::new(Mutex::new(Programmed::default()));
        follow(running.syncs.subscribe(), programmed.clone());
        let deadline = Instant::now() + Duration::from_secs(self.timeout);
        let ready = usize::try_from(self.endpoints).unwrap_or(usize::MAX);

        // Programming: every Service and its slice.
        let started = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut writers = Vec::new();
        for _ in 0..self.writers {
            let client = target.new_client()?;
            let (next, total, count) = (next.clone(), self.services, self.endpoints);
            writers.push(tokio::spawn(async move {
                let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
                let slices: Api<EndpointSlice> = Api::namespaced(client, NAMESPACE);
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return anyhow::Ok(latencies);
                    }
                    services
                        .create(&PostParams::default(), &service(i))
                        .await
                        .with_context(|| format!("creating svc-{i}"))?;
                    let write = Instant::now();
                    slices
                        .create(&PostParams::default(), &slice(i, count))
                        .await
                        .with_context(|| format!("creating the slice of svc-{i}"))?;
                    latencies.push((i, write));
                }
            }));
        }
        let mut writes = Vec::new();
        for w in writers {
            writes.extend(w.await.context("a writer task")??);
        }
        let mut programming = latency_histogram();
        let mut last = started;
        for (i, write) in &writes {
            let (at, _, _) = programmed_after(
                &programmed,
                &format!("{NAMESPACE}/svc-{i}"),
                ready,
                *write,
                deadline,
            )
            .await?;
            record(&mut programming, at.duration_since(*write));
            last = last.max(at);
        }
        let batch = last.duration_since(started);

        // One endpoint change at a time, at that size.
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
        let mut change = latency_histogram();
        let mut sync_time = latency_histogram();
        let mut nft_time = latency_histogram();
        let mut commands = Vec::new();
        for c in 0..self.changes {
            let i = (c * 7919) % self.services;
            let patch = json!({"endpoints": endpoints(i, self.endpoints, c + 1)});
            let start = Instant::now();
            tokio::time::timeout(
                Duration::from_secs(30),
                slices.patch(
                    &format!("svc-{i}-1"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                ),
            )
            .await
            .with_context(|| format!("patching the slice of svc-{i} took over 30 s"))?
            .with_context(|| format!("patching the slice of svc-{i}"))?;
            let (at, took, stats) = programmed_after(
                &programmed,
                &format!("{NAMESPACE}/svc-{i}"),
                ready,
                start,
                deadline,
            )
            .await?;
            record(&mut change, at.duration_since(start));
            record(&mut sync_time, took);
            record(&mut nft_time, stats.nft);
            commands.push(stats.commands);
        }
        commands.sort_unstable();

        // What nft itself costs over this table, by the cache a batch makes it read.
        let probes = nft_probes(netns, self.changes).await?;

        // A restarted proxy's first (full) sync over the programmed table.
        let _ = stop_tx.send(true);
        let _ = running.task.await;
        let (restart_tx, restart_rx) = tokio::sync::watch::channel(false);
        let restarted = proxy::start(target.new_client()?, config, stopped(restart_rx));
        let mut reports = restarted.syncs.subscribe();
        let full =
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), reports.recv())
                .await
                .context("the restarted proxy did not sync before the deadline")?
                .context("the restarted proxy stopped")?;
        let _ = restart_tx.send(true);
        let _ = restarted.task.await;
        let mut full_sync = latency_histogram();
        record(&mut full_sync, full.duration);

        let rows: Vec<LatencyRow> = vec![
            LatencyRow::measured(
                "slice write -> rules in place",
                LatencySummary::of(&programming),
            ),
            LatencyRow::measured(
                "one endpoint change -> rules in place",
                LatencySummary::of(&change),
            ),
            LatencyRow::measured(
                "  of which the sync (plan + nft)",
                LatencySummary::of(&sync_time),
            ),
            LatencyRow::measured(
                "    of which nft (nsenter nft -j -f -)",
                LatencySummary::of(&nft_time),
            ),
            LatencyRow::measured("full sync after a restart", LatencySummary::of(&full_sync)),
        ]
        .into_iter()
        .chain(probes)
        .collect();
        let notes = vec![
            format!(
                "all {} Services programmed {:.2} s after the first write ({:.0} Services/s)",
                self.services,
                batch.as_secs_f64(),
                self.services as f64 / batch.as_secs_f64().max(1e-9)
            ),
            format!(
                "one endpoint change: nft commands per transaction p50 {}, max {}",
                commands.get(commands.len() / 2).copied().unwrap_or(0),
                commands.last().copied().unwrap_or(0)
            ),
            format!(
                "full sync after a restart: {} nft commands, {} chains",
                full.stats.commands, full.stats.chains
            ),
        ];
        Ok((rows, notes))
    }
}

/// `nsenter nft -j -f -` of `document` in the bench's namespace; its wall time.
async fn nft_batch(netns: &Netns, document: &serde_json::Value) -> anyhow::Result<Duration> {
    use tokio::io::AsyncWriteExt as _;
    let input = serde_json::to_vec(document)?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", netns.0))
        .args(["nft", "-j", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running nsenter nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&input).await?;
    }
    let output = child.wait_with_output().await?;
    let took = started.elapsed();
    if !output.status.success() {
        bail!(
            "nft -j -f - failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(took)
}

/// `rounds` times each, interleaved, over the programmed table: an empty batch, a batch
/// nft applies with its table cache only, and one that makes it read every chain first.
async fn nft_probes(netns: &Netns, rounds: u64) -> anyhow::Result<Vec<LatencyRow>> {
    let chain = |verb: &str| json!({verb: {"chain": {"family": "ip", "table": "wasmkube", "name": "bench-probe"}}});
    let empty = json!({"nftables": []});
    let table_cache = json!({"nftables": [chain("add")]});
    let chain_cache = json!({"nftables": [
        chain("flush"),
        {"add": {"rule": {"family": "ip", "table": "wasmkube", "chain": "bench-probe",
                          "expr": [{"accept": null}]}}},
    ]});
    let (mut a, mut b, mut c) = (
        latency_histogram(),
        latency_histogram(),
        latency_histogram(),
    );
    for _ in 0..rounds {
        record(&mut a, nft_batch(netns, &empty).await?);
        record(&mut b, nft_batch(netns, &table_cache).await?);
        record(&mut c, nft_batch(netns, &chain_cache).await?);
    }
    nft_batch(
        netns,
        &json!({"nftables": [chain("flush"), chain("delete")]}),
    )
    .await?;
    Ok(vec![
        LatencyRow::measured(
            "nft: an empty batch (process start)",
            LatencySummary::of(&a),
        ),
        LatencyRow::measured("nft: add chain (table cache only)", LatencySummary::of(&b)),
        LatencyRow::measured(
            "nft: flush + add rule (reads every chain)",
            LatencySummary::of(&c),
        ),
    ])
}

//! `wasmkube-bench`: benchmarks that start their own `wasmkube server` (the `wasmkube` binary
//! next to this one, or `--wasmkube PATH`) and print their figures (a table, or JSON with
//! `--json`), recorded in `docs/benchmarks.md`.
//!
//! A binary of its own, so that the load generators, histograms and progress bars stay out of
//! the `wasmkube` binary a cluster runs.
//!
//! Subcommands:
//! - `api` ([`api`]): the apiserver: durable creates/s and watch delivery latency; plain
//!   `wasmkube-bench` with no subcommand runs it too (it was the only benchmark at first);
//! - `pods` ([`pods`]): wasm pod startup latency, create -> Running via a watch, next to
//!   `wasmtime run` of the same module;
//! - `http` ([`http`]): requests/s and latency of the `http-hello` sample served by a pod, next
//!   to `wasmtime serve` of the same component;
//! - `density` ([`density`]): the server's memory per idle running wasm pod over 1,000 pods;
//! - `deployment` ([`deployment`]): a Deployment of 1,000 wasm replicas on one node: time to
//!   all Ready, a rolling update and a delete, observed with watches;
//! - `authz` ([`authz`]): what authorization costs: creates/s and GET latency as a user bound
//!   to `edit`, with `--authorization-mode RBAC` vs `AlwaysAllow`;
//! - `encryption` ([`encryption`]): what encrypting Secrets at rest costs: Secret creates/s
//!   and GET latency, `identity` vs `secretbox` (or any two providers);
//! - `proxy` ([`proxy`]): kube-proxy's nftables rule programming at 1,000 Services;
//! - `dns` ([`dns`]): the cluster DNS's queries/s and latency for a Service name, next to
//!   dnsmasq;
//! - `service` ([`service`]): requests through a ClusterIP versus straight to the pod IP,
//!   kube-proxy's nftables mode and userspace relay;
//! - `same-node` ([`same_node`]): a Service call on its endpoint's node, through the kernel
//!   versus handed to the pod's HTTP service in-process;
//! - `containers` ([`containers`]): Linux container startup on a private containerd (`ctr
//!   run` of busybox), the peer of container pods (issue 12);
//! - `images` ([`images`]): OCI distribution: pod startup cold vs warm, pull throughput next
//!   to skopeo, 50 pods of one new image.
//!
//! Shared pieces: two servers compared side by side in alternating rounds ([`sides`]), the
//! server the bench starts and its clients ([`target`]), the samples and
//! their manifests ([`samples`]), the wasmtime CLI peer ([`peer`]), a pod watch that
//! timestamps each pod's milestones ([`podwatch`]), the HTTP load generator ([`load`]) and
//! latency histograms ([`report`]).

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser as _;
use indicatif::{ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

mod api;
mod authz;
mod containers;
mod creates;
mod density;
mod deployment;
mod dns;
mod encryption;
mod http;
mod images;
mod load;
mod peer;
mod pods;
mod podwatch;
mod proxy;
mod report;
mod same_node;
mod samples;
mod service;
mod sides;
mod store;
mod table;
mod target;
mod watch;
mod workload;

/// What `wasmkube-bench --help` explains after the options.
const AFTER_LONG_HELP: &str = "\
Subcommands (each has its own --help saying exactly what it measures):
  api       the apiserver: durable creates/s at 1, 8 and 64 clients (and the raw redb store in
            process), watch event delivery latency with 100 watchers. `wasmkube-bench` with no
            subcommand runs it, with the options above.
  pods      wasm pod startup, create -> Running observed via a watch, 200 pods one at a time and
            as a burst, p50/p99/max; next to `wasmtime run` of the same module (spawn until its
            first stdout byte), with the ratio.
  http      the http-hello sample (wasi:http) as a pod: requests/s and latency at concurrency 1
            and 64, next to `wasmtime serve` of the same component, with the ratio.
  density   the server's RSS (and PSS) per idle running wasm pod over 1,000 pods, for an idle
            command module and for http-hello; and how long until all 1,000 were Running.
  deployment
            a Deployment of 1,000 http-hello replicas on one node: create -> all Ready and
            rollout complete, a rolling update (its bounds and where its time goes), a delete.
  authz     what authorization costs: durable creates/s and GET requests/s, p50, p99 as a user
            bound to edit (200 other bindings around), RBAC vs AlwaysAllow, two servers
            in 40 alternating rounds, with the ratios.
  encryption
            what encrypting Secrets at rest costs: durable Secret creates/s and GET requests/s,
            p50, p99, identity vs secretbox (or any two of identity, aescbc, aesgcm,
            secretbox), two servers in 20 alternating rounds, with the ratios.
  proxy     kube-proxy's nftables mode (the agent's, run in the bench's process, its rules in a
            network namespace the bench makes; needs root and nft): 1,000 selector-less
            Services x 10 endpoints, slice write -> rules in place p50/p99; one endpoint change
            at that size (the sync's own time and nft's part of it); a restarted proxy's full
            sync; nft's own cost over that table by the cache a batch makes it read.
  dns       the cluster DNS: queries/s and p50/p99 of A queries for a Service name from
            closed-loop UDP clients, and a dig loop, next to dnsmasq answering the same name
            (needs dnsmasq and dig: apt-get install dnsmasq-base dnsutils).
  service   requests/s and p50/p99 of the http-hello pod through its Service's ClusterIP
            versus straight to the pod IP, in alternating rounds, with kube-proxy's nftables
            mode and its userspace relay; the server and the client each in a network
            namespace the bench makes (needs root, iproute2, nftables, curl, kubectl).
  same-node a Service call on the same node as its endpoint: requests/s and p50/p99 of the
            http-hello pod through its ClusterIP (nftables) and at its pod IP from the node's
            own namespace, next to the same component handed the requests in-process
            (HttpService::handle, no socket): what skipping the kernel would save at most.
  images    OCI distribution (needs docker-registry and skopeo, started/run on loopback): pod
            startup create -> Running cold (pulled from the registry and compiled) vs warm
            (cached), for a small and a large (24 MiB) module; `wasmkube image pull`
            throughput next to `skopeo copy` of the same artifact; 50 pods of one new image
            at once, with the registry's layer GETs and the agent's compilations counted.
  containers
            Linux container startup on a private containerd (in a network namespace the bench
            makes; needs root, containerd, runc and busybox-static): `ctr run --rm` of busybox
            `true` to its exit, and `ctr run -d` of busybox `sleep` until started, 50 each one
            at a time, p50/p99; the peer of a container pod's start (issue 12).
  load ADDR the HTTP load generator alone: closed-loop keep-alive GETs to ADDR for a fixed
            time, requests/s and p50/p99 (what `service` runs inside its client namespace).

Every benchmark starts its own `wasmkube server` (the wasmkube binary next to this one, or
--wasmkube PATH) on a free loopback port with a temporary data directory and stops it at the
end. pods, http and density need the samples
built (`samples/build --oci --quiet`) and, for the peer rows, the wasmtime CLI; scripts/bench
builds and installs what is missing.

Examples:
  wasmkube-bench
  wasmkube-bench pods --json
  wasmkube-bench http --duration 10
  wasmkube-bench density --pods 1000
  wasmkube-bench deployment --replicas 1000";

/// Benchmarks of wasmkube: the apiserver (default), pod startup, HTTP serving, pod density,
/// a Deployment of 1,000 replicas.
#[derive(clap::Parser, Debug)]
#[command(
    name = "wasmkube-bench",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Subcommands: api (default), pods, http, density, deployment, authz, encryption, proxy, dns, service, same-node, images, containers, load.\n\nMore: --help",
    after_long_help = AFTER_LONG_HELP
)]
struct BenchCommand {
    /// The wasmkube binary whose `server` the benchmarks start (and whose `image import` loads
    /// the samples), after the benchmark's name: `wasmkube-bench pods --wasmkube PATH`
    /// [default: `wasmkube` next to this binary, else on PATH].
    #[arg(long, env = "WASMKUBE_BIN", value_name = "PATH", global = true)]
    wasmkube: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<BenchSubcommand>,
    /// The options of `wasmkube-bench api`, for `wasmkube-bench` without a subcommand.
    #[command(flatten)]
    api: api::ApiCommand,
}

/// The benchmarks.
#[derive(clap::Subcommand, Debug)]
enum BenchSubcommand {
    /// The apiserver: durable creates/s and watch event delivery latency (the default).
    Api(api::ApiCommand),
    /// Wasm pod startup latency (create -> Running via a watch) next to `wasmtime run`.
    Pods(pods::PodsCommand),
    /// Requests/s and latency of the http-hello pod next to `wasmtime serve`.
    Http(http::HttpCommand),
    /// Server memory per idle running wasm pod over 1,000 pods.
    Density(density::DensityCommand),
    /// A Deployment of 1,000 wasm replicas on one node: all Ready, a rolling update, a delete.
    Deployment(deployment::DeploymentCommand),
    /// What authorization costs: creates/s and GET latency with RBAC vs AlwaysAllow.
    Authz(authz::AuthzCommand),
    /// What encrypting Secrets at rest costs: Secret creates/s and GET latency, identity vs
    /// secretbox.
    Encryption(encryption::EncryptionCommand),
    /// kube-proxy's nftables rule programming: 1,000 Services x 10 endpoints, one endpoint
    /// change at that size, a restart's full sync (in a network namespace; needs root).
    Proxy(proxy::ProxyCommand),
    /// The cluster DNS: queries/s and latency for a Service name, next to dnsmasq.
    Dns(dns::DnsCommand),
    /// Requests through a ClusterIP versus straight to the pod IP, nftables and userspace
    /// (in network namespaces; needs root).
    Service(service::ServiceCommand),
    /// A Service call on the same node: through the kernel (ClusterIP, nftables) versus
    /// handed to the pod's HTTP service in-process, what skipping the kernel would save.
    SameNode(same_node::SameNodeCommand),
    /// OCI images: pod startup cold vs warm (small and large module), pull throughput next
    /// to skopeo, 50 pods of one new image (needs docker-registry and skopeo).
    Images(images::ImagesCommand),
    /// Linux container startup on a private containerd: `ctr run --rm` of busybox (needs
    /// root, containerd, runc, busybox-static).
    Containers(containers::ContainersCommand),
    /// The HTTP load generator alone against IP:PORT (what `service` runs in its client's
    /// network namespace).
    Load(load::LoadCommand),
}

impl BenchCommand {
    /// Runs the chosen benchmark (the apiserver's without a subcommand).
    async fn execute(self) -> anyhow::Result<()> {
        target::raise_open_files_limit();
        let wasmkube = target::wasmkube_binary(self.wasmkube);
        match self.command {
            None => self.api.execute(&wasmkube).await,
            Some(BenchSubcommand::Api(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Pods(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Http(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Density(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Deployment(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Authz(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Encryption(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Proxy(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Dns(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Service(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::SameNode(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Images(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Containers(cmd)) => cmd.execute(&wasmkube).await,
            Some(BenchSubcommand::Load(cmd)) => cmd.execute().await,
        }
    }
}

fn main() -> std::process::ExitCode {
    let command = BenchCommand::parse();
    // What the components run in this process (the proxy bench's kube-proxy) log, at
    // `WASMKUBE_LOG` (warnings by default), on stderr.
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMKUBE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // A bench interrupted by Ctrl-C or SIGTERM drops its work, which kills the servers and
    // peers it started (their `kill_on_drop`) instead of leaving them running.
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = command.execute() => result.map_err(|e| (e, std::process::ExitCode::FAILURE)),
            signal = interrupted() => Err((
                anyhow::anyhow!("interrupted by {signal}: stopped the processes it started"),
                std::process::ExitCode::from(130),
            )),
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err((e, code)) => {
            eprintln!("error: {e:#}");
            code
        }
    }
}

/// Resolves with the signal's name once the bench is asked to stop (SIGINT or SIGTERM).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the default disposition stays: never resolve here.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// A progress bar on stderr, or a hidden one when stderr is not a terminal.
fn progress_bar(len: u64, message: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_message(message);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A spinner with a running count on stderr (for work of unknown length), or a hidden one
/// when stderr is not a terminal.
fn counter_bar(message: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg:>24} {pos} {per_sec} {elapsed}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Creates the namespace a benchmark works in.
async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("cannot create namespace {name}"))?;
    Ok(())
}

/// Removes a benchmark namespace and its ConfigMaps from a cluster the bench does not own
/// (best effort: a failure is reported, not fatal).
async fn delete_namespace(client: &kube::Client, name: &str) {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), name);
    if let Err(e) = config_maps
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
    {
        eprintln!("warning: cannot delete the ConfigMaps of namespace {name}: {e}");
    }
    if let Err(e) = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
    {
        eprintln!("warning: cannot delete namespace {name}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn no_subcommand_runs_the_api_benchmark_with_its_options() {
        let bench =
            BenchCommand::try_parse_from(["wasmkube-bench", "--creates", "10"]).expect("parses");
        assert!(bench.command.is_none());
        let bench = BenchCommand::try_parse_from(["wasmkube-bench", "api", "--creates", "10"])
            .expect("parses");
        assert!(matches!(bench.command, Some(BenchSubcommand::Api(_))));
    }

    #[test]
    fn each_benchmark_is_a_subcommand() {
        for name in [
            "pods",
            "http",
            "density",
            "deployment",
            "proxy",
            "dns",
            "service",
            "same-node",
            "containers",
        ] {
            let bench = BenchCommand::try_parse_from(["wasmkube-bench", name]).expect("parses");
            assert!(bench.command.is_some(), "{name}");
        }
    }

    #[test]
    fn api_options_do_not_combine_with_another_subcommand() {
        assert!(
            BenchCommand::try_parse_from(["wasmkube-bench", "--creates", "10", "pods"]).is_err()
        );
    }

    #[test]
    fn the_wasmkube_binary_is_an_option_of_every_benchmark() {
        for args in [
            &["wasmkube-bench", "--wasmkube", "/x/wasmkube"][..],
            &["wasmkube-bench", "pods", "--wasmkube", "/x/wasmkube"][..],
            &["wasmkube-bench", "deployment", "--wasmkube", "/x/wasmkube"][..],
        ] {
            let bench = BenchCommand::try_parse_from(args).expect("parses");
            assert_eq!(
                bench.wasmkube,
                Some(PathBuf::from("/x/wasmkube")),
                "{args:?}"
            );
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        BenchCommand::command().debug_assert();
    }
}

//! `wasmkube-bench api` (also plain `wasmkube-bench`): measures the apiserver through its real
//! HTTPS API with kube-rs and prints the figures (a table, or JSON with `--json`).
//!
//! By default it starts its own `wasmkube server` on a free loopback port
//! with a temporary data directory and stops it at the end; `--kubeconfig` targets a running
//! cluster instead. Two benchmarks:
//! - durable creates per second at several client concurrencies ([`super::creates`]), with the
//!   raw redb store measured in-process at the same concurrencies as a second row
//!   ([`super::store`]), so the cost of HTTP, TLS, JSON and the apiserver is visible;
//! - watch event delivery latency with many concurrent watchers ([`super::watch`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::report::{self, Report};
use super::target::{self, Target};
use super::watch::{self, WatchPlan};
use super::{create_namespace, creates, delete_namespace, progress_bar, store};

/// What `wasmkube-bench api --help` explains after the options.
const AFTER_LONG_HELP: &str = "\
What is measured, all through the real HTTPS API with kube-rs clients (one connection each):

1. Durable creates: for each --clients level, that many concurrent clients create --creates
   ConfigMaps in total. Prints creates/s and the p50/p99/max latency of a create. The same
   levels are then run in-process against the raw redb store (unless --skip-store), to show
   what HTTP, TLS, JSON and the apiserver cost on top of the store.
2. Watch delivery: --watchers concurrent watches on one namespace; one writer makes --events
   writes (creates, then patches) at --event-rate per second, each stamped with its send time.
   Prints p50/p99/max of (arrival - send) over all deliveries, and how many arrived
   (watchers x events when nothing is lost).

Target: by default the bench starts its own `wasmkube server` (see --wasmkube) on a free
loopback port with a temporary data directory, waits for /readyz, and stops it with SIGTERM at the end.
With --kubeconfig it measures a running cluster instead, in two namespaces named
wasmkube-bench-*, which it deletes afterwards.

Output: figures on stdout (a table, or JSON with --json); progress bars on stderr when it is a
terminal. The exit status is non-zero if a create failed or a watch event was lost.

Examples:
  wasmkube-bench api
  wasmkube-bench api --creates 1000 --clients 1,8 --watchers 10 --json
  wasmkube-bench api --kubeconfig ~/.local/share/wasmkube/kubeconfig.yaml";

/// Benchmark the apiserver: durable creates/s and watch event delivery latency.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  wasmkube-bench\n  wasmkube-bench --creates 1000 --clients 1,8 --watchers 10 --json\n  \
    wasmkube-bench api --kubeconfig ~/.local/share/wasmkube/kubeconfig.yaml\n\nMore: --help",
    after_long_help = AFTER_LONG_HELP
)]
pub(crate) struct ApiCommand {
    /// Measure the cluster of this kubeconfig instead of starting a server.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Data directory for the server the bench starts, kept afterwards [default: a temporary
    /// directory, removed afterwards].
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    data_dir: Option<PathBuf>,
    /// ConfigMaps created per concurrency level.
    #[arg(long, value_name = "N", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..))]
    creates: u64,
    /// Concurrency levels of the create benchmark (concurrent clients, comma-separated).
    #[arg(long, value_name = "N,N,..", value_delimiter = ',', default_value = "1,8,64",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    clients: Vec<u64>,
    /// Concurrent watches of the watch benchmark.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    watchers: u64,
    /// Writes the watch benchmark makes (each is one event for every watcher).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// Writes per second of the watch benchmark; 0 writes back to back.
    #[arg(long, value_name = "N", default_value_t = 100)]
    event_rate: u32,
    /// Skip the durable create benchmark.
    #[arg(long)]
    skip_creates: bool,
    /// Skip the in-process raw store rows of the create benchmark.
    #[arg(long)]
    skip_store: bool,
    /// Skip the watch benchmark.
    #[arg(long)]
    skip_watch: bool,
    /// Print the figures as one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// An extra argument for the `wasmkube server` the bench starts (repeatable), e.g.
    /// `--server-arg=--audit-policy-file=policy.yaml`.
    #[arg(
        long = "server-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        conflicts_with = "kubeconfig"
    )]
    server_args: Vec<String>,
}

impl ApiCommand {
    /// Runs the benchmarks, prints the report and stops the server it started.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        target::raise_open_files_limit();
        let target = match &self.kubeconfig {
            Some(path) => Target::from_kubeconfig(path).await?,
            None => {
                eprintln!("starting wasmkube server ...");
                Target::start_server_with(wasmkube, self.data_dir.clone(), &self.server_args)
                    .await?
            }
        };
        let outcome = self.measure(&target).await;
        target.shutdown().await;
        let report = outcome?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.to_table());
        }
        let failed_creates: u64 = report.creates.iter().map(|row| row.errors).sum();
        if failed_creates > 0 {
            bail!("{failed_creates} creates failed");
        }
        if report.watch.as_ref().is_some_and(|w| !w.complete()) {
            bail!("watch deliveries were lost or duplicated");
        }
        Ok(())
    }

    async fn measure(&self, target: &Target) -> anyhow::Result<Report> {
        let creates = usize::try_from(self.creates).context("--creates is too large")?;
        let mut report = Report {
            target: target.describe(),
            url: target.url(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            load_average: report::load_average(),
            creates_per_level: creates,
            server_idle_rss_kib: target.server_memory().map(|m| m.rss_kib),
            binary_bytes: target.server_binary_bytes(),
            ..Report::default()
        };
        let admin = target.new_client()?;
        let suffix = std::process::id();

        if !self.skip_creates {
            let namespace = format!("wasmkube-bench-creates-{suffix}");
            create_namespace(&admin, &namespace).await?;
            // The raw store runs right after the API at each level, so that both rows of a
            // level see the same machine noise.
            let mut raw_store = if self.skip_store {
                report.store_note = Some("skipped (--skip-store)".to_owned());
                None
            } else {
                match store::open_temp() {
                    Ok(opened) => Some(opened),
                    Err(e) => {
                        report.store_note = Some(format!("not measured: {e:#}"));
                        None
                    }
                }
            };
            for (level, &clients) in self.clients.iter().enumerate() {
                let clients = usize::try_from(clients).context("--clients is too large")?;
                let bar = progress_bar(self.creates, format!("creates, {clients} clients"));
                let row = creates::run_level(
                    target,
                    creates::BenchKind::ConfigMap,
                    &namespace,
                    level,
                    clients,
                    creates,
                    &bar,
                )
                .await;
                bar.finish_and_clear();
                let row = row?;
                if row.creates == 0 {
                    bail!("every create failed at {clients} clients");
                }
                report.creates.push(row);
                if let Some((_dir, store)) = &raw_store {
                    let bar =
                        progress_bar(self.creates, format!("store creates, {clients} clients"));
                    let row = store::run_level(store, level, clients, creates, &bar).await;
                    bar.finish_and_clear();
                    match row {
                        Ok(row) => report.creates.push(row),
                        Err(e) => {
                            report.store_note = Some(format!("failed: {e:#}"));
                            raw_store = None;
                        }
                    }
                }
            }
            if !target.owns_server() {
                delete_namespace(&admin, &namespace).await;
            }
        }

        if !self.skip_watch {
            let plan = WatchPlan {
                watchers: usize::try_from(self.watchers).context("--watchers is too large")?,
                events: usize::try_from(self.events).context("--events is too large")?,
                rate: (self.event_rate > 0).then_some(self.event_rate),
            };
            let namespace = format!("wasmkube-bench-watch-{suffix}");
            create_namespace(&admin, &namespace).await?;
            let bar = progress_bar(
                watch::expected_deliveries(plan),
                format!("watch, {} watchers", plan.watchers),
            );
            let result = watch::run(target, &namespace, plan, &bar).await;
            bar.finish_and_clear();
            report.watch = Some(result?);
            if !target.owns_server() {
                delete_namespace(&admin, &namespace).await;
            }
        }
        report.server_peak_rss_kib = target.server_memory().map(|m| m.peak_rss_kib);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: ApiCommand,
    }

    #[test]
    fn the_defaults_are_the_documented_benchmark() {
        let cli = Cli::try_parse_from(["bench"]).expect("parses");
        assert_eq!(cli.bench.creates, 3000);
        assert_eq!(cli.bench.clients, vec![1, 8, 64]);
        assert_eq!(cli.bench.watchers, 100);
        assert!(cli.bench.kubeconfig.is_none());
    }

    #[test]
    fn client_levels_are_comma_separated() {
        let cli =
            Cli::try_parse_from(["bench", "--clients", "2,4", "--creates", "10"]).expect("parses");
        assert_eq!(cli.bench.clients, vec![2, 4]);
        assert_eq!(cli.bench.creates, 10);
    }

    #[test]
    fn zero_clients_or_creates_are_refused() {
        assert!(Cli::try_parse_from(["bench", "--clients", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--creates", "0"]).is_err());
    }

    #[test]
    fn a_data_dir_cannot_be_combined_with_a_kubeconfig() {
        assert!(Cli::try_parse_from(["bench", "--kubeconfig", "k", "--data-dir", "d"]).is_err());
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

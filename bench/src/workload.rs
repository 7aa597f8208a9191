//! The setup the workload benchmarks (`pods`, `http`, `density`) share: their common options,
//! a `wasmkube server` started with extra flags, sample images imported into its embedded
//! agent, a namespace to work in and a pod watch on it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

use super::create_namespace;
use super::peer::Wasmtime;
use super::podwatch::{self, PodWatch};
use super::samples::Samples;
use super::target::Target;

/// The namespace the workload benchmarks create their pods in.
pub(crate) const NAMESPACE: &str = "wasmkube-bench";

/// Options every workload benchmark has.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct WorkloadArgs {
    /// The repository's samples directory, built with `samples/build --oci`
    /// [default: ./samples, else the one next to this binary's target directory].
    #[arg(long, value_name = "DIR")]
    pub(crate) samples: Option<PathBuf>,
    /// Data directory for the server the bench starts, kept afterwards [default: a temporary
    /// directory, removed afterwards].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Print the figures as one JSON document instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// An extra argument for the `wasmkube server` the bench starts (repeatable), after the
    /// capacity flags the benchmark sets, e.g. `--server-arg=--disable-controllers`.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) server_args: Vec<String>,
}

impl WorkloadArgs {
    /// The server's arguments: the capacity for `pods` pods ([`capacity_args`]), then
    /// `--server-arg`s.
    pub(crate) fn server_args(&self, pods: usize) -> Vec<String> {
        let mut args = capacity_args(pods);
        args.extend(self.server_args.iter().cloned());
        args
    }

    /// The samples directory, checked to hold the built `names`.
    pub(crate) fn samples(&self, names: &[&str]) -> anyhow::Result<Samples> {
        let samples = Samples::locate(self.samples.as_deref())?;
        for name in names {
            samples.require_built(name)?;
        }
        Ok(samples)
    }
}

/// The option of the benchmarks with a wasmtime CLI peer.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct PeerArgs {
    /// The wasmtime CLI to compare with [default: `wasmtime` on PATH, else
    /// /var/tmp/tools/bin/wasmtime; without one the peer rows are "not measured"].
    #[arg(long, value_name = "PATH")]
    pub(crate) wasmtime: Option<PathBuf>,
}

impl PeerArgs {
    /// The wasmtime CLI, if there is one (a line on stderr says which).
    pub(crate) async fn find(&self) -> Option<Wasmtime> {
        let found = Wasmtime::find(self.wasmtime.as_deref()).await;
        match &found {
            Some(cli) => eprintln!("peer: {}", cli.version),
            None => eprintln!("peer: {}", super::peer::NOT_FOUND),
        }
        found
    }
}

/// A server with the samples' images, a namespace and a pod watch.
pub(crate) struct Workload {
    /// The server.
    pub(crate) target: Target,
    /// An admin client.
    pub(crate) client: kube::Client,
    /// Milestones of the namespace's pods.
    pub(crate) watch: PodWatch,
}

impl Workload {
    /// Starts `wasmkube server <server_args>`, imports the OCI layouts of `images` (sample
    /// names) into its embedded agent, creates [`NAMESPACE`] and starts watching its pods.
    pub(crate) async fn start(
        wasmkube: &Path,
        data_dir: Option<PathBuf>,
        server_args: &[String],
        samples: &Samples,
        images: &[&str],
    ) -> anyhow::Result<Self> {
        eprintln!("starting wasmkube server {} ...", server_args.join(" "));
        let target = Target::start_server_with(wasmkube, data_dir, server_args).await?;
        match Self::prepare(&target, samples, images).await {
            Ok((client, watch)) => Ok(Self {
                target,
                client,
                watch,
            }),
            Err(e) => {
                target.shutdown().await;
                Err(e)
            }
        }
    }

    async fn prepare(
        target: &Target,
        samples: &Samples,
        images: &[&str],
    ) -> anyhow::Result<(kube::Client, PodWatch)> {
        for name in images {
            target.import_image(&samples.oci_layout(name)).await?;
        }
        let client = target.new_client()?;
        create_namespace(&client, NAMESPACE).await?;
        let watch = PodWatch::start(client.clone(), NAMESPACE).await?;
        Ok((client, watch))
    }

    /// The pods API of [`NAMESPACE`].
    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Creates a pod.
    pub(crate) async fn create(&self, pod: &Pod) -> anyhow::Result<()> {
        create_pod(&self.pods(), pod).await
    }

    /// Deletes every pod of the namespace with grace period 0 and waits until the watch saw
    /// each of `names` gone.
    pub(crate) async fn delete_all(
        &mut self,
        names: &HashSet<String>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        podwatch::delete_and_wait(&self.client, NAMESPACE, &mut self.watch, names, timeout).await
    }

    /// Stops the server.
    pub(crate) async fn shutdown(self) {
        drop(self.watch);
        self.target.shutdown().await;
    }
}

/// Creates a pod through `api`.
pub(crate) async fn create_pod(api: &Api<Pod>, pod: &Pod) -> anyhow::Result<()> {
    api.create(&PostParams::default(), pod)
        .await
        .with_context(|| {
            format!(
                "cannot create pod {}",
                pod.metadata.name.as_deref().unwrap_or("?")
            )
        })?;
    Ok(())
}

/// `--max-pods`, `--cpu` and `--memory` for an embedded agent that must fit `pods` pods of
/// the samples' requests (10m CPU, 16Mi memory each) whatever the machine's size.
pub(crate) fn capacity_args(pods: usize) -> Vec<String> {
    let cpus = (pods / 50).max(4);
    let memory_gi = (pods / 32).max(8);
    vec![
        "--max-pods".to_owned(),
        (pods + 16).to_string(),
        "--cpu".to_owned(),
        cpus.to_string(),
        "--memory".to_owned(),
        format!("{memory_gi}Gi"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_args_come_after_the_capacity_flags() {
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            args: WorkloadArgs,
        }
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "x",
            "--server-arg=--disable-controllers",
            "--server-arg",
            "--log-format=json",
        ])
        .expect("parses");
        let args = cli.args.server_args(10);
        assert_eq!(args[..2], ["--max-pods".to_owned(), "26".to_owned()]);
        assert_eq!(
            args[args.len() - 2..],
            [
                "--disable-controllers".to_owned(),
                "--log-format=json".to_owned()
            ]
        );
    }

    #[test]
    fn capacity_fits_the_pods_requests() {
        for pods in [1, 200, 1000, 5000] {
            let args = capacity_args(pods);
            let max_pods: usize = args[1].parse().expect("number");
            let cpus: usize = args[3].parse().expect("number");
            let memory_gi: usize = args[5].trim_end_matches("Gi").parse().expect("number");
            assert!(max_pods >= pods);
            assert!(cpus * 1000 >= pods * 10, "{pods} pods need {}m", pods * 10);
            // 16Mi each, plus the 100Mi the agent keeps for itself.
            assert!(memory_gi * 1024 >= pods * 16 + 100, "{pods}");
        }
    }
}

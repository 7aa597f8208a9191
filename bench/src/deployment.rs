//! `wasmkube-bench deployment`: a Deployment of 1,000 wasm replicas on one node — how long
//! until all are Ready, a rolling update of it, and its deletion — observed with watches on
//! the Deployment, its ReplicaSets and its pods, as `kubectl rollout status` would.
//!
//! Besides the milestones of each phase it reports where a rolling update's time goes: the
//! update proceeds in cycles (the new ReplicaSet grows, its pods start and turn Ready, the
//! old one shrinks, its pods are deleted, the new one grows again), and each link of that
//! cycle is timed from the watches ([`cycle`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{EnvVar, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use super::target::Target;
use super::workload::{NAMESPACE, WorkloadArgs};
use super::{create_namespace, progress_bar};

mod cycle;
mod observe;
mod phases;
mod strategy;
mod summary;

use observe::Observer;
use phases::{CreateResult, DeleteResult, RolloutResult};
use strategy::Bounds;

/// The sample the Deployment runs.
const SAMPLE: &str = "http-hello";
/// The Deployment's name.
const NAME: &str = "web";
/// Its pods' label.
const APP_LABEL: (&str, &str) = ("app", "bench-web");
/// The time any phase may take, plus [`TIMEOUT_PER_REPLICA`] per replica.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The time allowed per replica on top of [`TIMEOUT`] (3 replicas/s is far below the pace).
const TIMEOUT_PER_REPLICA: Duration = Duration::from_millis(300);

/// What `wasmkube-bench deployment --help` explains after the options.
const AFTER_LONG_HELP: &str = "\
What is measured, on a fresh `wasmkube server` (apiserver, scheduler, controller-manager and
the embedded agent in one process: one node, with --max-pods, --cpu and --memory raised so
that twice --replicas pods fit), with watches on the Deployment, its ReplicaSets and its pods
opened before the clock starts (times are when the watch delivered the change):

The Deployment `web` runs the http-hello sample (the container of samples/http-hello/pod.yaml:
image wasmkube.local/samples/http-hello:v1, port 8080, readiness probe httpGet /ready every
2 s, requests 10m CPU / 16Mi; no liveness probe, as samples/http-hello/deployment.yaml), an
instance per request, so idle pods hold no instance; strategy RollingUpdate with --max-surge
and --max-unavailable (Kubernetes' defaults 25% / 25%).

1. Create: from just before the create request until all --replicas pods were seen created,
   all Running, all Ready, the ReplicaSet's and then the Deployment's status.readyReplicas
   reached --replicas, and `kubectl rollout status` would return (observedGeneration >=
   generation, updatedReplicas == availableReplicas == replicas). Per pod: created -> bound
   (scheduler) -> first agent status (the agent's watch delivered it, its worker wrote a
   status) -> Running (started) -> Ready (readiness probe).
2. Rolling update: an env var of the template changes (a new pod-template-hash); from just
   before the patch until the new ReplicaSet appeared, its first pod and all its pods were
   Ready, no old pod was left, and the rollout was complete. The watches also give the least
   Ready pods and the most pods at any moment, printed next to the strategy's bounds
   (replicas - maxUnavailable, replicas + maxSurge; terminating pods are not counted, as the
   ReplicaSets do not count them). Where the time goes: the update proceeds in cycles (new
   ReplicaSet scaled up -> its pods created -> bound -> started -> Running -> Ready -> old
   ReplicaSet scaled down -> its pods deleting -> new ReplicaSet scaled up ...); each link is
   timed from the watches, per pod or per scaling step from the latest event of the previous
   link, and reported as p50/p99/max; an old pod's deleting -> gone (off the cycle) too.
3. Delete with propagationPolicy Background: until the Deployment, its ReplicaSets and all
   its pods are gone.

Peer: Kubernetes publishes no figure for a Deployment on one node; its density SLO is pod
startup p99 <= 5 s. Compare the pods/s here with `wasmkube-bench pods` (burst) and `bench
density` on the same machine.

Examples:
  wasmkube-bench deployment
  wasmkube-bench deployment --replicas 200 --max-surge 1 --max-unavailable 0 --json";

/// A Deployment of many wasm replicas on one node: all Ready, a rolling update, a delete.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_LONG_HELP)]
pub(crate) struct DeploymentCommand {
    /// The Deployment's replicas.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=5000))]
    replicas: u64,
    /// The rolling update's maxSurge: a number or a percentage of the replicas.
    #[arg(long, value_name = "N|P%", default_value = "25%", value_parser = strategy::parse_int_or_percent)]
    max_surge: IntOrString,
    /// The rolling update's maxUnavailable: a number or a percentage of the replicas.
    #[arg(long, value_name = "N|P%", default_value = "25%", value_parser = strategy::parse_int_or_percent)]
    max_unavailable: IntOrString,
    #[command(flatten)]
    common: WorkloadArgs,
}

/// The figures of one run.
pub(crate) struct DeploymentReport {
    header: super::table::RunHeader,
    replicas: usize,
    bounds: Bounds,
    create: CreateResult,
    rollout: RolloutResult,
    delete: DeleteResult,
    /// Writes to the store (revisions) during create, rolling update and delete.
    writes: [Option<u64>; 3],
}

impl DeploymentCommand {
    /// Runs the benchmark and prints the report.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        let replicas = usize::try_from(self.replicas).context("--replicas is too large")?;
        let bounds = Bounds::resolve(&self.max_surge, &self.max_unavailable, replicas)?;
        let samples = self.common.samples(&[SAMPLE])?;
        let server_args = self.common.server_args(replicas * 2);
        let mut header = super::table::RunHeader::now("deployment", &server_args);
        header.peer = Some(
            "none: Kubernetes publishes no one-node Deployment figure (its SLO: pod startup \
             p99 <= 5 s)"
                .to_owned(),
        );
        let deployment = deployment(&samples.pod(SAMPLE)?, replicas, &self)?;
        eprintln!("starting wasmkube server {} ...", server_args.join(" "));
        let target =
            Target::start_server_with(wasmkube, self.common.data_dir.clone(), &server_args).await?;
        let outcome = async {
            target.import_image(&samples.oci_layout(SAMPLE)).await?;
            let client = target.new_client()?;
            create_namespace(&client, NAMESPACE).await?;
            measure(&client, &deployment, replicas, bounds).await
        }
        .await;
        target.shutdown().await;
        let (create, rollout, delete, writes) = outcome?;
        let report = DeploymentReport {
            header,
            replicas,
            bounds,
            create,
            rollout,
            delete,
            writes,
        };
        if self.common.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.to_table());
        }
        Ok(())
    }
}

/// The three phases' figures and the store writes each made.
type Phases = (CreateResult, RolloutResult, DeleteResult, [Option<u64>; 3]);

/// The three phases, one after the other.
async fn measure(
    client: &kube::Client,
    deployment: &Deployment,
    replicas: usize,
    bounds: Bounds,
) -> anyhow::Result<Phases> {
    let mut revisions = vec![store_revision(client).await];
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let mut observer = Observer::start(client, NAMESPACE).await?;
    let timeout = TIMEOUT + TIMEOUT_PER_REPLICA * u32::try_from(replicas).unwrap_or(u32::MAX);

    let bar = progress_bar(replicas as u64, "pods Ready (create)".to_owned());
    let start = Instant::now();
    let created = api
        .create(&PostParams::default(), deployment)
        .await
        .context("cannot create the Deployment")?;
    let generation = created.metadata.generation.unwrap_or(1);
    let create = phases::create(&mut observer, start, generation, replicas, timeout, &bar).await;
    bar.finish_and_clear();
    let create = create?;
    revisions.push(store_revision(client).await);
    eprintln!(
        "create: rollout complete after {:.1} s",
        create.milestones.last_s()
    );

    let bar = progress_bar(replicas as u64, "new pods Ready (update)".to_owned());
    let start = Instant::now();
    let patched = api
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&rollout_patch(deployment)?),
        )
        .await
        .context("cannot patch the Deployment's template")?;
    let generation = patched.metadata.generation.unwrap_or(2);
    let rollout = phases::rollout(&mut observer, start, generation, replicas, timeout, &bar).await;
    bar.finish_and_clear();
    let rollout = rollout?;
    revisions.push(store_revision(client).await);
    eprintln!(
        "rolling update: complete after {:.1} s (ready pods >= {}, pods <= {}; bounds {} / {})",
        rollout.milestones.last_s(),
        rollout.min_ready,
        rollout.max_live,
        bounds.min_ready(replicas),
        bounds.max_pods(replicas)
    );

    let bar = progress_bar(replicas as u64, "pods gone (delete)".to_owned());
    let start = Instant::now();
    api.delete(NAME, &DeleteParams::background())
        .await
        .context("cannot delete the Deployment")?;
    let delete = phases::delete(&mut observer, start, timeout, &bar).await;
    bar.finish_and_clear();
    let delete = delete?;
    revisions.push(store_revision(client).await);
    let writes = [0, 1, 2].map(|i| Some(revisions[i + 1]?.saturating_sub(revisions[i]?)));
    Ok((create, rollout, delete, writes))
}

/// The store's revision now: the resourceVersion of a list (every write, of any kind,
/// including Events and Leases, raises it by one); `None` if it cannot be read.
async fn store_revision(client: &kube::Client) -> Option<u64> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let list = api
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .ok()?;
    list.metadata.resource_version?.parse().ok()
}

/// The Deployment the bench creates: `replicas` pods of the sample's container.
fn deployment(
    sample: &Pod,
    replicas: usize,
    cmd: &DeploymentCommand,
) -> anyhow::Result<Deployment> {
    let mut spec = sample.spec.clone().context("the sample pod has no spec")?;
    for container in &mut spec.containers {
        container.liveness_probe = None;
    }
    let labels =
        std::collections::BTreeMap::from([(APP_LABEL.0.to_owned(), APP_LABEL.1.to_owned())]);
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(replicas).context("--replicas is too large")?),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(cmd.max_surge.clone()),
                    max_unavailable: Some(cmd.max_unavailable.clone()),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(spec),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// A JSON merge patch that gives the template's containers an env var `BENCH_REVISION=2`
/// (the containers list is replaced whole, as a merge patch does with lists).
fn rollout_patch(deployment: &Deployment) -> anyhow::Result<serde_json::Value> {
    let mut containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.clone())
        .context("the Deployment has no pod template")?;
    for container in &mut containers {
        container.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: "BENCH_REVISION".to_owned(),
            value: Some("2".to_owned()),
            value_from: None,
        });
    }
    Ok(json!({ "spec": { "template": { "spec": { "containers": containers } } } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pod {
        serde_yaml_ng::from_str(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: h\nspec:\n  containers:\n    - \
             name: h\n      image: wasmkube.local/samples/http-hello:v1\n      livenessProbe:\n        \
             httpGet:\n          path: /healthz\n          port: 8080\n",
        )
        .expect("parses")
    }

    fn command(args: &[&str]) -> DeploymentCommand {
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            cmd: DeploymentCommand,
        }
        use clap::Parser as _;
        let mut argv = vec!["x"];
        argv.extend(args);
        Cli::try_parse_from(argv).expect("parses").cmd
    }

    #[test]
    fn the_deployment_runs_the_sample_without_its_liveness_probe() {
        let cmd = command(&["--replicas", "7", "--max-surge", "1"]);
        let d = deployment(&sample(), 7, &cmd).expect("builds");
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(7));
        let rolling = spec
            .strategy
            .and_then(|s| s.rolling_update)
            .expect("rolling");
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(
            rolling.max_unavailable,
            Some(IntOrString::String("25%".to_owned()))
        );
        let template = spec.template.spec.expect("template");
        assert!(template.containers[0].liveness_probe.is_none());
        assert_eq!(
            spec.selector.match_labels,
            spec.template.metadata.and_then(|m| m.labels)
        );
    }

    #[test]
    fn the_rollout_patch_adds_an_env_var_to_every_container() {
        let cmd = command(&[]);
        let d = deployment(&sample(), 3, &cmd).expect("builds");
        let patch = rollout_patch(&d).expect("patch");
        let containers = &patch["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["env"][0]["name"], "BENCH_REVISION");
        assert_eq!(
            containers[0]["image"],
            "wasmkube.local/samples/http-hello:v1"
        );
    }
}

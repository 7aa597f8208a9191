//! wasmkube-scheduler: assigns pending pods to nodes, like kube-scheduler.
//!
//! [`run`] watches pods, nodes and RuntimeClasses, and for every pending pod of its
//! `schedulerName` picks a node with the plugins of [`plugins::default_framework`], then binds
//! the pod through `pods/binding`. Pods that fit nowhere get `PodScheduled=False` with
//! kube-scheduler's message and a `FailedScheduling` event, and are retried when the cluster
//! changes. With several replicas, a Lease (`wasmkube_client::leader`) makes exactly one of
//! them schedule.
//!
//! Modules:
//! - [`snapshot`]: the cluster as the scheduler sees it (nodes, pods per node, assumed pods).
//! - [`framework`]: filter and score plugin traits and the scheduling cycle.
//! - [`plugins`]: NodeResourcesFit, NodeName, NodeUnschedulable, NodeAffinity (with
//!   nodeSelector), TaintToleration, RuntimeClass and the balanced-allocation score.
//! - [`resources`]: pod requests and node allocatable as integers.
//! - [`labels`]: node labels numbered so selectors match with integer comparisons.
//! - [`queue`]: the active / backoff / unschedulable queues.
//! - `binding`: what the scheduler writes back (Events go through `wasmkube_client::events`).

mod binding;
pub mod config;
pub mod framework;
pub mod labels;
pub mod metrics;
pub mod plugins;
pub mod queue;
pub mod resources;
mod scheduler;
pub mod snapshot;

#[cfg(test)]
mod testing;

use std::future::Future;

use tokio::sync::watch;
use wasmkube_client::LeaderElector;

pub use config::{SchedulerConfig, SchedulerError};
pub use metrics::{Metrics, MetricsSnapshot};

/// Runs the scheduler until `shutdown` resolves, then releases its Lease (if it led).
///
/// Watch failures are retried with backoff and never end the scheduler; only an invalid
/// configuration does.
pub async fn run(
    client: kube::Client,
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SchedulerError> {
    config.validate()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (leading, elector) =
        LeaderElector::spawn_or_always(client.clone(), config.leader_election.clone(), stop_rx)?;
    let (events, watches) = scheduler::spawn_watches(&client);
    tracing::info!(
        scheduler = %config.scheduler_name,
        identity = %config.identity,
        leader_election = config.leader_election.is_some(),
        "scheduler starting"
    );
    scheduler::Scheduler::new(client, config)
        .run(events, leading, shutdown)
        .await;
    for task in &watches {
        task.abort();
    }
    let _ = stop_tx.send(true);
    let _ = elector.await;
    Ok(())
}

//! A clean stop of `wasmkube server`: Ctrl-C (SIGINT) stops the scheduler, the controllers and
//! the embedded agent while the apiserver still serves them (they release their Leases and
//! end their watches), then the apiserver; the process exits 0 and logs no error.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use crate::harness::{NodeSpec, TestCluster, poll_until};

const DEADLINE: Duration = Duration::from_secs(60);

/// The Leases of the server's own control-plane components.
const COMPONENT_LEASES: [&str; 2] = ["wasmkube-controller-manager", "wasmkube-scheduler"];

#[tokio::test]
async fn ctrl_c_stops_the_components_before_the_apiserver_and_exits_cleanly() -> Result<()> {
    let test = "ctrl_c_stops_the_components_before_the_apiserver_and_exits_cleanly";
    let Some(mut cluster) = TestCluster::builder()
        .embedded_agent(NodeSpec::named("solo"))
        .start_with_samples(test)
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;

    // Every component is at work: both Leases held, a Deployment's pods running on the node.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    poll_until("the components' Leases are held", DEADLINE, || {
        let leases = leases.clone();
        async move {
            for name in COMPONENT_LEASES {
                let holder = leases
                    .get_opt(name)
                    .await?
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .unwrap_or_default();
                if holder.is_empty() {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        }
    })
    .await?;
    cluster
        .apply_json(&cluster.sample_workload("Deployment", "ticker", "counter", 2)?)
        .await?;
    let pods: Api<Pod> = Api::default_namespaced(client);
    poll_until("two counter pods Running", DEADLINE, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=ticker"))
                .await?;
            let running = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            Ok((running == 2).then_some(()))
        }
    })
    .await?;

    let status = cluster.interrupt().await?;
    let log = std::fs::read_to_string(cluster.log_path())
        .with_context(|| format!("reading {}", cluster.log_path().display()))?;
    assert!(
        status.success(),
        "the server exited with {status} after SIGINT; log tail:\n{}",
        cluster.log_tail(40)
    );
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "errors in the server log:\n{}",
        errors.join("\n")
    );
    // From the signal on, nothing fails: no Lease release, watch or status write runs into a
    // stopped apiserver.
    let stopping = log
        .find("shutting down")
        .context("the server did not log that it is shutting down")?;
    let warnings: Vec<&str> = log[stopping..]
        .lines()
        .filter(|l| l.contains("WARN"))
        .collect();
    assert!(
        warnings.is_empty(),
        "warnings while shutting down:\n{}",
        warnings.join("\n")
    );
    Ok(())
}

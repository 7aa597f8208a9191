//! The node's heartbeat: a Lease named after the node in `kube-node-lease`, renewed every
//! [`RENEW_INTERVAL`] (the kubelet's 10 s, with a 40 s duration). A failed renewal is retried
//! sooner, with back-off from 200 ms up to the renew interval, so a short apiserver outage
//! costs no more than one missed beat.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use wasmkube_client::status::{is_already_exists, is_not_found};

/// The namespace of node leases.
pub(crate) const NAMESPACE: &str = "kube-node-lease";
/// How often the lease is renewed.
pub(crate) const RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// The lease's duration.
pub(crate) const DURATION_SECONDS: i32 = 40;

/// Renews the lease once: creates it if missing, else sets `renewTime` (and the holder).
pub(crate) async fn renew(client: &kube::Client, node: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let patch = serde_json::json!({
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": DURATION_SECONDS,
            "renewTime": now,
        }
    });
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => {
            let owner = Api::<Node>::all(client.clone())
                .get_opt(node)
                .await?
                .and_then(|n| n.metadata.uid)
                .map(|uid| OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_string(),
                    uid,
                    ..Default::default()
                });
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_string()),
                    namespace: Some(NAMESPACE.to_string()),
                    owner_references: owner.map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_string()),
                    lease_duration_seconds: Some(DURATION_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(e) if is_already_exists(&e) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Renews the lease until `shutdown` resolves.
pub(crate) async fn run(client: kube::Client, node: String, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut retry = Duration::from_millis(200);
    loop {
        let wait = match renew(&client, &node).await {
            Ok(()) => {
                retry = Duration::from_millis(200);
                RENEW_INTERVAL
            }
            Err(e) => {
                tracing::warn!(error = %e, node = %node, "renewing the node lease failed");
                let wait = retry;
                retry = (retry * 2).min(RENEW_INTERVAL);
                wait
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

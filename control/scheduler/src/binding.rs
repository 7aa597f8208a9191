//! Writing the scheduler's decisions: `POST pods/{name}/binding`, and the `PodScheduled`
//! condition of pods that fit nowhere.

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use wasmkube_client::status::{api_message, is_conflict, is_not_found};

use crate::snapshot::PodInfo;

/// How a binding went.
#[derive(Debug)]
pub(crate) enum BindOutcome {
    /// The pod is bound to the node.
    Bound,
    /// 409: the pod was bound meanwhile (by another scheduler) or replaced by a namesake.
    Conflict(String),
    /// 404: the pod is gone.
    Gone,
    /// Anything else; worth retrying.
    Failed(String),
}

/// Binds `pod` to `node`, with the pod's UID as precondition so a recreated pod of the
/// same name is never bound by mistake.
pub(crate) async fn bind(client: kube::Client, pod: &PodInfo, node: &str) -> BindOutcome {
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    let result: Result<serde_json::Value, kube::Error> = api
        .create_subresource("binding", &pod.name, &PostParams::default(), &binding)
        .await;
    match result {
        Ok(_) => BindOutcome::Bound,
        Err(e) if is_conflict(&e) => BindOutcome::Conflict(api_message(&e)),
        Err(e) if is_not_found(&e) => BindOutcome::Gone,
        Err(e) => BindOutcome::Failed(e.to_string()),
    }
}

/// Whether the pod already carries `PodScheduled=False` with reason `Unschedulable` and
/// this message (then there is nothing to write).
pub(crate) fn unschedulable_condition_is_current(pod: &PodInfo, message: &str) -> bool {
    pod.pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        })
}

/// Sets `PodScheduled=False, reason Unschedulable` with kube-scheduler's message, by a
/// strategic merge patch of the status (conditions merge by `type`).
///
/// The patch carries the `resourceVersion` the decision was made on: if the pod changed
/// since (above all, if a later attempt bound it and the binding set `PodScheduled=True`),
/// the apiserver refuses the patch and this stale verdict is dropped. A pod that is still
/// unschedulable gets a fresh one at its next attempt.
///
/// The patch carries the `resourceVersion` the decision was made on: if the pod changed
/// since (above all, if a later attempt bound it and the binding set `PodScheduled=True`),
/// the apiserver refuses the patch and this stale verdict is dropped. A pod that is still
/// unschedulable gets a fresh one at its next attempt.
pub(crate) async fn set_unschedulable(
    client: kube::Client,
    pod: &PodInfo,
    message: &str,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace);
    let was_false = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
        .is_some_and(|c| c.status == "False");
    let mut condition = serde_json::json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
    });
    if !was_false {
        condition["lastTransitionTime"] = serde_json::json!(
            Timestamp::now()
                .round(k8s_openapi::jiff::Unit::Second)
                .unwrap_or(Timestamp::now())
                .to_string()
        );
    }
    let mut patch = serde_json::json!({"status": {"conditions": [condition]}});
    if let Some(rv) = &pod.pod.metadata.resource_version {
        patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    match api
        .patch_status(
            &pod.name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{info, pod};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    #[test]
    fn the_same_unschedulable_message_is_not_written_twice() {
        let mut p = pod("p");
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/1 nodes are available: 1 Insufficient cpu.".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let p = info(p);
        assert!(unschedulable_condition_is_current(
            &p,
            "0/1 nodes are available: 1 Insufficient cpu."
        ));
        assert!(!unschedulable_condition_is_current(
            &p,
            "0/2 nodes are available: 2 Insufficient cpu."
        ));
    }
}

//! The Revision controller: a Deployment per Revision, its replicas within the autoscaling
//! bounds, and the Revision's readiness from the Deployment.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use serde_json::{Value, json};
use wasmkube_api::knative::{
    self, CONFIGURATION_LABEL, REVISION_LABEL, REVISION_UID_LABEL, SERVICE_LABEL, deployment_name,
};
use wasmkube_client::informers::SharedInformerFactory;

use super::types::Revision;
use super::{KnativeError, condition, condition_status};
use crate::context::Context;
use crate::pods::{controller_ref, is_controlled_by};
use crate::retry::{Retries, drain, requeue_failed, run_forever};

/// Fields of a RevisionSpec that a PodSpec has not.
const REVISION_ONLY_FIELDS: &[&str] = &[
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
];

struct State {
    client: kube::Client,
    retries: Retries,
}

pub(super) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let revisions = informers.informer::<Revision>();
    let deployments = informers.informer::<Deployment>();
    async move {
        let state = Arc::new(State {
            client: ctx.client.clone(),
            retries: Retries::client_go_default(),
        });
        run_forever("knative-revision", || {
            let results = Controller::for_shared_stream(revisions.subscribe(), revisions.store())
                .owns_shared_stream(deployments.subscribe())
                .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
                .run(reconcile, error_policy, state.clone());
            drain("knative-revision", results)
        })
        .await;
    }
}

fn error_policy(rev: Arc<Revision>, error: &KnativeError, state: Arc<State>) -> Action {
    requeue_failed(
        &state.retries,
        "knative-revision",
        &*rev,
        error,
        error.is_conflict(),
    )
}

/// The replicas a Revision's Deployment starts with: `initial-scale` (1), at least
/// `min-scale`, at most `max-scale`.
pub(crate) fn initial_replicas(scaling: &knative::Autoscaling) -> i32 {
    clamp_replicas(scaling, scaling.initial_scale.max(scaling.min_scale))
}

/// `replicas` within `min-scale` and `max-scale` (0: unbounded).
pub(crate) fn clamp_replicas(scaling: &knative::Autoscaling, replicas: i64) -> i32 {
    let mut n = replicas.max(scaling.min_scale);
    if scaling.max_scale > 0 {
        n = n.min(scaling.max_scale);
    }
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The autoscaling settings of a Revision (Knative's defaults where its annotations are
/// invalid; the apiserver refuses those on create).
pub(crate) fn scaling_of(rev: &Revision) -> knative::Autoscaling {
    let annotations: BTreeMap<String, String> = rev.annotations().clone();
    knative::autoscaling(&annotations)
        .unwrap_or_else(|_| knative::autoscaling(&BTreeMap::new()).unwrap_or_default())
}

/// The labels of a Revision's Deployment and pods.
fn pod_labels(rev: &Revision) -> BTreeMap<String, String> {
    let mut labels = rev.labels().clone();
    labels.insert(REVISION_LABEL.to_string(), rev.name_any());
    labels.insert(
        REVISION_UID_LABEL.to_string(),
        rev.uid().unwrap_or_default(),
    );
    labels.insert("app".to_string(), rev.name_any());
    labels
}

/// The pod spec of a Revision: its spec without Knative's fields, with the environment
/// Knative gives the serving container (`PORT`, `K_REVISION`, `K_CONFIGURATION`,
/// `K_SERVICE`).
fn pod_spec(rev: &Revision) -> Result<PodSpec, KnativeError> {
    let mut spec = rev.spec.clone();
    if let Some(object) = spec.as_object_mut() {
        for field in REVISION_ONLY_FIELDS {
            object.remove(*field);
        }
    }
    let mut pod: PodSpec = serde_json::from_value(spec).map_err(|e| {
        KnativeError::Convert(format!(
            "revision {}: the spec is not a pod spec: {e}",
            rev.name_any()
        ))
    })?;
    let label = |key: &str| rev.labels().get(key).cloned().unwrap_or_default();
    let serving = pod
        .containers
        .iter()
        .position(|c| c.ports.as_ref().is_some_and(|p| !p.is_empty()))
        .unwrap_or(0);
    if let Some(container) = pod.containers.get_mut(serving) {
        let port = container
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .map_or(knative::DEFAULT_PORT, |p| i64::from(p.container_port));
        let env = container.env.get_or_insert_with(Vec::new);
        for (name, value) in [
            ("PORT", port.to_string()),
            ("K_REVISION", rev.name_any()),
            ("K_CONFIGURATION", label(CONFIGURATION_LABEL)),
            ("K_SERVICE", label(SERVICE_LABEL)),
        ] {
            if !env.iter().any(|e| e.name == name) {
                env.push(EnvVar {
                    name: name.to_string(),
                    value: Some(value),
                    value_from: None,
                });
            }
        }
    }
    Ok(pod)
}

/// The Deployment of a Revision.
fn desired_deployment(rev: &Revision) -> Result<Deployment, KnativeError> {
    let labels = pod_labels(rev);
    let selector = BTreeMap::from([(
        REVISION_UID_LABEL.to_string(),
        rev.uid().unwrap_or_default(),
    )]);
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(&rev.name_any())),
            namespace: rev.namespace(),
            labels: Some(labels.clone()),
            annotations: Some(rev.annotations().clone()).filter(|a| !a.is_empty()),
            owner_references: Some(vec![controller_ref(rev)]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(initial_replicas(&scaling_of(rev))),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(rev.annotations().clone()).filter(|a| !a.is_empty()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(rev)?),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

async fn reconcile(rev: Arc<Revision>, state: Arc<State>) -> Result<Action, KnativeError> {
    if rev.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = rev.namespace().unwrap_or_default();
    let uid = rev.uid().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(state.client.clone(), &namespace);
    let name = deployment_name(&rev.name_any());
    let scaling = scaling_of(&rev);
    let deployment = match deployments.get_opt(&name).await? {
        None => match desired_deployment(&rev) {
            Ok(d) => Some(deployments.create(&PostParams::default(), &d).await?),
            Err(e) => {
                write_status(
                    &rev,
                    &state,
                    failed_status(&rev, "CreationFailed", &e.to_string()),
                )
                .await?;
                return Err(e);
            }
        },
        Some(d) if !is_controlled_by(&d.metadata, &uid) => None,
        Some(d) => {
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let clamped = clamp_replicas(&scaling, i64::from(replicas));
            if clamped != replicas {
                Some(
                    deployments
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"spec": {"replicas": clamped}})),
                        )
                        .await?,
                )
            } else {
                Some(d)
            }
        }
    };
    let status = match &deployment {
        None => failed_status(
            &rev,
            "NotOwned",
            &format!("There is an existing Deployment {name:?} that we do not own."),
        ),
        Some(d) => revision_status(&rev, d),
    };
    write_status(&rev, &state, status).await?;
    state.retries.succeeded(&uid);
    Ok(Action::await_change())
}

async fn write_status(rev: &Revision, state: &State, status: Value) -> Result<(), KnativeError> {
    if status == rev.status {
        return Ok(());
    }
    let revisions: Api<Revision> =
        Api::namespaced(state.client.clone(), &rev.namespace().unwrap_or_default());
    revisions
        .patch_status(
            &rev.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    Ok(())
}

fn failed_status(rev: &Revision, reason: &str, message: &str) -> Value {
    let old = &rev.status;
    json!({
        "observedGeneration": rev.metadata.generation,
        "conditions": [
            condition(old, "Ready", "False", Some(reason), Some(message)),
            condition(old, "ResourcesAvailable", "False", Some(reason), Some(message)),
        ],
    })
}

/// Ready once a pod was ready (and for good: a Revision scaled to zero stays Ready, its
/// `Active` condition says it is not serving), failed when the rollout missed its deadline.
fn revision_status(rev: &Revision, d: &Deployment) -> Value {
    let old = &rev.status;
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let ready_replicas = status.ready_replicas.unwrap_or(0);
    let deadline_missed = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let was_ready = condition_status(old, "Ready") == "True";
    let (ready, reason, message): (&str, Option<&str>, Option<String>) =
        if ready_replicas > 0 || was_ready {
            ("True", None, None)
        } else if deadline_missed {
            (
                "False",
                Some("ProgressDeadlineExceeded"),
                Some(format!(
                    "The Deployment {:?} did not become ready in time.",
                    d.name_any()
                )),
            )
        } else {
            ("Unknown", Some("Deploying"), None)
        };
    let active = if ready_replicas > 0 {
        condition(old, "Active", "True", None, None)
    } else if desired == 0 {
        condition(
            old,
            "Active",
            "False",
            Some("NoTraffic"),
            Some("The target is not receiving traffic."),
        )
    } else {
        condition(old, "Active", "Unknown", Some("Activating"), None)
    };
    json!({
        "observedGeneration": rev.metadata.generation,
        "actualReplicas": ready_replicas,
        "desiredReplicas": desired,
        "conditions": [
            active,
            condition(old, "ContainerHealthy", ready, reason, message.as_deref()),
            condition(old, "Ready", ready, reason, message.as_deref()),
            condition(old, "ResourcesAvailable", ready, reason, message.as_deref()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(annotations: &[(&str, &str)]) -> Revision {
        Revision::new(
            ObjectMeta {
                name: Some("hello-00001".into()),
                namespace: Some("default".into()),
                uid: Some("r1".into()),
                labels: Some(BTreeMap::from([
                    (CONFIGURATION_LABEL.into(), "hello".into()),
                    (SERVICE_LABEL.into(), "hello".into()),
                ])),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            json!({"containerConcurrency": 0, "timeoutSeconds": 300, "containers": [{
                "name": "user-container", "image": "i", "ports": [{"containerPort": 8080}],
            }]}),
        )
    }

    #[test]
    fn the_deployment_carries_knatives_labels_and_environment() {
        let d = desired_deployment(&revision(&[])).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("hello-00001-deployment"));
        let template = d.spec.as_ref().unwrap().template.clone();
        let labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels[REVISION_LABEL], "hello-00001");
        assert_eq!(labels[CONFIGURATION_LABEL], "hello");
        assert_eq!(labels[SERVICE_LABEL], "hello");
        let env: Vec<(String, String)> = template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap()))
            .collect();
        assert_eq!(env[0], ("PORT".to_string(), "8080".to_string()));
        assert_eq!(env[3], ("K_SERVICE".to_string(), "hello".to_string()));
        assert_eq!(d.spec.unwrap().replicas, Some(1));
    }

    #[test]
    fn replicas_start_at_initial_scale_within_the_bounds() {
        let scaling = scaling_of(&revision(&[
            (knative::MIN_SCALE, "2"),
            (knative::MAX_SCALE, "3"),
            (knative::INITIAL_SCALE, "5"),
        ]));
        assert_eq!(initial_replicas(&scaling), 3);
        assert_eq!(clamp_replicas(&scaling, 0), 2);
        let zero = scaling_of(&revision(&[(knative::INITIAL_SCALE, "0")]));
        assert_eq!(initial_replicas(&zero), 0);
    }
}

//! The Configuration controller: one Revision per template generation and the latest
//! created and ready Revisions in the status.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::Store;
use serde_json::{Value, json};
use wasmkube_api::knative::{
    CONFIGURATION_GENERATION_LABEL, CONFIGURATION_LABEL, SERVICE_LABEL, revision_name,
};
use wasmkube_client::informers::SharedInformerFactory;

use super::types::{Configuration, Revision};
use super::{KnativeError, condition, condition_status, reason_and_message};
use crate::context::Context;
use crate::pods::{controller_ref, is_controlled_by};
use crate::retry::{Retries, drain, requeue_failed, run_forever};

/// Label: the uid of the Configuration a Revision was made from.
const CONFIGURATION_UID_LABEL: &str = "serving.knative.dev/configurationUID";

struct State {
    client: kube::Client,
    retries: Retries,
    revisions: Store<Revision>,
}

pub(super) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let configurations = informers.informer::<Configuration>();
    let revisions = informers.informer::<Revision>();
    async move {
        let state = Arc::new(State {
            client: ctx.client.clone(),
            retries: Retries::client_go_default(),
            revisions: revisions.store(),
        });
        run_forever("knative-configuration", || {
            let results =
                Controller::for_shared_stream(configurations.subscribe(), configurations.store())
                    .owns_shared_stream(revisions.subscribe())
                    .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
                    .run(reconcile, error_policy, state.clone());
            drain("knative-configuration", results)
        })
        .await;
    }
}

fn error_policy(c: Arc<Configuration>, error: &KnativeError, state: Arc<State>) -> Action {
    requeue_failed(
        &state.retries,
        "knative-configuration",
        &*c,
        error,
        error.is_conflict(),
    )
}

/// The generation label of a Revision, 0 when missing.
fn generation_of(rev: &Revision) -> i64 {
    rev.labels()
        .get(CONFIGURATION_GENERATION_LABEL)
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

/// The Revision of the Configuration's current template.
fn desired_revision(c: &Configuration) -> Revision {
    let name = c.name_any();
    let generation = c.metadata.generation.unwrap_or(1);
    let template = c.spec.get("template").cloned().unwrap_or(json!({}));
    let template_meta = template.get("metadata").cloned().unwrap_or(json!({}));
    let string_map = |key: &str| -> BTreeMap<String, String> {
        template_meta
            .get(key)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let revision = template_meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map_or_else(|| revision_name(&name, generation), str::to_string);
    let mut labels = string_map("labels");
    labels.insert(CONFIGURATION_LABEL.to_string(), name);
    labels.insert(
        CONFIGURATION_GENERATION_LABEL.to_string(),
        generation.to_string(),
    );
    labels.insert(
        CONFIGURATION_UID_LABEL.to_string(),
        c.uid().unwrap_or_default(),
    );
    if let Some(service) = c.labels().get(SERVICE_LABEL) {
        labels.insert(SERVICE_LABEL.to_string(), service.clone());
    }
    let annotations = string_map("annotations");
    Revision::new(
        ObjectMeta {
            name: Some(revision),
            namespace: c.namespace(),
            labels: Some(labels),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            owner_references: Some(vec![controller_ref(c)]),
            ..ObjectMeta::default()
        },
        template.get("spec").cloned().unwrap_or(json!({})),
    )
}

async fn reconcile(c: Arc<Configuration>, state: Arc<State>) -> Result<Action, KnativeError> {
    if c.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = c.namespace().unwrap_or_default();
    let uid = c.uid().unwrap_or_default();
    let revisions: Api<Revision> = Api::namespaced(state.client.clone(), &namespace);
    let desired = desired_revision(&c);
    let latest_name = desired.name_any();
    let latest = match revisions.get_opt(&latest_name).await? {
        Some(r) => r,
        None => revisions.create(&PostParams::default(), &desired).await?,
    };
    let old = &c.status;
    let mut status = json!({"observedGeneration": c.metadata.generation});
    let ready_condition = if !is_controlled_by(&latest.metadata, &uid) {
        condition(
            old,
            "Ready",
            "False",
            Some("RevisionFailed"),
            Some(&format!(
                "Revision {latest_name:?} exists and is not owned by this Configuration"
            )),
        )
    } else {
        status["latestCreatedRevisionName"] = json!(latest_name);
        match condition_status(&latest.status, "Ready") {
            "True" => condition(old, "Ready", "True", None, None),
            "False" => {
                let (reason, message) = reason_and_message(&latest.status, "Ready");
                condition(
                    old,
                    "Ready",
                    "False",
                    Some("RevisionFailed"),
                    Some(&format!(
                        "Revision {latest_name:?} failed with message: {}.",
                        message.or(reason).unwrap_or("")
                    )),
                )
            }
            _ => condition(old, "Ready", "Unknown", None, None),
        }
    };
    status["conditions"] = json!([ready_condition]);
    // The newest ready Revision of this Configuration.
    let mut ready: Vec<Arc<Revision>> = state
        .revisions
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(namespace.as_str())
                && is_controlled_by(&r.metadata, &uid)
                && condition_status(&r.status, "Ready") == "True"
        })
        .collect();
    ready.sort_by_key(|r| generation_of(r));
    let latest_ready = if condition_status(&latest.status, "Ready") == "True" {
        Some(latest_name.clone())
    } else {
        ready.last().map(|r| r.name_any())
    };
    if let Some(name) = latest_ready {
        status["latestReadyRevisionName"] = json!(name);
    } else if let Some(previous) = old.get("latestReadyRevisionName") {
        status["latestReadyRevisionName"] = previous.clone();
    }
    if status != c.status {
        let configurations: Api<Configuration> = Api::namespaced(state.client.clone(), &namespace);
        configurations
            .patch_status(
                &c.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    state.retries.succeeded(&uid);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_numbered_by_generation_and_carry_knatives_labels() {
        let mut c = Configuration::new(
            ObjectMeta {
                name: Some("hello".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                generation: Some(3),
                labels: Some(BTreeMap::from([(SERVICE_LABEL.into(), "hello".into())])),
                ..ObjectMeta::default()
            },
            json!({"template": {
                "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "1"}},
                "spec": {"containers": [{"image": "i"}]},
            }}),
        );
        let rev = desired_revision(&c);
        assert_eq!(rev.name_any(), "hello-00003");
        assert_eq!(rev.labels()[CONFIGURATION_LABEL], "hello");
        assert_eq!(rev.labels()[CONFIGURATION_GENERATION_LABEL], "3");
        assert_eq!(rev.labels()[SERVICE_LABEL], "hello");
        assert_eq!(rev.annotations()["autoscaling.knative.dev/min-scale"], "1");
        assert_eq!(rev.spec, json!({"containers": [{"image": "i"}]}));
        c.spec["template"]["metadata"]["name"] = json!("hello-blue");
        assert_eq!(desired_revision(&c).name_any(), "hello-blue");
    }
}

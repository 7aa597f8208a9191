//! The Service controller: a Configuration and a Route named as the Service, owned by it,
//! and the Service's status from theirs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use wasmkube_api::knative::SERVICE_LABEL;
use wasmkube_client::informers::SharedInformerFactory;

use super::types::{Configuration, KService, Route};
use super::{KnativeError, condition, condition_status, reason_and_message};
use crate::context::Context;
use crate::pods::{controller_ref, is_controlled_by};
use crate::retry::{Retries, drain, requeue_failed, run_forever};

struct State {
    client: kube::Client,
    retries: Retries,
}

pub(super) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let services = informers.informer::<KService>();
    let configurations = informers.informer::<Configuration>();
    let routes = informers.informer::<Route>();
    async move {
        let state = Arc::new(State {
            client: ctx.client.clone(),
            retries: Retries::client_go_default(),
        });
        run_forever("knative-service", || {
            let results = Controller::for_shared_stream(services.subscribe(), services.store())
                .owns_shared_stream(configurations.subscribe())
                .owns_shared_stream(routes.subscribe())
                .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
                .run(reconcile, error_policy, state.clone());
            drain("knative-service", results)
        })
        .await;
    }
}

fn error_policy(svc: Arc<KService>, error: &KnativeError, state: Arc<State>) -> Action {
    requeue_failed(
        &state.retries,
        "knative-service",
        &*svc,
        error,
        error.is_conflict(),
    )
}

/// The labels of a Service's children: its own plus `serving.knative.dev/service`.
fn child_labels(svc: &KService) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.insert(SERVICE_LABEL.to_string(), svc.name_any());
    labels
}

/// The Route's traffic: targets that follow the latest Revision name the Configuration.
fn route_traffic(svc: &KService) -> Value {
    let name = svc.name_any();
    let traffic = svc
        .spec
        .get("traffic")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| vec![json!({"latestRevision": true, "percent": 100})]);
    Value::Array(
        traffic
            .into_iter()
            .map(|mut t| {
                let follows_latest = t
                    .get("revisionName")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty);
                if follows_latest && let Some(t) = t.as_object_mut() {
                    t.insert("configurationName".into(), json!(name));
                    t.entry("latestRevision").or_insert(json!(true));
                }
                t
            })
            .collect(),
    )
}

async fn reconcile(svc: Arc<KService>, state: Arc<State>) -> Result<Action, KnativeError> {
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let uid = svc.uid().unwrap_or_default();
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(child_labels(&svc)),
        annotations: Some(svc.annotations().clone()).filter(|a| !a.is_empty()),
        owner_references: Some(vec![controller_ref(&*svc)]),
        ..ObjectMeta::default()
    };

    let configurations: Api<Configuration> = Api::namespaced(state.client.clone(), &namespace);
    let config_spec = json!({"template": svc.spec.get("template").cloned().unwrap_or(json!({}))});
    let configuration = match configurations.get_opt(&name).await? {
        None => {
            let new = Configuration::new(metadata.clone(), config_spec);
            Some(configurations.create(&PostParams::default(), &new).await?)
        }
        Some(c) if !is_controlled_by(&c.metadata, &uid) => None,
        Some(mut c) => {
            let labels = c.labels_mut();
            let want = child_labels(&svc);
            let labels_stale = want.iter().any(|(k, v)| labels.get(k) != Some(v));
            if c.spec != config_spec || labels_stale {
                c.labels_mut().extend(want);
                c.spec = config_spec;
                c = configurations
                    .replace(&name, &PostParams::default(), &c)
                    .await?;
            }
            Some(c)
        }
    };

    let routes: Api<Route> = Api::namespaced(state.client.clone(), &namespace);
    let route_spec = json!({"traffic": route_traffic(&svc)});
    let route = match routes.get_opt(&name).await? {
        None => {
            let new = Route::new(metadata, route_spec);
            Some(routes.create(&PostParams::default(), &new).await?)
        }
        Some(r) if !is_controlled_by(&r.metadata, &uid) => None,
        Some(mut r) => {
            if r.spec != route_spec {
                r.spec = route_spec;
                r = routes.replace(&name, &PostParams::default(), &r).await?;
            }
            Some(r)
        }
    };

    let status = service_status(&svc, configuration.as_ref(), route.as_ref());
    if status != svc.status {
        let services: Api<KService> = Api::namespaced(state.client.clone(), &namespace);
        services
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    state.retries.succeeded(&uid);
    Ok(Action::await_change())
}

/// The `Ready` status of a child whose controller observed its latest generation.
fn child_ready<K: Resource>(child: &K, status: &Value) -> &'static str {
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    if observed.is_none() || observed != child.meta().generation {
        return "Unknown";
    }
    match condition_status(status, "Ready") {
        "True" => "True",
        "False" => "False",
        _ => "Unknown",
    }
}

/// Knative's Service status: the children's readiness, URL, revisions and traffic.
fn service_status(
    svc: &KService,
    configuration: Option<&Configuration>,
    route: Option<&Route>,
) -> Value {
    let old = &svc.status;
    let name = svc.name_any();
    let (config_ready, config_reason, config_message) = match configuration {
        Some(c) => {
            let (reason, message) = reason_and_message(&c.status, "Ready");
            (
                child_ready(c, &c.status),
                reason.map(str::to_string),
                message.map(str::to_string),
            )
        }
        None => (
            "False",
            Some("NotOwned".to_string()),
            Some(format!(
                "There is an existing Configuration {name:?} that we do not own."
            )),
        ),
    };
    let (route_ready, route_reason, route_message) = match route {
        Some(r) => {
            let (reason, message) = reason_and_message(&r.status, "Ready");
            (
                child_ready(r, &r.status),
                reason.map(str::to_string),
                message.map(str::to_string),
            )
        }
        None => (
            "False",
            Some("NotOwned".to_string()),
            Some(format!(
                "There is an existing Route {name:?} that we do not own."
            )),
        ),
    };
    // The Route must already send the latest-revision traffic to the Configuration's latest
    // ready Revision (as Knative's Service checks), else the Service is not ready yet.
    let latest_ready = configuration
        .and_then(|c| c.status.get("latestReadyRevisionName"))
        .and_then(Value::as_str);
    let stale_route = route.is_some_and(|r| {
        r.status
            .get("traffic")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|t| t.get("latestRevision").and_then(Value::as_bool) == Some(true))
            .any(|t| t.get("revisionName").and_then(Value::as_str) != latest_ready)
    });
    let (route_ready, route_reason, route_message) = if stale_route && route_ready == "True" {
        (
            "Unknown",
            Some("OutOfDate".to_string()),
            Some(format!(
                "The Route is not yet serving the latest ready Revision {:?}.",
                latest_ready.unwrap_or("")
            )),
        )
    } else {
        (route_ready, route_reason, route_message)
    };
    let ready = match (config_ready, route_ready) {
        ("True", "True") => "True",
        ("False", _) | (_, "False") => "False",
        _ => "Unknown",
    };
    let not_true = |s: &str, v: Option<String>| if s == "True" { None } else { v };
    let config_reason = not_true(config_ready, config_reason);
    let config_message = not_true(config_ready, config_message);
    let route_reason = not_true(route_ready, route_reason);
    let route_message = not_true(route_ready, route_message);
    let (ready_reason, ready_message) = if config_ready != "True" {
        (config_reason.clone(), config_message.clone())
    } else {
        (route_reason.clone(), route_message.clone())
    };
    let mut status = json!({
        "observedGeneration": svc.metadata.generation,
        "conditions": [
            condition(old, "ConfigurationsReady", config_ready, config_reason.as_deref(), config_message.as_deref()),
            condition(old, "Ready", ready, ready_reason.as_deref(), ready_message.as_deref()),
            condition(old, "RoutesReady", route_ready, route_reason.as_deref(), route_message.as_deref()),
        ],
    });
    if let Some(c) = configuration {
        for field in ["latestCreatedRevisionName", "latestReadyRevisionName"] {
            if let Some(v) = c.status.get(field) {
                status[field] = v.clone();
            }
        }
    }
    if let Some(r) = route {
        for field in ["url", "address", "traffic"] {
            if let Some(v) = r.status.get(field) {
                status[field] = v.clone();
            }
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_revision_targets_name_the_services_configuration() {
        let mut svc = KService::new(
            ObjectMeta {
                name: Some("hello".into()),
                ..ObjectMeta::default()
            },
            json!({"traffic": [
                {"latestRevision": true, "percent": 80},
                {"revisionName": "hello-00001", "percent": 20, "tag": "old"},
            ]}),
        );
        assert_eq!(
            route_traffic(&svc),
            json!([
                {"latestRevision": true, "percent": 80, "configurationName": "hello"},
                {"revisionName": "hello-00001", "percent": 20, "tag": "old"},
            ])
        );
        svc.spec = json!({});
        assert_eq!(
            route_traffic(&svc),
            json!([{"latestRevision": true, "percent": 100, "configurationName": "hello"}])
        );
    }
}

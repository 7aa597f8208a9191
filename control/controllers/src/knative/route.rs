//! The Route controller: every traffic target resolved to a ready Revision, the Route's
//! URLs, and its readiness. While a target cannot be resolved the Route keeps the traffic it
//! last resolved, so the ingress goes on serving during a rollout.

use std::future::Future;
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};
use wasmkube_api::knative::{CONFIGURATION_LABEL, host};
use wasmkube_client::informers::SharedInformerFactory;

use super::types::{Configuration, Revision, Route};
use super::{KnativeError, condition, condition_status};
use crate::context::Context;
use crate::retry::{Retries, drain, requeue_failed, run_forever};

struct State {
    client: kube::Client,
    retries: Retries,
    configurations: Store<Configuration>,
    revisions: Store<Revision>,
    domain: String,
}

/// The Routes of `namespace` whose traffic names `configuration` or `revision`.
fn routes_naming(
    routes: &Store<Route>,
    namespace: Option<String>,
    configuration: Option<&str>,
    revision: Option<&str>,
) -> Vec<ObjectRef<Route>> {
    routes
        .state()
        .into_iter()
        .filter(|r| r.namespace() == namespace)
        .filter(|r| {
            r.spec
                .get("traffic")
                .and_then(Value::as_array)
                .is_some_and(|traffic| {
                    traffic.iter().any(|t| {
                        let names = |key: &str, want: Option<&str>| {
                            want.is_some() && t.get(key).and_then(Value::as_str) == want
                        };
                        names("configurationName", configuration) || names("revisionName", revision)
                    })
                })
        })
        .map(|r| ObjectRef::from_obj(&*r))
        .collect()
}

pub(super) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let routes = informers.informer::<Route>();
    let configurations = informers.informer::<Configuration>();
    let revisions = informers.informer::<Revision>();
    async move {
        let state = Arc::new(State {
            client: ctx.client.clone(),
            retries: Retries::client_go_default(),
            configurations: configurations.store(),
            revisions: revisions.store(),
            domain: ctx.config.function_domain.clone(),
        });
        run_forever("knative-route", || {
            let by_configuration = routes.store();
            let by_revision = routes.store();
            let results = Controller::for_shared_stream(routes.subscribe(), routes.store())
                .watches_shared_stream(configurations.subscribe(), move |c: Arc<Configuration>| {
                    routes_naming(&by_configuration, c.namespace(), Some(&c.name_any()), None)
                })
                .watches_shared_stream(revisions.subscribe(), move |r: Arc<Revision>| {
                    let configuration = r.labels().get(CONFIGURATION_LABEL).cloned();
                    routes_naming(
                        &by_revision,
                        r.namespace(),
                        configuration.as_deref(),
                        Some(&r.name_any()),
                    )
                })
                .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
                .run(reconcile, error_policy, state.clone());
            drain("knative-route", results)
        })
        .await;
    }
}

fn error_policy(route: Arc<Route>, error: &KnativeError, state: Arc<State>) -> Action {
    requeue_failed(
        &state.retries,
        "knative-route",
        &*route,
        error,
        error.is_conflict(),
    )
}

/// Why a target has no Revision to send traffic to.
struct Unresolved(String);

impl State {
    /// The ready Revision a traffic target sends to.
    fn resolve(&self, namespace: &str, target: &Value) -> Result<String, Unresolved> {
        let revision = target
            .get("revisionName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let name = match revision {
            Some(r) => r.to_string(),
            None => {
                let configuration = target
                    .get("configurationName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let c = self
                    .configurations
                    .get(&ObjectRef::new(configuration).within(namespace))
                    .ok_or_else(|| {
                        Unresolved(format!(
                            "Configuration {configuration:?} referenced in traffic not found."
                        ))
                    })?;
                c.status
                    .get("latestReadyRevisionName")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Unresolved(format!(
                            "Configuration {configuration:?} does not have any ready Revision."
                        ))
                    })?
            }
        };
        let rev = self
            .revisions
            .get(&ObjectRef::new(&name).within(namespace))
            .ok_or_else(|| {
                Unresolved(format!(
                    "Revision {name:?} referenced in traffic not found."
                ))
            })?;
        if condition_status(&rev.status, "Ready") != "True" {
            return Err(Unresolved(format!("Revision {name:?} is not ready.")));
        }
        Ok(name)
    }
}

async fn reconcile(route: Arc<Route>, state: Arc<State>) -> Result<Action, KnativeError> {
    if route.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = route.namespace().unwrap_or_default();
    let name = route.name_any();
    let old = &route.status;
    let targets = route
        .spec
        .get("traffic")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut traffic = Vec::new();
    let mut problem = None;
    for t in &targets {
        match state.resolve(&namespace, t) {
            Ok(revision) => {
                let mut entry = json!({
                    "revisionName": revision,
                    "percent": t.get("percent").and_then(Value::as_i64).unwrap_or(0),
                    "latestRevision": t.get("latestRevision").and_then(Value::as_bool).unwrap_or(false),
                });
                if let Some(c) = t.get("configurationName").filter(|c| !c.is_null())
                    && route
                        .labels()
                        .get(wasmkube_api::knative::SERVICE_LABEL)
                        .is_none()
                {
                    entry["configurationName"] = c.clone();
                }
                if let Some(tag) = t
                    .get("tag")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    entry["tag"] = json!(tag);
                    entry["url"] = json!(format!(
                        "http://{}",
                        host(&name, &namespace, &state.domain, Some(tag))
                    ));
                }
                traffic.push(entry);
            }
            Err(Unresolved(message)) => {
                problem.get_or_insert(message);
            }
        }
    }
    let mut status = json!({
        "observedGeneration": route.metadata.generation,
        "url": format!("http://{}", host(&name, &namespace, &state.domain, None)),
        "address": {"url": format!("http://{name}.{namespace}.svc.cluster.local")},
    });
    let (assigned, ready) = match &problem {
        None => {
            status["traffic"] = Value::Array(traffic);
            (
                condition(old, "AllTrafficAssigned", "True", None, None),
                condition(old, "Ready", "True", None, None),
            )
        }
        Some(message) => {
            if let Some(previous) = old.get("traffic") {
                status["traffic"] = previous.clone();
            }
            (
                condition(
                    old,
                    "AllTrafficAssigned",
                    "Unknown",
                    Some("RevisionMissing"),
                    Some(message),
                ),
                condition(
                    old,
                    "Ready",
                    "Unknown",
                    Some("RevisionMissing"),
                    Some(message),
                ),
            )
        }
    };
    status["conditions"] = json!([
        assigned,
        condition(
            old,
            "CertificateProvisioned",
            "True",
            Some("TLSNotEnabled"),
            None
        ),
        condition(old, "IngressReady", "True", None, None),
        ready,
    ]);
    if status != route.status {
        let routes: Api<Route> = Api::namespaced(state.client.clone(), &namespace);
        routes
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    state.retries.succeeded(&route.uid().unwrap_or_default());
    Ok(Action::await_change())
}

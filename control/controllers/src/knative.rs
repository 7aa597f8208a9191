//! Knative Serving's controllers (`serving.knative.dev/v1`), as Knative's own controller
//! reconciles them, over the controller-manager's shared informers:
//!
//! - [`service`]: a Service owns a Configuration (its `spec.template`) and a Route (its
//!   `spec.traffic`, latest-revision targets pointed at the Configuration), both named as
//!   the Service; its status copies theirs (`ConfigurationsReady`, `RoutesReady`, `Ready`,
//!   `url`, latest created/ready revisions, traffic).
//! - [`configuration`]: a Revision per template generation (`NAME-00001`, ...; a template
//!   may name its own), `latestCreatedRevisionName` and `latestReadyRevisionName`.
//! - [`revision`]: a Deployment per Revision (`REVISION-deployment`) with Knative's labels
//!   on it and its pods, replicas from the autoscaling annotations (`initial-scale`,
//!   `min-scale`, `max-scale`); `Ready` once a pod was ready, `actualReplicas` /
//!   `desiredReplicas`.
//! - [`route`]: each traffic target resolved to a Revision (a Configuration's latest ready
//!   one for `latestRevision`), the URL `http://NAME.NAMESPACE.DOMAIN` (`--function-domain`)
//!   and one per tag (`http://TAG-NAME.NAMESPACE.DOMAIN`). The function ingress routes by
//!   the Route's `status.traffic`.
//!
//! The kinds are held as JSON ([`types`]): these controllers read a few fields and write
//! whole specs they copied, and statuses, so nothing they do not know is lost.

mod configuration;
pub mod ingress;
mod revision;
mod route;
mod service;
pub mod types;

use std::future::Future;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};
use wasmkube_client::informers::SharedInformerFactory;

use crate::context::Context;

/// Why a sync failed (retried with back-off).
#[derive(Debug, thiserror::Error)]
pub(crate) enum KnativeError {
    /// A request to the apiserver failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// An object could not be converted (a revision's pod spec, for one).
    #[error("{0}")]
    Convert(String),
}

impl KnativeError {
    fn is_conflict(&self) -> bool {
        match self {
            KnativeError::Api(e) => {
                wasmkube_client::status::is_conflict(e)
                    || wasmkube_client::status::is_already_exists(e)
            }
            KnativeError::Convert(_) => false,
        }
    }
}

/// Runs the four Knative controllers until the task is aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let services = service::run(ctx.clone(), informers);
    let configurations = configuration::run(ctx.clone(), informers);
    let revisions = revision::run(ctx.clone(), informers);
    let routes = route::run(ctx, informers);
    async move {
        futures::join!(services, configurations, revisions, routes);
    }
}

/// A Knative condition (`type`, `status`, `reason`, `message`), keeping the transition time
/// of `old`'s condition of the same type when its status did not change.
fn condition(
    old: &Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> Value {
    let previous = old
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        });
    let since = previous
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now()));
    let mut c = json!({"type": kind, "status": status, "lastTransitionTime": since});
    if let Some(reason) = reason {
        c["reason"] = json!(reason);
    }
    if let Some(message) = message {
        c["message"] = json!(message);
    }
    c
}

/// Now, as Kubernetes writes condition times (seconds, UTC).
fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The status (`True`, `False`, `Unknown`) of `status`'s condition `kind`, `""` if none.
pub(crate) fn condition_status<'a>(status: &'a Value, kind: &str) -> &'a str {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        })
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `condition`'s reason and message, for copying a dependent's failure up.
fn reason_and_message<'a>(status: &'a Value, kind: &str) -> (Option<&'a str>, Option<&'a str>) {
    let c = status
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        });
    let field = |k| c.and_then(|c| c.get(k)).and_then(Value::as_str);
    (field("reason"), field("message"))
}

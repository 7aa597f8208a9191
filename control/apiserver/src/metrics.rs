//! The apiserver's metrics, served at `/metrics` in the Prometheus text format (version
//! 0.0.4) to authenticated clients, with kube-apiserver's names and labels:
//!
//! - `apiserver_registered_watchers{group,version,kind}` (gauge): the watches being served
//!   now, per kind (how many informers follow pods, for instance);
//! - `apiserver_longrunning_requests{component,group,resource,scope,subresource,verb,version}`
//!   (gauge): the same watches as the long-running `WATCH` requests they are;
//! - `apiserver_request_total{code,component,dry_run,group,resource,scope,subresource,verb,version}`
//!   (counter): resource requests answered, by verb and status code;
//! - `apiserver_terminated_watchers_total{resource}` (counter): watchers closed because
//!   they read too slowly (their buffer stayed full; see `watch::buffer`).
//!
//! Other parts of the server add their families with [`Metrics::add_collector`] (the
//! in-flight limits, the watch buffers).
//!
//! Hand-written: three metric families in a fixed text format need no library; a
//! `BTreeMap` per family keeps the output sorted and stable.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::registry::ResourceType;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A watched kind and how it is watched: the labels of both watch gauges.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct WatchKey {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    resource: &'static str,
    scope: &'static str,
}

/// The labels of `apiserver_request_total`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RequestKey {
    verb: &'static str,
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    subresource: &'static str,
    scope: &'static str,
    dry_run: bool,
    code: u16,
}

/// What a request was, for `apiserver_request_total` (kube-apiserver's labels).
#[derive(Clone, Copy, Debug)]
pub struct RequestLabels<'a> {
    /// `LIST`, `WATCH`, `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `DELETECOLLECTION`.
    pub verb: &'static str,
    /// The kind requested.
    pub resource: &'a ResourceType,
    /// The subresource (`status`, `scale`, `binding`, `log`, `eviction`) or `""`.
    pub subresource: &'static str,
    /// `cluster`, `namespace` or `resource` (one named object).
    pub scope: &'static str,
    /// Whether the request was a dry run.
    pub dry_run: bool,
}

/// The apiserver's live metrics; shared through the handlers' state.
#[derive(Debug, Default)]
pub struct Metrics {
    watchers: Arc<Mutex<BTreeMap<WatchKey, i64>>>,
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    /// Slow watchers closed, by `resource[.group]`.
    terminated: Arc<Mutex<BTreeMap<String, u64>>>,
    collectors: Collectors,
}

/// A function that appends metric families (with their HELP and TYPE lines) to the text.
pub type Collector = Box<dyn Fn(&mut String) + Send + Sync>;

/// The collectors added with [`Metrics::add_collector`].
#[derive(Default)]
struct Collectors(Mutex<Vec<Collector>>);

impl std::fmt::Debug for Collectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Collectors({})", lock(&self.0).len())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `cluster` for a request across namespaces (or of a cluster-scoped kind), `namespace` for
/// one namespace.
pub fn collection_scope(namespace: Option<&str>) -> &'static str {
    if namespace.is_some() {
        "namespace"
    } else {
        "cluster"
    }
}

impl Metrics {
    /// A watch of `rt` (in a namespace, or across them) is now served; it counts until the
    /// returned guard is dropped (when the watch ends).
    pub fn watch_started(&self, rt: &ResourceType, namespace: Option<&str>) -> WatchRegistration {
        let key = WatchKey {
            group: rt.group,
            version: rt.version,
            kind: rt.kind,
            resource: rt.plural,
            scope: collection_scope(namespace),
        };
        *lock(&self.watchers).entry(key.clone()).or_insert(0) += 1;
        WatchRegistration {
            watchers: self.watchers.clone(),
            terminated: self.terminated.clone(),
            key,
        }
    }

    /// Counts one answered request.
    pub fn request_done(&self, labels: RequestLabels<'_>, code: u16) {
        let key = RequestKey {
            verb: labels.verb,
            group: labels.resource.group,
            version: labels.resource.version,
            resource: labels.resource.plural,
            subresource: labels.subresource,
            scope: labels.scope,
            dry_run: labels.dry_run,
            code,
        };
        *lock(&self.requests).entry(key).or_insert(0) += 1;
    }

    /// Adds metric families to every [`Metrics::render`].
    pub fn add_collector(&self, collector: Collector) {
        lock(&self.collectors.0).push(collector);
    }

    /// How many watches of the kind `kind` of `group` are served now (all versions).
    pub fn registered_watchers(&self, group: &str, kind: &str) -> i64 {
        lock(&self.watchers)
            .iter()
            .filter(|(k, _)| k.group == group && k.kind == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let watchers = lock(&self.watchers).clone();
        let mut by_kind: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
        for (k, n) in &watchers {
            *by_kind.entry((k.group, k.version, k.kind)).or_insert(0) += n;
        }
        out.push_str(
            "# HELP apiserver_registered_watchers [ALPHA] Number of currently registered watchers for a given resources\n\
             # TYPE apiserver_registered_watchers gauge\n",
        );
        for ((group, version, kind), n) in &by_kind {
            let _ = writeln!(
                out,
                "apiserver_registered_watchers{{group=\"{group}\",kind=\"{kind}\",version=\"{version}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP apiserver_longrunning_requests [STABLE] Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component. Not all requests are tracked this way.\n\
             # TYPE apiserver_longrunning_requests gauge\n",
        );
        for (k, n) in &watchers {
            let _ = writeln!(
                out,
                "apiserver_longrunning_requests{{component=\"apiserver\",group=\"{}\",resource=\"{}\",scope=\"{}\",subresource=\"\",verb=\"WATCH\",version=\"{}\"}} {n}",
                k.group, k.resource, k.scope, k.version
            );
        }
        out.push_str(
            "# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n\
             # TYPE apiserver_request_total counter\n",
        );
        for (k, n) in lock(&self.requests).iter() {
            let dry_run = if k.dry_run { "All" } else { "" };
            let _ = writeln!(
                out,
                "apiserver_request_total{{code=\"{}\",component=\"apiserver\",dry_run=\"{dry_run}\",group=\"{}\",resource=\"{}\",scope=\"{}\",subresource=\"{}\",verb=\"{}\",version=\"{}\"}} {n}",
                k.code, k.group, k.resource, k.scope, k.subresource, k.verb, k.version
            );
        }
        out.push_str(
            "# HELP apiserver_terminated_watchers_total [ALPHA] Counter of watchers closed due to unresponsiveness broken by resource type.\n\
             # TYPE apiserver_terminated_watchers_total counter\n",
        );
        for (resource, n) in lock(&self.terminated).iter() {
            let _ = writeln!(
                out,
                "apiserver_terminated_watchers_total{{resource=\"{resource}\"}} {n}"
            );
        }
        for collector in lock(&self.collectors.0).iter() {
            collector(&mut out);
        }
        out
    }
}

/// A watch being served; dropping it (the watch ended) takes it off the gauges.
#[derive(Debug)]
pub struct WatchRegistration {
    watchers: Arc<Mutex<BTreeMap<WatchKey, i64>>>,
    terminated: Arc<Mutex<BTreeMap<String, u64>>>,
    key: WatchKey,
}

impl WatchRegistration {
    /// The watch is closed because its client read too slowly
    /// (`apiserver_terminated_watchers_total`).
    pub fn terminated(&self) {
        let resource = if self.key.group.is_empty() {
            self.key.resource.to_owned()
        } else {
            format!("{}.{}", self.key.resource, self.key.group)
        };
        *lock(&self.terminated).entry(resource).or_insert(0) += 1;
    }
}

impl Drop for WatchRegistration {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.watchers).get_mut(&self.key) {
            *n -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn kind<'a>(registry: &'a Registry, group: &str, plural: &str) -> &'a ResourceType {
        registry
            .all()
            .iter()
            .find(|rt| rt.group == group && rt.plural == plural)
            .expect("a built-in kind")
    }

    #[test]
    fn a_watch_counts_while_it_is_served() {
        let registry = Registry::builtin();
        let pods = kind(&registry, "", "pods");
        let metrics = Metrics::default();
        let all = metrics.watch_started(pods, None);
        let one_namespace = metrics.watch_started(pods, Some("default"));
        assert_eq!(metrics.registered_watchers("", "Pod"), 2);
        let text = metrics.render();
        assert!(
            text.contains(
                "apiserver_registered_watchers{group=\"\",kind=\"Pod\",version=\"v1\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("apiserver_longrunning_requests{component=\"apiserver\",group=\"\",resource=\"pods\",scope=\"namespace\",subresource=\"\",verb=\"WATCH\",version=\"v1\"} 1\n"),
            "{text}"
        );
        all.terminated();
        let deployments = metrics.watch_started(kind(&registry, "apps", "deployments"), None);
        deployments.terminated();
        let text = metrics.render();
        assert!(
            text.contains("apiserver_terminated_watchers_total{resource=\"pods\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("apiserver_terminated_watchers_total{resource=\"deployments.apps\"} 1\n"),
            "{text}"
        );
        drop((all, one_namespace, deployments));
        assert_eq!(metrics.registered_watchers("", "Pod"), 0);
        assert!(
            metrics
                .render()
                .contains("kind=\"Pod\",version=\"v1\"} 0\n")
        );
    }

    #[test]
    fn requests_are_counted_by_verb_and_code() {
        let registry = Registry::builtin();
        let rs = kind(&registry, "apps", "replicasets");
        let metrics = Metrics::default();
        let labels = RequestLabels {
            verb: "GET",
            resource: rs,
            subresource: "",
            scope: "resource",
            dry_run: false,
        };
        metrics.request_done(labels, 200);
        metrics.request_done(labels, 200);
        metrics.request_done(labels, 404);
        let text = metrics.render();
        assert!(text.contains("apiserver_request_total{code=\"200\",component=\"apiserver\",dry_run=\"\",group=\"apps\",resource=\"replicasets\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\"} 2\n"), "{text}");
        assert!(text.contains("code=\"404\""), "{text}");
        assert!(text.contains("# TYPE apiserver_request_total counter\n"));
    }
}

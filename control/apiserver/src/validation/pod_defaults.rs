//! Pod defaulting: `SetDefaults_PodSpec`/`_Container`/`_Probe`/`_Volume` (also applied to
//! workload templates through [`default_pod_spec`]), plus what the Kubernetes apiserver
//! fills in for bare pods only: `SetDefaults_Pod`, the ServiceAccount, Priority and
//! DefaultTolerationSeconds admission plugins, and the create-time status (phase Pending
//! and the QoS class).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Map, Value, json};
use wasmkube_api::quantity::Quantity;

use super::{get_list, get_str, object_entry, set_default};

/// How long pods tolerate `not-ready`/`unreachable` nodes by default (seconds), as
/// kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`.
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The settings of the DefaultTolerationSeconds admission plugin: the `tolerationSeconds`
/// of the `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable` NoExecute
/// tolerations added to pods that do not tolerate those taints already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultTolerationSeconds {
    /// `--default-not-ready-toleration-seconds` (300).
    pub not_ready: i64,
    /// `--default-unreachable-toleration-seconds` (300).
    pub unreachable: i64,
}

impl Default for DefaultTolerationSeconds {
    fn default() -> Self {
        DefaultTolerationSeconds {
            not_ready: DEFAULT_TOLERATION_SECONDS,
            unreachable: DEFAULT_TOLERATION_SECONDS,
        }
    }
}

// Defaulting hooks are plain functions (`registry::DefaultFn`), so the plugin's settings
// are the process's, set once by `server::start` (one apiserver per process).
static NOT_READY_SECONDS: AtomicI64 = AtomicI64::new(DEFAULT_TOLERATION_SECONDS);
static UNREACHABLE_SECONDS: AtomicI64 = AtomicI64::new(DEFAULT_TOLERATION_SECONDS);

/// Sets the `tolerationSeconds` [`default_pod`] gives the not-ready/unreachable
/// tolerations from now on (in this process).
pub fn set_default_toleration_seconds(seconds: DefaultTolerationSeconds) {
    NOT_READY_SECONDS.store(seconds.not_ready, Ordering::Relaxed);
    UNREACHABLE_SECONDS.store(seconds.unreachable, Ordering::Relaxed);
}

/// The `tolerationSeconds` [`default_pod`] currently gives.
pub fn default_toleration_seconds() -> DefaultTolerationSeconds {
    DefaultTolerationSeconds {
        not_ready: NOT_READY_SECONDS.load(Ordering::Relaxed),
        unreachable: UNREACHABLE_SECONDS.load(Ordering::Relaxed),
    }
}

/// Fills the defaults of a Pod: spec defaults, `serviceAccountName: default`,
/// `enableServiceLinks`, priority, the not-ready/unreachable NoExecute tolerations,
/// requests defaulted from limits, and `status.phase: Pending` with the QoS class when
/// the status has no phase yet (i.e. on create).
pub fn default_pod(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let spec = object_entry(root, "spec");
    default_pod_spec(spec);
    set_default(spec, "enableServiceLinks", json!(true));
    // The ServiceAccount admission plugin; `serviceAccount` is the deprecated twin.
    let account = match (
        get_str_map(spec, "serviceAccountName"),
        get_str_map(spec, "serviceAccount"),
    ) {
        ("", "") => "default".to_string(),
        ("", legacy) => legacy.to_string(),
        (name, _) => name.to_string(),
    };
    spec.insert("serviceAccountName".into(), json!(account));
    spec.insert("serviceAccount".into(), json!(account));
    // The Priority admission plugin without a default PriorityClass.
    if spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        set_default(spec, "priority", json!(0));
    }
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    add_default_tolerations(spec, default_toleration_seconds());
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                default_requests_from_limits(c);
            }
        }
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        default_host_network_ports(spec);
    }
    let qos = pod_qos_class(&Value::Object(spec.clone()));
    let status = object_entry(root, "status");
    if status
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        status.insert("phase".into(), json!("Pending"));
        set_default(status, "qosClass", json!(qos));
    }
}

fn get_str_map<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Spec defaults shared by pods and pod templates.
pub(super) fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
            }
        }
    }
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
            default_volume(v);
        }
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let policy = if image_tag_is_latest(get_str_map(c, "image")) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    if let Some(Value::Array(env)) = c.get_mut("env") {
        for e in env.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(field_ref) = e
                .get_mut("valueFrom")
                .and_then(|v| v.get_mut("fieldRef"))
                .and_then(Value::as_object_mut)
            {
                set_default(field_ref, "apiVersion", json!("v1"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            default_probe(p);
        }
    }
    if let Some(lifecycle) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for hook in ["postStart", "preStop"] {
            if let Some(http) = lifecycle
                .get_mut(hook)
                .and_then(|h| h.get_mut("httpGet"))
                .and_then(Value::as_object_mut)
            {
                default_http_get(http);
            }
        }
    }
}

/// Kubernetes pulls `:latest` (or untagged, undigested) images every time.
fn image_tag_is_latest(image: &str) -> bool {
    if image.is_empty() || image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

fn default_probe(p: &mut Map<String, Value>) {
    for (field, value) in [
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        // Zero means unset for these (non-pointer) fields.
        if p.get(field).and_then(Value::as_i64).unwrap_or(0) == 0 {
            p.insert(field.into(), json!(value));
        }
    }
    if let Some(http) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
        default_http_get(http);
    }
}

fn default_http_get(http: &mut Map<String, Value>) {
    set_default(http, "path", json!("/"));
    set_default(http, "scheme", json!("HTTP"));
}

fn default_volume(v: &mut Map<String, Value>) {
    if !v.iter().any(|(k, val)| k != "name" && !val.is_null()) {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
            set_default(s, "defaultMode", json!(420));
        }
    }
    // A projected service-account token lives an hour unless it says otherwise.
    if let Some(Value::Array(sources)) = v.get_mut("projected").and_then(|p| p.get_mut("sources")) {
        for token in sources
            .iter_mut()
            .filter_map(|s| s.get_mut("serviceAccountToken"))
            .filter_map(Value::as_object_mut)
        {
            set_default(token, "expirationSeconds", json!(3600));
        }
    }
    if let Some(h) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
        set_default(h, "type", json!(""));
    }
}

/// The DefaultTolerationSeconds admission plugin: tolerate not-ready and unreachable
/// nodes for [`default_toleration_seconds`] (300 s) unless the pod already tolerates them.
fn add_default_tolerations(spec: &mut Map<String, Value>, seconds: DefaultTolerationSeconds) {
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if !tolerations.is_array() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for (taint, toleration_seconds) in [
        ("node.kubernetes.io/not-ready", seconds.not_ready),
        ("node.kubernetes.io/unreachable", seconds.unreachable),
    ] {
        let tolerated = list.iter().any(|t| {
            let key = get_str(t, "key");
            let effect = get_str(t, "effect");
            (key == taint || key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        });
        if !tolerated {
            list.push(json!({
                "key": taint, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": toleration_seconds
            }));
        }
    }
}

fn default_requests_from_limits(c: &mut Map<String, Value>) {
    let Some(resources) = c.get_mut("resources").and_then(Value::as_object_mut) else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let requests = object_entry(resources, "requests");
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

fn default_host_network_ports(spec: &mut Map<String, Value>) {
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers.iter_mut() {
                if let Some(Value::Array(ports)) = c.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                            let container_port =
                                p.get("containerPort").cloned().unwrap_or(Value::Null);
                            p.insert("hostPort".into(), container_port);
                        }
                    }
                }
            }
        }
    }
}

/// The QoS class of a pod spec: `Guaranteed` when every container has CPU and memory
/// limits equal to its requests, `BestEffort` when nothing is requested or limited,
/// `Burstable` otherwise (Kubernetes' `ComputePodQOS`).
pub fn pod_qos_class(spec: &Value) -> &'static str {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let containers = get_list(spec, "containers")
        .iter()
        .chain(get_list(spec, "initContainers"));
    for c in containers {
        let resources = c.get("resources").unwrap_or(&Value::Null);
        for (name, nanos) in positive_compute(resources.get("requests")) {
            *requests.entry(name).or_default() += nanos;
        }
        let found = positive_compute(resources.get("limits"));
        if !(found.iter().any(|(n, _)| *n == "cpu") && found.iter().any(|(n, _)| *n == "memory")) {
            guaranteed = false;
        }
        for (name, nanos) in found {
            *limits.entry(name).or_default() += nanos;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed
        && requests.iter().all(|(n, r)| limits.get(n) == Some(r))
        && requests.len() == limits.len()
    {
        return "Guaranteed";
    }
    "Burstable"
}

/// The CPU and memory entries of a resource list that parse and are above zero.
fn positive_compute(list: Option<&Value>) -> Vec<(&'static str, i128)> {
    let mut out = Vec::new();
    for name in ["cpu", "memory"] {
        if let Some(Ok(q)) = list.and_then(|l| l.get(name)).map(Quantity::from_json)
            && q.nanos() > 0
        {
            out.push((name, q.nanos()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(mut pod: Value) -> Value {
        default_pod(&mut pod);
        pod
    }

    #[test]
    fn a_minimal_pod_gets_the_kubernetes_defaults() {
        let pod = defaulted(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}]}]}
        }));
        assert_eq!(
            pod["spec"],
            json!({
                "containers": [{
                    "name": "app", "image": "nginx", "imagePullPolicy": "Always",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"
                }],
                "dnsPolicy": "ClusterFirst", "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
                "priority": 0, "restartPolicy": "Always", "schedulerName": "default-scheduler",
                "securityContext": {}, "serviceAccount": "default", "serviceAccountName": "default",
                "terminationGracePeriodSeconds": 30,
                "tolerations": [
                    {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                    {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}
                ]
            })
        );
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
    }

    #[test]
    fn pull_policy_depends_on_the_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("localhost:5000/app", "Always"),
            ("localhost:5000/app:v1", "IfNotPresent"),
            ("app@sha256:abcd", "IfNotPresent"),
        ] {
            let pod = defaulted(json!({"spec": {"containers": [{"name": "a", "image": image}]}}));
            assert_eq!(
                pod["spec"]["containers"][0]["imagePullPolicy"],
                json!(policy),
                "{image}"
            );
        }
    }

    #[test]
    fn existing_values_are_kept() {
        let pod = defaulted(json!({
            "spec": {"restartPolicy": "Never", "serviceAccountName": "builder", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "a", "image": "x:1", "imagePullPolicy": "Never"}]},
            "status": {"phase": "Running"}
        }));
        assert_eq!(pod["spec"]["restartPolicy"], json!("Never"));
        assert_eq!(pod["spec"]["serviceAccountName"], json!("builder"));
        assert_eq!(pod["spec"]["serviceAccount"], json!("builder"));
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], json!(0));
        assert_eq!(
            pod["spec"]["containers"][0]["imagePullPolicy"],
            json!("Never")
        );
        assert_eq!(pod["status"], json!({"phase": "Running"}));
    }

    #[test]
    fn existing_not_ready_tolerations_are_not_duplicated() {
        let pod = defaulted(json!({"spec": {"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}
        ]}}));
        let tolerations = pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0]["tolerationSeconds"], json!(10));
        assert_eq!(
            tolerations[1]["key"],
            json!("node.kubernetes.io/unreachable")
        );
        let tolerate_all = defaulted(json!({"spec": {"tolerations": [{"operator": "Exists"}]}}));
        assert_eq!(
            tolerate_all["spec"]["tolerations"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn requests_default_to_limits_and_qos_follows() {
        let pod = defaulted(json!({"spec": {"containers": [
            {"name": "a", "image": "x:1", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
        ]}}));
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        assert_eq!(pod["status"]["qosClass"], json!("Guaranteed"));
        let burstable = defaulted(json!({"spec": {"containers": [
            {"name": "a", "image": "x:1", "resources": {"requests": {"cpu": "100m"}}}
        ]}}));
        assert_eq!(burstable["status"]["qosClass"], json!("Burstable"));
    }

    #[test]
    fn probes_volumes_and_field_refs_get_defaults() {
        let pod = defaulted(json!({"spec": {
            "containers": [{"name": "a", "image": "x:1",
                "livenessProbe": {"httpGet": {"port": 80}},
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}],
            "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "c"}}, {"name": "h", "hostPath": {"path": "/x"}}]
        }}));
        let c = &pod["spec"]["containers"][0];
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"],
            json!("v1")
        );
        assert_eq!(
            pod["spec"]["volumes"][0],
            json!({"name": "scratch", "emptyDir": {}})
        );
        assert_eq!(
            pod["spec"]["volumes"][1]["configMap"]["defaultMode"],
            json!(420)
        );
        assert_eq!(pod["spec"]["volumes"][2]["hostPath"]["type"], json!(""));
    }

    #[test]
    fn host_network_ports_default_the_host_port() {
        let pod = defaulted(json!({"spec": {"hostNetwork": true, "containers": [
            {"name": "a", "image": "x:1", "ports": [{"containerPort": 8080}]}
        ]}}));
        assert_eq!(
            pod["spec"]["containers"][0]["ports"][0]["hostPort"],
            json!(8080)
        );
    }

    #[test]
    fn configured_toleration_seconds_go_into_the_added_tolerations() {
        let mut spec = Map::new();
        add_default_tolerations(
            &mut spec,
            DefaultTolerationSeconds {
                not_ready: 7,
                unreachable: 5,
            },
        );
        assert_eq!(
            spec["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 7},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
            ])
        );
    }
}

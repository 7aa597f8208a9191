//! A container's environment and command line, resolved as the kubelet does.
//!
//! - `envFrom` (configMapRef / secretRef, with `prefix`, `optional` honoured) comes first, then
//!   `env` entries in order, each overriding an earlier variable of the same name;
//! - `value` is expanded with `$(VAR)` references to variables defined before it;
//! - `valueFrom` reads configMapKeyRef, secretKeyRef, fieldRef (metadata.name/namespace/uid,
//!   metadata.labels['k'], metadata.annotations['k'], spec.nodeName, spec.serviceAccountName,
//!   status.podIP(s), status.hostIP(s)) and resourceFieldRef (limits/requests cpu, memory,
//!   ephemeral-storage, with a divisor; a missing limit is the node's allocatable);
//! - `command` and `args` are expanded with the final environment ([`Environment::expand`]).
//!
//! ConfigMaps and Secrets are fetched once per container start ([`fetch_sources`]); the rest
//! is pure. Errors carry the kubelet's messages; the container then waits with reason
//! `CreateContainerConfigError`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, Pod, Secret};
use kube::Api;
use wasmkube_api::quantity::Quantity;

/// Why a container's environment cannot be built (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvError {
    /// A referenced ConfigMap does not exist and the reference is not optional.
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    /// A referenced Secret does not exist and the reference is not optional.
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    /// A key is missing from a ConfigMap.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// A key is missing from a Secret.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// A fieldRef or resourceFieldRef names something that is not supported.
    #[error("unsupported {kind}: {path}")]
    UnsupportedField {
        /// `fieldRef` or `resourceFieldRef`.
        kind: &'static str,
        /// The path as written.
        path: String,
    },
    /// The ConfigMaps or Secrets could not be read (the apiserver is unreachable).
    #[error("reading {what}: {message}")]
    Api {
        /// What was being read.
        what: String,
        /// The client's error.
        message: String,
    },
}

/// The ConfigMaps and Secrets a container's environment refers to; `None` = does not exist.
#[derive(Debug, Default, Clone)]
pub(crate) struct EnvSources {
    /// ConfigMap data by name.
    pub(crate) config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    /// Secret data (decoded, lossy UTF-8) by name.
    pub(crate) secrets: HashMap<String, Option<BTreeMap<String, String>>>,
}

/// Facts about the pod and node that `fieldRef` and `resourceFieldRef` read.
#[derive(Debug, Clone)]
pub(crate) struct PodFacts<'a> {
    /// The pod.
    pub(crate) pod: &'a Pod,
    /// The pod's IP, once allocated.
    pub(crate) pod_ip: Option<String>,
    /// The node's IP.
    pub(crate) host_ip: String,
    /// The node's allocatable CPU in millicores (the default of a missing cpu limit).
    pub(crate) node_cpu_millis: i64,
    /// The node's allocatable memory in bytes (the default of a missing memory limit).
    pub(crate) node_memory_bytes: i64,
}

/// Reads every ConfigMap and Secret `container`'s environment refers to.
pub(crate) async fn fetch_sources(
    client: &kube::Client,
    namespace: &str,
    container: &Container,
) -> Result<EnvSources, EnvError> {
    let mut cm_names = Vec::new();
    let mut secret_names = Vec::new();
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            cm_names.push(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secret_names.push(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                cm_names.push(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secret_names.push(r.name.clone());
            }
        }
    }
    let mut sources = EnvSources::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in cm_names {
        if sources.config_maps.contains_key(&name) {
            continue;
        }
        let found = cms.get_opt(&name).await.map_err(|e| EnvError::Api {
            what: format!("configmap {namespace}/{name}"),
            message: e.to_string(),
        })?;
        let data = found.map(|cm| {
            let mut data = cm.data.unwrap_or_default();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            data
        });
        sources.config_maps.insert(name, data);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in secret_names {
        if sources.secrets.contains_key(&name) {
            continue;
        }
        let found = secrets.get_opt(&name).await.map_err(|e| EnvError::Api {
            what: format!("secret {namespace}/{name}"),
            message: e.to_string(),
        })?;
        let data = found.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        });
        sources.secrets.insert(name, data);
    }
    Ok(sources)
}

/// An ordered environment: later assignments replace earlier ones in place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Environment {
    vars: Vec<(String, String)>,
}

impl Environment {
    /// Sets `name`, replacing an earlier value.
    pub(crate) fn set(&mut self, name: &str, value: String) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name.to_string(), value)),
        }
    }

    /// The value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The variables in order.
    pub(crate) fn into_vec(self) -> Vec<(String, String)> {
        self.vars
    }

    /// Expands `$(VAR)` references in `input` against this environment.
    pub(crate) fn expand(&self, input: &str) -> String {
        expand(input, |name| self.get(name).map(str::to_string))
    }
}

/// Builds `container`'s environment.
pub(crate) fn resolve_env(
    container: &Container,
    facts: &PodFacts<'_>,
    sources: &EnvSources,
) -> Result<Environment, EnvError> {
    let namespace = facts.pod.metadata.namespace.clone().unwrap_or_default();
    let mut env = Environment::default();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name).and_then(Option::as_ref) {
                Some(data) => {
                    for (k, v) in data {
                        env.set(&format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name).and_then(Option::as_ref) {
                Some(data) => {
                    for (k, v) in data {
                        env.set(&format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) if !v.is_empty() => Some(env.expand(v)),
            (_, Some(from)) => value_from(from, container, facts, sources, &namespace)?,
            _ => Some(String::new()),
        };
        if let Some(value) = value {
            env.set(&var.name, value);
        }
    }
    Ok(env)
}

/// Resolves one `valueFrom`; `None` when an optional reference is missing (the variable is
/// then not set at all, as in Kubernetes).
fn value_from(
    from: &EnvVarSource,
    container: &Container,
    facts: &PodFacts<'_>,
    sources: &EnvSources,
    namespace: &str,
) -> Result<Option<String>, EnvError> {
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        return match sources.config_maps.get(&r.name).and_then(Option::as_ref) {
            Some(data) => match data.get(&r.key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => Err(EnvError::ConfigMapKey {
                    namespace: namespace.to_string(),
                    name: r.name.clone(),
                    key: r.key.clone(),
                }),
            },
            None if optional => Ok(None),
            None => Err(EnvError::ConfigMapNotFound(r.name.clone())),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        return match sources.secrets.get(&r.name).and_then(Option::as_ref) {
            Some(data) => match data.get(&r.key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => Err(EnvError::SecretKey {
                    namespace: namespace.to_string(),
                    name: r.name.clone(),
                    key: r.key.clone(),
                }),
            },
            None if optional => Ok(None),
            None => Err(EnvError::SecretNotFound(r.name.clone())),
        };
    }
    if let Some(r) = &from.field_ref {
        return field_ref(&r.field_path, facts).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        return resource_field_ref(
            &r.resource,
            r.divisor.as_ref().map(|d| d.0.as_str()),
            container,
            facts,
        )
        .map(Some);
    }
    Ok(Some(String::new()))
}

/// The value of a downward-API field path (`metadata.labels['app']`, `status.podIP`...).
pub(crate) fn field_ref(path: &str, facts: &PodFacts<'_>) -> Result<String, EnvError> {
    let meta = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    let unsupported = || EnvError::UnsupportedField {
        kind: "fieldRef",
        path: path.to_string(),
    };
    if let Some(key) = subscript(path, "metadata.labels") {
        return Ok(meta
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(key) = subscript(path, "metadata.annotations") {
        return Ok(meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
            .unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => return Err(unsupported()),
    })
}

/// `metadata.labels['key']` -> `key` (single or double quotes).
fn subscript<'p>(path: &'p str, field: &str) -> Option<&'p str> {
    let rest = path
        .strip_prefix(field)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    rest.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
}

/// Labels or annotations as the downward API writes them: `key="value"` lines, sorted.
pub(crate) fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// The value of a `resourceFieldRef` (`limits.memory`, `requests.cpu`...) with its divisor,
/// rounded up like the kubelet.
pub(crate) fn resource_field_ref(
    resource: &str,
    divisor: Option<&str>,
    container: &Container,
    facts: &PodFacts<'_>,
) -> Result<String, EnvError> {
    let unsupported = || EnvError::UnsupportedField {
        kind: "resourceFieldRef",
        path: resource.to_string(),
    };
    let (section, name) = resource.split_once('.').ok_or_else(unsupported)?;
    let resources = container.resources.as_ref();
    let pick = |which: &str| {
        let map = match which {
            "limits" => resources.and_then(|r| r.limits.as_ref()),
            _ => resources.and_then(|r| r.requests.as_ref()),
        };
        map.and_then(|m| m.get(name))
            .and_then(|q| Quantity::parse(&q.0).ok())
    };
    let quantity = match section {
        "limits" => pick("limits"),
        "requests" => pick("requests"),
        _ => return Err(unsupported()),
    };
    let divisor = divisor
        .and_then(|d| Quantity::parse(d).ok())
        .filter(|d| !d.is_zero() && !d.is_negative());
    match name {
        "cpu" => {
            let default = match section {
                "limits" => i128::from(facts.node_cpu_millis),
                _ => 0,
            };
            let millis = quantity.map_or(default, |q| q.milli_value());
            let div = divisor.map_or(1000, |d| d.milli_value().max(1));
            Ok(ceil_div(millis, div).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let default = match (section, name) {
                ("limits", "memory") => i128::from(facts.node_memory_bytes),
                _ => 0,
            };
            let bytes = quantity.map_or(default, |q| q.value());
            let div = divisor.map_or(1, |d| d.value().max(1));
            Ok(ceil_div(bytes, div).to_string())
        }
        _ => Err(unsupported()),
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    if a <= 0 { 0 } else { (a + b - 1) / b }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined one is left as
/// written, `$$` is a literal `$` (so `$$(VAR)` gives `$(VAR)`), an unterminated `$(` is kept.
pub(crate) fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let Some(next) = after.chars().next() else {
            // A trailing `$` is kept.
            out.push('$');
            rest = after;
            break;
        };
        match next {
            '$' => {
                out.push('$');
                rest = &after[1..];
            }
            '(' => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            other => {
                out.push('$');
                out.push(other);
                rest = &after[other.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, ObjectFieldSelector,
        PodSpec, ResourceFieldSelector, ResourceRequirements, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([("app".into(), "shop".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                service_account_name: Some("default".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn facts(pod: &Pod) -> PodFacts<'_> {
        PodFacts {
            pod,
            pod_ip: Some("127.1.0.2".into()),
            host_ip: "127.0.0.1".into(),
            node_cpu_millis: 2000,
            node_memory_bytes: 1 << 30,
        }
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn var_from(name: &str, from: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(from),
        }
    }

    #[test]
    fn expansion_replaces_defined_keeps_undefined_and_unescapes_dollars() {
        let lookup = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)", lookup), "x-$(B)");
        assert_eq!(expand("$$(A)", lookup), "$(A)");
        assert_eq!(expand("a$$b", lookup), "a$b");
        assert_eq!(expand("$(A", lookup), "$(A");
        assert_eq!(expand("cost $5 é$", lookup), "cost $5 é$");
        assert_eq!(expand("$é", lookup), "$é");
    }

    #[test]
    fn env_values_see_only_variables_defined_before_them() {
        let p = pod();
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                var("A", "1"),
                var("B", "$(A)-$(C)"),
                var("C", "3"),
                var("A", "override"),
            ]),
            ..Default::default()
        };
        let env = resolve_env(&c, &facts(&p), &EnvSources::default()).unwrap();
        assert_eq!(
            env.into_vec(),
            vec![
                ("A".to_string(), "override".to_string()),
                ("B".to_string(), "1-$(C)".to_string()),
                ("C".to_string(), "3".to_string()),
            ]
        );
    }

    #[test]
    fn field_refs_read_pod_metadata_spec_and_addresses() {
        let p = pod();
        let f = facts(&p);
        assert_eq!(field_ref("metadata.name", &f).unwrap(), "web");
        assert_eq!(field_ref("metadata.labels['app']", &f).unwrap(), "shop");
        assert_eq!(field_ref("metadata.annotations['x']", &f).unwrap(), "");
        assert_eq!(field_ref("spec.nodeName", &f).unwrap(), "n1");
        assert_eq!(field_ref("status.podIP", &f).unwrap(), "127.1.0.2");
        assert!(field_ref("spec.bogus", &f).is_err());
    }

    #[test]
    fn missing_configmap_key_is_an_error_unless_optional() {
        let p = pod();
        let mut sources = EnvSources::default();
        sources.config_maps.insert(
            "cfg".into(),
            Some(BTreeMap::from([("k".into(), "v".into())])),
        );
        sources.secrets.insert("gone".into(), None);
        let key_ref = |key: &str, optional: Option<bool>| EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: "cfg".into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        };
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                var_from("K", key_ref("k", None)),
                var_from("M", key_ref("missing", Some(true))),
            ]),
            ..Default::default()
        };
        let env = resolve_env(&c, &facts(&p), &sources).unwrap();
        assert_eq!(env.get("K"), Some("v"));
        assert_eq!(env.get("M"), None);

        let c = Container {
            name: "c".into(),
            env: Some(vec![var_from("M", key_ref("missing", None))]),
            ..Default::default()
        };
        let err = resolve_env(&c, &facts(&p), &sources).unwrap_err();
        assert_eq!(
            err.to_string(),
            "couldn't find key missing in ConfigMap prod/cfg"
        );

        let c = Container {
            name: "c".into(),
            env: Some(vec![var_from(
                "S",
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "gone".into(),
                        key: "k".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        let err = resolve_env(&c, &facts(&p), &sources).unwrap_err();
        assert_eq!(err.to_string(), "secret \"gone\" not found");
    }

    #[test]
    fn env_from_applies_prefix_and_env_overrides_it() {
        let p = pod();
        let mut sources = EnvSources::default();
        sources.config_maps.insert(
            "cfg".into(),
            Some(BTreeMap::from([
                ("MODE".into(), "fast".into()),
                ("X".into(), "1".into()),
            ])),
        );
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                prefix: Some("APP_".into()),
                secret_ref: None,
            }]),
            env: Some(vec![var("APP_X", "2"), var("Y", "$(APP_MODE)")]),
            ..Default::default()
        };
        let env = resolve_env(&c, &facts(&p), &sources).unwrap();
        assert_eq!(env.get("APP_MODE"), Some("fast"));
        assert_eq!(env.get("APP_X"), Some("2"));
        assert_eq!(env.get("Y"), Some("fast"));
    }

    #[test]
    fn resource_field_ref_rounds_up_by_divisor_and_defaults_to_node_allocatable() {
        let p = pod();
        let f = facts(&p);
        let c = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".into(), Q("32Mi".into()))])),
                requests: Some(BTreeMap::from([("cpu".into(), Q("250m".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            resource_field_ref("limits.memory", None, &c, &f).unwrap(),
            "33554432"
        );
        assert_eq!(
            resource_field_ref("limits.memory", Some("1Mi"), &c, &f).unwrap(),
            "32"
        );
        assert_eq!(
            resource_field_ref("requests.cpu", None, &c, &f).unwrap(),
            "1"
        );
        assert_eq!(
            resource_field_ref("requests.cpu", Some("1m"), &c, &f).unwrap(),
            "250"
        );
        assert_eq!(resource_field_ref("limits.cpu", None, &c, &f).unwrap(), "2");
        let from = EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                resource: "limits.memory".into(),
                divisor: Some(Q("1Mi".into())),
                container_name: None,
            }),
            ..Default::default()
        };
        let c2 = Container {
            env: Some(vec![var_from("MEM", from)]),
            ..c
        };
        let env = resolve_env(&c2, &f, &EnvSources::default()).unwrap();
        assert_eq!(env.get("MEM"), Some("32"));
    }

    #[test]
    fn field_ref_env_uses_object_field_selector() {
        let p = pod();
        let c = Container {
            name: "c".into(),
            env: Some(vec![var_from(
                "NS",
                EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.namespace".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        let env = resolve_env(&c, &facts(&p), &EnvSources::default()).unwrap();
        assert_eq!(env.get("NS"), Some("prod"));
    }
}

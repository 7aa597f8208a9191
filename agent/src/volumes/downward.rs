//! The content of downward API files: pod metadata fields and container resource fields,
//! formatted as the kubelet writes them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, ResourceFieldSelector};
use wasmkube_api::Quantity;

/// The value of `fieldRef.fieldPath` for a downward API volume file. Volumes support only
/// pod metadata (node and status fields are for env vars, where they cannot change).
pub(crate) fn field_value(pod: &Pod, field_path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    match field_path {
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        "metadata.labels" => Ok(format_map(labels)),
        "metadata.annotations" => Ok(format_map(annotations)),
        path => {
            if let Some(key) = subscript(path, "metadata.labels") {
                Ok(labels.get(key).cloned().unwrap_or_default())
            } else if let Some(key) = subscript(path, "metadata.annotations") {
                Ok(annotations.get(key).cloned().unwrap_or_default())
            } else {
                Err(format!(
                    "fieldPath {path:?} is not supported in a downwardAPI volume (metadata.name, \
                     metadata.namespace, metadata.uid, metadata.labels, metadata.annotations and \
                     their ['key'] forms are)"
                ))
            }
        }
    }
}

/// `metadata.labels['app']` -> `app`.
fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// Labels and annotations as the kubelet writes them: sorted `key="value"` lines, values
/// quoted like Go's `%q`, no newline after the last.
pub(crate) fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", wasmkube_api::field::go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a `resourceFieldRef`: the container's request or limit divided by the divisor
/// (default 1) and rounded up, as the kubelet computes it.
pub(crate) fn resource_value(
    pod: &Pod,
    selector: &ResourceFieldSelector,
) -> Result<String, String> {
    let container_name = selector.container_name.as_deref().unwrap_or_default();
    let container = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == container_name)
        .ok_or_else(|| {
            format!("resourceFieldRef names container {container_name:?}, which the pod lacks")
        })?;
    let (section, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", selector.resource))?;
    let resources = container.resources.as_ref();
    let amount = match section {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {:?}", selector.resource)),
    }
    .and_then(|m| m.get(resource));
    let amount = match (amount, section) {
        (Some(q), _) => parse(&q.0)?,
        (None, "requests") => Quantity::zero(),
        (None, _) => {
            return Err(format!(
                "{} is not set on container {container_name:?}; wasmkube writes a limit to a \
                 downwardAPI file only when the container sets it",
                selector.resource
            ));
        }
    };
    let divisor = match &selector.divisor {
        Some(d) => parse(&d.0)?,
        None => parse("1")?,
    };
    if divisor.nanos() <= 0 {
        return Err(format!("divisor of {} must be positive", selector.resource));
    }
    // Round up, as the kubelet does with math.Ceil.
    let quotient = (amount.nanos() + divisor.nanos() - 1).div_euclid(divisor.nanos());
    Ok(quotient.to_string())
}

fn parse(s: &str) -> Result<Quantity, String> {
    Quantity::parse(s).map_err(|e| format!("quantity {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("files".into()),
                namespace: Some("demo".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("app".into(), "files".into()),
                    ("tier".into(), "a \"b\"\n".into()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([
                            ("memory".into(), Q("64Mi".into())),
                            ("cpu".into(), Q("250m".into())),
                        ])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn labels_are_sorted_quoted_lines_without_a_final_newline() {
        assert_eq!(
            field_value(&pod(), "metadata.labels").expect("labels"),
            "app=\"files\"\ntier=\"a \\\"b\\\"\\n\""
        );
        assert_eq!(
            field_value(&pod(), "metadata.labels['app']").expect("one label"),
            "files"
        );
        assert!(field_value(&pod(), "spec.nodeName").is_err());
    }

    #[test]
    fn resource_fields_divide_and_round_up() {
        let sel = |resource: &str, divisor: Option<&str>| ResourceFieldSelector {
            container_name: Some("main".into()),
            resource: resource.into(),
            divisor: divisor.map(|d| Q(d.into())),
        };
        let p = pod();
        assert_eq!(
            resource_value(&p, &sel("limits.memory", None)),
            Ok("67108864".into())
        );
        assert_eq!(
            resource_value(&p, &sel("limits.memory", Some("1Mi"))),
            Ok("64".into())
        );
        assert_eq!(resource_value(&p, &sel("limits.cpu", None)), Ok("1".into()));
        assert_eq!(
            resource_value(&p, &sel("limits.cpu", Some("1m"))),
            Ok("250".into())
        );
        assert_eq!(
            resource_value(&p, &sel("requests.cpu", None)),
            Ok("0".into())
        );
    }
}

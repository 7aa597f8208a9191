//! Decoding checks against the k8s-openapi types: type errors and unknown fields.
//!
//! Objects are handled as JSON everywhere else; here each built-in kind is decoded into
//! its k8s-openapi type and encoded again. A decode failure is a type error (400, as the
//! Kubernetes apiserver's "cannot be handled as a Pod"); a field present in the input but
//! absent after the round trip is unknown to the schema (`fieldValidation=Strict` -> 400,
//! `Warn` -> a `Warning` header).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::{
    apps::v1 as apps, authorization::v1 as authorization, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, node::v1 as node, rbac::v1 as rbac,
};

/// Round-trips `obj` through the k8s-openapi type of `group`/`kind`.
/// Returns the unknown field paths, or the decode error message.
pub fn check(group: &str, kind: &str, obj: &Value) -> Result<Vec<String>, String> {
    let typed = match (group, kind) {
        ("", "Namespace") => roundtrip::<core::Namespace>(obj),
        ("", "Pod") => roundtrip::<core::Pod>(obj),
        ("", "Node") => roundtrip::<core::Node>(obj),
        ("", "Service") => roundtrip::<core::Service>(obj),
        ("", "Endpoints") => roundtrip::<core::Endpoints>(obj),
        ("", "ConfigMap") => roundtrip::<core::ConfigMap>(obj),
        ("", "Secret") => roundtrip::<core::Secret>(obj),
        ("", "Event") => roundtrip::<core::Event>(obj),
        ("", "ServiceAccount") => roundtrip::<core::ServiceAccount>(obj),
        ("", "ResourceQuota") => roundtrip::<core::ResourceQuota>(obj),
        ("", "LimitRange") => roundtrip::<core::LimitRange>(obj),
        ("", "Binding") => roundtrip::<core::Binding>(obj),
        ("apps", "Deployment") => roundtrip::<apps::Deployment>(obj),
        ("apps", "ReplicaSet") => roundtrip::<apps::ReplicaSet>(obj),
        ("apps", "DaemonSet") => roundtrip::<apps::DaemonSet>(obj),
        ("batch", "Job") => roundtrip::<batch::Job>(obj),
        ("coordination.k8s.io", "Lease") => roundtrip::<coordination::Lease>(obj),
        ("node.k8s.io", "RuntimeClass") => roundtrip::<node::RuntimeClass>(obj),
        ("discovery.k8s.io", "EndpointSlice") => {
            roundtrip::<k8s_openapi::api::discovery::v1::EndpointSlice>(obj)
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            roundtrip::<k8s_openapi::api::networking::v1::NetworkPolicy>(obj)
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            roundtrip::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(obj)
        }
        ("rbac.authorization.k8s.io", "Role") => roundtrip::<rbac::Role>(obj),
        ("rbac.authorization.k8s.io", "ClusterRole") => roundtrip::<rbac::ClusterRole>(obj),
        ("rbac.authorization.k8s.io", "RoleBinding") => roundtrip::<rbac::RoleBinding>(obj),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            roundtrip::<rbac::ClusterRoleBinding>(obj)
        }
        ("authentication.k8s.io", "SelfSubjectReview") => {
            roundtrip::<k8s_openapi::api::authentication::v1::SelfSubjectReview>(obj)
        }
        ("authentication.k8s.io", "TokenReview") => {
            roundtrip::<k8s_openapi::api::authentication::v1::TokenReview>(obj)
        }
        ("authentication.k8s.io", "TokenRequest") => {
            roundtrip::<k8s_openapi::api::authentication::v1::TokenRequest>(obj)
        }
        ("authorization.k8s.io", "SelfSubjectAccessReview") => {
            roundtrip::<authorization::SelfSubjectAccessReview>(obj)
        }
        ("authorization.k8s.io", "SubjectAccessReview") => {
            roundtrip::<authorization::SubjectAccessReview>(obj)
        }
        ("authorization.k8s.io", "LocalSubjectAccessReview") => {
            roundtrip::<authorization::LocalSubjectAccessReview>(obj)
        }
        ("authorization.k8s.io", "SelfSubjectRulesReview") => {
            roundtrip::<authorization::SelfSubjectRulesReview>(obj)
        }
        ("autoscaling", "Scale") => roundtrip::<k8s_openapi::api::autoscaling::v1::Scale>(obj),
        _ => return Ok(Vec::new()),
    }?;
    let mut unknown = Vec::new();
    diff(obj, &typed, "", &mut unknown);
    Ok(unknown)
}

fn roundtrip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, String> {
    let typed: T = T::deserialize(obj).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

fn diff(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None if !v.is_null() => out.push(p),
                    None => {}
                    Some(bv) => diff(v, bv, &p, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_reported_with_their_paths() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}], "nope": true}});
        let unknown = check("", "Pod", &pod).unwrap();
        assert_eq!(
            unknown,
            vec![
                "spec.containers[0].bogus".to_string(),
                "spec.nope".to_string()
            ]
        );
    }

    #[test]
    fn type_errors_are_decode_errors() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": 5}});
        assert!(check("", "ConfigMap", &cm).is_err());
    }

    #[test]
    fn nulls_and_maps_are_not_unknown() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "creationTimestamp": null}, "data": {"any-key": "v"}});
        assert!(check("", "ConfigMap", &cm).unwrap().is_empty());
    }
}

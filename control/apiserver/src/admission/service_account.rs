//! The ServiceAccount admission plugin (Kubernetes' `plugin/pkg/admission/serviceaccount`),
//! on new pods:
//!
//! - `spec.serviceAccountName` (defaulted to `default`) must name a ServiceAccount of the
//!   pod's namespace, else the pod is refused with Kubernetes' message (`pods "x" is
//!   forbidden: error looking up service account ns/name: serviceaccount "name" not found`).
//!   The `default` account is looked up a few times over a second or two, as Kubernetes
//!   does, since the ServiceAccount controller creates it just after its namespace.
//! - Unless `automountServiceAccountToken` is false on the pod (or, when the pod does not
//!   say, on the account), the pod gets a `kube-api-access-<5 random>` projected volume: a
//!   service-account token (`token`, 3607 s, refreshed by the node), the cluster CA
//!   (`ca.crt` from the `kube-root-ca.crt` ConfigMap) and the namespace (`namespace`),
//!   mounted read-only at `/var/run/secrets/kubernetes.io/serviceaccount` in every container
//!   and init container that has no mount there yet.

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::handlers::Request;
use crate::object;

/// Where every container finds its service-account credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The token lifetime asked for (Kubernetes' `WarnOnlyBoundTokenExpirationSeconds`).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// How many times the `default` account is looked up before the pod is refused.
const DEFAULT_ACCOUNT_ATTEMPTS: u32 = 10;
/// The characters of generated name suffixes (Kubernetes' `names.SimpleNameGenerator`).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Admits a new pod: its service account must exist; mounts the account's token.
pub async fn admit_pod(req: &Request<'_>, namespace: &str, pod: &mut Value) -> ApiResult<()> {
    let account_name = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_string();
    let account = lookup(req, namespace, &account_name).await?.ok_or_else(|| {
        ApiError::forbidden_object(
            "",
            "pods",
            object::name(pod),
            &format!(
                "error looking up service account {namespace}/{account_name}: serviceaccount \"{account_name}\" not found"
            ),
        )
    })?;
    if should_automount(&account, pod) {
        mount_token(pod, &random_suffix());
    }
    Ok(())
}

/// The stored ServiceAccount; `default` is retried for a while (its controller makes it).
async fn lookup(req: &Request<'_>, namespace: &str, name: &str) -> ApiResult<Option<Value>> {
    let rt = req
        .state
        .registry()
        .by_kind("", "ServiceAccount")
        .ok_or_else(|| ApiError::internal("ServiceAccount is not registered"))?;
    let key = rt.key(Some(namespace), name);
    let attempts = if name == "default" {
        DEFAULT_ACCOUNT_ATTEMPTS
    } else {
        1
    };
    for attempt in 0..attempts {
        if attempt > 0 {
            let jitter: u64 = rand::random_range(0..100);
            tokio::time::sleep(Duration::from_millis(100 + jitter)).await;
        }
        let found = req
            .state
            .store()
            .get(&key)
            .await
            .map_err(|e| crate::handlers::store_error(rt, name, e))?;
        if let Some(kv) = found {
            return object::decode(&kv).map(Some);
        }
    }
    Ok(None)
}

/// The pod's `automountServiceAccountToken` if it sets one, else the account's, else true.
fn should_automount(account: &Value, pod: &Value) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            account
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

fn random_suffix() -> String {
    (0..5)
        .map(|_| NAME_ALPHABET[rand::random_range(0..NAME_ALPHABET.len())] as char)
        .collect()
}

/// The projected volume of Kubernetes' `TokenVolumeSource`.
fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

/// Mounts the token volume (an existing `kube-api-access-*` one, else a new one named with
/// `suffix`) in every container without a mount at [`MOUNT_PATH`]; adds the volume when a
/// container needs it.
fn mount_token(pod: &mut Value, suffix: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|volumes| {
            volumes.iter().find_map(|v| {
                v.get("name")
                    .and_then(Value::as_str)
                    .filter(|n| n.starts_with(VOLUME_PREFIX))
                    .map(str::to_string)
            })
        });
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let has_mount = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH));
            if !has_mount {
                mounts.push(mount.clone());
                needed = true;
            }
        }
    }
    if needed && existing.is_none() {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if !volumes.is_array() {
            *volumes = json!([]);
        }
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(token_volume(&volume_name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn every_container_mounts_one_new_token_volume() {
        let mut p = pod(json!({
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                           {"name": "b"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }));
        mount_token(&mut p, "x2b4d");
        let volumes = p["spec"]["volumes"].as_array().expect("volumes");
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[1], token_volume("kube-api-access-x2b4d"));
        assert_eq!(
            volumes[1]["projected"]["sources"][0]["serviceAccountToken"],
            json!({"expirationSeconds": 3607, "path": "token"})
        );
        assert_eq!(volumes[1]["projected"]["defaultMode"], json!(420));
        let mount = json!({"name": "kube-api-access-x2b4d", "readOnly": true,
                           "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"});
        assert_eq!(
            p["spec"]["initContainers"][0]["volumeMounts"],
            json!([mount])
        );
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"][1], mount);
        assert_eq!(p["spec"]["containers"][1]["volumeMounts"], json!([mount]));
    }

    #[test]
    fn a_container_with_its_own_mount_there_keeps_it_and_no_volume_is_added_for_nothing() {
        let own = json!({"name": "mine", "mountPath": MOUNT_PATH});
        let mut p = pod(json!({"containers": [{"name": "a", "volumeMounts": [own]}],
                               "volumes": [{"name": "mine", "emptyDir": {}}]}));
        mount_token(&mut p, "abcde");
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(1));
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"], json!([own]));
    }

    #[test]
    fn an_existing_token_volume_is_reused() {
        let mut p = pod(json!({"containers": [{"name": "a"}],
                               "volumes": [token_volume("kube-api-access-zzzzz")]}));
        mount_token(&mut p, "abcde");
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-zzzzz"
        );
    }

    #[test]
    fn the_pods_automount_setting_wins_over_the_accounts() {
        let off = json!({"automountServiceAccountToken": false});
        let on = json!({"automountServiceAccountToken": true});
        let unset = json!({});
        assert!(should_automount(&unset, &pod(json!({}))));
        assert!(!should_automount(&off, &pod(json!({}))));
        assert!(should_automount(
            &off,
            &pod(json!({"automountServiceAccountToken": true}))
        ));
        assert!(!should_automount(
            &on,
            &pod(json!({"automountServiceAccountToken": false}))
        ));
    }

    #[test]
    fn generated_suffixes_use_kubernetes_alphabet() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|b| NAME_ALPHABET.contains(&b)), "{s}");
    }
}

//! Counting what a namespace's objects consume of a quota: the kinds its `hard` names are
//! listed from the apiserver (pods for `pods` and the compute resources, services, configmaps,
//! secrets, ... and any `count/<resource>[.<group>]`, found through discovery), and each
//! object's usage is [`wasmkube_api::quota::usage`], the accounting admission charges with.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::Value;
use wasmkube_api::quota::{self as accounting, ResourceList};

/// Counts usage through the API, caching which API serves each resource.
pub(super) struct Counter {
    client: kube::Client,
    /// `(group, plural)` -> the API resource, or `None` when discovery found none.
    resources: Mutex<BTreeMap<(String, String), Option<ApiResource>>>,
}

impl Counter {
    pub(super) fn new(client: kube::Client) -> Self {
        Counter {
            client,
            resources: Mutex::new(BTreeMap::new()),
        }
    }

    /// What the objects of `namespace` that `quota` selects consume of each of `names`
    /// (zero for a name nothing consumes; names of unknown kinds are left out).
    pub(super) async fn count(
        &self,
        namespace: &str,
        quota: &Value,
        names: &BTreeSet<String>,
    ) -> Result<ResourceList, kube::Error> {
        let mut used = ResourceList::new();
        for (group, plural) in kinds(names) {
            let Some(resource) = self.resource(&group, &plural).await? else {
                tracing::debug!(
                    group,
                    plural,
                    "quota names a resource the API does not serve"
                );
                continue;
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &resource);
            let mut params = ListParams::default();
            let mut continue_token: Option<String> = None;
            loop {
                if let Some(token) = &continue_token {
                    params = params.continue_token(token);
                }
                let page = api.list(&params.clone().limit(500)).await?;
                for obj in &page.items {
                    let obj = serde_json::to_value(obj).unwrap_or(Value::Null);
                    if accounting::matches_scopes(quota, &plural, &obj) {
                        accounting::add_all(&mut used, &accounting::usage(&group, &plural, &obj));
                    }
                }
                continue_token = page.metadata.continue_.filter(|t| !t.is_empty());
                if continue_token.is_none() {
                    break;
                }
            }
        }
        let mut counted = accounting::mask(&used, names);
        for name in names {
            if kind_of(name).is_some() {
                counted
                    .entry(name.clone())
                    .or_insert_with(wasmkube_api::Quantity::zero);
            }
        }
        Ok(counted)
    }

    /// The API resource of `group`/`plural`, discovered once.
    async fn resource(
        &self,
        group: &str,
        plural: &str,
    ) -> Result<Option<ApiResource>, kube::Error> {
        let key = (group.to_string(), plural.to_string());
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let found = match kube::discovery::group(&self.client, group).await {
            Ok(g) => g
                .recommended_resources()
                .into_iter()
                .map(|(r, _)| r)
                .find(|r| r.plural == plural),
            Err(kube::Error::Discovery(_)) => None,
            Err(e) => return Err(e),
        };
        self.lock().insert(key, found.clone());
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Option<ApiResource>>> {
        self.resources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The `(group, plural)` a quota resource name is about: `pods` and the compute resources
/// count pods, `services.nodeports` services, `count/deployments.apps` deployments.
fn kind_of(name: &str) -> Option<(String, String)> {
    if let Some(rest) = name.strip_prefix("count/") {
        return Some(match rest.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), rest.to_string()),
        });
    }
    let core = |plural: &str| Some((String::new(), plural.to_string()));
    match name {
        "services" | "services.nodeports" | "services.loadbalancers" => core("services"),
        "configmaps"
        | "secrets"
        | "resourcequotas"
        | "replicationcontrollers"
        | "persistentvolumeclaims" => core(name),
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        n if n.starts_with("requests.")
            || n.starts_with("limits.")
            || n.starts_with("hugepages-") =>
        {
            core("pods")
        }
        _ => None,
    }
}

/// The kinds to list for `names`, each once.
fn kinds(names: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    names.iter().filter_map(|n| kind_of(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_names_map_to_the_kinds_that_consume_them() {
        assert_eq!(
            kind_of("requests.cpu"),
            Some((String::new(), "pods".into()))
        );
        assert_eq!(
            kind_of("count/deployments.apps"),
            Some(("apps".into(), "deployments".into()))
        );
        assert_eq!(kind_of("count/pods"), Some((String::new(), "pods".into())));
        assert_eq!(
            kind_of("services.nodeports"),
            Some((String::new(), "services".into()))
        );
        let names: BTreeSet<String> = ["pods", "limits.memory", "secrets"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(kinds(&names).len(), 2);
    }
}

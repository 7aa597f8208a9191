//! Service-account tokens for projected volumes, as the kubelet's token manager: each
//! `serviceAccountToken` source is a TokenRequest bound to the pod (audience and lifetime as
//! the source says), cached per pod, account, audience and lifetime, and asked for again once
//! 80% of its lifetime has passed (or it is a day old), so the file a guest reads is renewed
//! well before the token expires. A pod's tokens are forgotten when the pod goes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::Api;
use kube::api::PostParams;

/// Tokens older than this are renewed whatever their lifetime (the kubelet's `maxTTL`).
const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// The lifetime of a projection that sets none (the apiserver's default too).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    pod_uid: String,
    namespace: String,
    service_account: String,
    audience: String,
    expiration_seconds: i64,
}

#[derive(Clone, Debug)]
struct Cached {
    token: String,
    issued: SystemTime,
    expires: SystemTime,
}

impl Cached {
    /// When the kubelet would ask for a new one: 80% into its life, or at a day old.
    fn refresh_at(&self) -> SystemTime {
        let life = self
            .expires
            .duration_since(self.issued)
            .unwrap_or(Duration::ZERO);
        (self.issued + life.mul_f64(0.8)).min(self.issued + MAX_AGE)
    }
}

/// A token to write into a volume.
#[derive(Clone, Debug)]
pub(crate) struct ProjectedToken {
    /// The JWT.
    pub(crate) token: String,
    /// When it should be replaced (80% into its lifetime).
    pub(crate) refresh_at: SystemTime,
}

/// The node's service-account tokens, shared by every pod worker.
pub(crate) struct ServiceAccountTokens {
    client: kube::Client,
    cache: Mutex<HashMap<Key, Cached>>,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("cached", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl ServiceAccountTokens {
    /// Tokens requested with `client` (the node's identity).
    pub(crate) fn new(client: kube::Client) -> Self {
        ServiceAccountTokens {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The token of `projection` for `pod`: the cached one while it is fresh, else a new
    /// TokenRequest bound to the pod.
    pub(crate) async fn token(
        &self,
        pod: &Pod,
        projection: &ServiceAccountTokenProjection,
    ) -> Result<ProjectedToken, kube::Error> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let key = Key {
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace,
            service_account,
            audience: projection.audience.clone().unwrap_or_default(),
            expiration_seconds: projection
                .expiration_seconds
                .unwrap_or(DEFAULT_EXPIRATION_SECONDS),
        };
        let now = SystemTime::now();
        if let Some(cached) = self.lock().get(&key).cloned()
            && cached.refresh_at() > now
        {
            return Ok(ProjectedToken {
                refresh_at: cached.refresh_at(),
                token: cached.token,
            });
        }
        let cached = self.request(pod, &key).await?;
        let token = ProjectedToken {
            token: cached.token.clone(),
            refresh_at: cached.refresh_at(),
        };
        self.lock().insert(key, cached);
        Ok(token)
    }

    /// Drops the tokens of the pod with `uid` (it is gone).
    pub(crate) fn forget_pod(&self, uid: &str) {
        self.lock().retain(|key, _| key.pod_uid != uid);
    }

    async fn request(&self, pod: &Pod, key: &Key) -> Result<Cached, kube::Error> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &key.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if key.audience.is_empty() {
                    Vec::new()
                } else {
                    vec![key.audience.clone()]
                },
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let issued = SystemTime::now();
        let answer = api
            .create_token_request(&key.service_account, &PostParams::default(), &request)
            .await?;
        let Some(status) = answer.status else {
            return Err(kube::Error::Service(
                "the TokenRequest was answered without a status".into(),
            ));
        };
        let lifetime = answer
            .spec
            .expiration_seconds
            .unwrap_or(key.expiration_seconds);
        let expires = u64::try_from(status.expiration_timestamp.0.as_second())
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .unwrap_or_else(|| issued + Duration::from_secs(lifetime.max(0).unsigned_abs()));
        tracing::debug!(
            pod = ?pod.metadata.name,
            service_account = %key.service_account,
            lifetime,
            "requested a service-account token"
        );
        Ok(Cached {
            token: status.token,
            issued,
            expires,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_at_80_percent_of_its_life_or_a_day() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Cached {
            token: String::new(),
            issued,
            expires: issued + Duration::from_secs(3607),
        };
        assert_eq!(
            hour.refresh_at(),
            issued + Duration::from_secs_f64(3607.0 * 0.8)
        );
        let week = Cached {
            expires: issued + Duration::from_secs(7 * 24 * 3600),
            ..hour
        };
        assert_eq!(week.refresh_at(), issued + MAX_AGE);
    }
}

//! Who may use the agent's API, as the kubelet decides it with `--client-ca-file` and
//! `--authorization-mode=Webhook`:
//!
//! * Authentication, as the kubelet's with `--authentication-token-webhook` and no
//!   anonymous access: a client certificate signed by the cluster CA (checked in the TLS
//!   handshake; its CN is the user and its O values the groups, plus
//!   `system:authenticated`), else an `Authorization: Bearer` token the apiserver vouches
//!   for in a TokenReview (a ServiceAccount's token, a bootstrap or static token). Token
//!   answers are cached for two minutes, as the kubelet's webhook cache keeps them (its
//!   `--authentication-token-webhook-cache-ttl`), keyed by the token's SHA-256. A request
//!   with neither, or with a token the apiserver does not know, is 401 `Unauthorized`.
//! * Authorization: every request is put to the apiserver as a SubjectAccessReview of that
//!   user on this node (`resource=nodes, name=<node>`), with the kubelet's attributes: the
//!   verb from the method (`GET` is `get`, `POST` `create`, ...) and the subresource from the
//!   path (`/stats` `stats`, `/metrics` `metrics`, `/logs` `log`, `/spec` `spec`,
//!   `/checkpoint` `checkpoint`, everything else, `/containerLogs` included, `proxy`). A
//!   denial is 403 `Forbidden (user=..., verb=..., resource=nodes, subresource=...)`, the
//!   kubelet's text. Answers are cached as the kubelet's webhook caches them (allowed for 5
//!   minutes, denied for 30 seconds). When the apiserver cannot be asked the request is 503
//!   (the kubelet answers 500 `Authorization error ...`; it is no bug of the agent's).
//!
//! So the apiserver (user `kube-apiserver-kubelet-client`, bound to
//! `system:kubelet-api-admin`) and cluster administrators get in, while a CA-signed
//! certificate of any other user, another node's included, is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;

/// How long an allowed answer is reused (the kubelet's `cacheAuthorizedTTL`).
pub(crate) const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denied answer is reused (the kubelet's `cacheUnauthorizedTTL`).
pub(crate) const DENIED_TTL: Duration = Duration::from_secs(30);
/// How long a TokenReview's answer is reused, whatever it was (the kubelet's
/// `--authentication-token-webhook-cache-ttl`).
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(120);
/// Answers kept at most; past it expired ones are dropped, then all.
const CACHE_ENTRIES: usize = 1024;
/// How long one SubjectAccessReview may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated client of the agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Requester {
    /// The user name (the certificate's CN).
    pub(crate) user: String,
    /// The groups (the certificate's O values and `system:authenticated`).
    pub(crate) groups: Vec<String>,
}

impl Requester {
    /// The user a verified client certificate names; `None` when it names none.
    pub(crate) fn from_certificate(cert: &CertificateDer<'_>) -> Option<Requester> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
        let subject = parsed.subject();
        let user = subject
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())?
            .to_string();
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_string)
            .collect();
        groups.push("system:authenticated".to_string());
        Some(Requester { user, groups })
    }
}

/// The bearer token of an `Authorization` header value (`Bearer <token>`, the scheme in
/// any case); `None` for other schemes or an empty token.
pub(crate) fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a request does to the node, in the apiserver's terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NodeAction {
    /// `get`, `create`, `update`, `patch`, `delete` (or the lower-cased method).
    pub(crate) verb: String,
    /// The subresource of `nodes`.
    pub(crate) subresource: &'static str,
}

impl NodeAction {
    /// The kubelet's attributes of a request (`GetRequestAttributes`).
    pub(crate) fn of(method: &http::Method, path: &str) -> NodeAction {
        let verb = match *method {
            http::Method::GET | http::Method::HEAD => "get".to_string(),
            http::Method::POST => "create".to_string(),
            http::Method::PUT => "update".to_string(),
            http::Method::PATCH => "patch".to_string(),
            http::Method::DELETE => "delete".to_string(),
            ref other => other.as_str().to_ascii_lowercase(),
        };
        let under = |prefix: &str| {
            path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        let subresource = if under("/stats") {
            "stats"
        } else if under("/metrics") {
            "metrics"
        } else if under("/logs") {
            "log"
        } else if under("/spec") {
            "spec"
        } else if under("/checkpoint") {
            "checkpoint"
        } else {
            "proxy"
        };
        NodeAction { verb, subresource }
    }
}

/// Caches `value` under `key` for `ttl`; past [`CACHE_ENTRIES`] expired answers are dropped,
/// then all.
fn insert_bounded<K: std::hash::Hash + Eq, V>(
    cache: &mut HashMap<K, (V, Instant)>,
    key: K,
    value: V,
    ttl: Duration,
) {
    let now = Instant::now();
    if cache.len() >= CACHE_ENTRIES {
        cache.retain(|_, (_, until)| now < *until);
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
    }
    cache.insert(key, (value, now + ttl));
}

/// Why a request is not served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The apiserver said no: 403 with this text.
    Forbidden(String),
    /// The apiserver could not be asked: 503 with this text.
    Unavailable(String),
}

/// Asks the apiserver whether a requester may act on this node, with a cache.
pub(crate) struct NodeAuthorizer {
    client: kube::Client,
    node: String,
    cache: Mutex<HashMap<(Requester, NodeAction), (bool, Instant)>>,
    tokens: Mutex<HashMap<TokenHash, (Option<Requester>, Instant)>>,
}

/// A bearer token's SHA-256: the token cache's key (the token itself is not kept).
type TokenHash = [u8; 32];

impl std::fmt::Debug for NodeAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAuthorizer")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl NodeAuthorizer {
    /// An authorizer of requests to node `node`, asking through `client`.
    pub(crate) fn new(client: kube::Client, node: impl Into<String>) -> Arc<Self> {
        Arc::new(NodeAuthorizer {
            client,
            node: node.into(),
            cache: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Who `token` authenticates as, asking the apiserver in a TokenReview (a cached
    /// answer if it is fresh): `Ok(None)` when the apiserver does not know the token.
    pub(crate) async fn authenticate_token(
        &self,
        token: &str,
    ) -> Result<Option<Requester>, Refusal> {
        use sha2::Digest;
        let key: TokenHash = sha2::Sha256::digest(token.as_bytes()).into();
        let cached = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(who, _)| who.clone());
        if let Some(who) = cached {
            return Ok(who);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let unavailable = |why: String| {
            tracing::warn!(error = %why, "cannot authenticate a bearer token to the agent");
            Refusal::Unavailable(format!(
                "Authentication error: the apiserver could not review the token: {why}"
            ))
        };
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| unavailable("timed out".into()))?
                .map_err(|e| unavailable(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        let who = status
            .user
            .filter(|_| status.authenticated == Some(true))
            .and_then(|user| {
                let name = user.username.filter(|u| !u.is_empty())?;
                let mut groups = user.groups.unwrap_or_default();
                if !groups.iter().any(|g| g == "system:authenticated") {
                    groups.push("system:authenticated".to_string());
                }
                Some(Requester { user: name, groups })
            });
        if who.is_none() {
            tracing::debug!(error = ?status.error, "bearer token refused by the apiserver");
        }
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        insert_bounded(&mut tokens, key, who.clone(), TOKEN_TTL);
        Ok(who)
    }

    /// Whether `who` may do `action`; a cached answer if it is fresh.
    pub(crate) async fn authorize(
        &self,
        who: &Requester,
        action: &NodeAction,
    ) -> Result<(), Refusal> {
        let key = (who.clone(), action.clone());
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(allowed, _)| *allowed);
        let allowed = match cached {
            Some(allowed) => allowed,
            None => {
                let allowed = self.review(who, action).await?;
                self.remember(key, allowed);
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
                who.user, action.verb, action.subresource
            )))
        }
    }

    fn remember(&self, key: (Requester, NodeAction), allowed: bool) {
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        insert_bounded(&mut cache, key, allowed, ttl);
    }

    async fn review(&self, who: &Requester, action: &NodeAction) -> Result<bool, Refusal> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                groups: Some(who.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(action.verb.clone()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(action.subresource.to_string()),
                    name: Some(self.node.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let unavailable = |why: String| {
            tracing::warn!(user = %who.user, error = %why, "cannot authorize a request to the agent");
            Refusal::Unavailable(format!(
                "Authorization error (user={}, verb={}, resource=nodes, subresource={}): the apiserver could not be asked: {why}",
                who.user, action.verb, action.subresource
            ))
        };
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| unavailable("timed out".into()))?
                .map_err(|e| unavailable(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        Ok(status.allowed && status.denied != Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_kubelets_subresources() {
        let get = http::Method::GET;
        let action = |m: &http::Method, p: &str| {
            let a = NodeAction::of(m, p);
            (a.verb, a.subresource)
        };
        assert_eq!(
            action(&get, "/containerLogs/ns/p/c"),
            ("get".into(), "proxy")
        );
        assert_eq!(action(&get, "/healthz"), ("get".into(), "proxy"));
        assert_eq!(action(&get, "/stats/summary"), ("get".into(), "stats"));
        assert_eq!(action(&get, "/metrics"), ("get".into(), "metrics"));
        assert_eq!(action(&get, "/logs/"), ("get".into(), "log"));
        assert_eq!(action(&get, "/spec"), ("get".into(), "spec"));
        assert_eq!(action(&get, "/statsx"), ("get".into(), "proxy"));
        assert_eq!(
            action(&http::Method::POST, "/checkpoint/ns/p/c"),
            ("create".into(), "checkpoint")
        );
        assert_eq!(
            action(&http::Method::DELETE, "/x"),
            ("delete".into(), "proxy")
        );
    }

    /// An authorizer whose apiserver cannot be reached (nothing listens on port 1).
    fn offline() -> Arc<NodeAuthorizer> {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        NodeAuthorizer::new(kube::Client::try_from(config).unwrap(), "n1")
    }

    #[tokio::test]
    async fn answers_are_reused_until_they_expire() {
        let authorizer = offline();
        let action = NodeAction::of(&http::Method::GET, "/containerLogs/a/b/c");
        let who = |user: &str| Requester {
            user: user.into(),
            groups: vec!["system:authenticated".into()],
        };
        authorizer.remember((who("ops"), action.clone()), true);
        authorizer.remember((who("viewer"), action.clone()), false);
        assert_eq!(authorizer.authorize(&who("ops"), &action).await, Ok(()));
        assert_eq!(
            authorizer.authorize(&who("viewer"), &action).await,
            Err(Refusal::Forbidden(
                "Forbidden (user=viewer, verb=get, resource=nodes, subresource=proxy)".into()
            ))
        );
        // Expired: the apiserver is asked again (and cannot be reached: 503, not allowed).
        authorizer
            .cache
            .lock()
            .unwrap()
            .insert((who("ops"), action.clone()), (true, Instant::now()));
        match authorizer.authorize(&who("ops"), &action).await {
            Err(Refusal::Unavailable(message)) => assert!(
                message.starts_with(
                    "Authorization error (user=ops, verb=get, resource=nodes, subresource=proxy)"
                ),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[tokio::test]
    async fn token_answers_are_cached_and_an_unreachable_apiserver_is_no_answer() {
        let authorizer = offline();
        match authorizer.authenticate_token("t1").await {
            Err(Refusal::Unavailable(message)) => assert!(
                message.starts_with("Authentication error: the apiserver could not review"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(b"t1").into();
        let ops = Requester {
            user: "ops".into(),
            groups: vec!["system:authenticated".into()],
        };
        authorizer.tokens.lock().unwrap().insert(
            key,
            (Some(ops.clone()), Instant::now() + Duration::from_secs(60)),
        );
        assert_eq!(authorizer.authenticate_token("t1").await, Ok(Some(ops)));
    }

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n2");
        let cert = params.self_signed(&key).unwrap();
        let who = Requester::from_certificate(cert.der()).unwrap();
        assert_eq!(who.user, "system:node:n2");
        assert_eq!(who.groups, vec!["system:nodes", "system:authenticated"]);

        let mut nameless = rcgen::CertificateParams::default();
        nameless.distinguished_name = rcgen::DistinguishedName::new();
        let cert = nameless.self_signed(&key).unwrap();
        assert_eq!(Requester::from_certificate(cert.der()), None);
    }
}

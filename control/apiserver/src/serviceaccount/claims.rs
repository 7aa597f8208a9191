//! The claims of a service-account token, as Kubernetes puts them (`pkg/serviceaccount/claims.go`):
//!
//! ```json
//! {"iss": "https://kubernetes.default.svc.cluster.local",
//!  "sub": "system:serviceaccount:NS:NAME",
//!  "aud": ["https://kubernetes.default.svc.cluster.local"],
//!  "exp": 1700003600, "iat": 1700000000, "nbf": 1700000000, "jti": "<uuid>",
//!  "kubernetes.io": {"namespace": "NS",
//!                    "serviceaccount": {"name": "NAME", "uid": "..."},
//!                    "pod": {"name": "...", "uid": "..."},
//!                    "node": {"name": "...", "uid": "..."}}}
//! ```
//!
//! and the checks that need nothing but the claims and the clock (expiry, not-before and
//! issued-at with go-jose's one-minute leeway; audiences). The checks against stored objects
//! are the authenticator's.

use serde::{Deserialize, Deserializer, Serialize};

use crate::authn::{GROUP_AUTHENTICATED, Identity};

/// The clock skew tolerated on `exp`, `nbf` and `iat` (go-jose's `DefaultLeeway`).
pub const LEEWAY_SECONDS: i64 = 60;

/// The user name prefix of service accounts.
pub const USER_PREFIX: &str = "system:serviceaccount:";
/// The group of every service account.
pub const GROUP_ALL: &str = "system:serviceaccounts";

/// A bound object's name and uid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

impl ObjectRef {
    /// A reference to `name` with `uid`.
    pub fn new(name: impl Into<String>, uid: impl Into<String>) -> Self {
        ObjectRef {
            name: name.into(),
            uid: uid.into(),
        }
    }
}

/// The `kubernetes.io` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: ObjectRef,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The node of the bound pod (informational, as Kubernetes' ServiceAccountTokenPodNodeInfo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// Every claim of a service-account token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer (`--service-account-issuer`).
    pub iss: String,
    /// `system:serviceaccount:NS:NAME`.
    pub sub: String,
    /// The audiences (a JSON string or array on input, always an array on output).
    #[serde(deserialize_with = "one_or_many", default)]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// The token's unique id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// What the token is bound to.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// What a new token says about its subject and lifetime.
#[derive(Clone, Debug)]
pub struct TokenSpec<'a> {
    /// The issuer.
    pub issuer: &'a str,
    /// The audiences.
    pub audiences: Vec<String>,
    /// The service account's namespace.
    pub namespace: &'a str,
    /// The service account.
    pub service_account: ObjectRef,
    /// The pod, secret and node the token is bound to.
    pub pod: Option<ObjectRef>,
    /// The bound secret.
    pub secret: Option<ObjectRef>,
    /// The bound pod's node.
    pub node: Option<ObjectRef>,
    /// Lifetime in seconds.
    pub expiration_seconds: i64,
}

impl TokenSpec<'_> {
    /// The claims of a token issued at `now` (seconds since the epoch).
    pub fn claims(&self, now: i64) -> Claims {
        Claims {
            iss: self.issuer.to_string(),
            sub: format!(
                "{USER_PREFIX}{}:{}",
                self.namespace, self.service_account.name
            ),
            aud: self.audiences.clone(),
            exp: now.saturating_add(self.expiration_seconds),
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaims {
                namespace: self.namespace.to_string(),
                serviceaccount: self.service_account.clone(),
                pod: self.pod.clone(),
                secret: self.secret.clone(),
                node: self.node.clone(),
            },
        }
    }
}

impl Claims {
    /// Checks expiry, not-before and issued-at against `now` (seconds since the epoch),
    /// with [`LEEWAY_SECONDS`], in Kubernetes' words.
    pub fn check_times(&self, now: i64) -> Result<(), String> {
        if now > self.exp.saturating_add(LEEWAY_SECONDS) {
            return Err("service account token has expired".into());
        }
        if now < self.nbf.saturating_sub(LEEWAY_SECONDS) {
            return Err("service account token is not valid yet".into());
        }
        if now < self.iat.saturating_sub(LEEWAY_SECONDS) {
            return Err("service account token is issued in the future".into());
        }
        Ok(())
    }

    /// The audiences both the token and the apiserver (`--api-audiences`) have; an error
    /// when there are none.
    pub fn check_audiences(&self, api_audiences: &[String]) -> Result<Vec<String>, String> {
        let token = if self.aud.is_empty() {
            api_audiences
        } else {
            &self.aud[..]
        };
        let common: Vec<String> = token
            .iter()
            .filter(|a| api_audiences.contains(a))
            .cloned()
            .collect();
        if common.is_empty() && !api_audiences.is_empty() {
            return Err(format!(
                "token audiences {token:?} is invalid for the target audiences {api_audiences:?}"
            ));
        }
        Ok(common)
    }

    /// Checks that the subject and the `kubernetes.io` claim agree and name an account.
    pub fn check_subject(&self) -> Result<(), String> {
        let k = &self.kubernetes;
        if k.namespace.is_empty() || k.serviceaccount.name.is_empty() {
            return Err("service account token claims lack the namespace or name".into());
        }
        if k.serviceaccount.uid.is_empty() {
            return Err("service account token claims lack the service account uid".into());
        }
        let expected = format!("{USER_PREFIX}{}:{}", k.namespace, k.serviceaccount.name);
        if self.sub != expected {
            return Err(format!(
                "service account token subject {:?} does not match its claims ({expected:?})",
                self.sub
            ));
        }
        Ok(())
    }

    /// The user the token authenticates as: `system:serviceaccount:NS:NAME` in
    /// `system:serviceaccounts`, `system:serviceaccounts:NS` and `system:authenticated`.
    pub fn identity(&self) -> Identity {
        identity(
            &self.kubernetes.namespace,
            &self.kubernetes.serviceaccount.name,
        )
    }
}

/// The identity of service account `name` in `namespace`.
pub fn identity(namespace: &str, name: &str) -> Identity {
    Identity {
        user: format!("{USER_PREFIX}{namespace}:{name}"),
        groups: vec![
            GROUP_ALL.to_string(),
            format!("{GROUP_ALL}:{namespace}"),
            GROUP_AUTHENTICATED.to_string(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

    fn spec() -> TokenSpec<'static> {
        TokenSpec {
            issuer: ISSUER,
            audiences: vec![ISSUER.to_string()],
            namespace: "apps",
            service_account: ObjectRef::new("builder", "sa-uid"),
            pod: Some(ObjectRef::new("web-1", "pod-uid")),
            secret: None,
            node: Some(ObjectRef::new("node-a", "node-uid")),
            expiration_seconds: 3600,
        }
    }

    #[test]
    fn claims_are_laid_out_as_kubernetes_puts_them() {
        let claims = spec().claims(1_700_000_000);
        let json = serde_json::to_value(&claims).expect("json");
        assert_eq!(json["iss"], ISSUER);
        assert_eq!(json["sub"], "system:serviceaccount:apps:builder");
        assert_eq!(json["aud"], serde_json::json!([ISSUER]));
        assert_eq!(json["iat"], 1_700_000_000);
        assert_eq!(json["nbf"], 1_700_000_000);
        assert_eq!(json["exp"], 1_700_003_600);
        assert_eq!(json["jti"].as_str().map(str::len), Some(36));
        assert_eq!(
            json["kubernetes.io"],
            serde_json::json!({
                "namespace": "apps",
                "serviceaccount": {"name": "builder", "uid": "sa-uid"},
                "pod": {"name": "web-1", "uid": "pod-uid"},
                "node": {"name": "node-a", "uid": "node-uid"},
            })
        );
        let back: Claims = serde_json::from_value(json).expect("parses back");
        assert_eq!(back, claims);
    }

    #[test]
    fn a_single_string_audience_is_read_as_a_list() {
        let mut json = serde_json::to_value(spec().claims(0)).expect("json");
        json["aud"] = serde_json::json!("vault");
        let claims: Claims = serde_json::from_value(json).expect("parses");
        assert_eq!(claims.aud, vec!["vault"]);
    }

    #[test]
    fn expiry_not_before_and_issued_at_allow_one_minute_of_skew() {
        let claims = spec().claims(1000);
        assert_eq!(claims.check_times(1000), Ok(()));
        assert_eq!(claims.check_times(1000 + 3600 + 60), Ok(()));
        assert_eq!(
            claims.check_times(1000 + 3600 + 61),
            Err("service account token has expired".into())
        );
        assert_eq!(claims.check_times(1000 - 60), Ok(()));
        assert_eq!(
            claims.check_times(1000 - 61),
            Err("service account token is not valid yet".into())
        );
        let mut future = claims.clone();
        future.nbf = 0;
        assert_eq!(
            future.check_times(900),
            Err("service account token is issued in the future".into())
        );
    }

    #[test]
    fn audiences_must_meet_the_apiservers() {
        let api = vec![ISSUER.to_string(), "k3s".to_string()];
        let claims = spec().claims(0);
        assert_eq!(claims.check_audiences(&api), Ok(vec![ISSUER.to_string()]));
        let mut vault = claims.clone();
        vault.aud = vec!["vault".into()];
        let err = vault.check_audiences(&api).expect_err("refused");
        assert_eq!(
            err,
            format!(
                "token audiences [\"vault\"] is invalid for the target audiences [\"{ISSUER}\", \"k3s\"]"
            )
        );
        let mut none = claims;
        none.aud.clear();
        assert_eq!(
            none.check_audiences(&api),
            Ok(api.clone()),
            "legacy tokens get the apiserver's"
        );
    }

    #[test]
    fn the_subject_must_match_the_kubernetes_claim() {
        let mut claims = spec().claims(0);
        assert_eq!(claims.check_subject(), Ok(()));
        claims.sub = "system:serviceaccount:kube-system:admin".into();
        assert!(claims.check_subject().is_err());
        let mut no_uid = spec().claims(0);
        no_uid.kubernetes.serviceaccount.uid.clear();
        assert!(no_uid.check_subject().is_err());
    }

    #[test]
    fn the_identity_is_the_service_account_user_in_its_groups() {
        let id = spec().claims(0).identity();
        assert_eq!(id.user, "system:serviceaccount:apps:builder");
        assert_eq!(
            id.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:apps",
                "system:authenticated"
            ]
        );
    }
}

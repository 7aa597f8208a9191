//! Bootstrap tokens, as Kubernetes has them: Secrets of type
//! `bootstrap.kubernetes.io/token` named `bootstrap-token-<id>` in `kube-system`, whose
//! token `<id>.<secret>` authenticates as `system:bootstrap:<id>` in the group
//! `system:bootstrappers` (plus its `auth-extra-groups`).
//!
//! A node joins with one (`wasmkube server token create` makes them): the token only lets
//! it ask for its own certificate (a CertificateSigningRequest the server approves for
//! `system:bootstrappers`), which it uses from then on. A token is refused once it expired
//! (`expiration`), once its Secret is deleted or being deleted, when it does not allow
//! authentication (`usage-bootstrap-authentication: "true"`) and when its secret does not
//! match (compared in constant time). The token cleaner of `wasmkube-controllers` deletes
//! expired tokens.
//!
//! [`BootstrapTokenAuthenticator`] is one link of the apiserver's bearer-token chain
//! (`authn`); [`BootstrapToken`] and [`secret_for`] are what the CLI creates tokens with.

use std::fmt;

use async_trait::async_trait;
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::authn::{BearerTokenAuthenticator, Identity};
use crate::object;
use crate::state::AppState;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The prefix of a bootstrap token Secret's name; the token id follows.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// The namespace bootstrap token Secrets live in.
pub const NAMESPACE: &str = "kube-system";
/// The group every bootstrap token authenticates in.
pub const GROUP_BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The user name prefix of a bootstrap token; the token id follows.
pub const USER_PREFIX: &str = "system:bootstrap:";
/// The Secret keys.
pub const KEY_TOKEN_ID: &str = "token-id";
/// The token's secret part.
pub const KEY_TOKEN_SECRET: &str = "token-secret";
/// When the token expires (RFC 3339); absent = never.
pub const KEY_EXPIRATION: &str = "expiration";
/// A human description.
pub const KEY_DESCRIPTION: &str = "description";
/// Extra groups (comma-separated, each `system:bootstrappers:...`).
pub const KEY_EXTRA_GROUPS: &str = "auth-extra-groups";
/// The prefix of the usage keys (`usage-bootstrap-authentication`, `...-signing`).
pub const USAGE_PREFIX: &str = "usage-bootstrap-";
/// The usages `token create` gives by default, as kubeadm.
pub const DEFAULT_USAGES: &[&str] = &["signing", "authentication"];

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A bootstrap token `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`).
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part, also in the Secret's name.
    pub id: String,
    /// The secret part.
    pub secret: String,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl BootstrapToken {
    /// A new random token.
    pub fn generate() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let mut part = |len| {
            (0..len)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect::<String>()
        };
        BootstrapToken {
            id: part(ID_LEN),
            secret: part(SECRET_LEN),
        }
    }

    /// Parses `<id>.<secret>`; `None` if `token` does not have that shape.
    pub fn parse(token: &str) -> Option<Self> {
        let (id, secret) = token.split_once('.')?;
        (is_token_part(id, ID_LEN) && is_token_part(secret, SECRET_LEN)).then(|| BootstrapToken {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// Whether `id` is a token id (6 characters of `[a-z0-9]`).
    pub fn is_id(id: &str) -> bool {
        is_token_part(id, ID_LEN)
    }

    /// The name of this token's Secret.
    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }
}

/// What a token Secret says, for `token list` and for authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token (id and secret).
    pub token: BootstrapToken,
    /// The description, possibly empty.
    pub description: String,
    /// When the token expires; `None` = never.
    pub expiration: Option<jiff::Timestamp>,
    /// The raw expiration value when it does not parse.
    pub bad_expiration: Option<String>,
    /// The usages set to `"true"` (`authentication`, `signing`), sorted.
    pub usages: Vec<String>,
    /// The extra groups.
    pub extra_groups: Vec<String>,
}

fn data_string(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret.get("data")?.get(key)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

impl TokenInfo {
    /// Reads a bootstrap token Secret (an API object, `data` base64-encoded); `None` if it
    /// is not one.
    pub fn from_secret(secret: &Value) -> Option<Self> {
        if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
            return None;
        }
        let name = object::name(secret);
        let id = name.strip_prefix(SECRET_PREFIX)?;
        let token_id = data_string(secret, KEY_TOKEN_ID)?;
        if token_id != id {
            return None;
        }
        let token = BootstrapToken {
            id: token_id,
            secret: data_string(secret, KEY_TOKEN_SECRET)?,
        };
        let raw_expiration = data_string(secret, KEY_EXPIRATION).filter(|e| !e.is_empty());
        let expiration = raw_expiration.as_deref().and_then(|e| e.parse().ok());
        let bad_expiration = raw_expiration.filter(|_| expiration.is_none());
        let mut usages: Vec<String> = secret
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(key, _)| key.strip_prefix(USAGE_PREFIX))
            .filter(|usage| {
                data_string(secret, &format!("{USAGE_PREFIX}{usage}")).as_deref() == Some("true")
            })
            .map(str::to_string)
            .collect();
        usages.sort();
        let extra_groups = data_string(secret, KEY_EXTRA_GROUPS)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Some(TokenInfo {
            token,
            description: data_string(secret, KEY_DESCRIPTION).unwrap_or_default(),
            expiration,
            bad_expiration,
            usages,
            extra_groups,
        })
    }

    /// Whether the token has expired at `now` (an unreadable expiration counts as expired).
    pub fn is_expired(&self, now: jiff::Timestamp) -> bool {
        self.bad_expiration.is_some() || self.expiration.is_some_and(|e| e <= now)
    }
}

/// Whether `group` may be an extra group of a bootstrap token:
/// `system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`.
pub fn is_extra_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 256
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && rest
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The Secret for a new token, as `kubeadm token create` writes it (`stringData`).
pub fn secret_for(
    token: &BootstrapToken,
    expiration: Option<jiff::Timestamp>,
    description: &str,
    usages: &[String],
    extra_groups: &[String],
) -> Value {
    let mut data = Map::new();
    data.insert(KEY_TOKEN_ID.into(), json!(token.id));
    data.insert(KEY_TOKEN_SECRET.into(), json!(token.secret));
    if let Some(expiration) = expiration {
        data.insert(
            KEY_EXPIRATION.into(),
            json!(expiration.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        );
    }
    if !description.is_empty() {
        data.insert(KEY_DESCRIPTION.into(), json!(description));
    }
    for usage in usages {
        data.insert(format!("{USAGE_PREFIX}{usage}"), json!("true"));
    }
    if !extra_groups.is_empty() {
        data.insert(KEY_EXTRA_GROUPS.into(), json!(extra_groups.join(",")));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": token.secret_name(), "namespace": NAMESPACE},
        "type": SECRET_TYPE,
        "stringData": data,
    })
}

/// Why a token Secret does not authenticate its token, for the debug log.
fn refusal(secret: &Value, token: &BootstrapToken, now: jiff::Timestamp) -> Option<&'static str> {
    if object::is_deleting(secret) {
        return Some("its Secret is being deleted");
    }
    let Some(info) = TokenInfo::from_secret(secret) else {
        return Some("its Secret is not a bootstrap token");
    };
    let secret_matches =
        crate::authn::constant_time_eq(info.token.secret.as_bytes(), token.secret.as_bytes());
    if !secret_matches {
        return Some("the token secret does not match");
    }
    if info.is_expired(now) {
        return Some("it has expired");
    }
    if !info.usages.iter().any(|u| u == "authentication") {
        return Some("it may not be used for authentication");
    }
    if !info.extra_groups.iter().all(|g| is_extra_group(g)) {
        return Some("an extra group is not system:bootstrappers:...");
    }
    None
}

/// The identity `secret` gives `token` at `now`, if it authenticates it.
pub fn identity_of(
    secret: &Value,
    token: &BootstrapToken,
    now: jiff::Timestamp,
) -> Option<Identity> {
    if let Some(why) = refusal(secret, token, now) {
        tracing::debug!(token_id = %token.id, why, "bootstrap token refused");
        return None;
    }
    let info = TokenInfo::from_secret(secret)?;
    let mut groups = vec![GROUP_BOOTSTRAPPERS.to_string()];
    groups.extend(info.extra_groups);
    Some(Identity {
        user: format!("{USER_PREFIX}{}", token.id),
        groups,
    })
}

/// Authenticates bootstrap tokens against their Secrets in the store.
#[derive(Clone)]
pub struct BootstrapTokenAuthenticator {
    state: AppState,
}

impl fmt::Debug for BootstrapTokenAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapTokenAuthenticator")
            .finish_non_exhaustive()
    }
}

impl BootstrapTokenAuthenticator {
    /// An authenticator reading token Secrets from `state`'s store.
    pub fn new(state: AppState) -> Self {
        BootstrapTokenAuthenticator { state }
    }
}

#[async_trait]
impl BearerTokenAuthenticator for BootstrapTokenAuthenticator {
    async fn authenticate(&self, bearer: &str) -> Option<Identity> {
        let token = BootstrapToken::parse(bearer)?;
        let rt = self.state.registry().by_kind("", "Secret")?;
        let key = rt.key(Some(NAMESPACE), &token.secret_name());
        let secret = match self.state.store().get(&key).await {
            Ok(Some(kv)) => object::decode(&kv).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "reading a bootstrap token failed");
                None
            }
        };
        secret.and_then(|s| identity_of(&s, &token, jiff::Timestamp::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Secret `secret_for` describes, as the API stores it (`data`, base64).
    fn stored(secret: &Value) -> Value {
        let mut s = secret.clone();
        let data: Map<String, Value> = s["stringData"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap())),
                )
            })
            .collect();
        s.as_object_mut().unwrap().remove("stringData");
        s["data"] = Value::Object(data);
        s
    }

    fn now() -> jiff::Timestamp {
        "2025-06-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn tokens_have_kubernetes_shape() {
        let token = BootstrapToken::generate();
        let text = token.to_string();
        assert_eq!(BootstrapToken::parse(&text), Some(token.clone()));
        assert_eq!(token.secret_name(), format!("bootstrap-token-{}", token.id));
        for bad in [
            "abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abc.def",
            "",
        ] {
            assert_eq!(BootstrapToken::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_valid_token_authenticates_as_its_bootstrap_user() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let groups = vec!["system:bootstrappers:workers".to_string()];
        let secret = stored(&secret_for(
            &token,
            Some("2025-06-02T00:00:00Z".parse().unwrap()),
            "for node a",
            &["authentication".into(), "signing".into()],
            &groups,
        ));
        let id = identity_of(&secret, &token, now()).expect("authenticates");
        assert_eq!(id.user, "system:bootstrap:abcdef");
        assert_eq!(
            id.groups,
            vec!["system:bootstrappers", "system:bootstrappers:workers"]
        );
        let info = TokenInfo::from_secret(&secret).unwrap();
        assert_eq!(info.usages, vec!["authentication", "signing"]);
        assert_eq!(info.description, "for node a");
    }

    #[test]
    fn expired_wrong_or_unusable_tokens_are_refused() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let usages = vec!["authentication".to_string()];
        let expired = stored(&secret_for(
            &token,
            Some("2025-05-31T00:00:00Z".parse().unwrap()),
            "",
            &usages,
            &[],
        ));
        assert_eq!(identity_of(&expired, &token, now()), None);
        let forever = stored(&secret_for(&token, None, "", &usages, &[]));
        assert!(identity_of(&forever, &token, now()).is_some());
        let wrong = BootstrapToken::parse("abcdef.0123456789abcdee").unwrap();
        assert_eq!(identity_of(&forever, &wrong, now()), None);
        let signing_only = stored(&secret_for(&token, None, "", &["signing".into()], &[]));
        assert_eq!(identity_of(&signing_only, &token, now()), None);
        let bad_group = stored(&secret_for(
            &token,
            None,
            "",
            &usages,
            &["system:masters".into()],
        ));
        assert_eq!(identity_of(&bad_group, &token, now()), None);
        let mut deleting = forever.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2025-05-31T00:00:00Z");
        assert_eq!(identity_of(&deleting, &token, now()), None);
    }

    #[test]
    fn extra_groups_must_be_bootstrapper_subgroups() {
        assert!(is_extra_group(
            "system:bootstrappers:kubeadm:default-node-token"
        ));
        assert!(!is_extra_group("system:bootstrappers:"));
        assert!(!is_extra_group("system:masters"));
        assert!(!is_extra_group("system:bootstrappers:Bad"));
    }
}

//! Encryption at rest, as kube-apiserver's `--encryption-provider-config`: an
//! EncryptionConfiguration (apiserver.config.k8s.io/v1) names, per resource, a list of
//! providers. The first provider encrypts every write; all of them are tried, by the prefix a
//! stored value carries, on reads, so a key can be rotated by putting a new one first and
//! rewriting the objects (`kubectl get secrets -A -o json | kubectl replace --validate=false
//! -f -`: kubectl validates a List against /openapi/v2, not served yet), and
//! `identity: {}` last reads what was stored unencrypted.
//!
//! [`EncryptedStore`] applies it beneath the apiserver, as Kubernetes' value transformers sit
//! beneath its storage: every read and write of the store, watches included, goes through it,
//! whichever backend is underneath.
//!
//! A new cluster gets `<data-dir>/encryption-config.yaml` (0600): Secrets encrypted with a
//! fresh secretbox key, then `identity` (so a store written before encryption stays readable
//! and is encrypted as objects are rewritten).

mod providers;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use rand::RngCore;
use serde::Deserialize;
use wasmkube_store::{
    Event, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, Watch,
};

pub use providers::{KeyTransformer, TransformError};

/// The file a new cluster's default configuration is written to, in the data directory.
pub const DEFAULT_CONFIG_FILE: &str = "encryption-config.yaml";

/// Why an EncryptionConfiguration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read or written.
    #[error("encryption provider config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid EncryptionConfiguration.
    #[error("encryption provider config {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words a person can act on.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EncryptionConfiguration {
    api_version: String,
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfiguration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceConfiguration {
    resources: Vec<String>,
    providers: Vec<ProviderConfiguration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderConfiguration {
    aescbc: Option<KeysConfiguration>,
    aesgcm: Option<KeysConfiguration>,
    secretbox: Option<KeysConfiguration>,
    identity: Option<serde_json::Value>,
    kms: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysConfiguration {
    keys: Vec<KeyConfiguration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfiguration {
    name: String,
    secret: String,
}

/// One provider of a resource's list.
#[derive(Debug)]
enum Provider {
    Identity,
    Keys(Vec<KeyTransformer>),
}

/// The providers of the resources one entry names, in order.
#[derive(Debug)]
struct Chain {
    providers: Vec<Provider>,
}

impl Chain {
    fn encrypt(&self, key: &str, plain: Bytes) -> Result<Bytes, TransformError> {
        match self.providers.first() {
            Some(Provider::Keys(keys)) => keys[0].encrypt(key, &plain).map(Bytes::from),
            _ => Ok(plain),
        }
    }

    /// Whether `stored` was written by anything but the first provider (and its first key).
    fn is_stale(&self, stored: &[u8]) -> bool {
        match self.providers.first() {
            Some(Provider::Keys(keys)) => !stored.starts_with(keys[0].prefix()),
            _ => stored.starts_with(providers::ENCRYPTED_PREFIX),
        }
    }

    fn decrypt(&self, key: &str, stored: Bytes) -> Result<Bytes, TransformError> {
        if !stored.starts_with(providers::ENCRYPTED_PREFIX) {
            return if self
                .providers
                .iter()
                .any(|p| matches!(p, Provider::Identity))
            {
                Ok(stored)
            } else {
                Err(TransformError::NotEncrypted {
                    key: key.to_string(),
                })
            };
        }
        let found = self
            .providers
            .iter()
            .filter_map(|p| match p {
                Provider::Keys(keys) => Some(keys),
                Provider::Identity => None,
            })
            .flatten()
            .find(|k| stored.starts_with(k.prefix()));
        match found {
            Some(k) => k.decrypt(key, &stored).map(Bytes::from),
            None => Err(TransformError::NoMatchingKey {
                key: key.to_string(),
                prefix: prefix_of(&stored),
            }),
        }
    }
}

/// `k8s:enc:<provider>:v1:<name>:` of an encrypted value, for messages.
fn prefix_of(stored: &[u8]) -> String {
    let end = stored
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b':')
        .nth(4)
        .map_or(stored.len().min(64), |(i, _)| i + 1);
    String::from_utf8_lossy(&stored[..end]).into_owned()
}

/// Which resources an entry of `resources:` names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// `secrets` (core) or `deployments.apps`.
    Exact { group: String, plural: String },
    /// `*.apps`, or `*.` for the core group.
    Group(String),
    /// `*.*`.
    All,
}

impl Matcher {
    fn parse(s: &str) -> Result<Matcher, String> {
        let (plural, group) = s.split_once('.').unwrap_or((s, ""));
        match (plural, group) {
            ("*", "*") => Ok(Matcher::All),
            ("*", group) => Ok(Matcher::Group(group.to_string())),
            ("", _) => Err(format!(
                "{s:?} is not a resource (e.g. secrets, *.apps, *.*)"
            )),
            (plural, group) if plural.contains('*') || group.contains('*') => Err(format!(
                "{s:?}: a wildcard names a whole group (*.apps, *. for the core group) or \
                 everything (*.*)"
            )),
            (plural, group) => Ok(Matcher::Exact {
                group: group.to_string(),
                plural: plural.to_string(),
            }),
        }
    }

    fn matches(&self, group: &str, plural: &str) -> bool {
        match self {
            Matcher::Exact {
                group: g,
                plural: p,
            } => g == group && p == plural,
            Matcher::Group(g) => g == group,
            Matcher::All => true,
        }
    }
}

/// A parsed EncryptionConfiguration: which chain applies to which resources.
#[derive(Debug, Default)]
pub struct EncryptionConfig {
    rules: Vec<(Matcher, Arc<Chain>)>,
}

impl EncryptionConfig {
    /// Parses the YAML (or JSON) of an EncryptionConfiguration; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<EncryptionConfig, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let config: EncryptionConfiguration =
            serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if config.kind != "EncryptionConfiguration"
            || config.api_version != "apiserver.config.k8s.io/v1"
        {
            return Err(invalid(format!(
                "expected apiVersion apiserver.config.k8s.io/v1, kind EncryptionConfiguration; \
                 found {}, {}",
                config.api_version, config.kind
            )));
        }
        let mut rules = Vec::new();
        for (i, entry) in config.resources.into_iter().enumerate() {
            let at = format!("resources[{i}]");
            if entry.resources.is_empty() {
                return Err(invalid(format!("{at}.resources: must name at least one")));
            }
            if entry.providers.is_empty() {
                return Err(invalid(format!("{at}.providers: must list at least one")));
            }
            let mut chain = Vec::new();
            for (j, p) in entry.providers.into_iter().enumerate() {
                chain.push(
                    provider(p).map_err(|why| invalid(format!("{at}.providers[{j}]: {why}")))?,
                );
            }
            let chain = Arc::new(Chain { providers: chain });
            for r in &entry.resources {
                let m =
                    Matcher::parse(r).map_err(|why| invalid(format!("{at}.resources: {why}")))?;
                if rules.iter().any(|(seen, _)| *seen == m) {
                    return Err(invalid(format!(
                        "{at}.resources: {r:?} is named twice; each resource may be in one entry"
                    )));
                }
                rules.push((m, Arc::clone(&chain)));
            }
        }
        Ok(EncryptionConfig { rules })
    }

    /// Reads the configuration at `path`.
    pub fn load(path: &Path) -> Result<EncryptionConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The configuration of `data_dir`: its [`DEFAULT_CONFIG_FILE`], written first (0600,
    /// Secrets with a new secretbox key, then identity) when there is none.
    pub fn load_or_create_default(data_dir: &Path) -> Result<EncryptionConfig, ConfigError> {
        let path = data_dir.join(DEFAULT_CONFIG_FILE);
        if !path.exists() {
            write_default(&path)?;
        }
        Self::load(&path)
    }

    /// Whether values of `group`/`plural` are transformed at all.
    pub fn applies_to(&self, group: &str, plural: &str) -> bool {
        self.chain(group, plural)
            .is_some_and(|c| c.providers.iter().any(|p| matches!(p, Provider::Keys(_))))
    }

    fn chain(&self, group: &str, plural: &str) -> Option<&Arc<Chain>> {
        self.rules
            .iter()
            .find(|(m, _)| m.matches(group, plural))
            .map(|(_, c)| c)
    }

    /// The chain for a store key `/registry/<group|core>/<plural>/...`.
    fn chain_for_key(&self, key: &str) -> Option<&Arc<Chain>> {
        if self.rules.is_empty() {
            return None;
        }
        let mut parts = key.strip_prefix("/registry/")?.splitn(3, '/');
        let group = parts.next()?;
        let plural = parts.next()?;
        let group = if group == "core" { "" } else { group };
        self.chain(group, plural)
    }
}

/// A constructor of one provider's keys.
type MakeKey = fn(&str, Vec<u8>) -> Result<KeyTransformer, providers::KeyError>;

fn provider(p: ProviderConfiguration) -> Result<Provider, String> {
    let ProviderConfiguration {
        aescbc,
        aesgcm,
        secretbox,
        identity,
        kms,
    } = p;
    let named = [
        aescbc.is_some(),
        aesgcm.is_some(),
        secretbox.is_some(),
        identity.is_some(),
        kms.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if named != 1 {
        return Err(
            "each provider names exactly one of aescbc, aesgcm, secretbox, identity".into(),
        );
    }
    if kms.is_some() {
        return Err("kms providers are not supported; use aescbc, aesgcm or secretbox".into());
    }
    if identity.is_some() {
        return Ok(Provider::Identity);
    }
    let (kind, keys, make): (_, _, MakeKey) = if let Some(k) = aescbc {
        ("aescbc", k.keys, KeyTransformer::aescbc)
    } else if let Some(k) = aesgcm {
        ("aesgcm", k.keys, KeyTransformer::aesgcm)
    } else {
        let k = secretbox.expect("one provider is named");
        ("secretbox", k.keys, KeyTransformer::secretbox)
    };
    if keys.is_empty() {
        return Err(format!("{kind}.keys: must list at least one key"));
    }
    let mut out = Vec::new();
    for key in keys {
        if key.name.is_empty() || key.name.contains(':') {
            return Err(format!(
                "{kind} key name {:?}: must be non-empty and contain no ':'",
                key.name
            ));
        }
        if out.iter().any(|k: &KeyTransformer| {
            k.prefix() == format!("k8s:enc:{kind}:v1:{}:", key.name).as_bytes()
        }) {
            return Err(format!("{kind} key name {:?} is used twice", key.name));
        }
        let secret = base64::engine::general_purpose::STANDARD
            .decode(key.secret.trim())
            .map_err(|e| format!("{kind} key {:?}: the secret is not base64: {e}", key.name))?;
        out.push(make(&key.name, secret).map_err(|e| e.to_string())?);
    }
    Ok(Provider::Keys(out))
}

fn write_default(path: &Path) -> Result<(), ConfigError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let secret = base64::engine::general_purpose::STANDARD.encode(key);
    let text = format!(
        "# Written by `wasmkube server` for this cluster (kube-apiserver's \
         --encryption-provider-config).\n\
         # Secrets are encrypted at rest with the secretbox key below; `identity` reads what was\n\
         # stored before. To rotate: add a new key first, restart, rewrite every Secret\n\
         # (kubectl get secrets -A -o json | kubectl replace --validate=false -f -), then\n\
         # remove the old key and restart.\n\
         # Losing this file loses every Secret: back it up with the store.\n\
         apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n\
         \x20 - resources:\n\
         \x20     - secrets\n\
         \x20   providers:\n\
         \x20     - secretbox:\n\
         \x20         keys:\n\
         \x20           - name: key1\n\
         \x20             secret: {secret}\n\
         \x20     - identity: {{}}\n"
    );
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Written under a temporary name and renamed, so a crash never leaves half a key.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A [`Store`] that encrypts and decrypts the values of the resources an
/// [`EncryptionConfig`] names; everything else passes through untouched.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    config: Arc<EncryptionConfig>,
}

impl EncryptedStore {
    /// Wraps `inner`; with an empty configuration it is returned as it is.
    pub fn wrap(inner: Arc<dyn Store>, config: EncryptionConfig) -> Arc<dyn Store> {
        if config.rules.is_empty() {
            return inner;
        }
        Arc::new(EncryptedStore {
            inner,
            config: Arc::new(config),
        })
    }
}

fn backend(e: TransformError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn decrypt_kv(config: &EncryptionConfig, mut kv: KeyValue) -> Result<KeyValue, StoreError> {
    if let Some(chain) = config.chain_for_key(&kv.key) {
        kv.value = chain.decrypt(&kv.key, kv.value).map_err(backend)?;
    }
    Ok(kv)
}

fn decrypt_event(config: &EncryptionConfig, event: Event) -> Result<Event, StoreError> {
    Ok(match event {
        Event::Put { kv, prev } => Event::Put {
            kv: decrypt_kv(config, kv)?,
            prev: prev.map(|p| decrypt_kv(config, p)).transpose()?,
        },
        Event::Delete { revision, prev } => Event::Delete {
            revision,
            prev: decrypt_kv(config, prev)?,
        },
    })
}

impl EncryptedStore {
    fn encrypt(&self, key: &str, value: Bytes) -> Result<Bytes, StoreError> {
        match self.config.chain_for_key(key) {
            Some(chain) => chain.encrypt(key, value).map_err(backend),
            None => Ok(value),
        }
    }
}

#[async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> wasmkube_store::Result<Option<KeyValue>> {
        self.inner
            .get(key)
            .await?
            .map(|kv| decrypt_kv(&self.config, kv))
            .transpose()
    }

    async fn list(&self, opts: ListOptions) -> wasmkube_store::Result<ListResult> {
        let mut result = self.inner.list(opts).await?;
        result.items = result
            .items
            .into_iter()
            .map(|kv| decrypt_kv(&self.config, kv))
            .collect::<Result<_, _>>()?;
        Ok(result)
    }

    async fn create(&self, key: &str, value: Bytes) -> wasmkube_store::Result<KeyValue> {
        let stored = self.encrypt(key, value.clone())?;
        let mut kv = self.inner.create(key, stored).await?;
        kv.value = value;
        Ok(kv)
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> wasmkube_store::Result<KeyValue> {
        let stored = self.encrypt(key, value.clone())?;
        let mut kv = self
            .inner
            .update(key, stored, expected_mod_revision)
            .await?;
        kv.value = value;
        Ok(kv)
    }

    fn health(&self) -> wasmkube_store::Result<()> {
        self.inner.health()
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> wasmkube_store::Result<(KeyValue, Revision)> {
        let (prev, revision) = self.inner.delete(key, expected_mod_revision).await?;
        Ok((decrypt_kv(&self.config, prev)?, revision))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> wasmkube_store::Result<Box<dyn Watch>> {
        let inner = self.inner.watch(prefix, after).await?;
        Ok(Box::new(DecryptingWatch {
            inner,
            config: Arc::clone(&self.config),
        }))
    }

    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }

    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }

    async fn compact(&self, revision: Revision) -> wasmkube_store::Result<()> {
        self.inner.compact(revision).await
    }

    async fn is_stale(&self, key: &str, mod_revision: Revision) -> bool {
        let Some(chain) = self.config.chain_for_key(key) else {
            return false;
        };
        match self.inner.get(key).await {
            Ok(Some(kv)) if kv.mod_revision == mod_revision => chain.is_stale(&kv.value),
            _ => false,
        }
    }
}

struct DecryptingWatch {
    inner: Box<dyn Watch>,
    config: Arc<EncryptionConfig>,
}

#[async_trait]
impl Watch for DecryptingWatch {
    async fn next(&mut self) -> wasmkube_store::Result<Event> {
        let event = self.inner.next().await?;
        decrypt_event(&self.config, event)
    }

    fn progress(&self) -> Revision {
        self.inner.progress()
    }
}

#[cfg(test)]
mod tests;

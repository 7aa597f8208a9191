//! OCI registries: pulling images into the node's store and pushing them from it, over the
//! OCI distribution API with the maintained `oci-client` crate (auth challenges, chunked
//! uploads, redirects are its work).
//!
//! A pull fetches the manifest (following an image index to its wasm child: platform
//! architecture `wasm`, else the only child), then the config and every layer that the store
//! lacks. Each blob is streamed to a temporary file and enters the store only through
//! [`ImageStore::ingest_blob`], which checks its digest and size, so a truncated or tampered
//! blob never becomes part of an image; the name is written last. A push sends the blobs the
//! registry lacks, then the manifest.
//!
//! Plain HTTP is used only for registries on this machine (`localhost`, `127.0.0.0/8`, `::1`)
//! and those listed in [`RegistryConfig::insecure_registries`]; HTTPS otherwise, trusting the
//! web PKI plus [`RegistryConfig::extra_ca_pem`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
pub use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::oci::{self, Descriptor};
use super::{ImageError, ImageStore, PullFuture, Puller, Reference};

/// The manifest media types a pull accepts.
const ACCEPTED_MANIFESTS: &[&str] = &[
    oci::MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    oci::MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_DOCKER_MANIFEST,
];
/// `application/vnd.oci.image.manifest.v1+json`.
pub(crate) const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's schema 2 image manifest.
const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The largest manifest or index a pull reads (the distribution registry's own limit is 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// How the node reaches registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registries (`host:port`) reached over plain HTTP although they are not on this machine.
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM) trusted for registries' HTTPS, besides the web PKI.
    pub extra_ca_pem: Vec<Vec<u8>>,
}

/// What a pull or push reports while it moves bytes (a progress bar, a log line).
pub trait TransferProgress: Send + Sync {
    /// A blob of `size` bytes starts moving.
    fn start(&self, digest: &str, size: u64);
    /// The blob moved completely (or was already there).
    fn done(&self, digest: &str);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl TransferProgress for NoProgress {
    fn start(&self, _digest: &str, _size: u64) {}
    fn done(&self, _digest: &str) {}
}

/// The registries a node pulls from and pushes to; one HTTP client per registry, reused.
pub struct Registries {
    config: RegistryConfig,
    clients: Mutex<HashMap<String, Arc<oci_client::Client>>>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The parts of a manifest or index a pull follows.
#[derive(Debug, Deserialize)]
struct Document {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl Document {
    fn is_index(&self) -> bool {
        self.media_type == oci::MEDIA_TYPE_OCI_INDEX
            || self.media_type == oci::MEDIA_TYPE_DOCKER_MANIFEST_LIST
            || (self.config.is_none() && !self.manifests.is_empty())
    }
}

/// Whether `registry` (`host[:port]`) is on this machine.
pub fn is_local_registry(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Registries {
    /// Registries reached as `config` says. Installs rustls' ring provider as the process
    /// default if none is (the registry client takes the process default).
    pub fn new(config: RegistryConfig) -> Registries {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Registries {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for `registry` with `auth`. oci-client keeps the first credentials a client
    /// is given per registry (and the tokens they earn), so each set of credentials has a
    /// client of its own: a pod's imagePullSecret never lends its access to another pod.
    pub(super) fn client(&self, registry: &str, auth: &RegistryAuth) -> Arc<oci_client::Client> {
        use sha2::{Digest as _, Sha256};
        let identity = match auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic(user, password) => {
                format!("{:x}", Sha256::digest(format!("basic\0{user}\0{password}")))
            }
            RegistryAuth::Bearer(token) => {
                format!("{:x}", Sha256::digest(format!("bearer\0{token}")))
            }
        };
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients
            .entry(format!("{registry}\0{identity}"))
            .or_insert_with(|| {
                let plain = is_local_registry(registry)
                    || self
                        .config
                        .insecure_registries
                        .iter()
                        .any(|r| r == registry);
                let config = ClientConfig {
                    protocol: if plain {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    extra_root_certificates: self
                        .config
                        .extra_ca_pem
                        .iter()
                        .map(|pem| Certificate {
                            encoding: CertificateEncoding::Pem,
                            data: pem.clone(),
                        })
                        .collect(),
                    connect_timeout: Some(std::time::Duration::from_secs(10)),
                    read_timeout: Some(std::time::Duration::from_secs(60)),
                    ..ClientConfig::default()
                };
                Arc::new(oci_client::Client::new(config))
            })
            .clone()
    }

    /// Pulls `reference` into `store` with `auth`; returns the digest the reference names
    /// (the index's, for a multi-platform image), which is now named `reference` in the store.
    pub async fn pull(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
        store: &ImageStore,
        progress: &dyn TransferProgress,
    ) -> Result<String, ImageError> {
        let failed = |message: String| ImageError::Pull {
            reference: reference.to_string(),
            message,
        };
        let remote = remote_reference(reference).map_err(failed)?;
        let client = self.client(&reference.domain, auth);
        let (bytes, digest) = client
            .pull_manifest_raw(&remote, auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| failed(describe(&e)))?;
        // What this pull adds to the store, removed again if the image turns out not to be
        // a wasm image: a refused pull leaves nothing behind.
        let mut added = Added::new(store);
        added.note(&digest);
        let top = ingest_manifest(store, &bytes, &digest, reference.digest.as_deref())
            .map_err(|e| failed(e.to_string()))?;
        let mut document = parse(&bytes).map_err(failed)?;
        let mut leaf = top.clone();
        if document.is_index() {
            let child = wasm_child(&document.manifests).ok_or_else(|| {
                added.remove();
                failed(format!(
                    "{NOT_WASM}: the image index {digest} has no manifest for a wasm platform \
                     (os wasi*, architecture wasm) among its {} (platforms: {}); {ACCEPTED}",
                    document.manifests.len(),
                    super::describe_platforms(&document.manifests)
                ))
            })?;
            added.note(&child.digest);
            let by_digest = remote.clone_with_digest(child.digest.clone());
            let (bytes, child_digest) = client
                .pull_manifest_raw(&by_digest, auth, ACCEPTED_MANIFESTS)
                .await
                .map_err(|e| failed(describe(&e)))?;
            leaf = ingest_manifest(store, &bytes, &child_digest, Some(&child.digest))
                .map_err(|e| failed(e.to_string()))?;
            document = parse(&bytes).map_err(failed)?;
        }
        let blobs = document.config.iter().chain(document.layers.iter());
        for blob in blobs {
            progress.start(&blob.digest, blob.size);
            if !store.has_blob(&blob.digest) {
                added.note(&blob.digest);
                pull_blob(&client, &remote, blob, store)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
            progress.done(&blob.digest);
        }
        // Only wasm images are kept: a Linux image is refused here, not when a pod runs it.
        let checked = {
            let (store, name, leaf) = (store.clone(), reference.to_string(), leaf.digest.clone());
            tokio::task::spawn_blocking(move || super::wasm::meta_for(&store, &name, &leaf)).await
        };
        let refusal = match checked {
            Ok(Ok(_)) => None,
            Ok(Err(ImageError::NotWasm { reason, .. })) => Some(format!(
                "{NOT_WASM}: {reason}; found {}; {ACCEPTED}",
                describe_found(store, &document)
            )),
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("checking the image stopped: {e}")),
        };
        if let Some(message) = refusal {
            added.remove();
            return Err(failed(message));
        }
        if reference.tag.is_some() || reference.digest.is_none() {
            store.tag(reference, &top)?;
        }
        Ok(top.digest)
    }

    /// Pushes the image named `local` in `store` to `remote` with `auth`: the blobs the
    /// registry lacks, then the manifest (and, for an index, each child the store holds).
    /// Returns the pushed top-level digest.
    pub async fn push(
        &self,
        store: &ImageStore,
        local: &str,
        remote: &Reference,
        auth: &RegistryAuth,
        progress: &dyn TransferProgress,
    ) -> Result<String, ImageError> {
        let failed = |message: String| ImageError::Push {
            reference: remote.to_string(),
            message,
        };
        let top = store.descriptor_of(local)?;
        let target = remote_reference(remote).map_err(failed)?;
        let client = self.client(&remote.domain, auth);
        client
            .auth(&target, auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| failed(describe(&e)))?;
        let bytes = store.read_blob(&top.digest)?;
        let document = parse(&bytes).map_err(failed)?;
        let mut manifests = Vec::new();
        if document.is_index() {
            for child in &document.manifests {
                if store.has_blob(&child.digest) {
                    manifests.push((child.clone(), store.read_blob(&child.digest)?));
                }
            }
        } else {
            manifests.push((top.clone(), bytes.clone()));
        }
        for (descriptor, bytes) in &manifests {
            let document = parse(bytes).map_err(failed)?;
            for blob in document.config.iter().chain(document.layers.iter()) {
                progress.start(&blob.digest, blob.size);
                let present = client
                    .blob_exists(&target, &blob.digest)
                    .await
                    .map_err(|e| failed(describe(&e)))?;
                if !present {
                    let data = store.read_blob(&blob.digest)?;
                    client
                        .push_blob(&target, data, &blob.digest)
                        .await
                        .map_err(|e| failed(describe(&e)))?;
                }
                progress.done(&blob.digest);
            }
            if document.is_index() || descriptor.digest != top.digest {
                let by_digest = target.clone_with_digest(descriptor.digest.clone());
                push_manifest(&client, &by_digest, descriptor, bytes.clone())
                    .await
                    .map_err(failed)?;
            }
        }
        push_manifest(&client, &target, &top, bytes)
            .await
            .map_err(failed)?;
        Ok(top.digest)
    }
}

impl Puller for Registries {
    fn pull<'a>(&'a self, reference: &'a Reference, store: &'a ImageStore) -> PullFuture<'a> {
        Box::pin(Registries::pull(
            self,
            reference,
            &RegistryAuth::Anonymous,
            store,
            &NoProgress,
        ))
    }
}

/// [`Registries`] pulling with a pod's credentials.
#[derive(Debug)]
pub struct AuthenticatedPuller<'r> {
    /// The node's registries.
    pub registries: &'r Registries,
    /// The credentials.
    pub auth: RegistryAuth,
}

impl Puller for AuthenticatedPuller<'_> {
    fn pull<'a>(&'a self, reference: &'a Reference, store: &'a ImageStore) -> PullFuture<'a> {
        Box::pin(
            self.registries
                .pull(reference, &self.auth, store, &NoProgress),
        )
    }
}

/// The credentials for `registry` (`host[:port]`) in a Docker config: the `.dockerconfigjson`
/// of a `kubernetes.io/dockerconfigjson` Secret (`{"auths": {KEY: ...}}`) or the
/// `.dockercfg` of a `kubernetes.io/dockercfg` one (the map itself). A KEY matches when its
/// host (scheme and path dropped) is the registry; Docker Hub answers to its several names.
/// An entry gives `username` and `password`, or `auth` (base64 `user:password`).
pub fn auth_from_docker_config(config: &[u8], registry: &str) -> Option<RegistryAuth> {
    use base64::Engine as _;
    let value: serde_json::Value = serde_json::from_slice(config).ok()?;
    let entries = value.get("auths").unwrap_or(&value).as_object()?;
    let wanted = canonical_registry(registry);
    entries.iter().find_map(|(key, entry)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        if canonical_registry(host) != wanted {
            return None;
        }
        let field = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
        if let (Some(user), Some(password)) = (field("username"), field("password")) {
            return Some(RegistryAuth::Basic(user.to_string(), password.to_string()));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(field("auth")?)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some(RegistryAuth::Basic(user.to_string(), password.to_string()))
    })
}

/// Docker Hub's names are one registry.
fn canonical_registry(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io"
        }
        other => other,
    }
}

async fn push_manifest(
    client: &oci_client::Client,
    target: &oci_client::Reference,
    descriptor: &Descriptor,
    bytes: Vec<u8>,
) -> Result<(), String> {
    let content_type = http::HeaderValue::from_str(&descriptor.media_type)
        .map_err(|_| format!("invalid media type {:?}", descriptor.media_type))?;
    client
        .push_manifest_raw(target, bytes, content_type)
        .await
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// Streams `blob` from the registry to a temporary file in the store (oci-client checks its
/// digest as it streams), then stores that file (its size checked, renamed into place).
async fn pull_blob(
    client: &oci_client::Client,
    remote: &oci_client::Reference,
    blob: &Descriptor,
    store: &ImageStore,
) -> Result<(), ImageError> {
    let failed = |message: String| ImageError::Pull {
        reference: remote.whole(),
        message,
    };
    let limit = store.limits().max_entry_bytes;
    if blob.size > limit {
        return Err(failed(format!(
            "blob {} is {} bytes, more than the {limit} a blob may hold",
            blob.digest, blob.size
        )));
    }
    let tmp_dir = store.tmp_dir();
    let tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
        .map_err(ImageError::io("create a file in", &tmp_dir))?;
    let file = tokio::fs::File::from_std(tmp.reopen().map_err(ImageError::io("open", tmp.path()))?);
    let layer = oci_client::manifest::OciDescriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: i64::try_from(blob.size).unwrap_or(i64::MAX),
        ..Default::default()
    };
    client
        .pull_blob(remote, &layer, file)
        .await
        .map_err(|e| failed(format!("blob {}: {}", blob.digest, describe(&e))))?;
    let store = store.clone();
    let (digest, size) = (blob.digest.clone(), blob.size);
    tokio::task::spawn_blocking(move || store.ingest_verified_download(tmp, &digest, size))
        .await
        .map_err(|e| failed(format!("storing the blob stopped: {e}")))??;
    Ok(())
}

/// Checks and stores a manifest's bytes: its digest is `digest` (the registry's) and, when the
/// reference pinned one, `pinned`. Returns its descriptor.
fn ingest_manifest(
    store: &ImageStore,
    bytes: &[u8],
    digest: &str,
    pinned: Option<&str>,
) -> Result<Descriptor, ImageError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ImageError::Pull {
            reference: digest.to_string(),
            message: format!(
                "the manifest is {} bytes, more than {MAX_MANIFEST_BYTES}",
                bytes.len()
            ),
        });
    }
    let expected = pinned.unwrap_or(digest);
    let stored = store.ingest_blob(bytes, Some((expected, Some(bytes.len() as u64))))?;
    let media_type = serde_json::from_slice::<Document>(bytes)
        .map(|d| d.media_type)
        .unwrap_or_default();
    Ok(Descriptor {
        media_type: if media_type.is_empty() {
            MEDIA_TYPE_OCI_MANIFEST.to_string()
        } else {
            media_type
        },
        digest: stored,
        size: bytes.len() as u64,
        platform: None,
        annotations: Default::default(),
    })
}

fn parse(bytes: &[u8]) -> Result<Document, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not valid JSON: {e}"))
}

/// The wasm child of an index: platform os `wasi*` or architecture `wasm*`, else the only
/// child.
fn wasm_child(children: &[Descriptor]) -> Option<&Descriptor> {
    children
        .iter()
        .find(|c| c.platform.as_ref().is_some_and(oci::Platform::is_wasm))
        .or(match children {
            [only] => Some(only),
            _ => None,
        })
}

/// oci-client's reference for an already parsed and normalized one. Built from its parts, not
/// by parsing the text again: oci-client's parser compiles a large Unicode regex on first use,
/// which took ~100 ms of every `wasmkube image pull` process.
pub(super) fn remote_reference(reference: &Reference) -> Result<oci_client::Reference, String> {
    let (registry, repository) = (reference.domain.clone(), reference.path.clone());
    match (&reference.digest, &reference.tag) {
        (Some(digest), _) => Ok(oci_client::Reference::with_digest(
            registry,
            repository,
            digest.clone(),
        )),
        (None, Some(tag)) => Ok(oci_client::Reference::with_tag(
            registry,
            repository,
            tag.clone(),
        )),
        (None, None) => Err(format!("{reference} names neither a tag nor a digest")),
    }
}

/// How a refused pull of a non-wasm image starts (pods' Failed events say it too).
const NOT_WASM: &str = "not a wasm image";
/// What a pull accepts, for the messages that refuse an image.
const ACCEPTED: &str = "accepted are the CNCF wasm artifact (config \
    application/vnd.wasm.config.v0+json, an application/wasm layer), images whose layers hold a \
    .wasm module (runwasi style, platform wasi/wasm) and image indexes with a wasm platform; a \
    Linux container image needs a container runtime (runtimeClassName runc), not this store";

/// The blobs a pull stores that were not in the store before it.
struct Added<'s> {
    store: &'s ImageStore,
    blobs: Vec<String>,
}

impl<'s> Added<'s> {
    fn new(store: &'s ImageStore) -> Added<'s> {
        Added {
            store,
            blobs: Vec::new(),
        }
    }

    /// Remembers `digest` if the store lacks it (it is about to be stored).
    fn note(&mut self, digest: &str) {
        if !self.store.has_blob(digest) {
            self.blobs.push(digest.to_string());
        }
    }

    /// Removes what this pull stored (and what the store derived from it).
    fn remove(&self) {
        self.store.remove_blobs(&self.blobs);
    }
}

/// The media types and platform of a manifest, as a refusal names them.
fn describe_found(store: &ImageStore, manifest: &Document) -> String {
    let Some(config) = &manifest.config else {
        return format!("a {} without a config", manifest.media_type);
    };
    let platform = store
        .read_blob(&config.digest)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<oci::ImageConfig>(&bytes).ok())
        .filter(|c| !c.os.is_empty() || !c.architecture.is_empty())
        .map_or_else(
            || "unspecified".to_string(),
            |c| format!("{}/{}", c.os, c.architecture),
        );
    let layers: Vec<&str> = manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    format!(
        "platform {platform}, config {}, layers [{}]",
        config.media_type,
        layers.join(", ")
    )
}

/// What to do about a registry that refused the credentials it got (none, or wrong ones).
const CREDENTIALS_HINT: &str = "the registry requires authentication and refused this \
    request: give credentials (an imagePullSecret of type kubernetes.io/dockerconfigjson, or \
    --creds USER:PASSWORD) or check them";

/// A registry error as a person reads it.
pub(super) fn describe(error: &oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::OciDistributionError as E;
    use oci_client::errors::OciErrorCode as C;
    let refused = |code: u16| code == 401 || code == 403;
    match error {
        E::AuthenticationFailure(m) => format!("{CREDENTIALS_HINT} ({m})"),
        E::UnauthorizedError { url } => format!("{CREDENTIALS_HINT} ({url})"),
        E::RequestError(e) if e.status().is_some_and(|s| refused(s.as_u16())) => {
            format!("{CREDENTIALS_HINT} ({e})")
        }
        E::ServerError { code, url, message } if refused(*code) => {
            format!("{CREDENTIALS_HINT} ({url}: {message})")
        }
        E::ImageManifestNotFoundError(m) => format!("not found in the registry: {m}"),
        E::RegistryError { envelope, url } => {
            let codes: Vec<&C> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, C::ManifestUnknown | C::NameUnknown | C::BlobUnknown))
            {
                format!(
                    "not found in the registry ({url}: {}); check the name and the tag or digest",
                    messages(envelope)
                )
            } else if codes
                .iter()
                .any(|c| matches!(c, C::Unauthorized | C::Denied))
            {
                format!("{CREDENTIALS_HINT} ({url}: {})", messages(envelope))
            } else {
                format!("the registry answered {url} with: {}", messages(envelope))
            }
        }
        other => with_causes(other),
    }
}

/// `error` followed by the causes its message leaves out (reqwest's "error sending request"
/// hides *why*: a refused connection, an unknown certificate issuer), with a hint for a
/// certificate the machine does not trust.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let message = e.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = e.source();
    }
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        text.push_str(
            "; if the registry's certificate is from a private CA, trust it with \
             --registry-ca-file (or reach the registry over plain HTTP with \
             --insecure-registry HOST:PORT)",
        );
    }
    text
}

fn messages(envelope: &oci_client::errors::OciEnvelope) -> String {
    envelope
        .errors
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_says_its_causes_once_and_how_to_trust_a_private_ca() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let error = Layer(
            "error sending request for url (https://10.0.0.1/v2/)",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer(
                    "invalid peer certificate: UnknownIssuer",
                    None,
                ))),
            ))),
        );
        let text = with_causes(&error);
        assert!(
            text.starts_with(
                "error sending request for url (https://10.0.0.1/v2/): client error (Connect): \
                 invalid peer certificate: UnknownIssuer; "
            ),
            "{text}"
        );
        assert!(text.contains("--registry-ca-file"), "{text}");
        let plain = with_causes(&Layer("connection refused", None));
        assert_eq!(plain, "connection refused");
    }

    #[test]
    fn a_docker_config_gives_the_registrys_credentials() {
        let basic = |u: &str, p: &str| Some(RegistryAuth::Basic(u.into(), p.into()));
        let config = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"},
            "127.0.0.1:5000": {"username": "alice", "password": "s3cret"},
            "https://registry.example.com/v2/": {"auth": "Ym9iOnB3OndpdGg6Y29sb25z"}
        }}"#;
        assert_eq!(
            auth_from_docker_config(config, "docker.io"),
            basic("hub", "hubpw")
        );
        assert_eq!(
            auth_from_docker_config(config, "127.0.0.1:5000"),
            basic("alice", "s3cret")
        );
        assert_eq!(
            auth_from_docker_config(config, "registry.example.com"),
            basic("bob", "pw:with:colons")
        );
        assert_eq!(auth_from_docker_config(config, "127.0.0.1:5001"), None);
        // The older .dockercfg: the map without "auths".
        let legacy = br#"{"127.0.0.1:5000": {"auth": "YWxpY2U6czNjcmV0"}}"#;
        assert_eq!(
            auth_from_docker_config(legacy, "127.0.0.1:5000"),
            basic("alice", "s3cret")
        );
        assert_eq!(auth_from_docker_config(b"not json", "docker.io"), None);
    }

    #[test]
    fn only_registries_on_this_machine_are_local() {
        for local in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.9.8.7",
            "[::1]:5000",
        ] {
            assert!(is_local_registry(local), "{local}");
        }
        for remote in [
            "docker.io",
            "ghcr.io:443",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_local_registry(remote), "{remote}");
        }
    }

    #[test]
    fn an_index_resolves_to_its_wasm_child_or_its_only_child() {
        let child = |digest: &str, arch: Option<&str>| Descriptor {
            media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: arch.map(|a| oci::Platform {
                os: if a == "wasm" { "wasip1" } else { "linux" }.into(),
                architecture: a.into(),
            }),
            annotations: Default::default(),
        };
        let two = [child("a", Some("amd64")), child("b", Some("wasm"))];
        assert_eq!(wasm_child(&two).map(|d| d.digest.as_str()), Some("b"));
        let only = [child("c", None)];
        assert_eq!(wasm_child(&only).map(|d| d.digest.as_str()), Some("c"));
        let neither = [child("a", Some("amd64")), child("d", Some("arm64"))];
        assert!(wasm_child(&neither).is_none());
    }
}

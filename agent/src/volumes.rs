//! Pod volumes, materialized as directories on the node and preopened into wasm containers.
//!
//! [`prepare`] builds every volume of a pod under `<pod-dir>/volumes/<name>`:
//! - `emptyDir`: a directory (mode 0777), kept across container restarts and agent restarts
//!   (it goes with the pod). `medium: Memory` is a directory too, and `sizeLimit` is not
//!   enforced: a wasm guest's writes go through the agent, not a tmpfs.
//! - `hostPath`: a directory of the node, only if the node allows it ([`host_path`]: under an
//!   `--allowed-host-path`, never the agent's data directory); `DirectoryOrCreate` creates it,
//!   `Directory` and no type require it to exist. File, socket and device types cannot be
//!   preopened (WASI preopens are directories) and fail with a message saying so. A hostPath
//!   the node refuses fails every container of the pod with `CreateContainerConfigError`.
//! - `configMap`, `secret`: one file per key (all keys, or the `items` listed, at their
//!   `path`), created with mode `items[].mode` or `defaultMode` (0644) in a directory only the
//!   agent's user may enter (0700); secret values are the decoded bytes. A missing object or
//!   key fails the mount unless `optional`.
//! - `downwardAPI`: pod metadata (`metadata.name|namespace|uid|labels|annotations` and
//!   `labels['k']`) and container resource fields, labels and annotations as `key="value"`
//!   lines like the kubelet writes.
//! - `projected`: the same configMap, secret and downwardAPI sources merged into one directory,
//!   and `serviceAccountToken` sources: a token of the pod's service account bound to the pod
//!   ([`token`], the kubelet's token manager), renewed at 80% of its lifetime — the worker
//!   prepares the volumes again at [`PodVolumes::token_refresh_at`]. This is how every pod's
//!   `kube-api-access-*` volume (the ServiceAccount admission's) reaches
//!   `/var/run/secrets/kubernetes.io/serviceaccount`. `clusterTrustBundle` is not supported.
//!
//! Calling [`prepare`] again refreshes configMap, secret and downwardAPI content in place
//! (each file replaced atomically, stale keys removed) and leaves emptyDir content alone, so the
//! pod worker may call it on every (re)start. Files are written directly rather than through
//! the kubelet's `..data` symlink swap; a guest reading a file sees the old or the new value.
//!
//! [`PodVolumes::preopens_for`] turns a container's `volumeMounts` into preopened directories:
//! `mountPath` is the guest path, read-only when the mount says so or the volume is a
//! configMap, secret, downwardAPI or projected one; `subPath` (or `subPathExpr`, expanded
//! with the container's environment) mounts a subdirectory. Every directory is handed over
//! as an open handle ([`beneath::DirHandle`]) and a subPath is opened beneath its volume's
//! handle, so a symlink a guest wrote into its volume never leads a mount out of it.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};
use kube::Api;

pub(crate) mod beneath;
mod downward;
pub(crate) mod host_path;
#[cfg(test)]
mod tests;
pub(crate) mod token;

pub(crate) use beneath::DirHandle;
pub use host_path::AllowedHostPath;
pub(crate) use host_path::HostPathPolicy;
pub(crate) use token::ServiceAccountTokens;

/// The mode of configMap, secret and downwardAPI files when neither the item nor the volume
/// sets one (0644, Kubernetes' default).
const DEFAULT_FILE_MODE: u32 = 0o644;
/// The mode of the directories of configMap, secret, downwardAPI and projected volumes: only
/// the agent's user may enter them, whatever their files' modes.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Why a pod's volumes cannot be set up; the message is the `FailedMount` event's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VolumeError {
    /// The volume cannot be set up; `message` says why (an object or key is missing, a
    /// hostPath does not exist, the source is unsupported...).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    SetUp {
        /// The volume's name.
        volume: String,
        /// Why.
        message: String,
    },
    /// Reading a ConfigMap or Secret from the apiserver failed (retry later).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {what}: {source}")]
    Api {
        /// The volume's name.
        volume: String,
        /// What was read, e.g. `configmap "app"`.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A filesystem operation failed.
    #[error("MountVolume.SetUp failed for volume {volume:?} : cannot write {path}: {source}")]
    Io {
        /// The volume's name.
        volume: String,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The node refuses the volume (a hostPath outside its allow-list).
    #[error("volume {volume:?}: {message}")]
    NotAllowed {
        /// The volume's name.
        volume: String,
        /// Why, and which flag would allow it.
        message: String,
    },
    /// A container's volume mount cannot be made (unknown volume, bad, escaping or file subPath).
    #[error("cannot mount volume {volume:?} at {mount_path}: {message}")]
    Mount {
        /// The volume's name.
        volume: String,
        /// The mount path.
        mount_path: String,
        /// Why.
        message: String,
    },
}

/// A prepared volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedVolume {
    /// Its directory on the node.
    pub(crate) host: PathBuf,
    /// The directory, open: what containers get (never `host` looked up again).
    pub(crate) dir: DirHandle,
    /// Whether its kind is read-only for containers (configMap, secret, downwardAPI,
    /// projected).
    pub(crate) read_only: bool,
    /// Whether the agent wrote its content (so `subPath` directories may be created in it).
    pub(crate) managed: bool,
    /// When a service-account token in it should be renewed (by preparing it again).
    pub(crate) token_refresh_at: Option<std::time::SystemTime>,
}

/// A directory a container sees: an open handle of the node's directory, the guest path and
/// whether it is read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Preopen {
    /// The directory on the node, open.
    pub(crate) dir: DirHandle,
    /// Where the guest sees it (`mountPath`).
    pub(crate) guest: String,
    /// Whether the guest may only read.
    pub(crate) read_only: bool,
}

/// The prepared volumes of one pod, by volume name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PodVolumes {
    volumes: HashMap<String, PreparedVolume>,
    /// Volumes the node refuses (name, why), in the pod's order.
    refused: Vec<(String, String)>,
}

impl PodVolumes {
    #[cfg(test)]
    /// The prepared volume named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&PreparedVolume> {
        self.volumes.get(name)
    }

    /// When the first service-account token of the pod's volumes should be renewed: prepare
    /// the volumes again then.
    pub(crate) fn token_refresh_at(&self) -> Option<std::time::SystemTime> {
        self.volumes
            .values()
            .filter_map(|v| v.token_refresh_at)
            .min()
    }

    /// The first volume the node refuses to set up, if any: (name, why).
    pub(crate) fn refused(&self) -> Option<(&str, &str)> {
        self.refused
            .first()
            .map(|(name, why)| (name.as_str(), why.as_str()))
    }

    /// The preopened directories of `container`, one per `volumeMounts` entry; `env` looks up
    /// the container's environment variables for `subPathExpr`. Fails for every container when
    /// the pod has a volume the node refuses.
    pub(crate) fn preopens_for(
        &self,
        container: &Container,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Preopen>, VolumeError> {
        if let Some((volume, message)) = self.refused() {
            return Err(VolumeError::NotAllowed {
                volume: volume.to_string(),
                message: message.to_string(),
            });
        }
        let mut preopens = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let error = |message: String| VolumeError::Mount {
                volume: mount.name.clone(),
                mount_path: mount.mount_path.clone(),
                message,
            };
            let volume = self
                .volumes
                .get(&mount.name)
                .ok_or_else(|| error("the pod has no volume of that name".into()))?;
            let sub_path = match mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
                Some(expr) => Some(expand_sub_path_expr(expr, &env).map_err(error)?),
                None => mount.sub_path.clone().filter(|s| !s.is_empty()),
            };
            let dir = match sub_path.as_deref() {
                None => volume.dir.clone(),
                Some(sub) => {
                    let rel = relative_path(sub).ok_or_else(|| {
                        error(format!(
                            "subPath {sub:?} must be a relative path without '..'"
                        ))
                    })?;
                    // Beneath the volume's open handle: a symlink a guest made in the
                    // volume may not lead out of it (CVE-2017-1002101).
                    let create = (!volume.read_only).then_some(0o755);
                    volume
                        .dir
                        .open_beneath(&rel, create, false)
                        .map_err(|e| match e {
                            beneath::BeneathError::NotADirectory => error(format!(
                                "subPath {sub:?} is a file; wasm containers can mount only \
                                 directories (mount the whole volume and read the file from it)"
                            )),
                            beneath::BeneathError::NotFound => {
                                error(format!("subPath {sub:?} does not exist in the volume"))
                            }
                            e => error(format!("subPath {sub:?} {e}")),
                        })?
                }
            };
            if !mount.mount_path.starts_with('/') {
                return Err(error("mountPath must be absolute".into()));
            }
            preopens.push(Preopen {
                dir,
                guest: mount.mount_path.clone(),
                read_only: volume.read_only || mount.read_only == Some(true),
            });
        }
        Ok(preopens)
    }
}

/// Prepares every volume of `pod` under `pod_dir/volumes/`, reading ConfigMaps and Secrets in
/// the pod's namespace with `client`, service-account tokens from `tokens`; hostPath volumes
/// only as `host_paths` allows. A
/// refused hostPath is not an error here (retrying cannot help): it is recorded, and
/// [`PodVolumes::preopens_for`] fails with it.
pub(crate) async fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    client: &kube::Client,
    host_paths: &HostPathPolicy,
    tokens: &ServiceAccountTokens,
) -> Result<PodVolumes, VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sources = Sources {
        configmaps: Api::namespaced(client.clone(), namespace),
        secrets: Api::namespaced(client.clone(), namespace),
        host_paths,
        tokens,
    };
    let mut prepared = PodVolumes::default();
    let volumes_dir = pod_dir.join("volumes");
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        match prepare_volume(pod, volume, &volumes_dir, &sources).await {
            Ok(v) => {
                prepared.volumes.insert(volume.name.clone(), v);
            }
            Err(VolumeError::NotAllowed { volume, message }) => {
                prepared.refused.push((volume, message));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(prepared)
}

/// Where ConfigMaps, Secrets and tokens come from, and which host directories may be mounted.
struct Sources<'a> {
    configmaps: Api<ConfigMap>,
    secrets: Api<Secret>,
    host_paths: &'a HostPathPolicy,
    tokens: &'a ServiceAccountTokens,
}

/// A file to write into a managed volume: relative path, content, mode.
type File = (PathBuf, Vec<u8>, u32);

async fn prepare_volume(
    pod: &Pod,
    volume: &Volume,
    volumes_dir: &Path,
    sources: &Sources<'_>,
) -> Result<PreparedVolume, VolumeError> {
    let name = volume.name.as_str();
    let set_up = |message: String| VolumeError::SetUp {
        volume: name.to_string(),
        message,
    };
    let dir = volumes_dir.join(name);
    if relative_path(name).is_none() || name.contains('/') {
        return Err(set_up(
            "the volume name is not a valid directory name".into(),
        ));
    }
    let open = |dir: &Path| {
        DirHandle::open(dir).map_err(|source| VolumeError::Io {
            volume: name.to_string(),
            path: dir.to_path_buf(),
            source,
        })
    };
    if volume.empty_dir.is_some() {
        create_dir(name, &dir, 0o777)?;
        return Ok(PreparedVolume {
            dir: open(&dir)?,
            host: dir,
            read_only: false,
            managed: true,
            token_refresh_at: None,
        });
    }
    if let Some(host_path) = &volume.host_path {
        let create = match host_path.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => true,
            "" | "Directory" => false,
            other => {
                return Err(set_up(format!(
                    "hostPath type {other} cannot be mounted in a wasm container: only \
                     directories can be preopened"
                )));
            }
        };
        let granted = sources
            .host_paths
            .open(&host_path.path, create)
            .map_err(|e| match e {
                host_path::HostPathError::NotAllowed(message) => VolumeError::NotAllowed {
                    volume: name.to_string(),
                    message,
                },
                host_path::HostPathError::SetUp(message) => set_up(message),
            })?;
        return Ok(PreparedVolume {
            host: PathBuf::from(&host_path.path),
            dir: granted.dir,
            read_only: granted.read_only,
            managed: false,
            token_refresh_at: None,
        });
    }

    let mut token_refresh_at: Option<std::time::SystemTime> = None;
    let files = if let Some(cm) = &volume.config_map {
        let mode = default_mode(cm.default_mode);
        let source = fetch_configmap(sources, name, &cm.name, cm.optional).await?;
        key_files(
            name,
            "configmap",
            &cm.name,
            source,
            cm.items.as_deref(),
            mode,
            cm.optional,
        )?
    } else if let Some(secret) = &volume.secret {
        let mode = default_mode(secret.default_mode);
        let secret_name = secret.secret_name.clone().unwrap_or_default();
        let source = fetch_secret(sources, name, &secret_name, secret.optional).await?;
        key_files(
            name,
            "secret",
            &secret_name,
            source,
            secret.items.as_deref(),
            mode,
            secret.optional,
        )?
    } else if let Some(downward) = &volume.downward_api {
        let mode = default_mode(downward.default_mode);
        downward_files(
            pod,
            name,
            downward.items.as_deref().unwrap_or_default(),
            mode,
        )?
    } else if let Some(projected) = &volume.projected {
        let mode = default_mode(projected.default_mode);
        let mut files = Vec::new();
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let data = fetch_configmap(sources, name, &cm.name, cm.optional).await?;
                files.extend(key_files(
                    name,
                    "configmap",
                    &cm.name,
                    data,
                    cm.items.as_deref(),
                    mode,
                    cm.optional,
                )?);
            } else if let Some(secret) = &source.secret {
                let data = fetch_secret(sources, name, &secret.name, secret.optional).await?;
                files.extend(key_files(
                    name,
                    "secret",
                    &secret.name,
                    data,
                    secret.items.as_deref(),
                    mode,
                    secret.optional,
                )?);
            } else if let Some(downward) = &source.downward_api {
                files.extend(downward_files(
                    pod,
                    name,
                    downward.items.as_deref().unwrap_or_default(),
                    mode,
                )?);
            } else if let Some(projection) = &source.service_account_token {
                let token =
                    sources.tokens.token(pod, projection).await.map_err(|e| {
                        set_up(format!("failed to fetch token: {}", api_message(&e)))
                    })?;
                let path = relative_path(&projection.path).ok_or_else(|| {
                    set_up(format!(
                        "token path {:?} must be relative without '..'",
                        projection.path
                    ))
                })?;
                token_refresh_at =
                    Some(token_refresh_at.map_or(token.refresh_at, |at| at.min(token.refresh_at)));
                files.push((path, token.token.into_bytes(), mode));
            } else {
                return Err(set_up(
                    "projected sources other than configMap, secret, downwardAPI and \
                     serviceAccountToken (clusterTrustBundle) are not supported yet"
                        .into(),
                ));
            }
        }
        files
    } else {
        return Err(set_up(
            "this volume type is not supported for wasm pods (supported: emptyDir, hostPath, \
             configMap, secret, downwardAPI, projected)"
                .into(),
        ));
    };
    write_files(name, &dir, &files)?;
    Ok(PreparedVolume {
        dir: open(&dir)?,
        host: dir,
        read_only: true,
        managed: true,
        token_refresh_at,
    })
}

/// The message of an API error (the Status's), else the error.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

fn default_mode(mode: Option<i32>) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map_or(DEFAULT_FILE_MODE, |m| m & 0o777)
}

/// The key -> bytes of a ConfigMap (data and binaryData); `None` when it is absent and optional.
async fn fetch_configmap(
    sources: &Sources<'_>,
    volume: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let found = sources
        .configmaps
        .get_opt(name)
        .await
        .map_err(|source| VolumeError::Api {
            volume: volume.to_string(),
            what: format!("configmap {name:?}"),
            source,
        })?;
    match found {
        Some(cm) => {
            let mut data: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            Ok(Some(data))
        }
        None if optional == Some(true) => Ok(None),
        None => Err(VolumeError::SetUp {
            volume: volume.to_string(),
            message: format!("configmap {name:?} not found"),
        }),
    }
}

/// The key -> bytes of a Secret (values already base64-decoded by the client).
async fn fetch_secret(
    sources: &Sources<'_>,
    volume: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let found = sources
        .secrets
        .get_opt(name)
        .await
        .map_err(|source| VolumeError::Api {
            volume: volume.to_string(),
            what: format!("secret {name:?}"),
            source,
        })?;
    match found {
        Some(secret) => {
            let mut data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            // stringData is write-only (the apiserver folds it into data); honour it anyway.
            for (k, v) in secret.string_data.unwrap_or_default() {
                data.entry(k).or_insert_with(|| v.into_bytes());
            }
            Ok(Some(data))
        }
        None if optional == Some(true) => Ok(None),
        None => Err(VolumeError::SetUp {
            volume: volume.to_string(),
            message: format!("secret {name:?} not found"),
        }),
    }
}

/// The files of a configMap or secret source: every key, or the listed items.
fn key_files(
    volume: &str,
    kind: &str,
    object: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: Option<bool>,
) -> Result<Vec<File>, VolumeError> {
    let set_up = |message: String| VolumeError::SetUp {
        volume: volume.to_string(),
        message,
    };
    let Some(mut data) = data else {
        return Ok(Vec::new());
    };
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return data
            .into_iter()
            .map(|(key, value)| {
                let path = relative_path(&key).ok_or_else(|| {
                    set_up(format!("{kind} key {key:?} is not a valid file name"))
                })?;
                Ok((path, value, mode))
            })
            .collect();
    };
    let mut files = Vec::new();
    for item in items {
        let Some(value) = data.remove(&item.key) else {
            if optional == Some(true) {
                continue;
            }
            return Err(set_up(format!(
                "{kind} {object:?} references non-existent key {:?}",
                item.key
            )));
        };
        let path = relative_path(&item.path).ok_or_else(|| {
            set_up(format!(
                "item path {:?} must be relative without '..'",
                item.path
            ))
        })?;
        let item_mode = item.mode.map_or(mode, |m| default_mode(Some(m)));
        files.push((path, value, item_mode));
    }
    Ok(files)
}

fn downward_files(
    pod: &Pod,
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
) -> Result<Vec<File>, VolumeError> {
    let set_up = |message: String| VolumeError::SetUp {
        volume: volume.to_string(),
        message,
    };
    let mut files = Vec::new();
    for item in items {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(field), _) => downward::field_value(pod, &field.field_path),
            (None, Some(resource)) => downward::resource_value(pod, resource),
            (None, None) => Err("an item needs fieldRef or resourceFieldRef".to_string()),
        }
        .map_err(|e| set_up(format!("{}: {e}", item.path)))?;
        let path = relative_path(&item.path).ok_or_else(|| {
            set_up(format!(
                "item path {:?} must be relative without '..'",
                item.path
            ))
        })?;
        let item_mode = item.mode.map_or(mode, |m| default_mode(Some(m)));
        files.push((path, value.into_bytes(), item_mode));
    }
    Ok(files)
}

/// Expands `$(VAR)` in a `subPathExpr` with the container's environment, as the kubelet does:
/// a variable that is missing or empty is an error.
fn expand_sub_path_expr(
    expr: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let missing = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let expanded = crate::pod::env::expand(expr, |name| {
        let value = env(name).filter(|v| !v.is_empty());
        if value.is_none() {
            missing.borrow_mut().insert(name.to_string());
        }
        Some(value.unwrap_or_default())
    });
    let missing = missing.into_inner();
    if missing.is_empty() {
        Ok(expanded)
    } else {
        let names: Vec<String> = missing.into_iter().collect();
        Err(format!(
            "subPathExpr {expr:?}: missing value for {}",
            names.join(", ")
        ))
    }
}

/// A path made only of normal components (no root, `.`, `..`); `None` otherwise.
fn relative_path(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    let normal = !p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    normal.then(|| path.to_path_buf())
}

/// Creates `dir` (and missing parents) with `mode` if it does not exist; an existing one gets
/// `mode` too, so a directory made by an older agent becomes private.
fn create_dir(volume: &str, dir: &Path, mode: u32) -> Result<(), VolumeError> {
    let io = |source| VolumeError::Io {
        volume: volume.to_string(),
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        let current = fs::metadata(dir).map_err(io)?.permissions().mode() & 0o7777;
        if current != mode {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    fs::DirBuilder::new().mode(mode).create(dir).map_err(io)?;
    // The umask may have taken bits the volume needs (an emptyDir is 0777).
    if fs::metadata(dir).map_err(io)?.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    Ok(())
}

/// Makes `dir` hold exactly `files`: each written to a temp file and renamed over the old one,
/// then files and directories no longer listed removed.
fn write_files(volume: &str, dir: &Path, files: &[File]) -> Result<(), VolumeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VolumeError::Io {
            volume: volume.to_string(),
            path,
            source,
        }
    };
    create_dir(volume, dir, PRIVATE_DIR_MODE)?;
    for (rel, content, mode) in files {
        let dest = dir.join(rel);
        let parent = dest.parent().unwrap_or(dir);
        fs::create_dir_all(parent).map_err(io(parent))?;
        // Created with its mode (the umask may only take bits away, never add them), so the
        // file is never more open than asked, not even for a moment.
        let mut tmp = tempfile::Builder::new()
            .prefix(".wasmkube-")
            .permissions(fs::Permissions::from_mode(*mode))
            .tempfile_in(parent)
            .map_err(io(parent))?;
        tmp.write_all(content).map_err(io(&dest))?;
        if tmp
            .as_file()
            .metadata()
            .map_err(io(&dest))?
            .permissions()
            .mode()
            & 0o777
            != *mode
        {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(*mode))
                .map_err(io(&dest))?;
        }
        tmp.persist(&dest).map_err(|e| VolumeError::Io {
            volume: volume.to_string(),
            path: dest.clone(),
            source: e.error,
        })?;
    }
    let keep: Vec<PathBuf> = files.iter().map(|(rel, _, _)| rel.clone()).collect();
    remove_stale(dir, Path::new(""), &keep).map_err(io(dir))
}

/// Removes what under `dir/rel` is neither a kept file nor a directory leading to one.
fn remove_stale(dir: &Path, rel: &Path, keep: &[PathBuf]) -> std::io::Result<()> {
    for entry in fs::read_dir(dir.join(rel))? {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if keep.iter().any(|k| k.starts_with(&child)) {
                remove_stale(dir, &child, keep)?;
            } else {
                fs::remove_dir_all(entry.path())?;
            }
        } else if !keep.contains(&child) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

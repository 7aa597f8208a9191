//! The sample guests the workload benchmarks run: where their built modules, OCI layouts and
//! pod manifests are, and pods made from those manifests.
//!
//! `samples/build --oci --quiet` writes `samples/out/<name>.wasm` and the OCI image layout
//! `samples/out/oci/<name>/`; the manifest is `samples/<name>/pod.yaml` and names the image
//! `wasmkube.local/samples/<name>:v1`, which the bench imports into the embedded agent's store.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;

/// The hint printed when the samples are not built.
const BUILD_HINT: &str = "build them with `samples/build --oci --quiet` (scripts/bench does)";

/// The repository's `samples/` directory.
#[derive(Clone, Debug)]
pub(crate) struct Samples {
    dir: PathBuf,
}

impl Samples {
    /// The samples directory: `explicit` if given, else `samples/` in the current directory,
    /// else the one of the repository the running binary was built in (`target/*/wasmkube-bench`).
    pub(crate) fn locate(explicit: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(dir) = explicit {
            return Ok(Self {
                dir: dir.to_path_buf(),
            });
        }
        let mut candidates = vec![PathBuf::from("samples")];
        if let Ok(exe) = std::env::current_exe() {
            // target/release/wasmkube-bench -> the repository is two levels above target/.
            if let Some(repo) = exe.ancestors().nth(3) {
                candidates.push(repo.join("samples"));
            }
        }
        candidates
            .into_iter()
            .find(|dir| dir.join("build").is_file())
            .map(|dir| Self { dir })
            .with_context(|| {
                "cannot find the samples directory (samples/build); run from the repository \
                 root or pass --samples DIR"
            })
    }

    /// The built core module or component `out/<name>.wasm`.
    pub(crate) fn module(&self, name: &str) -> PathBuf {
        self.dir.join("out").join(format!("{name}.wasm"))
    }

    /// The OCI image layout `out/oci/<name>/`.
    pub(crate) fn oci_layout(&self, name: &str) -> PathBuf {
        self.dir.join("out").join("oci").join(name)
    }

    /// Fails with a hint to build the samples when the module or layout of `name` is missing.
    pub(crate) fn require_built(&self, name: &str) -> anyhow::Result<()> {
        for path in [self.module(name), self.oci_layout(name).join("index.json")] {
            if !path.is_file() {
                bail!(
                    "sample {name} is not built: {} is missing; {BUILD_HINT}",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// The pod of `samples/<name>/pod.yaml`.
    pub(crate) fn pod(&self, name: &str) -> anyhow::Result<Pod> {
        let path = self.dir.join(name).join("pod.yaml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        parse_pod(&text).with_context(|| format!("{} is not a pod manifest", path.display()))
    }
}

/// Parses a pod manifest.
fn parse_pod(text: &str) -> anyhow::Result<Pod> {
    let pod: Pod = serde_yaml_ng::from_str(text)?;
    if pod
        .spec
        .as_ref()
        .is_none_or(|spec| spec.containers.is_empty())
    {
        bail!("the pod has no containers");
    }
    Ok(pod)
}

/// A copy of `template` named `name` in `namespace`, with `edit` applied to its first
/// container (to change args or drop probes).
pub(crate) fn pod_named(
    template: &Pod,
    namespace: &str,
    name: &str,
    edit: impl Fn(&mut k8s_openapi::api::core::v1::Container),
) -> Pod {
    let mut pod = template.clone();
    pod.metadata.name = Some(name.to_owned());
    pod.metadata.namespace = Some(namespace.to_owned());
    pod.metadata.resource_version = None;
    pod.status = None;
    if let Some(container) = pod
        .spec
        .as_mut()
        .and_then(|spec| spec.containers.first_mut())
    {
        edit(container);
    }
    pod
}

/// The first container port of a pod manifest.
pub(crate) fn container_port(pod: &Pod) -> Option<u16> {
    let port = pod
        .spec
        .as_ref()?
        .containers
        .first()?
        .ports
        .as_ref()?
        .first()?
        .container_port;
    u16::try_from(port).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  \
        containers:\n    - name: web\n      image: wasmkube.local/samples/web:v1\n      \
        args: [\"1000\"]\n      ports:\n        - containerPort: 8080\n";

    #[test]
    fn a_manifest_becomes_named_pods_with_edited_containers() {
        let template = parse_pod(MANIFEST).expect("parses");
        assert_eq!(container_port(&template), Some(8080));
        let pod = pod_named(&template, "bench", "web-7", |c| {
            c.args = Some(vec!["5".into()]);
        });
        assert_eq!(pod.metadata.name.as_deref(), Some("web-7"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("bench"));
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        assert_eq!(container.args, Some(vec!["5".to_owned()]));
    }

    #[test]
    fn a_manifest_without_containers_is_refused() {
        assert!(
            parse_pod("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers: []\n")
                .is_err()
        );
    }
}

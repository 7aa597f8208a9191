//! `wasmkube-bench authz`: what authorization costs a request.
//!
//! Two servers run side by side, one per `--authorization-mode`: `AlwaysAllow` (no
//! authorization work beyond the chain's first link) and `RBAC`. The clients act as a user
//! that is not in `system:masters` (whom the chain allows before RBAC is asked): `bench`, with
//! a client certificate from `wasmkube server kubeconfig --user bench` and bound to `edit` in
//! the benchmark namespace. `--bindings` more RoleBindings in that namespace and
//! ClusterRoleBindings (to other users) give RBAC a busy cluster's bindings to resolve among
//! on every request. The work (durable ConfigMap creates, then GETs of one ConfigMap) is cut
//! into `--rounds` alternating rounds by [`sides`](super::sides), which reports RBAC's ratios
//! to AlwaysAllow and the server CPU time per request.
//! `--modes AlwaysAllow,AlwaysAllow` runs the same against two identical servers: the ratios
//! it reports are the noise floor of the machine.

use std::path::Path;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

use super::create_namespace;
use super::creates::{self, BenchKind};
use super::sides::{self, PROBE, Plan, Side};
use super::target::Target;

/// The namespace the benchmark works in.
const NAMESPACE: &str = "authz-bench";
/// The user the clients act as.
const USER: &str = "bench";

/// Benchmark the cost of authorization: creates/s and GET latency with RBAC vs AlwaysAllow.
#[derive(clap::Args, Debug)]
pub(crate) struct AuthzCommand {
    /// ConfigMaps created per mode.
    #[arg(long, value_name = "N", default_value_t = 16_000, value_parser = clap::value_parser!(u64).range(1..))]
    creates: u64,
    /// GETs per mode.
    #[arg(long, value_name = "N", default_value_t = 160_000, value_parser = clap::value_parser!(u64).range(1..))]
    gets: u64,
    /// Concurrent clients (connections).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    clients: u64,
    /// Extra bindings to other users (half RoleBindings in the namespace, half
    /// ClusterRoleBindings) that RBAC looks through on every request.
    #[arg(long, value_name = "N", default_value_t = 200)]
    bindings: u64,
    /// Rounds the work is cut into; each gives both servers the same slice.
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// The two servers' `--authorization-mode`s; ratios are the second's over the first's.
    /// `AlwaysAllow,AlwaysAllow` measures the noise floor.
    #[arg(long, value_name = "MODE,MODE", default_value = "AlwaysAllow,RBAC", value_delimiter = ',',
          num_args = 1, value_parser = ["AlwaysAllow", "RBAC"])]
    modes: Vec<String>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

impl AuthzCommand {
    /// Starts both servers, runs every round and prints the report.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        if self.modes.len() != 2 {
            bail!(
                "--modes takes two authorization modes, e.g. AlwaysAllow,RBAC (got {})",
                self.modes.join(",")
            );
        }
        let mut sides = Vec::new();
        for mode in &self.modes {
            eprintln!("starting wasmkube server --authorization-mode {mode} ...");
            match self.start_side(wasmkube, mode).await {
                Ok(side) => sides.push(side),
                Err(e) => {
                    for side in sides {
                        side.shutdown().await;
                    }
                    return Err(e);
                }
            }
        }
        let sides =
            <[Side; 2]>::try_from(sides).map_err(|_| anyhow::anyhow!("two modes, two servers"))?;
        let plan = Plan {
            creates: self.creates,
            gets: self.gets,
            clients: self.clients,
            rounds: self.rounds,
            kind: BenchKind::ConfigMap,
        };
        let summary = sides::run(&plan, NAMESPACE, sides).await?;
        let labels = [self.modes[0].as_str(), self.modes[1].as_str()];
        if self.json {
            let fields = serde_json::Map::from_iter([
                ("user".to_owned(), json!(USER)),
                ("bindings".to_owned(), json!(self.bindings)),
                ("clients".to_owned(), json!(self.clients)),
                ("creates".to_owned(), json!(self.creates)),
                ("gets".to_owned(), json!(self.gets)),
                ("rounds".to_owned(), json!(self.rounds)),
            ]);
            let report = sides::to_json(fields, "authorization_mode", labels, &summary);
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            let heading = format!(
                "authorization cost: user {USER:?} bound to edit, {} more bindings, {} clients, {} creates and {} GETs per mode in {} alternating rounds",
                self.bindings, self.clients, self.creates, self.gets, self.rounds
            );
            print!("{}", sides::to_table(&heading, "mode", labels, &summary));
        }
        Ok(())
    }

    /// Starts a server in `mode` and prepares the namespace, the bindings and the user.
    async fn start_side(&self, wasmkube: &Path, mode: &str) -> anyhow::Result<Side> {
        let args: Vec<String> = [
            "--authorization-mode",
            mode,
            "--disable-agent",
            "--disable-scheduler",
            "--disable-controllers",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = Target::start_server_with(wasmkube, None, &args).await?;
        match self.prepare(wasmkube, &server).await {
            Ok(user) => Ok(Side::new(mode, server, Some(user))),
            Err(e) => {
                server.shutdown().await;
                Err(e)
            }
        }
    }

    async fn prepare(&self, wasmkube: &Path, server: &Target) -> anyhow::Result<Target> {
        let admin = server.new_client()?;
        create_namespace(&admin, NAMESPACE).await?;
        bind(&admin, "bench-edit", "edit", USER).await?;
        for i in 0..self.bindings {
            let user = format!("someone-{i}");
            if i % 2 == 0 {
                bind(&admin, &format!("filler-{i}"), "view", &user).await?;
            } else {
                cluster_bind(&admin, &format!("filler-{i}"), "view", &user).await?;
            }
        }
        Api::<ConfigMap>::namespaced(admin, NAMESPACE)
            .create(
                &PostParams::default(),
                &creates::bench_config_map(PROBE.to_owned()),
            )
            .await
            .context("creating the probe ConfigMap")?;
        let data_dir = server
            .server_data_dir()
            .context("the bench started no server")?;
        let kubeconfig = user_kubeconfig(wasmkube, data_dir).await?;
        Target::from_kubeconfig(&kubeconfig).await
    }
}

fn subject(user: &str) -> Subject {
    Subject {
        kind: "User".to_owned(),
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
        name: user.to_owned(),
        namespace: None,
    }
}

fn role_ref(role: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_owned(),
        kind: "ClusterRole".to_owned(),
        name: role.to_owned(),
    }
}

async fn bind(admin: &kube::Client, name: &str, role: &str, user: &str) -> anyhow::Result<()> {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: role_ref(role),
        subjects: Some(vec![subject(user)]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &binding)
        .await
        .with_context(|| format!("creating RoleBinding {name}"))?;
    Ok(())
}

async fn cluster_bind(
    admin: &kube::Client,
    name: &str,
    role: &str,
    user: &str,
) -> anyhow::Result<()> {
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: role_ref(role),
        subjects: Some(vec![subject(user)]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .with_context(|| format!("creating ClusterRoleBinding {name}"))?;
    Ok(())
}

/// `wasmkube server kubeconfig --user bench` for the server's data dir, in a file there.
async fn user_kubeconfig(wasmkube: &Path, data_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let output = tokio::process::Command::new(wasmkube)
        .args(["server", "kubeconfig", "--user", USER, "--data-dir"])
        .arg(data_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {} server kubeconfig", wasmkube.display()))?;
    if !output.status.success() {
        bail!(
            "wasmkube server kubeconfig failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let path = data_dir.join(format!("kubeconfig-{USER}.yaml"));
    std::fs::write(&path, &output.stdout).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

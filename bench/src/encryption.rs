//! `wasmkube-bench encryption`: what encrypting Secrets at rest costs a request.
//!
//! Two servers run side by side, each with its own `--encryption-provider-config`: by default
//! one that stores Secrets as they are (`identity`) and one that encrypts them with
//! `secretbox`, the provider a new cluster gets. `--providers` picks any two of `identity`,
//! `aescbc`, `aesgcm` and `secretbox` (each with one 32-byte key, then `identity` to read
//! what was stored before). The clients act as the admin; the work (durable Secret creates,
//! each encrypted on write, then GETs of one Secret, each decrypted on read) is cut into
//! `--rounds` alternating rounds by [`sides`](super::sides), which reports the second
//! provider's ratios to the first and the server CPU time per request.

use std::path::Path;

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::create_namespace;
use super::creates::{self, BenchKind};
use super::sides::{self, PROBE, Plan, Side};
use super::target::Target;

/// The namespace the benchmark works in.
const NAMESPACE: &str = "encryption-bench";
/// The key every encrypting provider gets: 32 bytes, base64 (a benchmark's, not a secret).
const KEY: &str = "d2FzbWt1YmUtYmVuY2gta2V5LTMyLWJ5dGVzLWxvbmc=";

/// Benchmark the cost of encryption at rest: Secret creates/s and GET latency with one
/// provider vs another.
#[derive(clap::Args, Debug)]
pub(crate) struct EncryptionCommand {
    /// Secrets created per provider.
    #[arg(long, value_name = "N", default_value_t = 8_000, value_parser = clap::value_parser!(u64).range(1..))]
    creates: u64,
    /// GETs per provider.
    #[arg(long, value_name = "N", default_value_t = 80_000, value_parser = clap::value_parser!(u64).range(1..))]
    gets: u64,
    /// Concurrent clients (connections).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    clients: u64,
    /// Rounds the work is cut into; each gives both servers the same slice.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// The two servers' providers for Secrets; ratios are the second's over the first's.
    /// `identity,identity` measures the noise floor.
    #[arg(long, value_name = "PROVIDER,PROVIDER", default_value = "identity,secretbox",
          value_delimiter = ',', num_args = 1,
          value_parser = ["identity", "aescbc", "aesgcm", "secretbox"])]
    providers: Vec<String>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

impl EncryptionCommand {
    /// Starts both servers, runs every round and prints the report.
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        if self.providers.len() != 2 {
            anyhow::bail!(
                "--providers takes two providers, e.g. identity,secretbox (got {})",
                self.providers.join(",")
            );
        }
        let configs = tempfile::Builder::new()
            .prefix("wasmkube-bench-encryption-")
            .tempdir()
            .context("creating a directory for the encryption configurations")?;
        let mut sides = Vec::new();
        for (index, provider) in self.providers.iter().enumerate() {
            eprintln!("starting wasmkube server with Secrets stored by {provider} ...");
            let config = configs.path().join(format!("{index}-{provider}.yaml"));
            match start_side(wasmkube, provider, &config).await {
                Ok(side) => sides.push(side),
                Err(e) => {
                    for side in sides {
                        side.shutdown().await;
                    }
                    return Err(e);
                }
            }
        }
        let sides = <[Side; 2]>::try_from(sides)
            .map_err(|_| anyhow::anyhow!("two providers, two servers"))?;
        let plan = Plan {
            creates: self.creates,
            gets: self.gets,
            clients: self.clients,
            rounds: self.rounds,
            kind: BenchKind::Secret,
        };
        let summary = sides::run(&plan, NAMESPACE, sides).await?;
        let labels = [self.providers[0].as_str(), self.providers[1].as_str()];
        if self.json {
            let fields = serde_json::Map::from_iter([
                ("clients".to_owned(), json!(self.clients)),
                ("creates".to_owned(), json!(self.creates)),
                ("gets".to_owned(), json!(self.gets)),
                ("rounds".to_owned(), json!(self.rounds)),
            ]);
            let report = sides::to_json(fields, "provider", labels, &summary);
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            let heading = format!(
                "encryption at rest: Secrets as the admin, {} clients, {} creates and {} GETs per provider in {} alternating rounds",
                self.clients, self.creates, self.gets, self.rounds
            );
            print!(
                "{}",
                sides::to_table(&heading, "provider", labels, &summary)
            );
        }
        Ok(())
    }
}

/// The EncryptionConfiguration that stores Secrets with `provider` (and reads unencrypted
/// ones with `identity`).
fn encryption_config(provider: &str) -> String {
    let first = if provider == "identity" {
        "      - identity: {}\n".to_owned()
    } else {
        format!(
            "      - {provider}:\n          keys:\n            - name: bench\n              secret: {KEY}\n      - identity: {{}}\n"
        )
    };
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{first}"
    )
}

/// Starts a server whose Secrets `provider` stores (its configuration written to `config`)
/// and creates the namespace and the probe Secret.
async fn start_side(wasmkube: &Path, provider: &str, config: &Path) -> anyhow::Result<Side> {
    std::fs::write(config, encryption_config(provider))
        .with_context(|| format!("writing {}", config.display()))?;
    let args: Vec<String> = vec![
        "--encryption-provider-config".into(),
        config.display().to_string(),
        "--disable-agent".into(),
        "--disable-scheduler".into(),
        "--disable-controllers".into(),
    ];
    let server = Target::start_server_with(wasmkube, None, &args).await?;
    let prepared = async {
        let admin = server.new_client()?;
        create_namespace(&admin, NAMESPACE).await?;
        Api::<Secret>::namespaced(admin, NAMESPACE)
            .create(
                &PostParams::default(),
                &creates::bench_secret(PROBE.to_owned()),
            )
            .await
            .context("creating the probe Secret")?;
        anyhow::Ok(())
    }
    .await;
    match prepared {
        Ok(()) => Ok(Side::new(provider, server, None)),
        Err(e) => {
            server.shutdown().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_gets_a_configuration_that_encrypts_only_secrets() {
        let identity = encryption_config("identity");
        assert!(identity.contains("resources: [secrets]"), "{identity}");
        assert!(!identity.contains("keys:"), "{identity}");
        for provider in ["aescbc", "aesgcm", "secretbox"] {
            let config = encryption_config(provider);
            let parsed: serde_json::Value = serde_yaml_ng::from_str(&config).expect("YAML");
            let providers = &parsed["resources"][0]["providers"];
            assert_eq!(providers[0][provider]["keys"][0]["secret"], KEY, "{config}");
            assert_eq!(providers[1], json!({"identity": {}}), "{config}");
        }
    }
}

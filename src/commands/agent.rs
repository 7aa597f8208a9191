//! `wasmkube agent`: joins a node to a cluster and runs its pods.

use std::path::PathBuf;

use anyhow::Context;

use super::cluster::{
    LogFormat, NodeArgs, Shutdown, default_data_dir, index_from_name, init_logging,
};

/// Join this machine (or another node on it) to a cluster and run the pods bound to it.
///
/// The token comes from `wasmkube server token` on the server; it authenticates the agent
/// and pins the cluster CA, so no certificate needs copying.
#[derive(clap::Args, Debug)]
pub(crate) struct AgentCommand {
    /// The apiserver, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "WASMKUBE_SERVER", value_name = "URL")]
    server: String,
    /// The join token printed by `wasmkube server token`.
    #[arg(
        long,
        env = "WASMKUBE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: String,
    /// Where the agent keeps images, pod files and logs (under DIR/agent)
    /// [default: the user's data directory, e.g. ~/.local/share/wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    node: NodeArgs,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

impl AgentCommand {
    pub(crate) async fn execute(self) -> anyhow::Result<()> {
        init_logging(self.log_format);
        let data_dir = match self.data_dir.clone() {
            Some(d) => d,
            None => default_data_dir()?,
        };
        let server = self.server.trim_end_matches('/').to_string();
        let (ca_pem, secret) =
            wasmkube_apiserver::join::fetch_cluster_ca(&server, &self.token).await?;
        let mut config = kube::Config::new(
            server
                .parse()
                .with_context(|| format!("--server {server:?} is not a URL"))?,
        );
        config.root_cert = Some(pem_certificates(&ca_pem)?);
        config.auth_info.token = Some(secret.into());
        let client = kube::Client::try_from(config).context("building the API client")?;
        let name = self
            .node
            .node_name
            .clone()
            .unwrap_or_else(wasmkube_client::identity::default_node_name);
        let agent = self
            .node
            .agent_config(&data_dir, client, &ca_pem, index_from_name(&name))?;
        let shutdown = Shutdown::on_signals();
        eprintln!(
            "wasmkube agent: node {} joining {server}; pods get IPs 127.{}.x.y",
            agent.node_name, agent.node_index
        );
        let running = wasmkube_agent::start(agent, shutdown.wait())
            .await
            .context("starting the node agent")?;
        let _ = running.task.await;
        Ok(())
    }
}

/// The DER certificates of a PEM bundle.
fn pem_certificates(pem: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN CERTIFICATE") {
            inside = true;
            body.clear();
        } else if line.starts_with("-----END CERTIFICATE") {
            inside = false;
            out.push(
                base64::engine::general_purpose::STANDARD
                    .decode(&body)
                    .context("the cluster CA is not valid PEM")?,
            );
        } else if inside {
            body.push_str(line);
        }
    }
    anyhow::ensure!(!out.is_empty(), "the cluster CA holds no certificate");
    Ok(out)
}

//! `wasmkube server`: a complete single-node cluster control plane in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// Run the control plane: the Kubernetes API on an embedded, durable store.
///
/// On first start it creates a CA, a serving certificate, an admin client certificate and
/// an admin kubeconfig in the data directory; later starts reuse them and keep every object.
#[derive(clap::Args, Debug)]
pub(crate) struct ServerCommand {
    /// Where the store, certificates, tokens and kubeconfig live
    /// [default: the user's data directory, e.g. ~/.local/share/wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Address and port the apiserver listens on (HTTPS).
    #[arg(
        long,
        default_value = "127.0.0.1:6443",
        env = "WASMKUBE_BIND",
        value_name = "ADDR:PORT"
    )]
    pub(crate) bind: SocketAddr,
    /// Extra names or IPs for the serving certificate (repeatable), e.g. a DNS name clients use.
    #[arg(long = "tls-san", value_name = "NAME")]
    pub(crate) tls_sans: Vec<String>,
    /// Watch history kept, in events; older resourceVersions answer 410 Gone.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub(crate) history_max_events: usize,
    /// Watch history kept, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub(crate) history_max_age: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

/// How logs are written to stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The default data directory: `$XDG_DATA_HOME/wasmkube` or `~/.local/share/wasmkube`.
pub(crate) fn default_data_dir() -> anyhow::Result<PathBuf> {
    dirs::data_dir()
        .map(|d| d.join("wasmkube"))
        .context("cannot find the user's data directory; pass --data-dir")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMKUBE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

impl ServerCommand {
    pub(crate) async fn execute(self) -> anyhow::Result<()> {
        init_logging(self.log_format);
        let data_dir = match self.data_dir {
            Some(d) => d,
            None => default_data_dir()?,
        };
        let config = wasmkube_apiserver::Config {
            data_dir: data_dir.clone(),
            bind: self.bind,
            extra_sans: self.tls_sans,
            history_max_events: self.history_max_events,
            history_max_age: Duration::from_secs(self.history_max_age),
        };
        let running = wasmkube_apiserver::start(config, shutdown_signal())
            .await
            .with_context(|| {
                format!(
                    "starting the server with data directory {}",
                    data_dir.display()
                )
            })?;
        eprintln!(
            "wasmkube is serving the Kubernetes API at {}\n\
             \n\
             Use it with kubectl:\n\
             \n\
             \x20   export KUBECONFIG={}\n\
             \x20   kubectl get namespaces\n",
            running.url,
            running.kubeconfig.display()
        );
        running
            .task
            .await
            .context("the server task failed")?
            .context("serving")?;
        Ok(())
    }
}

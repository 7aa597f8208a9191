//! `wasmkube`: one binary for the whole cluster, k3s-style.
//!
//! Each subcommand is a struct with an `execute()`; the work lives in the libraries.

use clap::{Parser, Subcommand};

mod commands;
mod process;

/// A Kubernetes-architecture orchestrator for WebAssembly workloads.
#[derive(Parser, Debug)]
#[command(name = "wasmkube", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a cluster: apiserver on an embedded store, scheduler, controllers and a node agent.
    Server(Box<commands::server::ServerCommand>),
    /// Join a node to a cluster and run the pods bound to it.
    Agent(Box<commands::agent::AgentCommand>),
    /// Run the controller-manager (Deployments, ReplicaSets, Jobs, ...) against a cluster.
    Controllers(commands::controllers::ControllersCommand),
    /// Manage the node's wasm images: build, import, export, list, inspect and remove them in
    /// its image store; push and pull them to and from OCI registries; sign and verify them
    /// (cosign-compatible keys).
    Image(commands::image::ImageCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(cmd) => cmd.execute().await,
            Command::Agent(cmd) => cmd.execute().await,
            Command::Controllers(cmd) => cmd.execute().await,
            Command::Image(cmd) => cmd.execute().await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

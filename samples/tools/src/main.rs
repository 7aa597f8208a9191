//! `wasmkube-componentize`: the build helper behind `samples/build`.
//!
//! It bundles, as libraries pinned to the versions wasmtime 48 uses, what would otherwise be
//! three separately installed tools: `wit-bindgen c` (C bindings from WIT), `wasm-tools
//! component new --adapt` (core module -> component with the preview1 adapter) and
//! `wasm-tools validate` / `component wit` (checks on the results).

mod bindgen;
mod componentize;
mod inspect;

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::componentize::Adapter;
use crate::inspect::Kind;

/// Build helper for the wasmkube sample guests.
#[derive(Parser, Debug)]
#[command(name = "wasmkube-componentize", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate C bindings (<world>.h, <world>.c, <world>_component_type.o) for a WIT world.
    Bindgen {
        /// Directory holding the WIT package (and its deps/).
        #[arg(long)]
        wit: PathBuf,
        /// World to generate bindings for.
        #[arg(long)]
        world: String,
        /// Where to write the files.
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Turn a core module into a component with a wasi_snapshot_preview1 adapter.
    New {
        /// Core module to convert.
        input: PathBuf,
        /// Adapter to use.
        #[arg(long, value_enum)]
        adapter: Adapter,
        /// Output component.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Validate a module or component, optionally asserting its kind and exports.
    Check {
        /// Binary to check.
        input: PathBuf,
        /// Fail unless the binary is of this kind.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        /// Fail unless this is exported (a version suffix `@x.y.z` may be left out).
        #[arg(long = "export")]
        exports: Vec<String>,
    },
    /// Print imports and exports as JSON.
    Describe {
        /// Binary to describe.
        input: PathBuf,
    },
    /// Print a component's world as WIT.
    Wit {
        /// Component to print.
        input: PathBuf,
    },
    /// Write the preview1 adapter module itself (for use with other tools).
    Adapter {
        /// Which adapter.
        #[arg(value_enum)]
        adapter: Adapter,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wasmkube-componentize: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &PathBuf, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    // Write then rename, so an interrupted build never leaves a half-written output that a
    // later up-to-date check would take as finished.
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bindgen {
            wit,
            world,
            out_dir,
        } => {
            for path in bindgen::generate_c(&wit, &world, &out_dir)? {
                println!("{}", path.display());
            }
        }
        Command::New {
            input,
            adapter,
            output,
        } => {
            let component = componentize::componentize(&read(&input)?, adapter)
                .with_context(|| format!("componentizing {}", input.display()))?;
            write(&output, &component)?;
        }
        Command::Check {
            input,
            kind,
            exports,
        } => {
            let summary = inspect::summarize(&read(&input)?)
                .with_context(|| format!("checking {}", input.display()))?;
            if let Some(kind) = kind.filter(|k| *k != summary.kind) {
                bail!(
                    "{} is a {}, expected a {}",
                    input.display(),
                    summary.kind.as_str(),
                    kind.as_str()
                );
            }
            for export in &exports {
                if !summary.has_export(export) {
                    bail!(
                        "{} does not export {export} (exports: {})",
                        input.display(),
                        summary.exports.join(", ")
                    );
                }
            }
            println!("{}: valid {}", input.display(), summary.kind.as_str());
        }
        Command::Describe { input } => {
            let summary = inspect::summarize(&read(&input)?)
                .with_context(|| format!("describing {}", input.display()))?;
            println!("{}", summary.to_json());
        }
        Command::Wit { input } => {
            print!("{}", inspect::component_wit(&read(&input)?)?);
        }
        Command::Adapter { adapter, output } => write(&output, adapter.bytes())?,
    }
    Ok(())
}

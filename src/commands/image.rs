//! `wasmkube image`: the node's local image store (`import`, `list`).
//!
//! The store of the agent with data directory `DIR` is `DIR/agent/images` (for `wasmkube
//! server --data-dir DIR`'s embedded agent and for `wasmkube agent --data-dir DIR` alike).
//! Importing while that agent runs is safe: blobs are verified and renamed into place and the
//! names file is replaced atomically, and the agent reads names afresh for each pod.

use std::path::PathBuf;

use anyhow::Context;
use wasmkube_agent::images::{ImageKind, ImageStore, ImportOptions};

/// Manage the images of a node's local store.
#[derive(clap::Args, Debug)]
pub(crate) struct ImageCommand {
    #[command(subcommand)]
    command: ImageSubcommand,
}

#[derive(clap::Subcommand, Debug)]
enum ImageSubcommand {
    /// Import OCI image layouts (directories or tar archives) into the node's image store.
    ///
    /// Each PATH is an OCI image layout directory or a tar archive of one (optionally gzip), as
    /// written by `skopeo copy ... oci:DIR` / `oci-archive:FILE`, `oras copy --to-oci-layout`,
    /// `docker save` (Docker 25+) or `ctr image export`. Images are named from the layout's
    /// `io.containerd.image.name` annotation, else `org.opencontainers.image.ref.name` when it is a
    /// full reference; a ref.name that is only a tag needs --base-name. Both the CNCF wasm artifact
    /// (application/wasm layer) and runwasi-style images (the .wasm in a tar layer) are accepted;
    /// every blob is checked against its digest. Prints NAME, DIGEST and KIND per image.
    #[command(after_long_help = "Examples:\n  \
        wasmkube image import hello-oci/\n  \
        wasmkube image import --data-dir /var/lib/wasmkube hello.tar counter.tar.gz\n  \
        wasmkube image import --base-name wasmkube.local/samples/hello hello-tagged.tar")]
    Import(ImportCommand),
    /// List the images in the node's image store.
    #[command(alias = "ls")]
    List(ListCommand),
}

/// The data directory whose agent's store is used.
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// Data directory of the agent (or of `wasmkube server`, whose embedded agent runs the
    /// pods); the images go to DIR/agent/images
    /// [default: the user's data directory, e.g. ~/.local/share/wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn open(&self) -> anyhow::Result<ImageStore> {
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => super::cluster::default_data_dir()?,
        };
        let dir = ImageStore::dir_in_data_dir(&data_dir);
        ImageStore::open(&dir).with_context(|| format!("opening the image store {}", dir.display()))
    }
}

/// `wasmkube image import`.
#[derive(clap::Args, Debug)]
struct ImportCommand {
    #[command(flatten)]
    store: StoreArgs,
    /// Repository for images named only by a tag (REPO:TAG), as `ctr image import
    /// --base-name`; full names not under it are left unnamed.
    #[arg(long, value_name = "REPO")]
    base_name: Option<String>,
    /// OCI image layout directories or tar archives.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// `wasmkube image list`.
#[derive(clap::Args, Debug)]
struct ListCommand {
    #[command(flatten)]
    store: StoreArgs,
}

impl ImageCommand {
    pub(crate) async fn execute(self) -> anyhow::Result<()> {
        // The store does plain file I/O; keep it off the async workers.
        tokio::task::spawn_blocking(move || match self.command {
            ImageSubcommand::Import(cmd) => cmd.run(),
            ImageSubcommand::List(cmd) => cmd.run(),
        })
        .await
        .context("the image command stopped unexpectedly")?
    }
}

impl ImportCommand {
    fn run(self) -> anyhow::Result<()> {
        let store = self.store.open()?;
        let options = ImportOptions {
            base_name: self.base_name,
        };
        let mut failed = 0;
        for path in &self.paths {
            match store.import_with(path, &options) {
                Ok(images) => {
                    for image in images {
                        let kind = match image.kind {
                            ImageKind::WasmArtifact => "wasm artifact",
                            ImageKind::RunwasiLayer => "wasm in image layer",
                        };
                        match (&image.name, &image.note) {
                            (Some(name), _) => println!("{name}\t{}\t{kind}", image.digest),
                            (None, note) => {
                                println!("<none>\t{}\t{kind}", image.digest);
                                if let Some(note) = note {
                                    eprintln!("note: {}: {note}", image.digest);
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("error: importing {}: {e}", path.display());
                }
            }
        }
        anyhow::ensure!(
            failed == 0,
            "{failed} of {} imports failed",
            self.paths.len()
        );
        Ok(())
    }
}

impl ListCommand {
    fn run(self) -> anyhow::Result<()> {
        let store = self.store.open()?;
        for (name, digest) in store.list()? {
            println!("{name}\t{digest}");
        }
        Ok(())
    }
}

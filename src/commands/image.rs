//! `wasmkube image`: the node's local image store (`build`, `import`, `export`, `list`,
//! `rm`, `inspect`), OCI registries (`push`, `pull`), and signatures (`generate-key-pair`,
//! `sign`, `verify`, in `image/sign.rs`).
//!
//! The store of the agent with data directory `DIR` is `DIR/agent/images` (for `wasmkube
//! server --data-dir DIR`'s embedded agent and for `wasmkube agent --data-dir DIR` alike).
//! Importing while that agent runs is safe: blobs are verified and renamed into place and the
//! names file is replaced atomically, and the agent reads names afresh for each pod.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use wasmkube_agent::images::registry::{
    Registries, RegistryAuth, RegistryConfig, TransferProgress,
};
use wasmkube_agent::images::{ImageKind, ImageStore, ImportOptions, Reference};

mod sign;

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
    /// Package a wasm module or component as an OCI image (the CNCF wasm artifact) in the
    /// node's image store.
    ///
    /// The image has one `application/wasm` layer, the file itself, and a config
    /// (`application/vnd.wasm.config.v0+json`) saying architecture wasm, os wasip1 for a core
    /// module or wasip2 for a component, and a component's imports and exports. The same file
    /// gives the same digest. Prints NAME and DIGEST; `wasmkube image push NAME` sends it to a
    /// registry.
    #[command(after_long_help = "Examples:\n  \
        wasmkube image build hello.wasm -t registry.example.com/team/hello:1.0\n  \
        wasmkube image build --data-dir /var/lib/wasmkube app.wasm -t localhost:5000/app:dev")]
    Build(BuildCommand),
    /// Push an image of the node's image store to an OCI registry.
    ///
    /// Sends the blobs the registry lacks, then the manifest. Plain HTTP is used only for
    /// registries on this machine (localhost, 127.0.0.0/8, ::1) and those given with
    /// --insecure-registry; HTTPS otherwise.
    #[command(after_long_help = "Examples:\n  \
        wasmkube image push localhost:5000/app:dev\n  \
        wasmkube image push app:dev registry.example.com/team/app:1.0 --creds alice:s3cret")]
    Push(PushCommand),
    /// Pull an image from an OCI registry into the node's image store.
    ///
    /// Accepts the CNCF wasm artifact, images whose layers hold a .wasm file (runwasi style)
    /// and image indexes (the wasm platform's manifest is taken). Every blob is checked against
    /// its digest and size before it is stored.
    #[command(after_long_help = "Examples:\n  \
        wasmkube image pull localhost:5000/app:dev\n  \
        wasmkube image pull registry.example.com/team/app@sha256:<hex> --creds alice:s3cret")]
    Pull(PullCommand),
    /// Write images of the node's image store as an OCI image layout: a directory, or a tar
    /// archive when OUTPUT ends in .tar.
    ///
    /// `wasmkube image import` on another node reads it back (the air-gap path), as do skopeo
    /// (`oci:DIR`, `oci-archive:FILE`) and other OCI tools; each image is named by its full
    /// reference (io.containerd.image.name) and its tag (org.opencontainers.image.ref.name).
    #[command(after_long_help = "Examples:\n  \
        wasmkube image export localhost:5000/app:dev -o app.tar\n  \
        wasmkube image export app:1 app:2 -o images/")]
    Export(ExportCommand),
    /// Remove images from the node's image store.
    ///
    /// IMAGE is a name (REPO:TAG, normalized as Docker does: hello:v1 is
    /// docker.io/library/hello:v1), which loses that name, or a digest (sha256:<hex>, or
    /// REPO@sha256:<hex>), which loses every name pointing at it. The image's blobs, the
    /// module extracted from it and the agent's compiled code for it are deleted once no
    /// name points at them (a layer another image shares stays). An image a pod on the node
    /// uses, as the running agent records in DIR/agent/images/in-use.json, is refused unless
    /// --force: delete those pods first. An agent that stopped cleanly records nothing, so
    /// then nothing is refused. Prints what was removed (Untagged: NAME, Deleted: DIGEST).
    #[command(
        alias = "rmi",
        alias = "remove",
        after_long_help = "Examples:\n  \
        wasmkube image rm localhost:5000/app:dev\n  \
        wasmkube image rm sha256:4f1c...e9 --data-dir /var/lib/wasmkube\n  \
        wasmkube image rm app:1 app:2"
    )]
    Rm(RmCommand),
    /// Describe an image of the node's image store as JSON.
    ///
    /// Prints its names, digest (the imageID pods report), media type and size; the manifest
    /// that runs (for an index), the config and the layers with their digests, media types
    /// and sizes; the platform (os/architecture); the module or component it runs with its
    /// imports and exports; the config's Entrypoint, Cmd and Env; and the agent's compiled
    /// code files for it. IMAGE is a name, REPO@sha256:<hex> or sha256:<hex>.
    #[command(
        alias = "inspecti",
        after_long_help = "Examples:\n  \
        wasmkube image inspect localhost:5000/app:dev\n  \
        wasmkube image inspect sha256:4f1c...e9 | jq .wasm.exports"
    )]
    Inspect(InspectCommand),
    /// Make a key pair for signing images, as `cosign generate-key-pair`: PREFIX.key (the
    /// ECDSA P-256 private key, encrypted with the passphrase in COSIGN_PASSWORD, in cosign's
    /// format) and PREFIX.pub (the public key, PEM).
    #[command(after_long_help = "Examples:\n  \
        COSIGN_PASSWORD=... wasmkube image generate-key-pair\n  \
        COSIGN_PASSWORD=... wasmkube image generate-key-pair --output-key-prefix team-a")]
    GenerateKeyPair(sign::GenerateKeyPairCommand),
    /// Sign an image in a registry with a key, as `cosign sign --key` without a
    /// transparency log.
    ///
    /// Signs the manifest digest IMAGE names (a tag is resolved in the registry first) and
    /// adds the signature to the repository as cosign does: a simple signing payload layer
    /// with the dev.cosignproject.cosign/signature annotation in the manifest tagged
    /// sha256-<hex>.sig. `cosign verify --key`, `wasmkube image verify`, skopeo/podman with a
    /// sigstoreSigned policy (use-sigstore-attachments) and the agent's
    /// --image-signature-policy check it. The key's passphrase comes from COSIGN_PASSWORD.
    #[command(after_long_help = "Examples:\n  \
        COSIGN_PASSWORD=... wasmkube image sign --key cosign.key localhost:5000/app:1.0\n  \
        wasmkube image sign --key cosign.key registry.example.com/team/app@sha256:<hex> --creds alice:s3cret")]
    Sign(sign::SignCommand),
    /// Verify an image in a registry against public keys, as `cosign verify --key` without a
    /// transparency log.
    ///
    /// Passes (exit 0, prints what was verified) when a signature of the manifest digest
    /// IMAGE names verifies with one of the keys and its payload names that digest; fails
    /// (non-zero, saying why: unsigned, signed by another key, signature of another digest)
    /// otherwise. Reads the signatures cosign writes (and containers/image's sigstore attachments,
    /// which podman and skopeo write in the same format).
    #[command(after_long_help = "Examples:\n  \
        wasmkube image verify --key cosign.pub localhost:5000/app:1.0\n  \
        wasmkube image verify --key team-a.pub --key team-b.pub registry.example.com/team/app@sha256:<hex>")]
    Verify(sign::VerifyCommand),
}

/// `wasmkube image rm`.
#[derive(clap::Args, Debug)]
struct RmCommand {
    #[command(flatten)]
    store: StoreArgs,
    /// Remove images pods on the node use (by the agent's record) too, e.g. when the
    /// record is what a killed agent left behind.
    #[arg(long)]
    force: bool,
    /// The images: names or digests.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// `wasmkube image inspect`.
#[derive(clap::Args, Debug)]
struct InspectCommand {
    #[command(flatten)]
    store: StoreArgs,
    /// The image: a name or a digest.
    #[arg(value_name = "IMAGE")]
    image: String,
}

impl RmCommand {
    fn run(self) -> anyhow::Result<()> {
        let store = self.store.open()?;
        let in_use = if self.force {
            Vec::new()
        } else {
            store.recorded_in_use()?
        };
        let mut failed = 0;
        for image in &self.images {
            match store.remove_image(image, &in_use) {
                Ok(removed) => {
                    for name in &removed.names {
                        println!("Untagged: {name}");
                    }
                    if removed.blobs_removed {
                        println!("Deleted: {}", removed.digest);
                    }
                }
                Err(e) => {
                    failed += 1;
                    let hint = match e {
                        wasmkube_agent::images::ImageError::InUse { .. } => {
                            " (or --force if the agent is not running)"
                        }
                        _ => "",
                    };
                    eprintln!("error: removing {image}: {e}{hint}");
                }
            }
        }
        anyhow::ensure!(
            failed == 0,
            "{failed} of {} images were not removed",
            self.images.len()
        );
        Ok(())
    }
}

impl InspectCommand {
    fn run(self) -> anyhow::Result<()> {
        let store = self.store.open()?;
        let inspection = store
            .inspect(&self.image)
            .with_context(|| format!("inspecting {}", self.image))?;
        println!("{}", serde_json::to_string_pretty(&inspection)?);
        Ok(())
    }
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

/// `wasmkube image build`.
#[derive(clap::Args, Debug)]
struct BuildCommand {
    #[command(flatten)]
    store: StoreArgs,
    /// The image's name, e.g. registry.example.com/team/app:1.0.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tag: String,
    /// The wasm module or component.
    #[arg(value_name = "FILE.wasm")]
    file: PathBuf,
}

/// How to reach a registry.
#[derive(clap::Args, Debug)]
struct RegistryArgs {
    /// Credentials for the registry (HTTP basic or its token service).
    #[arg(long, value_name = "USER:PASSWORD", env = "WASMKUBE_REGISTRY_CREDS")]
    creds: Option<String>,
    /// A registry (HOST:PORT) to reach over plain HTTP although it is not on this machine
    /// (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// An extra CA certificate (PEM) to trust for registries' HTTPS.
    #[arg(long, value_name = "FILE")]
    registry_ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    fn registries(&self) -> anyhow::Result<Registries> {
        let mut config = RegistryConfig {
            insecure_registries: self.insecure_registries.clone(),
            ..RegistryConfig::default()
        };
        if let Some(file) = &self.registry_ca_file {
            config.extra_ca_pem.push(
                std::fs::read(file)
                    .with_context(|| format!("reading --registry-ca-file {}", file.display()))?,
            );
        }
        Ok(Registries::new(config))
    }

    fn auth(&self) -> anyhow::Result<RegistryAuth> {
        match &self.creds {
            None => Ok(RegistryAuth::Anonymous),
            Some(creds) => {
                let (user, password) = creds
                    .split_once(':')
                    .context("--creds takes USER:PASSWORD")?;
                Ok(RegistryAuth::Basic(user.to_string(), password.to_string()))
            }
        }
    }
}

/// `wasmkube image push`.
#[derive(clap::Args, Debug)]
struct PushCommand {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// The image in the node's store.
    #[arg(value_name = "NAME")]
    image: String,
    /// Where to push it [default: NAME].
    #[arg(value_name = "DESTINATION")]
    destination: Option<String>,
}

/// `wasmkube image pull`.
#[derive(clap::Args, Debug)]
struct PullCommand {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// The image, by tag or digest.
    #[arg(value_name = "NAME")]
    image: String,
}

/// `wasmkube image export`.
#[derive(clap::Args, Debug)]
struct ExportCommand {
    #[command(flatten)]
    store: StoreArgs,
    /// Where to write: a new directory, or a file ending in .tar.
    #[arg(short, long, value_name = "OUTPUT")]
    output: PathBuf,
    /// The images.
    #[arg(required = true, value_name = "NAME")]
    images: Vec<String>,
}

impl ExportCommand {
    fn run(self) -> anyhow::Result<()> {
        let store = self.store.open()?;
        store
            .export(&self.images, &self.output)
            .with_context(|| format!("exporting to {}", self.output.display()))?;
        Ok(())
    }
}

/// A progress bar over the bytes of an image's blobs, on stderr (hidden when it is not a
/// terminal).
struct Bar(ProgressBar);

impl Bar {
    fn new(verb: &str, name: &str) -> Bar {
        let bar = ProgressBar::new(0).with_message(format!("{verb} {name}"));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Bar(bar)
    }
}

impl TransferProgress for Bar {
    fn start(&self, _digest: &str, size: u64) {
        self.0.inc_length(size);
    }
    fn done(&self, _digest: &str) {
        self.0.set_position(self.0.length().unwrap_or(0));
    }
}

fn parse_reference(name: &str) -> anyhow::Result<Reference> {
    Reference::parse(name).with_context(|| format!("{name:?} is not an image name"))
}

impl ImageCommand {
    pub(crate) async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            ImageSubcommand::Push(cmd) => cmd.run().await,
            ImageSubcommand::Pull(cmd) => cmd.run().await,
            ImageSubcommand::Sign(cmd) => cmd.run().await,
            ImageSubcommand::Verify(cmd) => cmd.run().await,
            // The store does plain file I/O; keep it off the async workers.
            command => tokio::task::spawn_blocking(move || match command {
                ImageSubcommand::Import(cmd) => cmd.run(),
                ImageSubcommand::List(cmd) => cmd.run(),
                ImageSubcommand::Build(cmd) => cmd.run(),
                ImageSubcommand::Export(cmd) => cmd.run(),
                ImageSubcommand::Rm(cmd) => cmd.run(),
                ImageSubcommand::Inspect(cmd) => cmd.run(),
                ImageSubcommand::GenerateKeyPair(cmd) => cmd.run(),
                ImageSubcommand::Push(_)
                | ImageSubcommand::Pull(_)
                | ImageSubcommand::Sign(_)
                | ImageSubcommand::Verify(_) => Ok(()),
            })
            .await
            .context("the image command stopped unexpectedly")?,
        }
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

impl BuildCommand {
    fn run(self) -> anyhow::Result<()> {
        let store = self.store.open()?;
        let reference = parse_reference(&self.tag)?;
        let wasm = std::fs::read(&self.file)
            .with_context(|| format!("reading {}", self.file.display()))?;
        let built = wasmkube_agent::images::build::build_wasm_artifact(&store, &wasm, &reference)?;
        println!("{reference}\t{}", built.digest);
        Ok(())
    }
}

impl PushCommand {
    async fn run(self) -> anyhow::Result<()> {
        let store = self.store.open()?;
        let destination = parse_reference(self.destination.as_deref().unwrap_or(&self.image))?;
        let registries = self.registry.registries()?;
        let bar = Bar::new("pushing", &destination.to_string());
        let digest = registries
            .push(
                &store,
                &self.image,
                &destination,
                &self.registry.auth()?,
                &bar,
            )
            .await?;
        bar.0.finish_and_clear();
        println!("{destination}\t{digest}");
        Ok(())
    }
}

impl PullCommand {
    async fn run(self) -> anyhow::Result<()> {
        let store = self.store.open()?;
        let reference = parse_reference(&self.image)?;
        let registries = self.registry.registries()?;
        let bar = Bar::new("pulling", &reference.to_string());
        let digest = registries
            .pull(&reference, &self.registry.auth()?, &store, &bar)
            .await?;
        bar.0.finish_and_clear();
        println!("{reference}\t{digest}");
        Ok(())
    }
}

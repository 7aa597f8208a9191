//! `wasmkube image generate-key-pair | sign | verify`: cosign-compatible keyed signatures of
//! images in a registry (no transparency log), through `wasmkube_agent::images::signature`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use wasmkube_agent::images::signature::{self, Payload, PrivateKey, PublicKey, remote};

use super::{RegistryArgs, parse_reference};

/// The environment variable holding the private key's passphrase (cosign's).
const PASSWORD_ENV: &str = "COSIGN_PASSWORD";

fn passphrase() -> anyhow::Result<String> {
    std::env::var(PASSWORD_ENV).map_err(|_| {
        anyhow::anyhow!(
            "set {PASSWORD_ENV} to the private key's passphrase (as for cosign; it may be empty)"
        )
    })
}

/// `wasmkube image generate-key-pair`.
#[derive(clap::Args, Debug)]
pub(super) struct GenerateKeyPairCommand {
    /// Write PREFIX.key and PREFIX.pub.
    #[arg(long, default_value = "cosign", value_name = "PREFIX")]
    output_key_prefix: String,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

impl GenerateKeyPairCommand {
    pub(super) fn run(self) -> anyhow::Result<()> {
        let passphrase = passphrase()?;
        let private = PathBuf::from(format!("{}.key", self.output_key_prefix));
        let public = PathBuf::from(format!("{}.pub", self.output_key_prefix));
        if !self.force {
            for file in [&private, &public] {
                if file.exists() {
                    bail!(
                        "{} exists; remove it or pass --force to replace it",
                        file.display()
                    );
                }
            }
        }
        let key = PrivateKey::generate()?;
        let sealed = key.to_encrypted_pem(passphrase.as_bytes())?;
        write_private(&private, sealed.as_bytes())?;
        std::fs::write(&public, key.public_key().to_pem())
            .with_context(|| format!("writing {}", public.display()))?;
        println!("Private key written to {}", private.display());
        println!("Public key written to {}", public.display());
        Ok(())
    }
}

/// Writes `path` readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// `wasmkube image sign`.
#[derive(clap::Args, Debug)]
pub(super) struct SignCommand {
    #[command(flatten)]
    registry: RegistryArgs,
    /// The private key (cosign's encrypted PEM, e.g. cosign.key); its passphrase comes from
    /// COSIGN_PASSWORD.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The image in the registry, by tag or digest.
    #[arg(value_name = "IMAGE")]
    image: String,
}

impl SignCommand {
    pub(super) async fn run(self) -> anyhow::Result<()> {
        let pem = std::fs::read(&self.key)
            .with_context(|| format!("reading --key {}", self.key.display()))?;
        let key = PrivateKey::from_encrypted_pem(&pem, passphrase()?.as_bytes())
            .with_context(|| format!("opening the private key {}", self.key.display()))?;
        let reference = parse_reference(&self.image)?;
        let registries = self.registry.registries()?;
        let auth = self.registry.auth()?;
        let digest = remote::manifest_digest(&registries, &reference, &auth).await?;
        if reference.digest.is_none() {
            eprintln!(
                "note: {reference} is a tag; signing the digest it points to now, {digest} \
                 (sign IMAGE@DIGEST to be sure which)"
            );
        }
        let payload = Payload::new(&reference.repository(), &digest).to_bytes();
        let signature = signature::keys::encode_signature(&key.sign(&payload)?);
        let at =
            remote::push_signature(&registries, &reference, &digest, &auth, payload, signature)
                .await?;
        println!(
            "{}@{digest}\tsigned by {}; signature at {at}",
            reference.repository(),
            key.public_key().fingerprint()
        );
        Ok(())
    }
}

/// `wasmkube image verify`.
#[derive(clap::Args, Debug)]
pub(super) struct VerifyCommand {
    #[command(flatten)]
    registry: RegistryArgs,
    /// A trusted public key (PEM, e.g. cosign.pub); repeatable: a signature by any of them
    /// passes.
    #[arg(long, required = true, value_name = "FILE")]
    key: Vec<PathBuf>,
    /// The image in the registry, by tag or digest.
    #[arg(value_name = "IMAGE")]
    image: String,
}

impl VerifyCommand {
    pub(super) async fn run(self) -> anyhow::Result<()> {
        let mut keys = Vec::new();
        for file in &self.key {
            let pem =
                std::fs::read(file).with_context(|| format!("reading --key {}", file.display()))?;
            keys.push(
                PublicKey::from_pem(&pem)
                    .with_context(|| format!("reading the public key {}", file.display()))?,
            );
        }
        let reference = parse_reference(&self.image)?;
        let registries = self.registry.registries()?;
        let auth = self.registry.auth()?;
        let digest = remote::manifest_digest(&registries, &reference, &auth).await?;
        let found = remote::fetch_signatures(&registries, &reference, &digest, &auth)
            .await
            .map_err(|message| {
                anyhow::anyhow!("reading the signatures of {reference}: {message}")
            })?;
        let verified = signature::check(&reference.repository(), &digest, &found, &keys)
            .with_context(|| format!("verifying {reference}"))?;
        println!(
            "Verified OK: {}@{}\tsigned by {} (docker-reference {})",
            reference.repository(),
            verified.digest,
            verified.key,
            verified.docker_reference
        );
        Ok(())
    }
}

//! Linux container images made offline, for the tests that run containers through containerd
//! (there is no internet and no Docker): from Debian's `busybox-static` (`/bin/busybox`),
//!
//! * [`BUSYBOX_IMAGE`]: a root filesystem with `/bin/busybox`, a symbolic link for every applet
//!   it has (`sh`, `echo`, `cat`, `sleep`, `nc`, `httpd`, `wget`, ...), a minimal
//!   `/etc/passwd` and `/etc/group` and a `/tmp`; no entrypoint, `Cmd ["sh"]`;
//! * [`PAUSE_IMAGE`]: the same layer, whose entrypoint is a shell that waits forever and exits
//!   0 on SIGTERM or SIGINT, as the real pause does: containerd's `sandbox_image`.
//!
//! Both are one OCI image layout (one uncompressed layer, shared) for this machine's platform,
//! each manifest named by the `io.containerd.image.name` and
//! `org.opencontainers.image.ref.name` annotations, and the same layout as an OCI archive that
//! `ctr -n k8s.io images import` takes (`Containerd::import_test_images`); `skopeo copy
//! oci:LAYOUT:wasmkube.test/busybox:1.35 docker://...` pushes one to a registry. They are built
//! once per test process ([`test_images`]) into the temporary directory, under a name that
//! depends on the busybox binary, so that every test process on the machine shares them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The busybox image: `sh` and the other busybox applets, no entrypoint, `Cmd ["sh"]`.
pub(crate) const BUSYBOX_IMAGE: &str = "wasmkube.test/busybox:1.35";
/// The pause image containerd's `sandbox_image` names: waits forever, exits 0 on SIGTERM.
pub(crate) const PAUSE_IMAGE: &str = "wasmkube.test/pause:3.9";
/// The statically linked busybox of Debian's `busybox-static`.
pub(crate) const BUSYBOX_BINARY: &str = "/bin/busybox";
/// The pause image's entrypoint: a shell that waits on a long sleep, and exits on TERM or INT
/// (a PID 1 has no default action for them).
const PAUSE_ENTRYPOINT: [&str; 3] = [
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM INT; while :; do sleep 2147483647 & wait $!; done",
];
/// Bumped whenever what is built here changes, so that no stale cached layout is reused.
const FORMAT: u32 = 1;
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The built test images: an OCI image layout and the same as an OCI archive.
#[derive(Debug)]
pub(crate) struct TestImages {
    layout: PathBuf,
    archive: PathBuf,
}

impl TestImages {
    /// The OCI image layout directory holding [`BUSYBOX_IMAGE`] and [`PAUSE_IMAGE`] (each
    /// reference by its full name: `oci:LAYOUT:wasmkube.test/busybox:1.35` for skopeo).
    #[allow(dead_code)]
    pub(crate) fn layout(&self) -> &Path {
        &self.layout
    }

    /// The layout as an uncompressed tar (an OCI archive), for `ctr images import`.
    pub(crate) fn archive(&self) -> &Path {
        &self.archive
    }
}

/// The test images, built on first use in this process (see the module docs). Fails naming
/// the package when `/bin/busybox` is missing or not statically linked.
pub(crate) fn test_images() -> Result<&'static TestImages> {
    static BUILT: OnceLock<std::result::Result<TestImages, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("building the test images: {e}"))
}

/// Fails, naming what installs it, unless [`BUSYBOX_BINARY`] is a static executable.
pub(crate) fn check_busybox() -> Result<Vec<u8>> {
    let binary = std::fs::read(BUSYBOX_BINARY).map_err(|e| {
        anyhow!(
            "{BUSYBOX_BINARY} ({e}) is missing: the container test images are built from \
             Debian's busybox-static; run tests/run, which installs it, or \
             `apt-get install busybox-static`"
        )
    })?;
    if !is_static_elf(&binary) {
        bail!(
            "{BUSYBOX_BINARY} is not a statically linked executable (Debian's dynamic `busybox` \
             package?); the container test images need busybox-static: \
             `apt-get install busybox-static`"
        );
    }
    Ok(binary)
}

/// Builds the layout and archive into the temporary directory, unless a process on this
/// machine already did for the same busybox.
fn build() -> Result<TestImages> {
    let busybox = check_busybox()?;
    let key = hex(&Sha256::digest(
        [&busybox[..], &FORMAT.to_le_bytes()[..]].concat(),
    ));
    let base = std::env::temp_dir().join(format!("wasmkube-e2e-linux-images-{}", &key[..16]));
    let images = TestImages {
        layout: base.join("layout"),
        archive: base.join("images.tar"),
    };
    if images.archive.is_file() && images.layout.join("index.json").is_file() {
        return Ok(images);
    }
    // Built beside, then renamed into place: a concurrent builder never sees half a layout.
    let staging = tempfile::Builder::new()
        .prefix("wasmkube-e2e-linux-images-")
        .tempdir()
        .context("creating a staging directory for the test images")?;
    let layout = staging.path().join("layout");
    write_layout(&layout, &busybox)?;
    write_archive(&layout, &staging.path().join("images.tar"))?;
    match std::fs::rename(staging.path(), &base) {
        Ok(()) => {
            // Renamed away: nothing is left for the TempDir to delete.
            let _ = staging.keep();
        }
        // Another test process renamed its identical build into place first.
        Err(_) if images.archive.is_file() => {}
        Err(e) => return Err(e).with_context(|| format!("moving the images to {base:?}")),
    }
    Ok(images)
}

/// Writes the OCI image layout of both images to `dir`.
fn write_layout(dir: &Path, busybox: &[u8]) -> Result<()> {
    let layer = rootfs_layer(busybox)?;
    let layer = write_blob(dir, &layer)?;
    let (architecture, os) = (platform_architecture()?, "linux");
    let mut manifests = Vec::new();
    for (name, entrypoint, cmd) in [
        (BUSYBOX_IMAGE, None, Some(vec!["sh"])),
        (PAUSE_IMAGE, Some(PAUSE_ENTRYPOINT.to_vec()), None),
    ] {
        let config = json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": architecture,
            "os": os,
            "config": {
                "Env": [PATH_ENV],
                "Entrypoint": entrypoint,
                "Cmd": cmd,
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.0]},
            "history": [{
                "created": "1970-01-01T00:00:00Z",
                "created_by": "wasmkube tests: /bin/busybox of busybox-static and its applets",
            }],
        });
        let config = write_blob(dir, &serde_json::to_vec(&config)?)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config.0, "size": config.1},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer.0, "size": layer.1}],
        });
        let manifest = write_blob(dir, &serde_json::to_vec(&manifest)?)?;
        manifests.push(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest.0,
            "size": manifest.1,
            "platform": {"architecture": architecture, "os": os},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name,
            },
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    });
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .context("writing oci-layout")?;
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)
        .context("writing index.json")?;
    Ok(())
}

/// The root filesystem layer: directories, `/bin/busybox`, one symbolic link per applet (from
/// `busybox --list-full`), `/etc/passwd` and `/etc/group`. Reproducible: every entry owned by
/// root with modification time 0.
fn rootfs_layer(busybox: &[u8]) -> Result<Vec<u8>> {
    let out = std::process::Command::new(BUSYBOX_BINARY)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {BUSYBOX_BINARY} --list-full"))?;
    if !out.status.success() {
        bail!("{BUSYBOX_BINARY} --list-full failed with {}", out.status);
    }
    let applets = String::from_utf8_lossy(&out.stdout);
    let mut builder = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sbin", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
        ("var/tmp", 0o1777),
    ] {
        let mut header = entry_header(tar::EntryType::Directory, mode, 0);
        builder.append_data(&mut header, dir, std::io::empty())?;
    }
    let mut header = entry_header(tar::EntryType::Regular, 0o755, busybox.len());
    builder.append_data(&mut header, "bin/busybox", busybox)?;
    for (path, content) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ] {
        let mut header = entry_header(tar::EntryType::Regular, 0o644, content.len());
        builder.append_data(&mut header, path, content.as_bytes())?;
    }
    let mut links: Vec<&str> = applets
        .lines()
        .map(str::trim)
        .filter(|path| !path.is_empty() && *path != "bin/busybox")
        .collect();
    links.sort_unstable();
    links.dedup();
    for path in links {
        let mut header = entry_header(tar::EntryType::Symlink, 0o777, 0);
        builder.append_link(&mut header, path, "/bin/busybox")?;
    }
    builder.into_inner().context("finishing the layer")
}

/// A tar header owned by root, modification time 0.
fn entry_header(kind: tar::EntryType, mode: u32, size: usize) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size as u64);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// Writes the layout directory `layout` (its `oci-layout`, `index.json` and blobs) as an
/// uncompressed tar at `archive`.
fn write_archive(layout: &Path, archive: &Path) -> Result<()> {
    let file = std::fs::File::create(archive)
        .with_context(|| format!("creating {}", archive.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    for dir in ["blobs", "blobs/sha256"] {
        let mut header = entry_header(tar::EntryType::Directory, 0o755, 0);
        builder.append_data(&mut header, dir, std::io::empty())?;
    }
    let mut files = vec![PathBuf::from("oci-layout"), PathBuf::from("index.json")];
    let mut blobs: Vec<PathBuf> = std::fs::read_dir(layout.join("blobs/sha256"))?
        .map(|entry| entry.map(|e| Path::new("blobs/sha256").join(e.file_name())))
        .collect::<std::io::Result<_>>()?;
    blobs.sort();
    files.extend(blobs);
    for path in files {
        let bytes = std::fs::read(layout.join(&path))?;
        let mut header = entry_header(tar::EntryType::Regular, 0o644, bytes.len());
        builder.append_data(&mut header, &path, &bytes[..])?;
    }
    builder.into_inner()?.into_inner()?.sync_all()?;
    Ok(())
}

/// Writes `bytes` as a blob of the layout; returns its digest and size.
fn write_blob(layout: &Path, bytes: &[u8]) -> Result<(String, usize)> {
    let hex = hex(&Sha256::digest(bytes));
    let blobs = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).context("creating blobs/sha256")?;
    std::fs::write(blobs.join(&hex), bytes).context("writing a blob")?;
    Ok((format!("sha256:{hex}"), bytes.len()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OCI architecture of this machine (busybox is its binary).
fn platform_architecture() -> Result<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        other => bail!("no OCI architecture name for {other}"),
    }
}

/// Whether `elf` is a 64-bit little-endian ELF executable without a program interpreter
/// (`PT_INTERP`), i.e. statically linked.
fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum))
        .all(|i| u32_at(phoff + i * usize::from(phentsize)).is_some_and(|kind| kind != PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_not_taken_for_busybox_static() {
        let sh = std::fs::read("/bin/sh").expect("/bin/sh");
        assert!(!is_static_elf(&sh), "/bin/sh has a program interpreter");
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(b""));
    }
}

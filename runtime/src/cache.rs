//! The on-disk cache of compiled code.
//!
//! A compiled module or component is stored as `<cache_dir>/<sha256 of the wasm>-<engine
//! hash>.cwasm`, where the engine hash digests [`Engine::precompile_compatibility_hash`]
//! (wasmtime version, target, compiler flags and tunables). So an agent restart or a second
//! pod of the same image loads the file instead of compiling, and a wasmtime upgrade or a
//! config change misses the old files instead of loading incompatible code.
//!
//! # Integrity
//! A file is wasmtime's precompiled artifact followed by a trailer: the artifact's SHA-256,
//! its length and a magic number. Files are written to a temporary file of a unique name in
//! the same directory (never one shared by two writers) and renamed into place, and never
//! changed after; a file that is torn (a crash before the data reached the disk), truncated
//! or otherwise corrupt fails the trailer's check and is deleted and recompiled. A file is
//! read into memory, checked, and only then handed to wasmtime, which copies it into its
//! own executable mapping: nothing maps a cache file itself, so no write to one (a second
//! compilation, another process) can pull code from under a running guest.
//!
//! Concurrent loads of one program in a process are coalesced before they get here (one
//! compilation per digest, see `crate::loader`); two processes (or runtimes) sharing the
//! directory may both compile, each writing its own temporary file, and the last rename
//! wins with identical content.
//!
//! Trust: loading an artifact turns it into executable code. The cache directory must be
//! private to the agent (never a guest's preopen); that is the one `unsafe` of this crate.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ring::digest::{Context, SHA256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::RuntimeError;

/// The last eight bytes of every cache file (format version 1).
const TRAILER_MAGIC: [u8; 8] = *b"wkcode01";
/// Trailer: SHA-256 of the artifact (32 bytes), its length (8, little endian), the magic.
const TRAILER_LEN: usize = 32 + 8 + TRAILER_MAGIC.len();
/// Prefix of temporary files being written.
const TEMP_PREFIX: &str = ".tmp-";
/// Temporary files older than this are leftovers of a crash, removed when a cache opens.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Counters of the compiled-code cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads that compiled the wasm.
    pub compiled: u64,
    /// Loads served by a compiled file on disk.
    pub disk_hits: u64,
    /// Loads served by a program already loaded in this process.
    pub memory_hits: u64,
}

/// Whether the binary is a core module or a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryKind {
    Module,
    Component,
}

impl BinaryKind {
    /// Reads the kind from the binary's preamble (`\0asm` + version/layer).
    pub(crate) fn detect(wasm: &[u8]) -> Option<Self> {
        match wasm.get(..8)? {
            [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(Self::Module),
            [0, b'a', b's', b'm', _, _, 1, 0] => Some(Self::Component),
            _ => None,
        }
    }
}

/// Compiled code, loaded.
pub(crate) enum Compiled {
    Module(wasmtime::Module),
    Component(Component),
}

/// The cache directory and its counters.
pub(crate) struct CodeCache {
    dir: PathBuf,
    engine_hash: String,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory_hits: AtomicU64,
}

impl CodeCache {
    /// Opens (creating) the cache directory for this engine.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<Self, RuntimeError> {
        fs::create_dir_all(dir).map_err(|source| RuntimeError::CacheDir {
            path: dir.to_owned(),
            source,
        })?;
        let mut hasher = Sha256Hasher::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hex(hasher.0.finish().as_ref());
        remove_stale_temp_files(dir);
        Ok(Self {
            dir: dir.to_owned(),
            engine_hash: engine_hash[..16].to_owned(),
            compiled: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
        })
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
        }
    }

    /// Counts a load served from memory.
    pub(crate) fn record_memory_hit(&self) {
        self.memory_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Where the compiled form of the wasm with this hex digest lives.
    pub(crate) fn path_for(&self, digest_hex: &str) -> PathBuf {
        self.dir
            .join(format!("{digest_hex}-{}.cwasm", self.engine_hash))
    }

    /// Loads the compiled form of `wasm` from disk, or compiles and stores it. Blocking:
    /// call from a blocking thread. A compile error is returned as `Err(message)`.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        kind: BinaryKind,
        wasm: &[u8],
        digest_hex: &str,
    ) -> Result<Compiled, String> {
        let path = self.path_for(digest_hex);
        match read_artifact(&path) {
            Ok(None) => {}
            Ok(Some(artifact)) => match deserialize(engine, kind, &artifact) {
                Ok(compiled) => {
                    self.disk_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(compiled);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding unloadable cached code");
                    let _ = fs::remove_file(&path);
                }
            },
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "discarding corrupt cached code");
                let _ = fs::remove_file(&path);
            }
        }
        let artifact = precompile(engine, kind, wasm).map_err(|e| format!("{e:#}"))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = write_artifact(&self.dir, &path, &artifact) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled code to the cache");
        }
        deserialize(engine, kind, &artifact).map_err(|e| format!("{e:#}"))
    }
}

/// Compiles `wasm` on a thread pool of its own (one thread per CPU). wasmtime spreads a
/// compilation's functions over the current rayon pool; in rayon's global pool, shared by all
/// compilations, a long one (one past its timeout included, which cannot be interrupted)
/// would queue every later compilation's work behind its own thousands of functions.
fn precompile(engine: &Engine, kind: BinaryKind, wasm: &[u8]) -> wasmtime::Result<Vec<u8>> {
    let compile = || match kind {
        BinaryKind::Module => engine.precompile_module(wasm),
        BinaryKind::Component => engine.precompile_component(wasm),
    };
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("wasm-compile-{i}"))
        .build()
    {
        Ok(pool) => pool.install(compile),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start compilation threads; compiling on this one");
            compile()
        }
    }
}

/// Reads and checks the cache file at `path`: `Ok(None)` when there is none, `Err(reason)`
/// when it is torn or corrupt, else the artifact.
fn read_artifact(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let Some(body_len) = bytes.len().checked_sub(TRAILER_LEN) else {
        return Err(format!("{} bytes is shorter than its trailer", bytes.len()));
    };
    let (body, trailer) = bytes.split_at(body_len);
    let (digest, rest) = trailer.split_at(32);
    let (len, magic) = rest.split_at(8);
    if magic != TRAILER_MAGIC {
        return Err("no trailer (torn, or written by another version)".into());
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(len);
    if u64::from_le_bytes(len_bytes) != body_len as u64 {
        return Err(format!(
            "its trailer says {} bytes of code, the file has {body_len}",
            u64::from_le_bytes(len_bytes)
        ));
    }
    if ring::digest::digest(&SHA256, body).as_ref() != digest {
        return Err("its code does not match the digest in its trailer".into());
    }
    bytes.truncate(body_len);
    Ok(Some(bytes))
}

/// Writes `artifact` with its trailer to `path` through a temporary file of a unique name in
/// `dir`, renamed into place once complete.
fn write_artifact(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let mut file = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)?;
    file.write_all(artifact)?;
    file.write_all(ring::digest::digest(&SHA256, artifact).as_ref())?;
    file.write_all(&(artifact.len() as u64).to_le_bytes())?;
    file.write_all(&TRAILER_MAGIC)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes temporary files a crashed writer left behind (old enough that no live writer
/// can still own them).
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age > STALE_TEMP_AGE);
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[allow(
    unsafe_code,
    reason = "artifacts are wasmtime's own precompile output: fresh from this engine, or read back from the agent's private cache directory and checked against the SHA-256 written with them; wasmtime re-checks their header and engine compatibility"
)]
fn deserialize(engine: &Engine, kind: BinaryKind, artifact: &[u8]) -> wasmtime::Result<Compiled> {
    // SAFETY: `artifact` is the output of `Engine::precompile_*` of a compatible engine:
    // produced just now, or read from the private cache directory with its digest verified
    // (the file name carries the engine hash and wasmtime re-checks compatibility).
    // wasmtime copies the bytes into its own mapping, so nothing can change them afterwards.
    unsafe {
        Ok(match kind {
            BinaryKind::Module => {
                Compiled::Module(wasmtime::Module::deserialize(engine, artifact)?)
            }
            BinaryKind::Component => Compiled::Component(Component::deserialize(engine, artifact)?),
        })
    }
}

/// SHA-256 of `bytes`, in lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&SHA256, bytes).as_ref())
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A `Hasher` feeding SHA-256, so the engine's compatibility hash becomes a stable file-name
/// component (std's `DefaultHasher` makes no stability promise).
struct Sha256Hasher(Context);

impl Default for Sha256Hasher {
    fn default() -> Self {
        Self(Context::new(&SHA256))
    }
}

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_kind_tells_modules_from_components() {
        assert_eq!(
            BinaryKind::detect(b"\0asm\x01\0\0\0rest"),
            Some(BinaryKind::Module)
        );
        assert_eq!(
            BinaryKind::detect(b"\0asm\x0d\0\x01\0rest"),
            Some(BinaryKind::Component)
        );
        assert_eq!(BinaryKind::detect(b"\0asm"), None);
        assert_eq!(BinaryKind::detect(b"#!/bin/sh\necho hi\n"), None);
    }

    #[test]
    fn sha256_hex_matches_the_known_digest_of_empty_input() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

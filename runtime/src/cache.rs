//! The on-disk cache of compiled code.
//!
//! A compiled module or component is stored as `<cache_dir>/<sha256 of the wasm>-<engine
//! hash>.cwasm`, where the engine hash digests [`Engine::precompile_compatibility_hash`]
//! (wasmtime version, target, compiler flags and tunables). So an agent restart or a second
//! pod of the same image maps the file instead of compiling, and a wasmtime upgrade or a
//! config change misses the old files instead of loading incompatible code. Files are
//! written to a temporary name and renamed, so a crash never leaves a torn artifact under
//! a real name; an artifact that still fails to load is deleted and recompiled.
//!
//! Trust: loading an artifact maps it as executable code. The cache directory must be
//! private to the agent (never a guest's preopen); that is the one `unsafe` of this crate.

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::digest::{Context, SHA256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::RuntimeError;

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
        if path.is_file() {
            match deserialize_file(engine, kind, &path) {
                Ok(compiled) => {
                    self.disk_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(compiled);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unloadable cached code");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let artifact = match kind {
            BinaryKind::Module => engine.precompile_module(wasm),
            BinaryKind::Component => engine.precompile_component(wasm),
        }
        .map_err(|e| format!("{e:#}"))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = write_atomically(&path, &artifact) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled code to the cache");
            return deserialize_bytes(engine, kind, &artifact).map_err(|e| format!("{e:#}"));
        }
        // Map the file just written, so every process and pod shares one copy of the code.
        deserialize_file(engine, kind, &path)
            .or_else(|_| deserialize_bytes(engine, kind, &artifact))
            .map_err(|e| format!("{e:#}"))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[allow(
    unsafe_code,
    reason = "artifacts come from this cache directory, written by `write_atomically` from wasmtime's own precompile output; wasmtime checks their header and engine compatibility"
)]
fn deserialize_file(engine: &Engine, kind: BinaryKind, path: &Path) -> wasmtime::Result<Compiled> {
    // SAFETY: the file was produced by `Engine::precompile_*` of a compatible engine (its
    // name carries the engine hash and wasmtime re-checks compatibility) and the cache
    // directory is private to the agent, so its contents are trusted code.
    unsafe {
        Ok(match kind {
            BinaryKind::Module => {
                Compiled::Module(wasmtime::Module::deserialize_file(engine, path)?)
            }
            BinaryKind::Component => {
                Compiled::Component(Component::deserialize_file(engine, path)?)
            }
        })
    }
}

#[allow(
    unsafe_code,
    reason = "the bytes were produced by Engine::precompile_* in this process a moment ago"
)]
fn deserialize_bytes(
    engine: &Engine,
    kind: BinaryKind,
    bytes: &[u8],
) -> wasmtime::Result<Compiled> {
    // SAFETY: `bytes` is the output of `Engine::precompile_*` on this very engine.
    unsafe {
        Ok(match kind {
            BinaryKind::Module => Compiled::Module(wasmtime::Module::deserialize(engine, bytes)?),
            BinaryKind::Component => Compiled::Component(Component::deserialize(engine, bytes)?),
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

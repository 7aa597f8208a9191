//! Errors of the runtime itself ([`RuntimeError`]) and of loading a wasm binary
//! ([`LoadError`]).
//!
//! What a guest does once it runs is never an error here: exits, traps, limit hits and stops
//! are [`Outcome`](crate::Outcome)s.

use std::path::PathBuf;

/// The runtime could not be set up (bad configuration, no address space for the pool, cache
/// directory unusable).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime rejected the engine configuration (for example the pool does not fit the
    /// address space).
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// The WASI host functions could not be added to a linker.
    #[error("cannot build the WASI linkers: {0}")]
    Linker(String),
    /// The cache directory cannot be created.
    #[error("cannot create the compiled-code cache directory {path}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The epoch ticker thread could not be started.
    #[error("cannot start the epoch ticker thread")]
    Ticker(#[source] std::io::Error),
    /// The Tokio runtime of the guests' threads could not be started.
    #[error("cannot start the guests' threads")]
    Executor(#[source] std::io::Error),
}

/// A wasm binary could not be turned into a runnable [`Program`](crate::Program).
///
/// All variants but [`LoadError::Internal`] and [`LoadError::CompileTimeout`] are the
/// workload's fault (a bad or hostile binary): the caller reports them as the container's
/// failure, with [`LoadError`]'s message, and does not retry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The binary is larger than [`RuntimeConfig::max_wasm_bytes`](crate::RuntimeConfig::max_wasm_bytes).
    #[error("wasm binary of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the binary.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes do not hash to the digest the caller gave.
    #[error("wasm binary digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller expected.
        expected: String,
        /// The digest of the bytes.
        actual: String,
    },
    /// Not a WebAssembly module or component, or one wasmtime cannot validate or compile.
    #[error("invalid wasm: {0}")]
    Invalid(String),
    /// The binary imports something the runtime does not provide.
    #[error("{0}")]
    Unlinkable(String),
    /// A valid binary that is neither a WASI command nor a `wasi:http/proxy` component (for
    /// example a core module without `_start`).
    #[error("unsupported wasm program: {0}")]
    Unsupported(String),
    /// The program was not compiled within
    /// [`RuntimeConfig::compile_timeout`](crate::RuntimeConfig::compile_timeout). The
    /// compilation goes on in the background and its result is cached, so a later load may
    /// succeed: retry later.
    #[error(
        "compiling the wasm program {digest} did not finish within {timeout:?}; the \
         compilation goes on in the background and a later start uses its result"
    )]
    CompileTimeout {
        /// `sha256:<hex>` of the binary.
        digest: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// The runtime failed for reasons of its own (a compilation thread died, ...).
    #[error("internal runtime error: {0}")]
    Internal(String),
}

impl LoadError {
    /// Whether the binary is at fault (as opposed to the runtime, or to time: a compilation
    /// past its timeout is retried).
    pub fn is_workload_error(&self) -> bool {
        !matches!(
            self,
            LoadError::Internal(_) | LoadError::CompileTimeout { .. }
        )
    }
}

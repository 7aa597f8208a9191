//! `wasmkube-samples`: where the sample guests built by `samples/build` are, for the tests
//! that run them (the end-to-end tests, the agent's and the runtime's).
//!
//! A test that needs a sample asks [`built`] for it. When the sample is not built the test
//! fails, with an error naming the command that builds it ([`BUILD_COMMAND`]): a test that
//! passes without running proves nothing, and `cargo test` must not report green with half
//! the suite unrun. Only when [`ALLOW_MISSING`] is set to `1` (on purpose, by a person; never
//! by `tests/run`) does [`built`] answer `None`, after printing that the test is skipped, and
//! the test returns without checking anything.
//!
//! The outputs are in `samples/out/` of this repository, or in `$SAMPLES_OUT` when set (the
//! same variable `samples/build` writes to; a relative path is relative to the repository
//! root).

use std::path::{Path, PathBuf};

/// The command that builds every sample and its OCI image layout.
pub const BUILD_COMMAND: &str = "samples/build --oci";

/// The environment variable that lets tests skip (pass without running) when their samples
/// are not built: `WASMKUBE_ALLOW_MISSING_SAMPLES=1`. `tests/run` never sets it.
pub const ALLOW_MISSING: &str = "WASMKUBE_ALLOW_MISSING_SAMPLES";

/// A sample a test needs is not built.
#[derive(Debug, thiserror::Error)]
#[error(
    "{test} needs {path}, which is not built: build the samples with `{BUILD_COMMAND}` \
     (tests/run does), or set {ALLOW_MISSING}=1 to skip the tests that need them"
)]
pub struct NotBuilt {
    /// The test that needs the sample.
    pub test: String,
    /// The missing file.
    pub path: PathBuf,
}

/// The repository's root directory.
fn repository() -> PathBuf {
    // This crate is `samples/testing/` of the repository.
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// The directory `samples/build` writes to: `$SAMPLES_OUT`, else `samples/out/`.
pub fn out_dir() -> PathBuf {
    match std::env::var_os("SAMPLES_OUT") {
        Some(dir) if !dir.is_empty() => repository().join(dir),
        _ => repository().join("samples").join("out"),
    }
}

/// The built sample output `relative` (e.g. `hello.wasm`, `oci/hello/index.json`) under
/// [`out_dir`], for `test`: its path when it exists; an error naming the build command when it
/// does not; `None` (after printing that `test` is skipped) when it does not and
/// [`ALLOW_MISSING`] is `1`.
pub fn built(test: &str, relative: &str) -> Result<Option<PathBuf>, NotBuilt> {
    let allow_missing = std::env::var_os(ALLOW_MISSING).is_some_and(|v| v == "1");
    check(test, out_dir().join(relative), allow_missing)
}

/// [`built`] with the path and the opt-out given.
fn check(test: &str, path: PathBuf, allow_missing: bool) -> Result<Option<PathBuf>, NotBuilt> {
    if path.exists() {
        return Ok(Some(path));
    }
    let missing = NotBuilt {
        test: test.to_owned(),
        path,
    };
    if allow_missing {
        eprintln!("SKIPPED ({ALLOW_MISSING}=1): {missing}");
        return Ok(None);
    }
    Err(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_sample_is_its_path() {
        let dir = std::env::temp_dir();
        let found = check("t", dir.clone(), false).expect("exists");
        assert_eq!(found, Some(dir));
    }

    #[test]
    fn a_missing_sample_fails_naming_the_build_command_and_the_opt_out() {
        let path = PathBuf::from("/nonexistent/samples/out/hello.wasm");
        let Err(e) = check("my_test", path, false) else {
            panic!("a missing sample must be an error");
        };
        let message = e.to_string();
        assert!(
            message.contains("my_test needs /nonexistent/samples/out/hello.wasm"),
            "{message}"
        );
        assert!(message.contains("`samples/build --oci`"), "{message}");
        assert!(
            message.contains("WASMKUBE_ALLOW_MISSING_SAMPLES=1"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_sample_is_skipped_only_when_allowed() {
        let path = PathBuf::from("/nonexistent/samples/out/hello.wasm");
        assert!(matches!(check("t", path, true), Ok(None)));
    }

    #[test]
    fn the_outputs_are_under_the_repositorys_samples_directory() {
        assert!(repository().join("samples").join("build").is_file());
    }
}

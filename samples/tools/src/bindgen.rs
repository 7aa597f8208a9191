//! C bindings for a WIT world, generated with the `wit-bindgen-c` library (the same generator
//! `wit-bindgen c` runs), so the samples need no separately installed `wit-bindgen-cli`.
//!
//! The output is the usual trio: `<world>.h`, `<world>.c` and `<world>_component_type.o`, the
//! last one being a relocatable wasm object that carries the component-type custom section;
//! linking it into the core module lets `wit-component` know the world when componentizing.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wit_bindgen_core::Files;
use wit_parser::Resolve;

/// Generates C bindings for `world` of the WIT package in `wit_dir` (with its `deps/`) into
/// `out_dir`, returning the paths written, in a stable order.
pub(crate) fn generate_c(wit_dir: &Path, world: &str, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let files = generate_c_in_memory(wit_dir, world)?;
    fs::create_dir_all(out_dir)
        .with_context(|| format!("creating output directory {}", out_dir.display()))?;
    let mut written = Vec::new();
    for (name, contents) in files {
        let path = out_dir.join(&name);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Generates the bindings without touching the disk: `(file name, contents)` pairs sorted by
/// name.
pub(crate) fn generate_c_in_memory(wit_dir: &Path, world: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut resolve = Resolve::default();
    let (package, _sources) = resolve
        .push_dir(wit_dir)
        .with_context(|| format!("parsing the WIT package in {}", wit_dir.display()))?;
    let world_id = resolve
        .select_world(&[package], Some(world))
        .with_context(|| format!("selecting world `{world}` in {}", wit_dir.display()))?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world_id, &mut files)
        .with_context(|| format!("generating C bindings for world `{world}`"))?;
    let mut out: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(name, contents)| (name.to_string(), contents.to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_hello_wit() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit")
    }

    #[test]
    fn bindings_for_the_vendored_proxy_world_declare_the_incoming_handler_export() {
        let files = generate_c_in_memory(&http_hello_wit(), "http-hello").expect("bindgen");
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "http_hello.c",
                "http_hello.h",
                "http_hello_component_type.o"
            ]
        );
        let header = String::from_utf8_lossy(&files[1].1);
        assert!(
            header.contains("exports_wasi_http_incoming_handler_handle("),
            "header lacks the handler prototype"
        );
        // The type object is a wasm object file.
        assert!(files[2].1.starts_with(b"\0asm"));
    }

    #[test]
    fn an_unknown_world_is_a_clear_error() {
        let err = generate_c_in_memory(&http_hello_wit(), "no-such-world").unwrap_err();
        assert!(format!("{err:#}").contains("no-such-world"), "{err:#}");
    }

    #[test]
    fn files_are_written_into_a_fresh_output_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("gen");
        let written = generate_c(&http_hello_wit(), "http-hello", &out).expect("bindgen");
        assert_eq!(written.len(), 3);
        assert!(written.iter().all(|p| p.is_file()));
    }
}

//! Wasm guests for the tests, written in WAT (so the tests need no C toolchain), and a helper
//! that packs a module as a CNCF wasm OCI artifact and imports it into the node's image store.

use std::path::Path;

use sha2::{Digest, Sha256};
use wasmkube_agent::images::ImageStore;

/// Prints "hello from wasm", then each argument and each environment variable on a line;
/// returns from `_start` (exit code 0).
pub(crate) const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $strlen (param $p i32) (result i32) (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))
  (func $print_all (param $count i32) (param $ptrs i32) (local $i i32) (local $s i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $s (i32.load (i32.add (local.get $ptrs) (i32.mul (local.get $i) (i32.const 4)))))
        (call $print (local.get $s) (call $strlen (local.get $s)))
        (call $print (i32.const 31) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))
  (func (export "_start")
    (call $print (i32.const 16) (i32.const 16))
    (drop (call $args_sizes_get (i32.const 100) (i32.const 104)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (call $print_all (i32.load (i32.const 100)) (i32.const 1024))
    (drop (call $environ_sizes_get (i32.const 108) (i32.const 112)))
    (drop (call $environ_get (i32.const 2048) (i32.const 8192)))
    (call $print_all (i32.load (i32.const 108)) (i32.const 2048))))
"#;

/// Writes "crash" to stderr and exits 1.
pub(crate) const CRASH: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "crash\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 1))))
"#;

/// Grows its memory by 1 MiB at a time until the runtime refuses (then traps).
pub(crate) const MEMHOG: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))
"#;

/// Prints "tick" every 100 ms, forever (sleeping in `poll_oneoff`, not spinning).
pub(crate) const COUNTER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "tick\n")
  (func (export "_start")
    ;; A relative monotonic-clock subscription of 100 ms at 200.
    (i64.store (i32.const 200) (i64.const 0))
    (i32.store8 (i32.const 208) (i32.const 0))
    (i32.store (i32.const 216) (i32.const 1))
    (i64.store (i32.const 224) (i64.const 100000000))
    (i64.store (i32.const 232) (i64.const 0))
    (i32.store16 (i32.const 240) (i32.const 0))
    (loop $tick
      (i32.store (i32.const 0) (i32.const 16))
      (i32.store (i32.const 4) (i32.const 5))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (drop (call $poll_oneoff (i32.const 200) (i32.const 304) (i32.const 1) (i32.const 400)))
      (br $tick))))
"#;

/// Sleeps 3 s (in `poll_oneoff`), prints "done" and exits 0.
pub(crate) const SLEEPER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "done\n")
  (func (export "_start")
    (i64.store (i32.const 200) (i64.const 0))
    (i32.store8 (i32.const 208) (i32.const 0))
    (i32.store (i32.const 216) (i32.const 1))
    (i64.store (i32.const 224) (i64.const 3000000000))
    (i64.store (i32.const 232) (i64.const 0))
    (i32.store16 (i32.const 240) (i32.const 0))
    (drop (call $poll_oneoff (i32.const 200) (i32.const 304) (i32.const 1) (i32.const 400)))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// Imports a function the runtime does not provide.
pub(crate) const UNLINKABLE: &str = r#"
(module
  (import "env" "missing" (func $missing))
  (memory (export "memory") 1)
  (func (export "_start") (call $missing)))
"#;

/// Recurses until the stack is exhausted.
pub(crate) const RECURSE: &str = r#"
(module
  (memory (export "memory") 1)
  (func $down (param i32) (result i32)
    (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "_start") (drop (call $down (i32.const 0)))))
"#;

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn write_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let d = digest(bytes);
    let hex = d.trim_start_matches("sha256:");
    let dir = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&dir).expect("blob dir");
    std::fs::write(dir.join(hex), bytes).expect("blob");
    (d, bytes.len())
}

/// Compiles `wat` and imports it as image `name` (e.g. `wasmkube.test/hello:v1`) into the
/// image store of the agent with data directory `data_dir`.
pub(crate) fn import(data_dir: &Path, name: &str, wat: &str) {
    import_wasm(data_dir, name, &wat::parse_str(wat).expect("valid WAT"));
}

/// The bytes of a sample built by `samples/build` (`samples/out/<name>.wasm`) for `test`.
/// Panics naming the build command when it is not built; `None` only when
/// `WASMKUBE_ALLOW_MISSING_SAMPLES=1` lets the test skip.
pub(crate) fn sample(test: &str, name: &str) -> Option<Vec<u8>> {
    let path =
        wasmkube_samples::built(test, &format!("{name}.wasm")).unwrap_or_else(|e| panic!("{e}"))?;
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
}

/// Imports wasm bytes as image `name`.
pub(crate) fn import_wasm(data_dir: &Path, name: &str, wasm: &[u8]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = tmp.path();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let (config, config_size) = write_blob(layout, b"{}");
    let (module, module_size) = write_blob(layout, wasm);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.wasm.config.v0+json",
        "config": {
            "mediaType": "application/vnd.wasm.config.v0+json",
            "digest": config, "size": config_size,
        },
        "layers": [{
            "mediaType": "application/wasm",
            "digest": module, "size": module_size,
        }],
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest json");
    let (manifest_digest, manifest_size) = write_blob(layout, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"io.containerd.image.name": name},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("index json"),
    )
    .expect("index.json");
    let store = ImageStore::open(&ImageStore::dir_in_data_dir(data_dir)).expect("image store");
    store.import(layout).expect("import");
}

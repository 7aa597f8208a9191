//! Guest programs for the tests, written in WAT (core modules for WASI preview1) and turned
//! into components with wit-component: command components through the preview1 command
//! adapter, the HTTP handler from a core module whose `wasi:http` imports are declared from
//! the canonical-ABI signatures that wit-parser computes for the real WIT in the repository's
//! `wit/` (world `hello-proxy`).

use std::path::Path;

use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::Resolve;
use wit_parser::abi::{AbiVariant, WasmType};

/// Imports of the preview1 functions the guests use.
const P1_IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
"#;

/// Helpers every preview1 guest gets: `$write (fd ptr len)` and `$say (fd ptr len)`.
const P1_HELPERS: &str = r#"
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $check (param $code i32) (param $errno i32)
    (if (local.get $errno) (then (call $proc_exit (local.get $code)))))
"#;

/// A preview1 command module whose `_start` body is `start` (it may use `$write`,
/// `$check` and the imports above; data segments go in `data`).
pub(crate) fn p1_module(data: &str, start: &str) -> Vec<u8> {
    let text = format!(
        "(module {P1_IMPORTS} (memory (export \"memory\") 2) {P1_HELPERS} {data} \
         (func (export \"_start\") {start}))"
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test guest: {e}\n{text}"))
}

/// Writes its argv (NUL-separated) to stdout and its environment to stderr, then returns.
pub(crate) fn echo() -> Vec<u8> {
    p1_module(
        "",
        r#"
        (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
        (drop (call $args_get (i32.const 1024) (i32.const 4096)))
        (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 20)))
        (drop (call $environ_sizes_get (i32.const 24) (i32.const 28)))
        (drop (call $environ_get (i32.const 2048) (i32.const 8192)))
        (call $write (i32.const 2) (i32.const 8192) (i32.load (i32.const 28)))
        "#,
    )
}

/// Prints `message` then calls `proc_exit(code)`.
pub(crate) fn say_and_exit(message: &str, code: i32) -> Vec<u8> {
    let len = message.len();
    p1_module(
        &format!("(data (i32.const 256) \"{}\")", wat_string(message)),
        &format!(
            "(call $write (i32.const 1) (i32.const 256) (i32.const {len})) \
             (call $proc_exit (i32.const {code}))"
        ),
    )
}

/// Reads `in.txt` from its first preopen and writes the bytes to `out.txt` there. Exits 1
/// when opening or reading `in.txt` fails, 2 when opening `out.txt` fails, 3 when writing
/// fails.
pub(crate) fn copy_file() -> Vec<u8> {
    p1_module(
        r#"(data (i32.const 100) "in.txt") (data (i32.const 110) "out.txt")"#,
        r#"
        (call $check (i32.const 1)
          (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 6)
            (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))
        (i32.store (i32.const 0) (i32.const 4096))
        (i32.store (i32.const 4) (i32.const 1024))
        (call $check (i32.const 1)
          (call $fd_read (i32.load (i32.const 200)) (i32.const 0) (i32.const 1) (i32.const 8)))
        (call $check (i32.const 2)
          (call $path_open (i32.const 3) (i32.const 0) (i32.const 110) (i32.const 7)
            (i32.const 9) (i64.const 0x40) (i64.const 0) (i32.const 0) (i32.const 204)))
        (i32.store (i32.const 4) (i32.load (i32.const 8)))
        (call $check (i32.const 3)
          (call $fd_write (i32.load (i32.const 204)) (i32.const 0) (i32.const 1) (i32.const 12)))
        "#,
    )
}

/// Prints `spinning` and loops forever.
pub(crate) fn spin() -> Vec<u8> {
    p1_module(
        r#"(data (i32.const 256) "spinning\n")"#,
        r#"
        (call $write (i32.const 1) (i32.const 256) (i32.const 9))
        (loop $forever (br $forever))
        "#,
    )
}

/// Loops forever and writes a `.` to stdout every 2^20 rounds of its loop: its progress, in
/// its own output.
pub(crate) fn spin_with_progress() -> Vec<u8> {
    p1_module(
        r#"(data (i32.const 256) ".")"#,
        r#"
        (local $rounds i32)
        (loop $forever
          (local.set $rounds (i32.add (local.get $rounds) (i32.const 1)))
          (if (i32.eqz (i32.and (local.get $rounds) (i32.const 0xfffff)))
            (then (call $write (i32.const 1) (i32.const 256) (i32.const 1))))
          (br $forever))
        "#,
    )
}

/// Prints `sleeping` and sleeps an hour in `poll_oneoff`.
pub(crate) fn sleep_an_hour() -> Vec<u8> {
    p1_module(
        r#"(data (i32.const 256) "sleeping\n")"#,
        r#"
        (call $write (i32.const 1) (i32.const 256) (i32.const 9))
        (i32.store (i32.const 80) (i32.const 1))
        (i64.store (i32.const 88) (i64.const 3600000000000))
        (drop (call $poll_oneoff (i32.const 64) (i32.const 256) (i32.const 1) (i32.const 512)))
        "#,
    )
}

/// Grows its memory by 1 MiB at a time forever.
pub(crate) fn memory_bomb() -> Vec<u8> {
    p1_module(
        "",
        "(loop $grow (drop (memory.grow (i32.const 16))) (br $grow))",
    )
}

/// Declares an initial memory of `pages` 64 KiB pages and exits 0.
pub(crate) fn big_initial_memory(pages: u32) -> Vec<u8> {
    let text = format!("(module (memory (export \"memory\") {pages}) (func (export \"_start\")))");
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test guest: {e}"))
}

/// Recurses without end.
pub(crate) fn recurse() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func $down (param i64) (call $down (i64.add (local.get 0) (i64.const 1))))
             (func (export "_start") (call $down (i64.const 0))))"#,
    )
    .unwrap_or_else(|e| panic!("bad test guest: {e}"))
}

/// Executes `unreachable`.
pub(crate) fn unreachable() -> Vec<u8> {
    wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#)
        .unwrap_or_else(|e| panic!("bad test guest: {e}"))
}

/// Imports `env::foo`, which no host provides.
pub(crate) fn unsatisfied_import() -> Vec<u8> {
    wat::parse_str(
        r#"(module (import "env" "foo" (func $foo))
             (memory (export "memory") 1)
             (func (export "_start") (call $foo)))"#,
    )
    .unwrap_or_else(|e| panic!("bad test guest: {e}"))
}

/// A preview1 module turned into a `wasi:cli/run` component with the command adapter.
pub(crate) fn command_component(module: &[u8]) -> Vec<u8> {
    ComponentEncoder::default()
        .module(module)
        .and_then(|encoder| {
            encoder.adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            )
        })
        .map(|encoder| encoder.validate(true))
        .and_then(|mut encoder| encoder.encode())
        .unwrap_or_else(|e| panic!("cannot build the command component: {e:?}"))
}

/// What the test HTTP handler does with a request.
#[derive(Debug, Clone)]
pub(crate) enum Handler {
    /// Answers 200 with this body.
    Hello(&'static str),
    /// Traps before answering.
    Trap,
    /// Loops forever before answering.
    Spin,
    /// Grows memory forever before answering.
    GrowMemory,
    /// Answers with the number of requests this instance has handled (one digit).
    CountCalls,
}

const HTTP_TYPES: &str = "wasi:http/types@0.2.12";
const IO_STREAMS: &str = "wasi:io/streams@0.2.12";

/// A `wasi:http/proxy` component (exporting `wasi:http/incoming-handler@0.2.12`) behaving
/// as `handler` says.
pub(crate) fn proxy_component(handler: &Handler) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let (package, _) = resolve
        .push_dir(&wit)
        .unwrap_or_else(|e| panic!("cannot parse {}: {e:?}", wit.display()));
    let world = resolve
        .select_world(&[package], Some("hello-proxy"))
        .unwrap_or_else(|e| panic!("no world: {e:?}"));

    let import = |interface: &str, name: &str, symbol: &str| -> (String, Vec<WasmType>) {
        let (_, iface) = resolve
            .interfaces
            .iter()
            .find(|(id, _)| resolve.id_of(*id).as_deref() == Some(interface))
            .unwrap_or_else(|| panic!("no interface {interface}"));
        let func = iface
            .functions
            .get(name)
            .unwrap_or_else(|| panic!("no function {name} in {interface}"));
        let sig = resolve.wasm_signature(AbiVariant::GuestImport, func);
        assert!(
            !sig.indirect_params,
            "{name} takes its parameters indirectly"
        );
        let decl = format!(
            "(import \"{interface}\" \"{name}\" (func ${symbol} (param {}) (result {})))",
            types(&sig.params),
            types(&sig.results),
        );
        (decl.replace("(result )", ""), sig.params)
    };
    let (fields_new, _) = import(HTTP_TYPES, "[constructor]fields", "fields_new");
    let (response_new, _) = import(HTTP_TYPES, "[constructor]outgoing-response", "response_new");
    let (response_body, _) = import(
        HTTP_TYPES,
        "[method]outgoing-response.body",
        "response_body",
    );
    let (body_write, _) = import(HTTP_TYPES, "[method]outgoing-body.write", "body_write");
    let (body_finish, _) = import(HTTP_TYPES, "[static]outgoing-body.finish", "body_finish");
    let (outparam_set, set_params) =
        import(HTTP_TYPES, "[static]response-outparam.set", "outparam_set");
    let (write_flush, _) = import(
        IO_STREAMS,
        "[method]output-stream.blocking-write-and-flush",
        "write_flush",
    );
    // `set(outparam, ok(response))`: the handle, the `ok` discriminant, the response, then
    // zeros for the flattened `error-code` payload.
    let set_padding: String = set_params
        .iter()
        .skip(3)
        .map(|ty| format!("({}.const 0)", wasm_type(ty)))
        .collect();

    let (body_bytes, before_answer) = match handler {
        Handler::Hello(body) => (*body, String::new()),
        Handler::Trap => ("", "unreachable".to_owned()),
        Handler::Spin => ("", "(loop $forever (br $forever))".to_owned()),
        Handler::GrowMemory => (
            "",
            "(loop $grow (drop (memory.grow (i32.const 16))) (br $grow))".to_owned(),
        ),
        Handler::CountCalls => (
            "0",
            "(global.set $calls (i32.add (global.get $calls) (i32.const 1))) \
             (i32.store8 (i32.const 1024) (i32.add (i32.const 48) (global.get $calls)))"
                .to_owned(),
        ),
    };
    let body_len = body_bytes.len();
    let body_data = wat_string(body_bytes);
    let text = format!(
        r#"(module
          {fields_new} {response_new} {response_body} {body_write} {body_finish} {outparam_set} {write_flush}
          (import "{IO_STREAMS}" "[resource-drop]output-stream" (func $stream_drop (param i32)))
          (memory (export "memory") 2)
          (global $bump (mut i32) (i32.const 65536))
          (global $calls (mut i32) (i32.const 0))
          (data (i32.const 1024) "{body_data}")
          (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
            (local $ptr i32)
            (local.set $ptr
              (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                       (i32.sub (i32.const 0) (local.get 2))))
            (global.set $bump (i32.add (local.get $ptr) (local.get 3)))
            (local.get $ptr))
          (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $request i32) (param $out i32)
            (local $response i32) (local $body i32) (local $stream i32)
            {before_answer}
            (local.set $response (call $response_new (call $fields_new)))
            (call $response_body (local.get $response) (i32.const 16))
            (local.set $body (i32.load (i32.const 20)))
            (call $body_write (local.get $body) (i32.const 16))
            (local.set $stream (i32.load (i32.const 20)))
            (call $outparam_set (local.get $out) (i32.const 0) (local.get $response) {set_padding})
            (call $write_flush (local.get $stream) (i32.const 1024) (i32.const {body_len}) (i32.const 32))
            (call $stream_drop (local.get $stream))
            (call $body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 64))))"#
    );
    let mut module =
        wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test handler: {e}\n{text}"));
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .unwrap_or_else(|e| panic!("cannot embed the world: {e:?}"));
    ComponentEncoder::default()
        .module(&module)
        .map(|encoder| encoder.validate(true))
        .and_then(|mut encoder| encoder.encode())
        .unwrap_or_else(|e| panic!("cannot build the proxy component: {e:?}"))
}

/// `text` as the inside of a WAT string literal (every byte hex-escaped).
fn wat_string(text: &str) -> String {
    text.bytes().map(|b| format!("\\{b:02x}")).collect()
}

fn types(list: &[WasmType]) -> String {
    list.iter().map(wasm_type).collect::<Vec<_>>().join(" ")
}

fn wasm_type(ty: &WasmType) -> &'static str {
    match ty {
        WasmType::I32 | WasmType::Pointer | WasmType::Length => "i32",
        WasmType::I64 | WasmType::PointerOrI64 => "i64",
        WasmType::F32 => "f32",
        WasmType::F64 => "f64",
    }
}

/// A command module with `functions` functions of `steps` steps of arithmetic each, whose
/// `_start` returns: Cranelift's time grows with `functions * steps`.
pub(crate) fn big_functions(functions: usize, steps: usize) -> Vec<u8> {
    let mut text =
        String::from("(module (memory (export \"memory\") 1) (func (export \"_start\"))");
    for i in 0..functions {
        text.push_str(&format!(
            "(func $f{i} (export \"f{i}\") (param i32) (result i32) (local.get 0)"
        ));
        for j in 0..steps {
            text.push_str(&format!(
                " (i32.const {j}) (i32.add) (i32.const 3) (i32.mul) (local.get 0) (i32.xor)"
            ));
        }
        text.push(')');
    }
    text.push(')');
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test guest: {e}"))
}

/// A command module with `functions` non-trivial functions: big enough that compiling it
/// takes a while.
pub(crate) fn many_functions(functions: usize) -> Vec<u8> {
    let mut text =
        String::from("(module (memory (export \"memory\") 1) (func (export \"_start\"))");
    for i in 0..functions {
        text.push_str(&format!(
            "(func $f{i} (export \"f{i}\") (param i32) (result i32) (local.get 0)"
        ));
        for j in 0..16 {
            text.push_str(&format!(
                " (i32.const {j}) (i32.add) (i32.const 3) (i32.mul)"
            ));
        }
        text.push(')');
    }
    text.push(')');
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test guest: {e}"))
}

//! Core module -> component, the library equivalent of
//! `wasm-tools component new --adapt wasi_snapshot_preview1=<adapter>`.
//!
//! The preview1 adapters come from the `wasi-preview1-component-adapter-provider` crate of the
//! same release as the wasmtime the runtime embeds (48.0.8), so a component built here imports
//! the WASI 0.2 interfaces at the versions that runtime provides.

use anyhow::{Context, Result};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_component::ComponentEncoder;

/// Which preview1 adapter a component is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Adapter {
    /// For programs with `_start` (`main`): the component exports `wasi:cli/run`.
    Command,
    /// For libraries (`-mexec-model=reactor`) whose exports come from their own world.
    Reactor,
    /// Like reactor, but only uses what `wasi:http/proxy` imports (no filesystem, no env).
    Proxy,
}

impl Adapter {
    /// The adapter module's bytes.
    pub(crate) fn bytes(self) -> &'static [u8] {
        match self {
            Adapter::Command => WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            Adapter::Reactor => WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            Adapter::Proxy => WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
        }
    }
}

/// Turns a core wasm module into a component, adapting its `wasi_snapshot_preview1` imports
/// with `adapter`. Any component-type custom sections linked into the module (from
/// `wit-bindgen`'s `*_component_type.o`) define the rest of its world. The result is validated.
pub(crate) fn componentize(core_module: &[u8], adapter: Adapter) -> Result<Vec<u8>> {
    ComponentEncoder::default()
        .validate(true)
        .module(core_module)
        .context("reading the core module")?
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter.bytes())
        .context("adding the preview1 adapter")?
        .encode()
        .context("encoding the component")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{Kind, summarize};
    use wasm_encoder::{
        CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
        ImportSection, Instruction, MemorySection, MemoryType, Module, TypeSection, ValType,
    };

    /// A preview1 command: imports `proc_exit`, exports `memory` and `_start` that calls it.
    fn tiny_command_module() -> Vec<u8> {
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32], []);
        types.ty().function([], []);
        module.section(&types);
        let mut imports = ImportSection::new();
        imports.import(
            "wasi_snapshot_preview1",
            "proc_exit",
            EntityType::Function(0),
        );
        module.section(&imports);
        let mut functions = FunctionSection::new();
        functions.function(1);
        module.section(&functions);
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0);
        exports.export("_start", ExportKind::Func, 1);
        module.section(&exports);
        let mut code = CodeSection::new();
        let mut start = Function::new([]);
        start.instruction(&Instruction::I32Const(0));
        start.instruction(&Instruction::Call(0));
        start.instruction(&Instruction::End);
        code.function(&start);
        module.section(&code);
        module.finish()
    }

    #[test]
    fn every_adapter_is_a_valid_core_module() {
        for adapter in [Adapter::Command, Adapter::Reactor, Adapter::Proxy] {
            let kind = crate::inspect::validate(adapter.bytes()).expect("adapter validates");
            assert_eq!(kind, Kind::Module, "{adapter:?}");
        }
    }

    #[test]
    fn a_command_module_becomes_a_component_exporting_wasi_cli_run() {
        let component = componentize(&tiny_command_module(), Adapter::Command).expect("encode");
        let summary = summarize(&component).expect("summary");
        assert_eq!(summary.kind, Kind::Component);
        assert!(
            summary
                .exports
                .iter()
                .any(|e| e.starts_with("wasi:cli/run@0.2.")),
            "exports: {:?}",
            summary.exports
        );
        assert!(
            summary
                .imports
                .iter()
                .any(|i| i.starts_with("wasi:cli/exit@0.2.")),
            "imports: {:?}",
            summary.imports
        );
    }

    #[test]
    fn garbage_input_is_an_error_not_a_panic() {
        let err = componentize(b"\0asm\x01\0\0\0garbage", Adapter::Command).unwrap_err();
        assert!(!format!("{err:#}").is_empty());
    }
}

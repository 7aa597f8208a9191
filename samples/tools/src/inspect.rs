//! Checks on built wasm: validation, module vs component, and the imports/exports a sample
//! declares (interface names for components, `module::name` for core modules). The build script
//! uses these to fail early when a sample is not what the runtime expects, and the OCI packaging
//! puts the component's imports/exports into the wasm artifact config.

use anyhow::{Context, Result, bail};
use serde_json::json;
use wasmparser::{Parser, Payload, Validator, WasmFeatures};
use wit_component::{DecodedWasm, WitPrinter};

/// Whether a binary is a core module or a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// A core wasm module (preview1 guests).
    Module,
    /// A component-model component (WASI 0.2 guests).
    Component,
}

impl Kind {
    /// Lower-case name used in messages and JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Module => "module",
            Kind::Component => "component",
        }
    }
}

/// What a binary imports and exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Module or component.
    pub(crate) kind: Kind,
    /// Components: world import names (`wasi:io/streams@0.2.12`); modules: `module::name`.
    pub(crate) imports: Vec<String>,
    /// Components: world export names; modules: export names.
    pub(crate) exports: Vec<String>,
}

impl Summary {
    /// JSON form: `{"kind": ..., "imports": [...], "exports": [...]}`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({ "kind": self.kind.as_str(), "imports": self.imports, "exports": self.exports })
    }

    /// Whether an export matches `name`, either exactly or ignoring the `@version` suffix
    /// (`wasi:http/incoming-handler` matches `wasi:http/incoming-handler@0.2.12`).
    pub(crate) fn has_export(&self, name: &str) -> bool {
        self.exports
            .iter()
            .any(|e| e == name || e.split_once('@').is_some_and(|(base, _)| base == name))
    }
}

/// Validates `bytes` with every wasm feature wasmparser knows (the runtime decides which it
/// enables; this only catches broken binaries) and says what kind of binary it is.
pub(crate) fn validate(bytes: &[u8]) -> Result<Kind> {
    let kind = if Parser::is_component(bytes) {
        Kind::Component
    } else if Parser::is_core_wasm(bytes) {
        Kind::Module
    } else {
        bail!("not a wasm binary (bad magic or version)");
    };
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .context("wasm validation failed")?;
    Ok(kind)
}

/// Validates `bytes` and lists its imports and exports.
pub(crate) fn summarize(bytes: &[u8]) -> Result<Summary> {
    match validate(bytes)? {
        Kind::Module => summarize_module(bytes),
        Kind::Component => summarize_component(bytes),
    }
}

/// The component's world as WIT text (what `wasm-tools component wit` prints).
pub(crate) fn component_wit(bytes: &[u8]) -> Result<String> {
    match wit_component::decode(bytes).context("decoding the component's world")? {
        DecodedWasm::Component(resolve, world) => {
            let package = resolve.worlds[world]
                .package
                .context("decoded world has no package")?;
            let mut printer = WitPrinter::default();
            printer.print(&resolve, package, &[])?;
            Ok(printer.output.to_string())
        }
        DecodedWasm::WitPackage(..) => bail!("this is a WIT package, not a component"),
    }
}

fn summarize_module(bytes: &[u8]) -> Result<Summary> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import?;
                    imports.push(format!("{}::{}", import.module, import.name));
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    exports.push(export?.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(Summary {
        kind: Kind::Module,
        imports,
        exports,
    })
}

fn summarize_component(bytes: &[u8]) -> Result<Summary> {
    match wit_component::decode(bytes).context("decoding the component's world")? {
        DecodedWasm::Component(resolve, world) => {
            let world = &resolve.worlds[world];
            let imports = world
                .imports
                .keys()
                .map(|key| resolve.name_world_key(key))
                .collect();
            let exports = world
                .exports
                .keys()
                .map(|key| resolve.name_world_key(key))
                .collect();
            Ok(Summary {
                kind: Kind::Component,
                imports,
                exports,
            })
        }
        DecodedWasm::WitPackage(..) => bail!("this is a WIT package, not a component"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid module: magic and version only.
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn an_empty_module_is_a_module_with_no_imports_or_exports() {
        let summary = summarize(EMPTY_MODULE).expect("summary");
        assert_eq!(summary.kind, Kind::Module);
        assert!(summary.imports.is_empty() && summary.exports.is_empty());
    }

    #[test]
    fn text_that_is_not_wasm_is_rejected() {
        let err = validate(b"hello world").unwrap_err();
        assert!(format!("{err:#}").contains("not a wasm binary"), "{err:#}");
    }

    #[test]
    fn a_truncated_module_fails_validation() {
        let err = validate(b"\0asm\x01\0\0\0\x01\x05").unwrap_err();
        assert!(format!("{err:#}").contains("validation"), "{err:#}");
    }

    #[test]
    fn an_export_matches_with_or_without_its_version() {
        let summary = Summary {
            kind: Kind::Component,
            imports: vec![],
            exports: vec!["wasi:http/incoming-handler@0.2.12".to_string()],
        };
        assert!(summary.has_export("wasi:http/incoming-handler"));
        assert!(summary.has_export("wasi:http/incoming-handler@0.2.12"));
        assert!(!summary.has_export("wasi:http/incoming"));
        assert!(!summary.has_export("wasi:cli/run"));
    }

    #[test]
    fn summary_json_names_kind_imports_and_exports() {
        let summary = Summary {
            kind: Kind::Module,
            imports: vec!["wasi_snapshot_preview1::fd_write".to_string()],
            exports: vec!["_start".to_string()],
        };
        assert_eq!(
            summary.to_json(),
            json!({"kind": "module", "imports": ["wasi_snapshot_preview1::fd_write"], "exports": ["_start"]})
        );
    }
}

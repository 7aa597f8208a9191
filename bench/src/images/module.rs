//! The modules `wasmkube-bench images` ships: preview1 command modules that start, then sleep
//! in `poll_oneoff` until they are killed (so a pod reaches Running and stays there without
//! using a CPU), padded to a chosen size with compiled code and with data.
//!
//! Encoded with wasm-encoder (a dependency of `wat`, already in the build): WAT text of
//! tens of MB would take longer to assemble than the module takes to compile.

use wasm_encoder::{
    CodeSection, ConstExpr, CustomSection, DataSection, EntityType, ExportKind, ExportSection,
    Function, FunctionSection, ImportSection, Instruction, MemArg, MemorySection, MemoryType,
    Module, TypeSection, ValType,
};

const PAGE: u64 = 65_536;
/// Where the data segment starts: the first page holds the `poll_oneoff` subscription.
const DATA_OFFSET: i32 = 65_536;
/// Each padding function's body is about this many bytes of straight-line integer code.
const FUNCTION_BYTES: usize = 1024;
/// One `local.get 0; i32.const C; i32.add; i32.const D; i32.xor; local.set 0` step: 2 + 3 + 1
/// + 3 + 1 + 2 bytes with two-byte constants.
const STEP_BYTES: usize = 12;

/// The shape of a module: how much code and data it carries besides its `_start`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// Bytes of function bodies (about; whole functions of ~1 KiB each).
    pub(crate) code_bytes: usize,
    /// Bytes of one active data segment.
    pub(crate) data_bytes: usize,
}

impl Shape {
    /// How many ~1 KiB padding functions the code takes.
    fn functions(self) -> usize {
        self.code_bytes / FUNCTION_BYTES
    }
}

/// A module of `shape` whose bytes (and so digest and compile-cache key) differ for each
/// `nonce`, through a custom section.
pub(crate) fn sleeper(shape: Shape, nonce: &str) -> Vec<u8> {
    let mut module = Module::new();

    let mut types = TypeSection::new();
    // 0: poll_oneoff (in, out, nsubscriptions, nevents) -> errno
    types.ty().function(
        [ValType::I32, ValType::I32, ValType::I32, ValType::I32],
        [ValType::I32],
    );
    // 1: _start
    types.ty().function([], []);
    // 2: padding (i32) -> i32
    types.ty().function([ValType::I32], [ValType::I32]);
    module.section(&types);

    let mut imports = ImportSection::new();
    imports.import(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        EntityType::Function(0),
    );
    module.section(&imports);

    let padding = shape.functions();
    let mut functions = FunctionSection::new();
    functions.function(1);
    for _ in 0..padding {
        functions.function(2);
    }
    module.section(&functions);

    let pages = 1 + (shape.data_bytes as u64).div_ceil(PAGE);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: pages,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    module.section(&memories);

    let mut exports = ExportSection::new();
    exports.export("_start", ExportKind::Func, 1);
    exports.export("memory", ExportKind::Memory, 0);
    module.section(&exports);

    let mut code = CodeSection::new();
    code.function(&start_body());
    let mut state = seed(nonce);
    for _ in 0..padding {
        code.function(&padding_body(&mut state));
    }
    module.section(&code);

    if shape.data_bytes > 0 {
        let mut data = DataSection::new();
        let bytes: Vec<u8> = (0..shape.data_bytes)
            .map(|_| next(&mut state).to_le_bytes()[0])
            .collect();
        data.active(0, &ConstExpr::i32_const(DATA_OFFSET), bytes);
        module.section(&data);
    }

    module.section(&CustomSection {
        name: "wasmkube-bench-nonce".into(),
        data: nonce.as_bytes().into(),
    });
    module.finish()
}

/// `_start`: writes one relative monotonic-clock subscription of an hour at address 0 and
/// waits on it with `poll_oneoff`, forever.
fn start_body() -> Function {
    let mut f = Function::new([]);
    let mem = |offset: u64, align: u32| MemArg {
        offset,
        align,
        memory_index: 0,
    };
    // subscription: userdata u64 @0 (0), tag u8 @8 (0 = clock), clock id u32 @16
    // (1 = monotonic), timeout u64 @24, precision u64 @32 (0), flags u16 @40 (0 = relative).
    for instruction in [
        Instruction::I32Const(0),
        Instruction::I32Const(1),
        Instruction::I32Store(mem(16, 2)),
        Instruction::I32Const(0),
        Instruction::I64Const(3_600_000_000_000),
        Instruction::I64Store(mem(24, 3)),
        Instruction::Loop(wasm_encoder::BlockType::Empty),
        Instruction::I32Const(0),
        Instruction::I32Const(64),
        Instruction::I32Const(1),
        Instruction::I32Const(128),
        Instruction::Call(0),
        Instruction::Drop,
        Instruction::Br(0),
        Instruction::End,
        Instruction::End,
    ] {
        f.instruction(&instruction);
    }
    f
}

/// About [`FUNCTION_BYTES`] of integer arithmetic on the argument, constants drawn from
/// `state` so that no two functions are alike.
fn padding_body(state: &mut u32) -> Function {
    let mut f = Function::new([]);
    for _ in 0..FUNCTION_BYTES / STEP_BYTES {
        let add = i32::from(next(state).to_le_bytes()[0]) + 64;
        let xor = i32::from(next(state).to_le_bytes()[1]) + 64;
        for instruction in [
            Instruction::LocalGet(0),
            Instruction::I32Const(add),
            Instruction::I32Add,
            Instruction::I32Const(xor),
            Instruction::I32Xor,
            Instruction::LocalSet(0),
        ] {
            f.instruction(&instruction);
        }
    }
    f.instruction(&Instruction::LocalGet(0));
    f.instruction(&Instruction::End);
    f
}

/// A xorshift32 seed from `nonce` (never zero).
fn seed(nonce: &str) -> u32 {
    nonce
        .bytes()
        .fold(0x9e37_79b9_u32, |h, b| h.rotate_left(5) ^ u32::from(b))
        .max(1)
}

/// xorshift32: cheap bytes that do not repeat.
fn next(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeper_validates_and_has_the_size_asked_for() {
        let shape = Shape {
            code_bytes: 64 * 1024,
            data_bytes: 100_000,
        };
        let wasm = sleeper(shape, "a");
        let engine = wasmtime::Engine::default();
        wasmtime::Module::validate(&engine, &wasm).expect("a valid module");
        let size = wasm.len();
        assert!(
            size > 160_000 && size < 180_000,
            "{size} bytes for 64 KiB of code and 100,000 of data"
        );
    }

    #[test]
    fn each_nonce_makes_other_bytes() {
        let shape = Shape {
            code_bytes: 4096,
            data_bytes: 0,
        };
        assert_ne!(sleeper(shape, "a"), sleeper(shape, "b"));
        assert_eq!(sleeper(shape, "a"), sleeper(shape, "a"));
    }
}

//! Generated "compile bomb" components: small, valid components whose
//! compile cost grows far faster than their size. None is an agent (none
//! exports `run`); they exist to show the compile bounds hold.

use wasm_encoder::{
    CodeSection, Component, Function, FunctionSection, Instruction as I, Module, ModuleSection,
    TypeSection, ValType,
};

/// A component wrapping one core module whose functions are `bodies`, all
/// of type `() -> i32`.
fn component(bodies: impl IntoIterator<Item = Function>) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    for body in bodies {
        functions.function(0);
        code.function(&body);
    }
    let mut module = Module::new();
    module.section(&types).section(&functions).section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

/// One function of `blocks` small blocks with `locals` i32 locals all live
/// across them (each block updates one and may branch out; the end sums
/// them all): register allocation over blocks × live values is what makes
/// Cranelift slow and hungry. 100,000 × 8,000 takes gigabytes.
pub fn live_locals(blocks: u32, locals: u32) -> Vec<u8> {
    let mut f = Function::new([(locals, ValType::I32)]);
    for b in 0..blocks {
        f.instruction(&I::Block(wasm_encoder::BlockType::Empty))
            .instruction(&I::LocalGet(b.wrapping_mul(7) % locals))
            .instruction(&I::LocalGet((b.wrapping_mul(13) + 1) % locals))
            .instruction(&I::I32Add)
            .instruction(&I::LocalSet(b % locals))
            .instruction(&I::LocalGet((b + 3) % locals))
            .instruction(&I::BrIf(0))
            .instruction(&I::End);
    }
    f.instruction(&I::I32Const(0));
    for l in 0..locals {
        f.instruction(&I::LocalGet(l)).instruction(&I::I32Add);
    }
    f.instruction(&I::End);
    component([f])
}

/// `count` tiny functions.
pub fn many_functions(count: u32) -> Vec<u8> {
    component((0..count).map(|i| {
        let mut f = Function::new([]);
        f.instruction(&I::I32Const(i as i32)).instruction(&I::End);
        f
    }))
}

/// One function whose body is about `bytes` long (straight-line code).
pub fn huge_function(bytes: u32) -> Vec<u8> {
    let mut f = Function::new([(1, ValType::I32)]);
    // local.get 0; i32.const 1; i32.add; local.set 0: 7 bytes.
    for _ in 0..bytes / 7 {
        f.instruction(&I::LocalGet(0))
            .instruction(&I::I32Const(1))
            .instruction(&I::I32Add)
            .instruction(&I::LocalSet(0));
    }
    f.instruction(&I::LocalGet(0)).instruction(&I::End);
    component([f])
}

/// One function with `locals` declared locals.
pub fn many_locals(locals: u32) -> Vec<u8> {
    let mut f = Function::new([(locals, ValType::I32)]);
    f.instruction(&I::LocalGet(0)).instruction(&I::End);
    component([f])
}

/// One function with blocks nested `depth` deep.
pub fn deep_nesting(depth: u32) -> Vec<u8> {
    let mut f = Function::new([]);
    for _ in 0..depth {
        f.instruction(&I::Block(wasm_encoder::BlockType::Empty));
    }
    for _ in 0..depth {
        f.instruction(&I::End);
    }
    f.instruction(&I::I32Const(0)).instruction(&I::End);
    component([f])
}

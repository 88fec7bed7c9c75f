//! Component bytes are outside input: generated modules (wasm-smith)
//! wrapped as components, and real components with bytes flipped or cut,
//! go through the engine's load (shape check, validation, compile,
//! pre-instantiation) and through instantiation under fuel. Each ends in a
//! clear `invalid_component` error or a loaded component: never a panic,
//! never a host fault. The CI run keeps the number of cases small;
//! `scripts/fuzz.sh` raises it through `PROPTEST_CASES`.

use proptest::prelude::*;
use std::sync::OnceLock;
use warden_host::engine::{LoadError, Quiet};
use warden_host::{AgentEngine, config::EngineConfig};
use warden_tests::examples;

/// `cases` cases (`PROPTEST_CASES` overrides it), short shrinking: each
/// candidate is compiled again.
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    }
}

/// One engine for every case, without a compile cache.
fn engine() -> &'static AgentEngine {
    static ENGINE: OnceLock<AgentEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let config = EngineConfig {
            pool_slots: 4,
            cache: false,
            ..EngineConfig::default()
        };
        AgentEngine::new(&config, 64 << 20, None).unwrap()
    })
}

/// A wasm-smith module from `seed`: no imports, features this engine
/// compiles, so the compiler (not the validator) sees most of them.
fn module(seed: &[u8]) -> Option<Vec<u8>> {
    let config = wasm_smith::Config {
        max_imports: 0,
        max_memory32_bytes: 16 << 20,
        gc_enabled: false,
        threads_enabled: false,
        exceptions_enabled: false,
        ..wasm_smith::Config::default()
    };
    let mut u = arbitrary::Unstructured::new(seed);
    wasm_smith::Module::new(config, &mut u)
        .ok()
        .map(|m| m.to_bytes())
}

/// `module` in a component that instantiates it (running its start
/// function, if any, when the component is instantiated).
fn component(module: &[u8]) -> Vec<u8> {
    use wasm_encoder::{Component, ComponentSectionId, InstanceSection, ModuleArg, RawSection};
    let mut c = Component::new();
    c.section(&RawSection {
        id: ComponentSectionId::CoreModule.into(),
        data: module,
    });
    let mut instances = InstanceSection::new();
    instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    c.section(&instances);
    c.finish()
}

/// Loads `bytes`; a failure must be the component's fault.
fn load_is_clean(bytes: &[u8]) -> Result<(), TestCaseError> {
    match engine().load("fuzz.wasm", bytes, &Quiet) {
        Ok(_) => Ok(()),
        Err(LoadError::Invalid(message)) => {
            prop_assert!(!message.is_empty());
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!("a host fault: {e}"))),
    }
}

/// Instantiates `bytes` with nothing linked, under a small fuel budget.
fn instantiate(bytes: &[u8]) {
    let engine = engine().engine();
    let Ok(component) = wasmtime::component::Component::new(engine, bytes) else {
        return;
    };
    let linker = wasmtime::component::Linker::<()>::new(engine);
    let mut store = wasmtime::Store::new(engine, ());
    store.set_fuel(100_000).unwrap();
    store.set_epoch_deadline(100);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Traps (out of fuel, unreachable, out-of-bounds) are fine; a panic
    // is not.
    let _ = runtime.block_on(linker.instantiate_async(&mut store, &component));
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn fuzz_generated_modules_load_or_fail_cleanly(seed in proptest::collection::vec(any::<u8>(), 64..2048)) {
        if let Some(module) = module(&seed) {
            let bytes = component(&module);
            load_is_clean(&bytes)?;
            instantiate(&bytes);
            // The bare module is refused with a clear message.
            load_is_clean(&module)?;
        }
    }

    #[test]
    fn fuzz_damaged_components_load_or_fail_cleanly(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        static HELLO: OnceLock<Vec<u8>> = OnceLock::new();
        let mut bytes = HELLO.get_or_init(|| std::fs::read(examples::HELLO).unwrap()).clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len()));
        }
        load_is_clean(&bytes)?;
    }

    #[test]
    fn fuzz_arbitrary_bytes_are_refused_cleanly(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // With and without a component header in front.
        load_is_clean(&bytes)?;
        let mut framed = b"\0asm\x0d\0\x01\0".to_vec();
        framed.append(&mut bytes);
        load_is_clean(&framed)?;
    }
}

//! Builds the guest components the tests run (`tests/components/*`) and the
//! example agents (`examples/*`) for wasm32-wasip2, and writes one constant
//! per component with the path of its `.wasm` file:
//! `warden_tests::components::SPIN`, `warden_tests::examples::HELLO`, ...
//!
//! The nested cargo uses its own target dir (`target/guests`), so it never
//! waits on the lock of the build that runs this script.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    for dir in ["tests/components", "examples", "guest-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let mut code = String::new();
    for (module, workspace) in [("components", "tests/components"), ("examples", "examples")] {
        let workspace = root.join(workspace);
        build(&workspace, &target_dir);
        code.push_str(&format!(
            "/// Guest components built from `{}`.\npub mod {module} {{\n",
            workspace.strip_prefix(&root).unwrap().display()
        ));
        let mut all = String::from(
            "    /// Every component of this module: (constant name, path).\n    pub const ALL: &[(&str, &str)] = &[\n",
        );
        for name in crate_names(&workspace) {
            let file = name.replace('-', "_");
            let path = target_dir
                .join("wasm32-wasip2/release")
                .join(format!("{file}.wasm"));
            assert!(path.exists(), "{} was not built", path.display());
            code.push_str(&format!(
                "    /// `{name}`\n    pub const {}: &str = {:?};\n",
                file.to_uppercase(),
                path.display().to_string()
            ));
            all.push_str(&format!(
                "        ({:?}, {}),\n",
                file.to_uppercase(),
                file.to_uppercase()
            ));
        }
        code.push_str(&all);
        code.push_str("    ];\n}\n");
    }
    std::fs::write(out.join("guests.rs"), code).unwrap();
}

/// The member crates of a guest workspace (one folder each).
fn crate_names(workspace: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn build(workspace: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(target_dir);
    // What the outer build sets for its own compilation must not leak into
    // the guest build (clippy's wrapper, host RUSTFLAGS, the host toolchain).
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "__CARGO_FIX_PLZ",
        "CARGO_BUILD_RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd.output().expect("cargo runs");
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!(
            "building the guest components in {} failed; is the wasm32-wasip2 target installed? \
             (`rustup target add wasm32-wasip2`; rust-toolchain.toml lists it)",
            workspace.display()
        );
    }
}

//! Records the version of the wasmtime crate this build links, from the
//! workspace's Cargo.lock, as `WARDEN_WASMTIME_VERSION` (nodes report it
//! when they register).

use std::path::{Path, PathBuf};

fn find_lock(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join("Cargo.lock"))
        .find(|lock| lock.is_file())
}

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut version = "unknown".to_string();
    if let Some(lock) = find_lock(&dir) {
        println!("cargo:rerun-if-changed={}", lock.display());
        let text = std::fs::read_to_string(&lock).unwrap_or_default();
        // [[package]] blocks: `name = "wasmtime"` then `version = "…"`.
        for block in text.split("[[package]]") {
            let mut lines = block.lines().map(str::trim);
            if lines.any(|l| l == "name = \"wasmtime\"") {
                if let Some(v) = block
                    .lines()
                    .map(str::trim)
                    .find_map(|l| l.strip_prefix("version = \""))
                {
                    version = v.trim_end_matches('"').to_string();
                }
                break;
            }
        }
    }
    println!("cargo:rustc-env=WARDEN_WASMTIME_VERSION={version}");
}

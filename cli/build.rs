//! Embeds the guest SDKs and the WIT in the `warden` binary, for `warden
//! new`, `warden build` and `warden sdk`, which unpack them: every file of
//! `wit/`, the Rust SDK (`guest-sdk/src`, `guest-sdk/macros/src`), the
//! Python SDK (`guest-sdk/python/warden`) and the JS SDK (`guest-sdk/js`),
//! except caches and installed packages. The Rust SDK's manifests are made
//! standalone (the workspace's package fields and dependency versions
//! written out), so the unpacked crate builds from any directory.
//!
//! Writes `$OUT_DIR/sdk_files.rs`: `FILES: &[(&str, &[u8])]`, paths relative
//! to the repository root.

use std::path::{Path, PathBuf};

/// Directories embedded whole (less [`skipped`] names).
const TREES: &[&str] = &[
    "wit",
    "guest-sdk/src",
    "guest-sdk/macros/src",
    "guest-sdk/python/warden",
    "guest-sdk/python/README.md",
    "guest-sdk/js",
];

/// Manifests rewritten to stand alone.
const MANIFESTS: &[&str] = &["guest-sdk/Cargo.toml", "guest-sdk/macros/Cargo.toml"];

fn skipped(name: &str) -> bool {
    name.starts_with('.')
        || matches!(
            name,
            "__pycache__" | "node_modules" | "target" | "package-lock.json"
        )
        || name.ends_with(".pyc")
        || name.ends_with(".wasm")
}

fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
    let path = root.join(rel);
    if path.is_dir() {
        let all: Vec<String> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()))
            .map(|e| {
                e.expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        // Cargo scans a directory it is told to watch whole: not one that
        // holds installed packages or caches (its files are watched one by
        // one below; a file added beside them is seen with the next change
        // to another).
        let heavy = |n: &String| matches!(n.as_str(), "node_modules" | "__pycache__" | "target");
        if !all.iter().any(heavy) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        let mut names: Vec<String> = all.into_iter().filter(|n| !skipped(n)).collect();
        names.sort();
        for name in names {
            walk(root, &format!("{rel}/{name}"), out);
        }
    } else if path.is_file() {
        println!("cargo:rerun-if-changed={}", path.display());
        out.push(rel.to_string());
    }
}

/// `manifest` with `x.workspace = true` replaced by the workspace's value,
/// path dependencies given their version, and no dev-dependencies.
fn standalone(manifest: &str, workspace: &toml::Table) -> String {
    let mut doc: toml::Table = manifest.parse().expect("a Cargo.toml");
    let ws = workspace["workspace"].as_table().expect("[workspace]");
    let package_fields = ws["package"].as_table().expect("[workspace.package]");
    let deps = ws["dependencies"]
        .as_table()
        .expect("[workspace.dependencies]");
    let package = doc["package"].as_table_mut().expect("[package]");
    for (key, value) in package.iter_mut() {
        if value.get("workspace").and_then(toml::Value::as_bool) == Some(true) {
            *value = package_fields[key.as_str()].clone();
        }
    }
    package.insert("publish".into(), false.into());
    doc.remove("dev-dependencies");
    if let Some(toml::Value::Table(own)) = doc.get_mut("dependencies") {
        for (name, spec) in own.iter_mut() {
            if spec.get("workspace").and_then(toml::Value::as_bool) != Some(true) {
                continue;
            }
            let mut merged = match &deps[name.as_str()] {
                toml::Value::String(version) => {
                    toml::Table::from_iter([("version".to_string(), version.clone().into())])
                }
                toml::Value::Table(t) => t.clone(),
                other => panic!("workspace dependency {name}: unexpected {other}"),
            };
            if let Some(toml::Value::String(path)) = merged.get("path") {
                // The workspace's path dependencies inside the SDK (the
                // macros) keep their place relative to it.
                let path = path.strip_prefix("guest-sdk/").unwrap_or(path).to_string();
                merged.insert("path".into(), path.into());
            }
            for (k, v) in spec.as_table().expect("a dependency table") {
                if k != "workspace" {
                    merged.insert(k.clone(), v.clone());
                }
            }
            *spec = merged.into();
        }
    }
    if doc.get("lints").and_then(|l| l.get("workspace")).is_some() {
        doc.insert("lints".into(), workspace["workspace"]["lints"].clone());
    }
    // [package] first, as people write it.
    let package = toml::Table::from_iter(doc.remove_entry("package"));
    format!(
        "# Unpacked by `warden sdk` from the SDK inside warden.\n{}\n{}",
        toml::to_string(&package).expect("TOML"),
        toml::to_string(&doc).expect("TOML")
    )
}

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = crate_dir
        .parent()
        .expect("the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let workspace_manifest = root.join("Cargo.toml");
    println!("cargo:rerun-if-changed={}", workspace_manifest.display());
    let workspace: toml::Table = std::fs::read_to_string(&workspace_manifest)
        .expect("the workspace Cargo.toml")
        .parse()
        .expect("TOML");

    let mut files = Vec::new();
    for tree in TREES {
        walk(&root, tree, &mut files);
    }
    let mut entries: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|rel| (rel.clone(), root.join(&rel)))
        .collect();
    for (i, rel) in MANIFESTS.iter().enumerate() {
        let source = root.join(rel);
        println!("cargo:rerun-if-changed={}", source.display());
        let text = std::fs::read_to_string(&source).expect("an SDK manifest");
        let written = out_dir.join(format!("sdk-manifest-{i}.toml"));
        std::fs::write(&written, standalone(&text, &workspace)).expect("OUT_DIR is writable");
        entries.push((rel.to_string(), written));
    }
    entries.sort();
    let mut code = String::from("pub(crate) static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, path) in &entries {
        code += &format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        );
    }
    code += "];\n";
    std::fs::write(out_dir.join("sdk_files.rs"), code).expect("OUT_DIR is writable");
}

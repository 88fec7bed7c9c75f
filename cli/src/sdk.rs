//! The guest SDKs and the WIT, embedded in this binary (see `build.rs`) and
//! unpacked on first use under the data dir, one directory per SDK build;
//! and `warden sdk`, which says where they are and how to use them.

use anyhow::Context;
use clap::Args;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));
}

/// The languages an agent can be written in with a Warden SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    Rust,
    Python,
    Js,
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        })
    }
}

/// Where the SDKs are unpacked: the same layout as in Warden's source
/// (`wit/`, `guest-sdk/` with the Rust crate, `guest-sdk/python`,
/// `guest-sdk/js`), so each finds the WIT where it expects it.
#[derive(Debug, Clone)]
pub(crate) struct Sdk {
    pub(crate) root: PathBuf,
}

impl Sdk {
    /// VERSION-HASH: the same for the same SDK wherever it is unpacked.
    pub(crate) fn id(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub(crate) fn wit(&self) -> PathBuf {
        self.root.join("wit")
    }

    /// The Rust SDK crate (`warden-sdk`).
    pub(crate) fn rust(&self) -> PathBuf {
        self.root.join("guest-sdk")
    }

    /// The Python package's parent (a `-p` path for componentize-py).
    pub(crate) fn python(&self) -> PathBuf {
        self.root.join("guest-sdk/python")
    }

    pub(crate) fn js(&self) -> PathBuf {
        self.root.join("guest-sdk/js")
    }

    /// The `[dependencies]` line of a Rust agent.
    pub(crate) fn rust_dependency(&self) -> String {
        format!(
            "warden-sdk = {{ path = {} }}",
            toml_string(&self.rust().display().to_string())
        )
    }

    /// The SDKs this binary carries, unpacked under `data_dir/sdk` (once per
    /// SDK build: the directory is named by version and content hash, and
    /// appears whole or not at all).
    pub(crate) fn unpacked(data_dir: &Path) -> anyhow::Result<Sdk> {
        let mut hash = sha2::Sha256::new();
        for (path, bytes) in embedded::FILES {
            hash.update((path.len() as u64).to_le_bytes());
            hash.update(path.as_bytes());
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        let id = format!(
            "{}-{}",
            env!("CARGO_PKG_VERSION"),
            &hex::encode(hash.finalize())[..12]
        );
        // Absolute: the builders run in the agent's directory.
        let data_dir = std::path::absolute(data_dir)
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
        let parent = data_dir.join("sdk");
        let root = parent.join(&id);
        if root.is_dir() {
            return Ok(Sdk { root });
        }
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{id}."))
            .suffix(".partial")
            .tempdir_in(&parent)
            .with_context(|| format!("cannot create a directory in {}", parent.display()))?
            .keep();
        for (path, bytes) in embedded::FILES {
            let file = staging.join(path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(&file, bytes)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        match std::fs::rename(&staging, &root) {
            Ok(()) => Ok(Sdk { root }),
            // Another process unpacked the same SDK first.
            Err(_) if root.is_dir() => {
                let _ = std::fs::remove_dir_all(&staging);
                Ok(Sdk { root })
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e).with_context(|| format!("cannot create {}", root.display()))
            }
        }
    }
}

/// The data dir: `flag`, else `$WARDEN_DATA_DIR`, else the default.
pub(crate) fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("WARDEN_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(warden_host::config::default_data_dir)
}

/// `text` as a TOML basic string.
pub(crate) fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// Show where this binary's guest SDKs are and how to build against them.
///
/// The SDKs (Rust, Python, JavaScript) and the WIT of the agent world ship
/// inside `warden` and are unpacked under the data dir on first use; `warden
/// new` and `warden build` use them for you. With --lang rust, print only the
/// `[dependencies]` line for a Rust agent's Cargo.toml.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  warden sdk
  warden sdk --lang rust      # the line for [dependencies] in a Rust agent's Cargo.toml")]
pub(crate) struct SdkArgs {
    /// Print only what this language needs.
    #[arg(long, value_enum)]
    lang: Option<Lang>,
    /// Where the SDKs are unpacked (under sdk/). Default:
    /// $XDG_DATA_HOME/warden, else ~/.local/share/warden.
    #[arg(long, env = "WARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

pub(crate) fn sdk(args: SdkArgs) -> anyhow::Result<ExitCode> {
    let sdk = Sdk::unpacked(&data_dir(args.data_dir))?;
    let python = format!(
        "componentize-py -d {} -w agent componentize app -p AGENT_DIR -p {} -o agent.wasm",
        sdk.wit().display(),
        sdk.python().display()
    );
    let js = format!(
        "node {} AGENT_DIR agent.wasm",
        sdk.js().join("build.mjs").display()
    );
    match args.lang {
        Some(Lang::Rust) => println!("{}", sdk.rust_dependency()),
        Some(Lang::Python) => println!("{python}"),
        Some(Lang::Js) => println!("{js}"),
        None => {
            println!(
                "Warden guest SDKs {}, at {}",
                env!("CARGO_PKG_VERSION"),
                sdk.root.display()
            );
            println!();
            println!("wit      {}", sdk.wit().display());
            println!("rust     {}  (in Cargo.toml)", sdk.rust_dependency());
            println!("python   {python}");
            println!("js       {js}");
            println!();
            println!("`warden build` in an agent directory runs the right one for you.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_unpack_once_with_the_wit_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = Sdk::unpacked(dir.path()).unwrap();
        assert!(sdk.wit().join("agent.wit").is_file());
        assert!(sdk.rust().join("src/lib.rs").is_file());
        assert!(sdk.rust().join("macros/src/lib.rs").is_file());
        assert!(sdk.python().join("warden/__init__.py").is_file());
        // Standalone manifests: no workspace inheritance left.
        let manifest = std::fs::read_to_string(sdk.rust().join("Cargo.toml")).unwrap();
        assert!(!manifest.contains("workspace"), "{manifest}");
        assert!(manifest.contains("wit-bindgen"), "{manifest}");
        let again = Sdk::unpacked(dir.path()).unwrap();
        assert_eq!(again.root, sdk.root);
        let entries = std::fs::read_dir(dir.path().join("sdk")).unwrap().count();
        assert_eq!(entries, 1, "one directory, no staging left");
    }
}

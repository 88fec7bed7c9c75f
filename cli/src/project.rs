//! Agent directories: which language one is written in, and `warden build`,
//! which turns it into a component with that language's toolchain (cargo,
//! componentize-py, componentize-js) and the SDK this binary carries.

use crate::output;
use crate::sdk::{Lang, Sdk};
use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The componentize-py release the Python SDK is built and tested with.
pub(crate) const COMPONENTIZE_PY: &str = "0.25.1";

/// An agent's source directory.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub(crate) dir: PathBuf,
    pub(crate) lang: Lang,
    /// The agent's name: the directory's.
    pub(crate) name: String,
}

impl Project {
    /// The agent in `dir`: Rust with a Cargo.toml, Python with an app.py,
    /// JavaScript with an app.js.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Project> {
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let found: Vec<(Lang, &str)> = [
            (Lang::Rust, "Cargo.toml"),
            (Lang::Python, "app.py"),
            (Lang::Js, "app.js"),
        ]
        .into_iter()
        .filter(|(_, file)| dir.join(file).is_file())
        .collect();
        let lang = match found.as_slice() {
            [(lang, _)] => *lang,
            [] => bail!(
                "{} is not an agent directory: it has no Cargo.toml (Rust), app.py (Python) \
                 or app.js (JavaScript); `warden new --lang python NAME` makes one",
                dir.display()
            ),
            many => bail!(
                "{} has {}: one agent per directory",
                dir.display(),
                many.iter()
                    .map(|(_, f)| *f)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        };
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let name = name_of(&dir)?;
        Ok(Project { dir, lang, name })
    }

    /// Where `warden build` puts the component by default.
    pub(crate) fn default_output(&self) -> PathBuf {
        self.dir.join("target").join(format!("{}.wasm", self.name))
    }

    /// The default build, built first unless it is fresh.
    pub(crate) fn ensure_built(&self, sdk: &Sdk) -> anyhow::Result<PathBuf> {
        let out = self.default_output();
        if !self.is_fresh(sdk, &out) {
            self.build(sdk, &out)?;
        }
        Ok(out)
    }

    /// The agent's test input, `input.json`, as `@FILE`, if it has one.
    pub(crate) fn default_input(&self) -> Option<String> {
        let file = self.dir.join("input.json");
        file.is_file().then(|| format!("@{}", file.display()))
    }

    /// The capability manifest, if the directory has one.
    pub(crate) fn manifest(&self) -> Option<PathBuf> {
        Some(self.dir.join("warden.toml")).filter(|m| m.is_file())
    }

    /// Builds the component into `out`; progress on stderr.
    pub(crate) fn build(&self, sdk: &Sdk, out: &Path) -> anyhow::Result<()> {
        // The builders run in the agent's directory.
        let out = &std::path::absolute(out)
            .with_context(|| format!("cannot resolve {}", out.display()))?;
        let parent = out.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        // Built beside `out` and renamed over it: a reader (another build,
        // a publish) sees the old component or the new one, never a part.
        let staged = tempfile::Builder::new()
            .prefix(".build-")
            .suffix(".wasm")
            .tempfile_in(parent)
            .with_context(|| format!("cannot create a file in {}", parent.display()))?
            .into_temp_path();
        let (final_out, out) = (out, &staged.to_path_buf());
        let started = Instant::now();
        let started_at = SystemTime::now();
        match self.lang {
            Lang::Rust => self.build_rust(out)?,
            Lang::Python => {
                let mut cmd = Command::new("componentize-py");
                cmd.arg("-d")
                    .arg(sdk.wit())
                    .args(["-w", "agent", "componentize", "app", "-p"])
                    .arg(&self.dir)
                    .arg("-p")
                    .arg(sdk.python())
                    .arg("-o")
                    .arg(out);
                self.run_tool(
                    cmd,
                    "componentize-py",
                    &format!(
                        "componentize-py is not installed: `python3 -m pip install \
                         componentize-py=={COMPONENTIZE_PY}` installs it"
                    ),
                )?;
            }
            Lang::Js => {
                let mut cmd = Command::new("node");
                cmd.arg(sdk.js().join("build.mjs")).arg(&self.dir).arg(out);
                self.run_tool(
                    cmd,
                    "componentize-js",
                    "Node.js is not installed: install Node.js 18 or newer (Debian: `apt-get \
                     install nodejs npm`), then the JS toolchain as `warden build` will say",
                )?;
            }
        }
        let size = std::fs::metadata(out)
            .ok()
            .filter(|m| m.len() > 0)
            .with_context(|| format!("{} wrote no component", self.lang))?
            .len();
        // Dated when the build started: a source saved while it ran is
        // newer, so the next look builds again.
        std::fs::File::options()
            .write(true)
            .open(out)
            .and_then(|f| f.set_modified(started_at))
            .with_context(|| format!("cannot date {}", out.display()))?;
        staged
            .persist(final_out)
            .with_context(|| format!("cannot write {}", final_out.display()))?;
        // Which SDK made it, for `is_fresh`.
        let _ = std::fs::write(sdk_stamp(final_out), sdk.id());
        eprintln!(
            "built {} ({}) in {:.1} s",
            shown(final_out),
            output::bytes(size),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Runs a builder that prints little while it works, under a spinner;
    /// its output is shown when it fails.
    fn run_tool(&self, mut cmd: Command, tool: &str, missing: &str) -> anyhow::Result<()> {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid"));
        bar.set_message(format!(
            "building {} ({}) with {tool}",
            self.name, self.lang
        ));
        bar.enable_steady_tick(Duration::from_millis(100));
        // Builders written in Rust print backtraces if asked; not wanted here.
        let result = cmd
            .current_dir(&self.dir)
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .output();
        bar.finish_and_clear();
        let done = match result {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{missing}"),
            other => other.with_context(|| format!("cannot start {tool}"))?,
        };
        if !done.status.success() {
            let mut text = String::from_utf8_lossy(&done.stdout).into_owned();
            text += &String::from_utf8_lossy(&done.stderr);
            bail!(
                "{tool} could not build {} ({}):\n{}",
                self.name,
                done.status,
                text.trim_end()
            );
        }
        Ok(())
    }

    fn build_rust(&self, out: &Path) -> anyhow::Result<()> {
        const TARGET: &str = "wasm32-wasip2";
        let libdir = Command::new("rustc")
            .args(["--print", "target-libdir", "--target", TARGET])
            .current_dir(&self.dir)
            .output();
        match libdir {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "Rust is not installed: https://rustup.rs installs it, then \
                 `rustup target add {TARGET}`"
            ),
            Err(e) => bail!("cannot start rustc: {e}"),
            Ok(o) if !o.status.success() || !Path::new(lossy(&o.stdout).trim()).is_dir() => bail!(
                "the Rust target {TARGET} is not installed: `rustup target add {TARGET}` adds it"
            ),
            Ok(_) => {}
        }
        eprintln!("building {} (rust) with cargo", self.name);
        let built = Command::new("cargo")
            .args(["build", "--lib", "--release", "--target", TARGET])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("cannot start cargo")?;
        if !built.status.success() {
            bail!("cargo could not build {} ({})", self.name, built.status);
        }
        // The cdylib's .wasm, from cargo's own account of what it built.
        let wasm = lossy(&built.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact")
            .filter(|m| m["manifest_path"] == self.dir.join("Cargo.toml").display().to_string())
            .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f.as_str().map(PathBuf::from))
            .find(|f| f.extension().is_some_and(|e| e == "wasm"));
        let Some(wasm) = wasm else {
            bail!(
                "cargo built no .wasm for {}: its Cargo.toml needs `[lib] crate-type = \
                 [\"cdylib\"]`",
                self.name
            );
        };
        std::fs::copy(&wasm, out)
            .with_context(|| format!("cannot copy {} to {}", wasm.display(), out.display()))?;
        Ok(())
    }

    /// Whether `out` is newer than every source file of the agent and was
    /// built with this SDK (Rust: never; cargo knows best).
    fn is_fresh(&self, sdk: &Sdk, out: &Path) -> bool {
        if self.lang == Lang::Rust {
            return false;
        }
        let Ok(built) = std::fs::metadata(out).and_then(|m| m.modified()) else {
            return false;
        };
        let stamp = std::fs::read_to_string(sdk_stamp(out)).unwrap_or_default();
        stamp == sdk.id() && self.sources_changed_at() < built
    }

    /// When a source file of the agent last changed (build output and
    /// caches aside).
    pub(crate) fn sources_changed_at(&self) -> SystemTime {
        newest(&self.dir, true)
    }
}

/// Beside a build: the id of the SDK it was built with.
fn sdk_stamp(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".sdk");
    PathBuf::from(name)
}

/// The newest modification time of the files under `path`: files only (a
/// directory's own time moves when an editor makes a swap file), symlinks
/// not followed, build output, caches and dot files skipped (and, at the
/// top of an agent directory, `target/`).
fn newest(path: &Path, top: bool) -> SystemTime {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return SystemTime::UNIX_EPOCH;
    };
    if !meta.is_dir() {
        return meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return SystemTime::UNIX_EPOCH;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !(name.starts_with('.')
                || matches!(&*name, "__pycache__" | "node_modules" | "venv")
                || (top && name == "target"))
        })
        .map(|e| newest(&e.path(), false))
        .fold(SystemTime::UNIX_EPOCH, std::cmp::max)
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// `path` relative to the working directory when it is under it.
pub(crate) fn shown(path: &Path) -> String {
    let here = std::env::current_dir().ok();
    here.and_then(|h| path.strip_prefix(h).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// The name of the agent in `dir`: the directory's, if the registry
/// accepts it.
pub(crate) fn name_of(dir: &Path) -> anyhow::Result<String> {
    // `.` and `..` name the directories they stand for.
    let full = dir
        .canonicalize()
        .or_else(|_| std::path::absolute(dir))
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    check_name(&name).with_context(|| {
        format!(
            "the directory's name is the agent's name, and `{}` is not a valid one",
            output::safe(&name)
        )
    })?;
    Ok(name)
}

/// An agent name as the registry accepts it.
pub(crate) fn check_name(name: &str) -> anyhow::Result<()> {
    Ok(warden_core::check_name("agent name", name)?)
}

/// Build the agent in a directory into a component (.wasm).
///
/// The language is found from the directory: a Cargo.toml is Rust (built
/// with cargo for wasm32-wasip2), an app.py is Python (componentize-py), an
/// app.js is JavaScript (componentize-js, through Node.js). The SDK for each
/// ships inside warden. The agent's name is the directory's; the component
/// goes to DIR/target/NAME.wasm unless --out says otherwise.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  warden new --lang python greeter && warden build greeter
  warden build                       # the agent in this directory
  warden build ./my-agent --out my-agent.wasm")]
pub(crate) struct BuildArgs {
    /// The agent's directory.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where to write the component. Default: DIR/target/NAME.wasm.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Where the SDKs are unpacked. Default: $XDG_DATA_HOME/warden, else
    /// ~/.local/share/warden.
    #[arg(long, env = "WARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

pub(crate) fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let project = Project::open(&args.dir)?;
    let data_dir = crate::sdk::data_dir(args.data_dir);
    let sdk = Sdk::unpacked(&data_dir)?;
    let out = args.out.unwrap_or_else(|| project.default_output());
    project.build(&sdk, &out)?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}

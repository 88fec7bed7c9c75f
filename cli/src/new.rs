//! `warden new`: a working agent to start from, in Rust, Python or
//! JavaScript.

use crate::project::{name_of, shown};
use crate::sdk::{Lang, Sdk};
use anyhow::{Context, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Make a new agent: its code, capability manifest, a test input, scripted
/// LLM replies and a README, in a new directory.
///
/// The agent greets by name, counts greetings in its key-value namespace and
/// asks the LLM for the greeting when the run may use one. The directory's
/// name is the agent's name.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  warden new --lang python greeter
  cd greeter && warden build && warden run .
  warden run . --llm-script llm-script.json")]
pub(crate) struct NewArgs {
    /// The directory to create; its last part is the agent's name.
    dir: PathBuf,
    /// The language to write the agent in.
    #[arg(long, short, value_enum)]
    lang: Lang,
    /// Where the SDKs are unpacked (a Rust agent depends on the Rust SDK
    /// there). Default: $XDG_DATA_HOME/warden, else ~/.local/share/warden.
    #[arg(long, env = "WARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// A template file: its path in the new directory and its text, with
/// `{{name}}` and the like still in it.
type Template = (&'static str, &'static str);

const COMMON: &[Template] = &[
    (
        "warden.toml",
        include_str!("../templates/common/warden.toml"),
    ),
    ("input.json", include_str!("../templates/common/input.json")),
    (
        "llm-script.json",
        include_str!("../templates/common/llm-script.json"),
    ),
    ("README.md", include_str!("../templates/common/README.md")),
];

const RUST: &[Template] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    (".gitignore", include_str!("../templates/rust/.gitignore")),
];

const PYTHON: &[Template] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    (".gitignore", include_str!("../templates/python/.gitignore")),
];

const JS: &[Template] = &[
    ("app.js", include_str!("../templates/js/app.js")),
    (".gitignore", include_str!("../templates/js/.gitignore")),
];

pub(crate) fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let name = name_of(dir)?;
    if args.lang == Lang::Rust
        && (name.contains('.') || name.starts_with(|c: char| c.is_ascii_digit()))
    {
        bail!(
            "`{name}` cannot name a Rust agent: it is also the crate's name, which takes \
             letters, digits, - and _ and starts with a letter"
        );
    }
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} already exists and is not empty", dir.display());
    }
    let (language, source, files) = match args.lang {
        Lang::Rust => ("Rust", "src/lib.rs", RUST),
        Lang::Python => ("Python", "app.py", PYTHON),
        Lang::Js => ("JavaScript", "app.js", JS),
    };
    let rust_dependency = match args.lang {
        Lang::Rust => {
            let data_dir = crate::sdk::data_dir(args.data_dir);
            Sdk::unpacked(&data_dir)?.rust_dependency()
        }
        _ => String::new(),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", &name)
            .replace("{{language}}", language)
            .replace("{{source}}", source)
            .replace("{{rust_dependency}}", &rust_dependency)
    };
    for (path, text) in files.iter().chain(COMMON) {
        write(&dir.join(path), &fill(text))?;
    }
    println!("created {} ({language} agent {name})", shown(dir));
    println!();
    println!("  cd {}", shown(dir));
    println!("  warden build                          # the component, in target/");
    println!("  warden run .                          # build if needed, run with input.json");
    println!("  warden run . --llm-script llm-script.json");
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

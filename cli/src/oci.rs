//! OCI flags and progress bars shared by `publish`, `run`, `inspect` and the
//! control plane.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use warden_oci::{Credentials, OciOptions, Progress};

/// How to reach OCI registries.
#[derive(Debug, Clone, Args)]
pub(crate) struct OciArgs {
    /// Allow plain HTTP to OCI registries that are not on loopback (loopback
    /// registries always may use it).
    #[arg(long, global = true)]
    plain_http: bool,

    /// Registry user name (default: the docker config file's credentials
    /// for the registry, else anonymous).
    #[arg(long, env = "WARDEN_REGISTRY_USERNAME", global = true)]
    registry_username: Option<String>,

    /// Registry password or token.
    #[arg(
        long,
        env = "WARDEN_REGISTRY_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    registry_password: Option<String>,

    /// The registry (HOST or HOST:PORT) --registry-username/--registry-password
    /// are for: they are sent to no other. Required by the control plane,
    /// which pulls from registries others name.
    #[arg(long, env = "WARDEN_REGISTRY_HOST", global = true)]
    registry_host: Option<String>,
}

impl OciArgs {
    pub(crate) fn options(&self) -> OciOptions {
        OciOptions {
            guard: None,
            insecure: self.plain_http,
            credentials: Credentials {
                username: self.registry_username.clone(),
                password: self.registry_password.clone(),
                registry: self.registry_host.clone(),
            },
        }
    }
}

/// A byte progress bar on stderr (hidden when stderr is not a terminal).
pub(crate) struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub(crate) fn new(verb: &str) -> Self {
        let bar = ProgressBar::no_length();
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{verb} {{bytes}}/{{total_bytes}} {{bar:30}} {{bytes_per_sec}}"
            ))
            .expect("valid template"),
        );
        Bar { bar }
    }
}

impl Progress for Bar {
    fn start(&self, total: Option<u64>) {
        if let Some(total) = total {
            self.bar.set_length(total);
        }
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

//! The scratch filesystem: an optional, empty, per-run directory preopened
//! read-write at [`SCRATCH_GUEST_PATH`], removed when the run ends (and, for
//! runs a killed node left behind, at the next start: [`clean`]). Nothing
//! else of the host's filesystem is visible. Its size and number of entries
//! are bounded by a [`DiskQuota`], charged by [`QuotaFs`], the
//! `wasi:filesystem/types` the guest gets.

mod host;
mod quota;

pub use host::{QuotaFs, QuotaFsData};
pub use quota::{DiskQuota, ENTRY_BYTES};

use std::path::Path;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// Where the guest sees its scratch directory.
pub const SCRATCH_GUEST_PATH: &str = "/scratch";

/// A run's scratch directory; deleted on drop.
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
}

impl ScratchDir {
    /// Creates a fresh directory under `parent`.
    pub fn create(parent: &Path) -> std::io::Result<Self> {
        warden_core::files::private_dir(parent)?;
        let dir = tempfile::Builder::new().prefix("run-").tempdir_in(parent)?;
        Ok(ScratchDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Preopens the directory in the guest's WASI context.
    pub fn preopen(&self, wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
        wasi.preopened_dir(self.dir.path(), SCRATCH_GUEST_PATH, FsPerms::ReadWrite)?;
        Ok(())
    }
}

/// This process's parent of run directories under `root` (`root/PID`,
/// made with the first run directory), after removing those of processes
/// that are gone: a node
/// killed mid-run leaves its runs' directories behind, and the next start
/// cleans them. Directories of live processes sharing the data dir (say, a
/// `warden run` beside a node) are left alone.
pub fn process_root(root: &Path) -> std::path::PathBuf {
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => tracing::info!(
                        pid,
                        "removed the scratch directories of a process that is gone"
                    ),
                    Err(e) => {
                        tracing::warn!(pid, error = %e, "cannot remove old scratch directories")
                    }
                }
            }
        }
    }
    root.join(std::process::id().to_string())
}

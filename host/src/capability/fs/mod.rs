//! The scratch filesystem: an optional, empty, per-run directory preopened
//! read-write at [`SCRATCH_GUEST_PATH`], removed when the run ends. Nothing
//! else of the host's filesystem is visible.

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
        std::fs::create_dir_all(parent)?;
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

//! Files that may hold secrets (keys, databases): created readable by the
//! owner only (0600) in directories made for the owner only (0700).

use std::io::Write;
use std::path::Path;

/// Writes `text` to `path` (replacing it), creating parent directories;
/// readable by the owner only when `secret` (mode 0600 on Unix), and
/// synced before returning.
pub fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        if secret {
            private_dir(parent)?;
        } else {
            std::fs::create_dir_all(parent)?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Creates `dir` and any missing parents, each made for the owner only
/// (0700 on Unix); directories that exist are left as they are.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes the file at `path` (and its directory, see [`private_dir`]) for
/// the owner only (0600 on Unix) if it does not exist yet, so that a
/// database opened on it next holds secrets from its first byte. SQLite
/// gives its `-wal` and `-shm` files the database file's mode.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        private_dir(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

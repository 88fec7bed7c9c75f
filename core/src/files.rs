//! Writing files that may hold secrets.

use std::io::Write;
use std::path::Path;

/// Writes `text` to `path` (replacing it), creating parent directories;
/// readable by the owner only when `secret` (mode 0600 on Unix), and
/// synced before returning.
pub fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
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

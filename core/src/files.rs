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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// An operator who made the data dir (or a parent) with a mode of their
    /// choosing keeps it: only the directories made here are 0700, and a
    /// secret file in an existing directory is still 0600.
    #[test]
    fn directories_that_exist_keep_their_mode() {
        let root = std::env::temp_dir().join(format!("warden-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let shared = root.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();

        private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o755, "an existing directory was changed");
        let made = shared.join("a").join("b");
        private_dir(&made).unwrap();
        assert_eq!(mode(&shared), 0o755, "an existing parent was changed");
        assert_eq!(mode(&shared.join("a")), 0o700);
        assert_eq!(mode(&made), 0o700);

        let key = shared.join("sealing.key");
        write_file(&key, "secret", true).unwrap();
        create_private(&shared.join("db.sqlite3")).unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&shared.join("db.sqlite3")), 0o600);
        assert_eq!(
            mode(&shared),
            0o755,
            "writing a secret changed its directory"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}

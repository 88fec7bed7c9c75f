//! A node's data dir is its own: [`DataDirLock`] holds an exclusive lock on
//! `DATA_DIR/node.lock` for as long as the node runs, so a second node
//! started on the same dir is refused instead of registering as the first
//! and taking over its slots. The lock is the kernel's (`flock`): a node
//! that dies, even by `kill -9`, leaves no stale lock behind.

use crate::NodeError;
use std::io::Write;
use std::path::Path;

const LOCK_FILE: &str = "node.lock";

/// Held while a node runs on a data dir.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Locks `data_dir` (creating it, mode 0700), or says which process
    /// holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self, NodeError> {
        let failed = |e: std::io::Error| {
            NodeError::DataDir(format!("cannot lock {}: {e}", data_dir.display()))
        };
        warden_core::files::private_dir(data_dir).map_err(failed)?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {
                // Whose it is, for the message another node gets.
                file.set_len(0).map_err(failed)?;
                write!(file, "{}", std::process::id()).map_err(failed)?;
                Ok(DataDirLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {})", warden_core::escape_controls(holder))
                };
                Err(NodeError::DataDir(format!(
                    "{} is in use by another warden node{holder}; give this node its own --data-dir",
                    data_dir.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_data_dir_is_refused_until_its_lock_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let refused = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            refused.contains("in use by another warden node")
                && refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(held);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}

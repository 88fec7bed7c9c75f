//! Starting a control plane from its settings: the store a `--db` names,
//! and for TLS the CA and server certificate and, on the first start, the
//! first admin token. `warden control-plane`, `warden dev` and the tests'
//! in-process control planes all start this way.

use crate::auth::{DEFAULT_TENANT, Security};
use crate::pki::{Pki, PkiError, display_fingerprint, write_new};
use crate::store::{SEALING_KEY, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

/// Why a control plane cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// The SQLite file the control plane keeps in its data dir by default.
pub const DEFAULT_DATABASE: &str = "control-plane.sqlite3";

/// The store `db` names: a `postgres://` or `postgresql://` URL (a pool of
/// `connections`; registry credentials sealed under `data_dir`'s
/// [`SEALING_KEY`]), a SQLite file, or (`None`) the SQLite file in
/// `data_dir`.
pub fn open_store(
    db: Option<&str>,
    data_dir: &Path,
    connections: usize,
) -> Result<Store, StoreError> {
    match db {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Store::open_postgres(url, connections, &data_dir.join(SEALING_KEY))
        }
        Some(path) => Store::open(Path::new(path)),
        None => Store::open(&data_dir.join(DEFAULT_DATABASE)),
    }
}

/// TLS for a control plane with its data in `dir`: the CA and a server
/// certificate for `names` (made on the first start, or `own` cert and key
/// files), and on the first start (a store with no tokens) a system-role
/// token of tenant `default` written to `dir/admin.token`. Also returns
/// what to tell the operator, line by line.
pub fn secure(
    store: &Store,
    dir: &Path,
    names: &[String],
    own: Option<(&Path, &Path)>,
) -> Result<(Security, Vec<String>), BootstrapError> {
    let mut notes = Vec::new();
    let (pki, created) = Pki::load_or_create(dir, names, own)?;
    notes.push(format!(
        "CA certificate {}{} (give it to nodes and clients: --ca), fingerprint (sha256) {}",
        dir.join("ca.pem").display(),
        if created { ", created now" } else { "" },
        display_fingerprint(pki.ca_fingerprint())
    ));
    if !store.has_tokens()? {
        let (info, token) = store.create_token(
            DEFAULT_TENANT,
            warden_core::Role::System,
            "first admin token",
            None,
        )?;
        let path = dir.join("admin.token");
        write_new(&path, &format!("{token}\n"), true)?;
        notes.push(format!(
            "first admin token ({}, role system) written to {}",
            info.id,
            path.display()
        ));
    }
    Ok((Security::Tls(Arc::new(pki)), notes))
}

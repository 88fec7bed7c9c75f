//! Registry credentials per tenant. The password is sealed
//! (ChaCha20-Poly1305) under a key kept beside the database (`DB.key`,
//! 0600, made on first use) and bound to its tenant and registry, so a
//! copied database, or a row moved to another tenant, yields nothing.

use super::sql::p;
use super::{Store, StoreError, StoreResult, now_ms};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// A tenant's credentials for one registry (the password is never read
/// back out but to pull).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// `HOST` or `HOST:PORT`.
    pub registry: String,
    pub username: String,
    pub created_ms: i64,
}

/// The key sealing secrets in the database (at `path`, the data dir's
/// `sealing.key`): 32 random bytes in hex, made on first use (0600).
pub(super) fn load_key(path: &Path) -> Result<LessSafeKey, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| "no randomness for a key".to_string())?;
            let text = hex::encode(key);
            warden_core::files::write_file(path, &text, true)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            text
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| format!("{} is not a key (64 hex digits)", path.display()))?;
    let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| "bad key".to_string())?;
    Ok(LessSafeKey::new(key))
}

fn aad(tenant: &str, registry: &str) -> Vec<u8> {
    format!("warden registry credential\0{tenant}\0{registry}").into_bytes()
}

impl Store {
    /// `plain` sealed under the store's key and bound to `aad` (what it
    /// is for): the nonce, then the ciphertext and its tag.
    pub(super) fn seal(&self, aad: &[u8], plain: &[u8]) -> StoreResult<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::Corrupt("no randomness for a nonce".into()))?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .map_err(|_| StoreError::Corrupt("cannot seal a secret".into()))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    /// What [`Self::seal`] sealed for `aad`; `None` if it does not open
    /// (another key, another `aad`, or changed).
    pub(super) fn unseal(&self, aad: &[u8], blob: &[u8]) -> Option<Vec<u8>> {
        if blob.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut sealed)
            .ok()?;
        Some(plain.to_vec())
    }

    /// Sets `tenant`'s credentials for `registry`, replacing any.
    pub fn set_registry_credential(
        &self,
        tenant: &str,
        registry: &str,
        username: &str,
        password: &str,
    ) -> StoreResult<()> {
        // Sealed under the name it is stored and looked up by: sealed as
        // typed, `Registry.Example.com` would never open again.
        let registry = registry.to_ascii_lowercase();
        let blob = self.seal(&aad(tenant, &registry), password.as_bytes())?;
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO registry_credentials (tenant, registry, username, secret, created)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, registry) DO UPDATE SET username = excluded.username,
                     secret = excluded.secret, created = excluded.created",
                p![tenant, registry, username, blob, now_ms()],
            )?;
            Ok(())
        })
    }

    /// `tenant`'s (username, password) for `registry`, if it set some.
    pub fn registry_credential(
        &self,
        tenant: &str,
        registry: &str,
    ) -> StoreResult<Option<(String, String)>> {
        let registry = registry.to_ascii_lowercase();
        let row: Option<(String, Vec<u8>)> = self.with_conn(|c| {
            c.query_opt(
                "SELECT username, secret FROM registry_credentials
                 WHERE tenant = ?1 AND registry = ?2",
                p![tenant, registry],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        let Some((username, blob)) = row else {
            return Ok(None);
        };
        let unreadable = || {
            StoreError::Corrupt(format!(
                "tenant {tenant}'s credentials for {registry} cannot be opened with this data dir's key; set them again"
            ))
        };
        let password = self
            .unseal(&aad(tenant, &registry), &blob)
            .ok_or_else(unreadable)?;
        let password = String::from_utf8(password).map_err(|_| unreadable())?;
        Ok(Some((username, password)))
    }

    /// `tenant`'s registries with credentials, by name.
    pub fn registry_credentials(&self, tenant: &str) -> StoreResult<Vec<RegistryCredential>> {
        self.with_conn(|c| {
            c.query_map(
                "SELECT registry, username, created FROM registry_credentials
                 WHERE tenant = ?1 ORDER BY registry",
                p![tenant],
                |r| {
                    Ok(RegistryCredential {
                        registry: r.get(0)?,
                        username: r.get(1)?,
                        created_ms: r.get(2)?,
                    })
                },
            )
        })
    }

    /// Forgets `tenant`'s credentials for `registry`; whether there were any.
    pub fn delete_registry_credential(&self, tenant: &str, registry: &str) -> StoreResult<bool> {
        self.with_tx(|tx| {
            Ok(tx.execute(
                "DELETE FROM registry_credentials WHERE tenant = ?1 AND registry = ?2",
                p![tenant, registry.to_ascii_lowercase()],
            )? > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Store;
    use super::p;
    use crate::store::StoreError;

    /// Who can write the database can move a sealed password to another
    /// tenant's or another registry's row: it then opens for no one, as the
    /// seal is bound to the tenant and registry it was set for.
    fn a_sealed_password_opens_only_for_its_own_tenant_and_registry(store: &Store) {
        let registry = "registry.example.com";
        store
            .set_registry_credential("acme", registry, "alice", "acme-pw")
            .unwrap();
        store
            .set_registry_credential("beta", registry, "bob", "beta-pw")
            .unwrap();
        store
            .set_registry_credential("acme", "other.example.com", "alice", "other-pw")
            .unwrap();
        // Each opens for its own tenant and registry, the registry named in
        // any case.
        assert_eq!(
            store
                .registry_credential("acme", "Registry.Example.COM")
                .unwrap(),
            Some(("alice".to_string(), "acme-pw".to_string()))
        );
        // acme's sealed password copied into beta's row, and into acme's
        // row for another registry.
        let copy = |tenant: &str, to: &str| {
            store
                .with_tx(|tx| {
                    tx.execute(
                        "UPDATE registry_credentials SET secret = (SELECT secret
                             FROM registry_credentials WHERE tenant = 'acme' AND registry = ?1)
                         WHERE tenant = ?2 AND registry = ?3",
                        p![registry, tenant, to],
                    )
                })
                .unwrap()
        };
        assert_eq!(copy("beta", registry), 1);
        assert_eq!(copy("acme", "other.example.com"), 1);
        for (tenant, to) in [("beta", registry), ("acme", "other.example.com")] {
            match store.registry_credential(tenant, to) {
                Err(StoreError::Corrupt(message)) => {
                    assert!(message.contains("cannot be opened"), "{message}")
                }
                other => panic!("{tenant}'s row for {to} opened as {other:?}"),
            }
        }
        assert_eq!(
            store.registry_credential("acme", registry).unwrap(),
            Some(("alice".to_string(), "acme-pw".to_string()))
        );
        // A registry set in capitals opens under its lower-case name too.
        store
            .set_registry_credential("gamma", "Registry.Example.COM", "carol", "gamma-pw")
            .unwrap();
        assert_eq!(
            store.registry_credential("gamma", registry).unwrap(),
            Some(("carol".to_string(), "gamma-pw".to_string()))
        );
    }

    crate::store::tests::on_both_backends!(
        a_sealed_password_opens_only_for_its_own_tenant_and_registry
    );

    /// A SQLite store's key is `sealing.key` beside it; one by the name
    /// earlier versions gave it (`DB.key`) is renamed, and what it sealed
    /// still opens.
    #[test]
    fn a_sealing_key_by_its_old_name_is_renamed_and_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cp.sqlite3");
        let store = Store::open(&db).unwrap();
        store
            .set_registry_credential("acme", "registry.example.com", "alice", "pw")
            .unwrap();
        drop(store);
        let (key, legacy) = (
            dir.path().join("sealing.key"),
            dir.path().join("cp.sqlite3.key"),
        );
        std::fs::rename(&key, &legacy).unwrap();
        let store = Store::open(&db).unwrap();
        assert!(key.exists() && !legacy.exists());
        assert_eq!(
            store
                .registry_credential("acme", "registry.example.com")
                .unwrap(),
            Some(("alice".to_string(), "pw".to_string()))
        );
    }
}

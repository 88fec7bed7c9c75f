//! The built-in component registry: blobs by sha256 digest (shared), and
//! immutable name@version entries, each tenant its own names.

use super::sql::{Tx, p};
use super::{Store, StoreResult, now_ms};
use warden_proto::v1::ResolveResponse;

/// What publishing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Created,
    /// The same bytes were already published under this name@version.
    Unchanged,
    /// name@version exists with other bytes: versions are immutable.
    Conflict {
        existing_digest: String,
    },
}

impl Store {
    pub fn publish(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        digest: &str,
        data: &[u8],
        capabilities: &str,
    ) -> StoreResult<Published> {
        let now = now_ms();
        self.with_tx(|tx| {
            put_component(tx, digest, data, now)?;
            // Two publishes of one name@version at once (on two replicas):
            // the second waits for the first and finds its row.
            let created = tx.execute(
                "INSERT INTO versions (tenant, name, version, digest, created, capabilities)
                 VALUES (?6, ?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, name, version) DO NOTHING",
                p![name, version, digest, now, capabilities, tenant],
            )?;
            if created == 1 {
                return Ok(Published::Created);
            }
            let (d, c): (String, String) = tx.query_one(
                "SELECT digest, capabilities FROM versions
                 WHERE tenant = ?3 AND name = ?1 AND version = ?2",
                p![name, version, tenant],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(if d == digest && c == capabilities {
                Published::Unchanged
            } else {
                Published::Conflict { existing_digest: d }
            })
        })
    }

    /// `tenant`'s name@version -> digest and size; `Err` with whether the
    /// name is known to the tenant at all.
    pub fn resolve(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> StoreResult<Result<ResolveResponse, bool>> {
        self.with_conn(|c| {
            let found = c.query_opt(
                "SELECT v.digest, c.size, v.capabilities FROM versions v
                 JOIN components c ON c.digest = v.digest
                 WHERE v.tenant = ?3 AND v.name = ?1 AND v.version = ?2",
                p![name, version, tenant],
                |r| Ok((r.get::<String>(0)?, r.get::<u64>(1)?, r.get(2)?)),
            )?;
            match found {
                Some((digest, size, capabilities)) => Ok(Ok(ResolveResponse {
                    name: name.to_string(),
                    version: version.to_string(),
                    digest,
                    size,
                    capabilities,
                    ..Default::default()
                })),
                None => {
                    let known: bool = c.query_one(
                        "SELECT EXISTS (SELECT 1 FROM versions WHERE tenant = ?2 AND name = ?1)",
                        p![name, tenant],
                        |r| r.get(0),
                    )?;
                    Ok(Err(known))
                }
            }
        })
    }

    /// The newest published version of `tenant`'s agent `name` (by when
    /// it was published), if it has one.
    pub fn newest_version(&self, tenant: &str, name: &str) -> StoreResult<Option<String>> {
        self.with_conn(|c| {
            c.query_opt(
                "SELECT version FROM versions WHERE tenant = ?1 AND name = ?2
                 ORDER BY created DESC, version DESC LIMIT 1",
                p![tenant, name],
                |r| r.get(0),
            )
        })
    }

    /// Stores a component blob (pulled from an OCI registry) by digest.
    pub fn put_component(&self, digest: &str, data: &[u8]) -> StoreResult<()> {
        self.with_tx(|tx| put_component(tx, digest, data, now_ms()))
    }

    /// The size of a stored component, or `None` when it is not stored.
    pub fn component_size(&self, digest: &str) -> StoreResult<Option<u64>> {
        self.with_conn(|c| {
            c.query_opt(
                "SELECT size FROM components WHERE digest = ?1",
                p![digest],
                |r| r.get(0),
            )
        })
    }

    pub fn component(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
        self.with_conn(|c| {
            c.query_opt(
                "SELECT data FROM components WHERE digest = ?1",
                p![digest],
                |r| r.get(0),
            )
        })
    }

    /// Whether `tenant` may read the component `digest`: one of its
    /// published versions or runs uses it.
    pub fn tenant_uses(&self, tenant: &str, digest: &str) -> StoreResult<bool> {
        self.with_conn(|c| {
            c.query_one(
                "SELECT EXISTS (SELECT 1 FROM versions WHERE digest = ?1 AND tenant = ?2)
                     OR EXISTS (SELECT 1 FROM runs WHERE digest = ?1 AND tenant = ?2)",
                p![digest, tenant],
                |r| r.get(0),
            )
        })
    }

    /// Published versions of `tenant` (every tenant's for `None`).
    /// Published versions by tenant, name and version: `tenant`'s (every
    /// tenant's for `None`), of agent `name` if given, after `after`
    /// (tenant, name, version), at most `limit`.
    pub fn list_components(
        &self,
        tenant: Option<&str>,
        name: Option<&str>,
        after: Option<(&str, &str, &str)>,
        limit: u32,
    ) -> StoreResult<Vec<ResolveResponse>> {
        let (after_tenant, after_name, after_version) = match after {
            Some((t, n, v)) => (Some(t), Some(n), Some(v)),
            None => (None, None, None),
        };
        self.with_conn(|c| {
            c.query_map(
                "SELECT v.tenant, v.name, v.version, v.digest, c.size, v.capabilities, v.created
                 FROM versions v JOIN components c ON c.digest = v.digest
                 WHERE (CAST(?1 AS TEXT) IS NULL OR v.tenant = ?1)
                   AND (CAST(?2 AS TEXT) IS NULL OR v.name = ?2)
                   AND (CAST(?3 AS TEXT) IS NULL
                        OR (v.tenant, v.name, v.version) > (?3, CAST(?4 AS TEXT), CAST(?5 AS TEXT)))
                 ORDER BY v.tenant, v.name, v.version
                 LIMIT ?6",
                p![
                    tenant,
                    name,
                    after_tenant,
                    after_name,
                    after_version,
                    i64::from(limit)
                ],
                |r| {
                    Ok(ResolveResponse {
                        tenant: r.get(0)?,
                        name: r.get(1)?,
                        version: r.get(2)?,
                        digest: r.get(3)?,
                        size: r.get(4)?,
                        capabilities: r.get(5)?,
                        created_unix_ms: r.get(6)?,
                    })
                },
            )
        })
    }
}

fn put_component(tx: &mut Tx<'_>, digest: &str, data: &[u8], now: i64) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO components (digest, size, data, created) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (digest) DO NOTHING",
        p![digest, data.len() as i64, data, now],
    )?;
    Ok(())
}

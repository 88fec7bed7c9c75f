//! The built-in component registry: blobs by sha256 digest (shared), and
//! immutable name@version entries, each tenant its own names.

use super::{Store, StoreResult, now_ms, optional};
use rusqlite::params;
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
            let existing: Option<(String, String)> = optional(
                tx.prepare_cached(
                    "SELECT digest, capabilities FROM versions
                     WHERE tenant = ?3 AND name = ?1 AND version = ?2",
                )?
                .query_row(params![name, version, tenant], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                }),
            )?;
            match existing {
                Some((d, c)) if d == digest && c == capabilities => {
                    return Ok(Published::Unchanged);
                }
                Some((d, _)) => return Ok(Published::Conflict { existing_digest: d }),
                None => {}
            }
            put_component(tx, digest, data, now)?;
            tx.prepare_cached(
                "INSERT INTO versions (tenant, name, version, digest, created, capabilities)
                 VALUES (?6, ?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![name, version, digest, now, capabilities, tenant])?;
            Ok(Published::Created)
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
            let found = optional(
                c.prepare_cached(
                    "SELECT v.digest, c.size, v.capabilities FROM versions v
                     JOIN components c ON c.digest = v.digest
                     WHERE v.tenant = ?3 AND v.name = ?1 AND v.version = ?2",
                )?
                .query_row(params![name, version, tenant], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get(2)?))
                }),
            )?;
            match found {
                Some((digest, size, capabilities)) => Ok(Ok(ResolveResponse {
                    name: name.to_string(),
                    version: version.to_string(),
                    digest,
                    size: size as u64,
                    capabilities,
                })),
                None => {
                    let known: bool = c
                        .prepare_cached(
                            "SELECT EXISTS (SELECT 1 FROM versions WHERE tenant = ?2 AND name = ?1)",
                        )?
                        .query_row([name, tenant], |r| r.get(0))?;
                    Ok(Err(known))
                }
            }
        })
    }

    /// Stores a component blob (pulled from an OCI registry) by digest.
    pub fn put_component(&self, digest: &str, data: &[u8]) -> StoreResult<()> {
        self.with_tx(|tx| put_component(tx, digest, data, now_ms()))
    }

    /// The size of a stored component, or `None` when it is not stored.
    pub fn component_size(&self, digest: &str) -> StoreResult<Option<u64>> {
        self.with_conn(|c| {
            optional(
                c.prepare_cached("SELECT size FROM components WHERE digest = ?1")?
                    .query_row([digest], |r| r.get::<_, i64>(0).map(|n| n as u64)),
            )
        })
    }

    pub fn component(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
        self.with_conn(|c| {
            optional(
                c.prepare_cached("SELECT data FROM components WHERE digest = ?1")?
                    .query_row([digest], |r| r.get(0)),
            )
        })
    }

    /// Whether `tenant` may read the component `digest`: one of its
    /// published versions or runs uses it.
    pub fn tenant_uses(&self, tenant: &str, digest: &str) -> StoreResult<bool> {
        self.with_conn(|c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM versions WHERE digest = ?1 AND tenant = ?2)
                     OR EXISTS (SELECT 1 FROM runs WHERE digest = ?1 AND tenant = ?2)",
            )?
            .query_row([digest, tenant], |r| r.get(0))?)
        })
    }

    /// Published versions of `tenant` (every tenant's for `None`).
    pub fn list_components(&self, tenant: Option<&str>) -> StoreResult<Vec<ResolveResponse>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT v.name, v.version, v.digest, c.size, v.capabilities FROM versions v
                 JOIN components c ON c.digest = v.digest
                 WHERE ?1 IS NULL OR v.tenant = ?1
                 ORDER BY v.name, v.created",
            )?;
            let rows = stmt
                .query_map([tenant], |r| {
                    Ok(ResolveResponse {
                        name: r.get(0)?,
                        version: r.get(1)?,
                        digest: r.get(2)?,
                        size: r.get::<_, i64>(3)? as u64,
                        capabilities: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }
}

fn put_component(
    tx: &rusqlite::Transaction<'_>,
    digest: &str,
    data: &[u8],
    now: i64,
) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO components (digest, size, data, created) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![digest, data.len() as i64, data, now])?;
    Ok(())
}

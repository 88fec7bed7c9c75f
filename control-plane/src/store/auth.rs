//! Credentials: client tokens, node join tokens and node identities. Every
//! secret is stored as its SHA-256 only (they are 256 random bits, so a
//! plain hash is enough); a secret is shown once, when it is made.

use super::sql::{Row, p};
use super::{Store, StoreResult, now_ms};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use warden_core::Role;
use warden_proto::v1::JoinTokenInfo;

/// A client token as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub tenant: String,
    pub role: Role,
    pub description: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

impl TokenInfo {
    pub fn usable(&self, now: i64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| e > now)
    }
}

/// Why a join token did not enroll a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "the join token is not valid (unknown, expired or already used); create a new one with `warden nodes join-token create`"
    )]
    BadToken,
    #[error(
        "node `{0}` is already enrolled; revoke it first (`warden nodes revoke {0}`) or start this node with another --node-id"
    )]
    Taken(String),
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Why a join token was not revoked.
#[derive(Debug, PartialEq)]
pub enum JoinTokenRefusal {
    Unknown,
    /// Used by this node: revoke the node instead.
    Used(String),
}

/// Hex characters of a join token's hash that name it.
const JOIN_TOKEN_ID_CHARS: usize = 16;

/// A join token's id: the start of its hash (not a secret).
fn join_token_id(hash: &str) -> String {
    hash.chars().take(JOIN_TOKEN_ID_CHARS).collect()
}

fn secret(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Prefix of client tokens.
pub const TOKEN_PREFIX: &str = "wdn_";
/// Prefix of node join tokens.
pub const JOIN_TOKEN_PREFIX: &str = "wjt_";

fn token_row(r: &Row<'_>) -> StoreResult<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(0)?,
        tenant: r.get(1)?,
        role: r.parse(2)?,
        description: r.get(3)?,
        created_ms: r.get(4)?,
        expires_ms: r.get(5)?,
        revoked_ms: r.get(6)?,
    })
}

const TOKEN_COLUMNS: &str = "id, tenant, role, description, created, expires, revoked";

impl Store {
    /// Makes a client token; returns its record and its secret (shown
    /// once).
    pub fn create_token(
        &self,
        tenant: &str,
        role: Role,
        description: &str,
        expires_ms: Option<i64>,
    ) -> StoreResult<(TokenInfo, String)> {
        let token = secret(TOKEN_PREFIX);
        let info = TokenInfo {
            id: format!("tok_{}", hex::encode(rand::random::<[u8; 6]>())),
            tenant: tenant.to_string(),
            role,
            description: description.to_string(),
            created_ms: now_ms(),
            expires_ms,
            revoked_ms: None,
        };
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO tokens (id, hash, tenant, role, description, created, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                p![
                    info.id,
                    hash(&token),
                    info.tenant,
                    info.role.as_str(),
                    info.description,
                    info.created_ms,
                    info.expires_ms
                ],
            )?;
            Ok(())
        })?;
        Ok((info, token))
    }

    /// The token whose secret is `token`, usable or not.
    pub fn token(&self, token: &str) -> StoreResult<Option<TokenInfo>> {
        self.with_conn(|c| {
            c.query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"),
                p![hash(token)],
                token_row,
            )
        })
    }

    /// Tokens of `tenant` (all tenants when `None`), oldest first.
    pub fn list_tokens(&self, tenant: Option<&str>) -> StoreResult<Vec<TokenInfo>> {
        self.with_conn(|c| {
            c.query_map(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE CAST(?1 AS TEXT) IS NULL OR tenant = ?1
                     ORDER BY created, id"
                ),
                p![tenant],
                token_row,
            )
        })
    }

    /// Revokes token `id` (of `tenant`, unless `None`); false when there is
    /// no such token.
    pub fn revoke_token(&self, id: &str, tenant: Option<&str>) -> StoreResult<bool> {
        let now = now_ms();
        self.with_tx(|tx| {
            let n = tx.execute(
                "UPDATE tokens SET revoked = COALESCE(revoked, ?3)
                 WHERE id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR tenant = ?2)",
                p![id, tenant, now],
            )?;
            Ok(n == 1)
        })
    }

    /// Whether any client token was ever made.
    pub fn has_tokens(&self) -> StoreResult<bool> {
        self.with_conn(|c| c.query_one("SELECT EXISTS (SELECT 1 FROM tokens)", p![], |r| r.get(0)))
    }

    /// Makes a single-use join token valid for `ttl_ms`, giving the node
    /// that uses it `labels`; returns the secret, its id and its expiry.
    pub fn create_join_token(
        &self,
        labels: &BTreeMap<String, String>,
        ttl_ms: i64,
    ) -> StoreResult<(String, String, i64)> {
        let token = secret(JOIN_TOKEN_PREFIX);
        let now = now_ms();
        let expires = now.saturating_add(ttl_ms);
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO join_tokens (hash, labels, created, expires) VALUES (?1, ?2, ?3, ?4)",
                p![
                    hash(&token),
                    serde_json::to_string(labels).unwrap_or_default(),
                    now,
                    expires
                ],
            )?;
            Ok(())
        })?;
        let id = join_token_id(&hash(&token));
        Ok((token, id, expires))
    }

    /// The join tokens not revoked, newest first (at most 1,000).
    pub fn list_join_tokens(&self) -> StoreResult<Vec<JoinTokenInfo>> {
        self.with_conn(|c| {
            c.query_map(
                "SELECT hash, labels, created, expires, used_by FROM join_tokens
                 ORDER BY created DESC LIMIT 1000",
                p![],
                |r| {
                    Ok(JoinTokenInfo {
                        id: join_token_id(&r.get::<String>(0)?),
                        labels: serde_json::from_str(&r.get::<String>(1)?).unwrap_or_default(),
                        created_unix_ms: r.get(2)?,
                        expires_unix_ms: r.get(3)?,
                        used_by: r.get::<Option<String>>(4)?.unwrap_or_default(),
                    })
                },
            )
        })
    }

    /// Revokes the unused join token `id`.
    pub fn revoke_join_token(&self, id: &str) -> StoreResult<Result<(), JoinTokenRefusal>> {
        let id = id.to_ascii_lowercase();
        if id.len() != JOIN_TOKEN_ID_CHARS || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Err(JoinTokenRefusal::Unknown));
        }
        let which = format!("substr(hash, 1, {JOIN_TOKEN_ID_CHARS}) = ?1");
        self.with_tx(|tx| {
            let used_by: Option<Option<String>> = tx.query_opt(
                &format!("SELECT used_by FROM join_tokens WHERE {which}"),
                p![id],
                |r| r.get(0),
            )?;
            Ok(match used_by {
                None => Err(JoinTokenRefusal::Unknown),
                Some(Some(node)) => Err(JoinTokenRefusal::Used(node)),
                Some(None) => {
                    let deleted = tx.execute(
                        &format!("DELETE FROM join_tokens WHERE {which} AND used_by IS NULL"),
                        p![id],
                    )?;
                    // An enrollment that committed in between used it.
                    if deleted == 0 {
                        Err(JoinTokenRefusal::Used("(enrolled just now)".into()))
                    } else {
                        Ok(())
                    }
                }
            })
        })
    }

    /// Uses `join_token` (once) to enroll `node_id` with the client
    /// certificate whose fingerprint is `fingerprint`. Returns the labels
    /// the token gives the node.
    pub fn enroll(
        &self,
        join_token: &str,
        node_id: &str,
        fingerprint: &str,
    ) -> StoreResult<Result<BTreeMap<String, String>, EnrollError>> {
        let now = now_ms();
        self.with_tx(|tx| {
            let labels: Option<String> = tx.query_opt(
                "UPDATE join_tokens SET used_by = ?2
                 WHERE hash = ?1 AND used_by IS NULL AND expires > ?3
                 RETURNING labels",
                p![hash(join_token), node_id, now],
                |r| r.get(0),
            )?;
            let Some(labels) = labels else {
                return Err(super::StoreError::Rollback(EnrollError::BadToken));
            };
            let taken: bool = tx.query_one(
                "SELECT EXISTS (SELECT 1 FROM node_identities WHERE node_id = ?1 AND revoked IS NULL)",
                p![node_id],
                |r| r.get(0),
            )?;
            if taken {
                // Rolled back: the token stays unused.
                return Err(super::StoreError::Rollback(EnrollError::Taken(
                    node_id.to_string(),
                )));
            }
            tx.execute(
                "INSERT INTO node_identities (fingerprint, node_id, labels, created)
                 VALUES (?1, ?2, ?3, ?4)",
                p![fingerprint, node_id, labels, now],
            )?;
            Ok(serde_json::from_str(&labels).unwrap_or_default())
        })
        .map(Ok)
        .or_else(|e| match e {
            super::StoreError::Rollback(e) => Ok(Err(e)),
            e => Err(e),
        })
    }

    /// The node a client certificate (by fingerprint) belongs to, with the
    /// labels it was enrolled with; `None` if unknown or revoked.
    pub fn node_identity(
        &self,
        fingerprint: &str,
    ) -> StoreResult<Option<(String, BTreeMap<String, String>)>> {
        self.with_conn(|c| {
            let row: Option<(String, String)> = c.query_opt(
                "SELECT node_id, labels FROM node_identities
                 WHERE fingerprint = ?1 AND revoked IS NULL",
                p![fingerprint],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(row.map(|(id, labels)| (id, serde_json::from_str(&labels).unwrap_or_default())))
        })
    }

    /// Revokes every identity of `node_id` and marks it gone (its leases
    /// are then re-queued by `expire_leases`). `None` if it was never
    /// enrolled, else how many runs it held.
    pub fn revoke_node(&self, node_id: &str) -> StoreResult<Option<u32>> {
        let now = now_ms();
        self.with_tx(|tx| {
            let enrolled: bool = tx.query_one(
                "SELECT EXISTS (SELECT 1 FROM node_identities WHERE node_id = ?1)",
                p![node_id],
                |r| r.get(0),
            )?;
            tx.execute(
                "UPDATE node_identities SET revoked = ?2 WHERE node_id = ?1 AND revoked IS NULL",
                p![node_id, now],
            )?;
            tx.execute("UPDATE nodes SET state = 'gone' WHERE id = ?1", p![node_id])?;
            let held: u32 = tx.query_one(
                "SELECT count(*) FROM runs WHERE lease_node = ?1 AND state IN ('leased', 'running')",
                p![node_id],
                |r| r.get(0),
            )?;
            Ok(enrolled.then_some(held))
        })
    }
}

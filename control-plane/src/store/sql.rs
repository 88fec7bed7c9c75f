//! One way to run SQL on either backend: [`Tx`] (a transaction or a plain
//! connection), [`Param`]s and [`Row`]s. The store's logic is written once
//! against it, in SQL both SQLite and PostgreSQL accept, with `?N`
//! placeholders (PostgreSQL gets `$N`). What only PostgreSQL needs (row
//! locks) is written as a comment `/*pg: ...*/`: SQLite skips it,
//! PostgreSQL runs its text.
//!
//! Integers are bound and stored as 64-bit (`BIGINT` on PostgreSQL), floats
//! as `DOUBLE PRECISION`, bytes as `BYTEA`; booleans are integers (0/1).

use super::{StoreError, StoreResult};
use postgres::fallible_iterator::FallibleIterator;
use std::collections::HashMap;

/// A value bound to a placeholder: one of the types both backends store
/// the same way.
pub(crate) trait Param: rusqlite::ToSql + postgres::types::ToSql + Sync {
    fn as_lite(&self) -> &dyn rusqlite::ToSql;
    fn as_pg(&self) -> &(dyn postgres::types::ToSql + Sync);
}

macro_rules! params_of {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn as_lite(&self) -> &dyn rusqlite::ToSql { self }
            fn as_pg(&self) -> &(dyn postgres::types::ToSql + Sync) { self }
        }
    )*};
}
params_of!(
    i64,
    f64,
    &str,
    String,
    &String,
    Vec<u8>,
    &[u8],
    Option<i64>,
    Option<f64>,
    Option<&str>,
    Option<String>
);

/// `&[&dyn Param]` from a list of values.
macro_rules! p {
    ($($v:expr),* $(,)?) => { &[$(&$v as &dyn $crate::store::sql::Param),*] };
}
pub(crate) use p;

/// Most rows one [`values`] list carries: batches are split into chunks of
/// this many (a node may send thousands of results at once).
pub(crate) const MAX_VALUES: usize = 256;

/// A `(VALUES ...)` list of `rows` that both engines read alike: its
/// columns are `column1`, `column2`, ...; PostgreSQL is told each column's
/// type from `types` (`?N::TYPE`, in a `/*pg:*/` comment). Placeholders
/// continue after those already in `params`, to which the rows' values are
/// appended. Rows are padded to a power of two with rows of NULLs, so a few
/// statement texts (prepared once per connection) serve every batch size:
/// statements skip rows whose `column1` is NULL (a join on it does).
pub(crate) fn values<'a>(
    types: &[&str],
    rows: &[Vec<&'a dyn Param>],
    params: &mut Vec<&'a dyn Param>,
) -> String {
    debug_assert!(!rows.is_empty() && rows.len() <= MAX_VALUES);
    let mut out = String::from("(VALUES ");
    for i in 0..rows.len().next_power_of_two() {
        out.push_str(if i == 0 { "(" } else { ", (" });
        for (j, ty) in types.iter().enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            match rows.get(i) {
                Some(row) => {
                    debug_assert_eq!(row.len(), types.len());
                    params.push(row[j]);
                    out.push_str(&format!("?{}/*pg:::{ty}*/", params.len()));
                }
                None => out.push_str("NULL"),
            }
        }
        out.push(')');
    }
    out.push(')');
    out
}

/// A column type read the same from either backend.
pub(crate) trait Column: Sized {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> StoreResult<Self>;
    fn pg(row: &postgres::Row, i: usize) -> StoreResult<Self>;
}

macro_rules! column_as_is {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn lite(row: &rusqlite::Row<'_>, i: usize) -> StoreResult<Self> {
                Ok(row.get(i)?)
            }
            fn pg(row: &postgres::Row, i: usize) -> StoreResult<Self> {
                Ok(row.try_get(i)?)
            }
        }
    )*};
}
column_as_is!(
    i64,
    f64,
    String,
    Vec<u8>,
    Option<i64>,
    Option<f64>,
    Option<String>,
    Option<Vec<u8>>
);

/// Integers stored as 64-bit, read as narrower ones (range-checked).
macro_rules! column_narrowed {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn lite(row: &rusqlite::Row<'_>, i: usize) -> StoreResult<Self> {
                narrow(<i64 as Column>::lite(row, i)?)
            }
            fn pg(row: &postgres::Row, i: usize) -> StoreResult<Self> {
                narrow(<i64 as Column>::pg(row, i)?)
            }
        }
        impl Column for Option<$t> {
            fn lite(row: &rusqlite::Row<'_>, i: usize) -> StoreResult<Self> {
                <Option<i64> as Column>::lite(row, i)?.map(narrow).transpose()
            }
            fn pg(row: &postgres::Row, i: usize) -> StoreResult<Self> {
                <Option<i64> as Column>::pg(row, i)?.map(narrow).transpose()
            }
        }
    )*};
}
column_narrowed!(u32, i32, u64);

fn narrow<T: TryFrom<i64>>(n: i64) -> StoreResult<T> {
    T::try_from(n).map_err(|_| {
        StoreError::Corrupt(format!(
            "{n} is out of range for {}",
            std::any::type_name::<T>()
        ))
    })
}

impl Column for bool {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> StoreResult<Self> {
        Ok(<i64 as Column>::lite(row, i)? != 0)
    }
    fn pg(row: &postgres::Row, i: usize) -> StoreResult<Self> {
        // An integer column, or a boolean expression (`EXISTS`).
        match row.try_get::<_, bool>(i) {
            Ok(b) => Ok(b),
            Err(_) => Ok(<i64 as Column>::pg(row, i)? != 0),
        }
    }
}

/// One row of a result.
pub(crate) enum Row<'a> {
    Lite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

impl Row<'_> {
    /// Column `i` (from 0).
    pub(crate) fn get<T: Column>(&self, i: usize) -> StoreResult<T> {
        match self {
            Row::Lite(r) => T::lite(r, i),
            Row::Pg(r) => T::pg(r, i),
        }
    }

    /// Column `i`, parsed from its stored name (a state enum).
    pub(crate) fn parse<T>(&self, i: usize) -> StoreResult<T>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let text: String = self.get(i)?;
        text.parse()
            .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
    }
}

/// The channel replicas tell each other "runs changed" on.
pub(crate) const CHANNEL: &str = "warden_changed";

/// A PostgreSQL connection with its prepared statements.
pub(crate) struct PgConn {
    pub(crate) client: postgres::Client,
    stmts: HashMap<String, postgres::Statement>,
    /// The open transaction asked to NOTIFY: sent with its COMMIT.
    notify: bool,
    /// `NOTIFY ...; COMMIT`, naming this replica (whose own listener skips
    /// it: its lease streams were woken already).
    notify_commit: std::sync::Arc<str>,
    /// A COMMIT was sent and not answered: if the connection is lost now,
    /// whether the transaction committed is unknown.
    pub(crate) commit_sent: bool,
    /// A transaction is open.
    in_tx: bool,
}

impl PgConn {
    pub(crate) fn new(client: postgres::Client, replica: &str) -> Self {
        PgConn {
            client,
            stmts: HashMap::new(),
            notify: false,
            notify_commit: format!("NOTIFY {CHANNEL}, '{replica}'; COMMIT").into(),
            commit_sent: false,
            in_tx: false,
        }
    }

    /// Whether a transaction is open on it.
    pub(crate) fn in_transaction(&self) -> bool {
        self.in_tx
    }

    /// Starts a transaction.
    pub(crate) fn begin(&mut self) -> StoreResult<()> {
        self.commit_sent = false;
        self.client.batch_execute("BEGIN")?;
        self.in_tx = true;
        Ok(())
    }

    /// Ends the open transaction: commits it (with its NOTIFY, in the same
    /// round trip) if `commit`, else rolls it back.
    pub(crate) fn end(&mut self, commit: bool) -> StoreResult<()> {
        let notify = std::mem::take(&mut self.notify);
        let sql = match (commit, notify) {
            (true, true) => &*self.notify_commit,
            (true, false) => "COMMIT",
            (false, _) => "ROLLBACK",
        };
        self.commit_sent = commit;
        self.in_tx = false;
        self.client.batch_execute(sql)?;
        self.commit_sent = false;
        Ok(())
    }

    fn prepare(&mut self, sql: &str) -> StoreResult<postgres::Statement> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client.prepare(&to_postgres(sql))?;
        if self.stmts.len() >= 256 {
            self.stmts.clear();
        }
        self.stmts.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }
}

/// `sql` with each placeholder `?N` as `?(N + by)`.
fn shift_placeholders(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '?' {
            continue;
        }
        let mut n = String::new();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            n.push(d);
        }
        match n.parse::<usize>() {
            Ok(n) => out += &(n + by).to_string(),
            Err(_) => out += &n,
        }
    }
    out
}

/// `sql` for PostgreSQL: `?N` -> `$N`, `/*pg: X*/` -> `X`.
pub(crate) fn to_postgres(sql: &str) -> String {
    let sql = sql.replace("/*pg:", "").replace("*/", "");
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a statement runs: SQLite (a transaction or a connection) or a
/// PostgreSQL connection (in a transaction, or not).
pub(crate) enum Tx<'a> {
    Lite(&'a rusqlite::Connection),
    Pg(&'a mut PgConn),
}

impl Tx<'_> {
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Tx::Pg(_))
    }

    /// Whether a transaction is open (else each statement commits alone).
    pub(crate) fn in_transaction(&self) -> bool {
        match self {
            Tx::Lite(c) => !c.is_autocommit(),
            Tx::Pg(c) => c.in_tx,
        }
    }

    /// Runs `f`, a statement that writes: outside a transaction, if the
    /// connection is lost before its answer, whether it ran is unknown, and
    /// it is not tried again on another connection (as for a COMMIT).
    pub(crate) fn write_once<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let alone = !self.in_transaction();
        if let (Tx::Pg(c), true) = (&mut *self, alone) {
            c.commit_sent = true;
        }
        let out = f(self)?;
        if let Tx::Pg(c) = self {
            c.commit_sent = false;
        }
        Ok(out)
    }

    /// Tells every replica's waiting lease streams and watchers that runs
    /// changed (PostgreSQL's NOTIFY, sent with the transaction's COMMIT);
    /// nothing on SQLite, which has one control plane.
    pub(crate) fn notify(&mut self) -> StoreResult<()> {
        if let Tx::Pg(c) = self {
            c.notify = true;
        }
        Ok(())
    }

    /// Runs a statement; returns how many rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> StoreResult<usize> {
        match self {
            Tx::Lite(c) => Ok(c.prepare_cached(sql)?.execute(rusqlite::params_from_iter(
                params.iter().map(|p| p.as_lite()),
            ))?),
            Tx::Pg(c) => {
                let stmt = c.prepare(sql)?;
                let params: Vec<_> = params.iter().map(|p| p.as_pg()).collect();
                Ok(c.client.execute(&stmt, &params)? as usize)
            }
        }
    }

    /// Runs write statements, in order. On PostgreSQL they go as one
    /// statement (all but the last in a `WITH`): one round trip. They then
    /// share one snapshot, so none may read what another writes.
    pub(crate) fn execute_all(
        &mut self,
        statements: &[(String, Vec<&dyn Param>)],
    ) -> StoreResult<()> {
        if !self.is_postgres() || statements.len() < 2 {
            for (sql, params) in statements {
                self.execute(sql, params)?;
            }
            return Ok(());
        }
        let (mut sql, mut params) = (String::new(), Vec::new());
        let last = statements.len() - 1;
        for (i, (one, its)) in statements.iter().enumerate() {
            let one = shift_placeholders(one, params.len());
            sql += &match i {
                0 => format!("WITH w0 AS ({one})"),
                i if i < last => format!(", w{i} AS ({one})"),
                _ => format!(" {one}"),
            };
            params.extend(its.iter().copied());
        }
        self.execute(&sql, &params).map(|_| ())
    }

    /// Calls `f` with each row until it returns false.
    pub(crate) fn query_while(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        match self {
            Tx::Lite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(
                    params.iter().map(|p| p.as_lite()),
                ))?;
                while let Some(row) = rows.next()? {
                    if !f(&Row::Lite(row))? {
                        break;
                    }
                }
            }
            Tx::Pg(c) => {
                let stmt = c.prepare(sql)?;
                let mut rows = c
                    .client
                    .query_raw(&stmt, params.iter().map(|p| p.as_pg()))?;
                while let Some(row) = rows.next()? {
                    if !f(&Row::Pg(&row))? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// `f` of every row.
    pub(crate) fn query_map<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut out = Vec::new();
        self.query_while(sql, params, |r| {
            out.push(f(r)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// `f` of the first row, if any.
    pub(crate) fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let mut f = Some(f);
        let mut out = None;
        self.query_while(sql, params, |r| {
            out = Some((f.take().expect("called once"))(r)?);
            Ok(false)
        })?;
        Ok(out)
    }

    /// `f` of the first row; an error if there is none.
    pub(crate) fn query_one<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.query_opt(sql, params, f)?
            .ok_or_else(|| StoreError::Corrupt(format!("no row from: {sql}")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_text_numbers_placeholders_and_uncomments_locks() {
        assert_eq!(
            super::to_postgres("SELECT a FROM t WHERE b = ?1 AND c = ?12 /*pg: FOR UPDATE*/"),
            "SELECT a FROM t WHERE b = $1 AND c = $12  FOR UPDATE"
        );
    }

    #[test]
    fn placeholders_shift_to_follow_an_earlier_statement_s() {
        assert_eq!(
            super::shift_placeholders("UPDATE t SET a = ?1 WHERE b = ?10 AND c = '?'", 3),
            "UPDATE t SET a = ?4 WHERE b = ?13 AND c = '?'"
        );
    }

    #[test]
    fn values_lists_are_padded_to_a_power_of_two_and_typed_for_postgres() {
        let (a, b, c) = ("a", 1_i64, "c");
        let rows: Vec<Vec<&dyn super::Param>> = vec![vec![&a, &b], vec![&c, &b], vec![&a, &b]];
        let first = 7_i64;
        let mut params: Vec<&dyn super::Param> = vec![&first];
        let list = super::values(&["TEXT", "BIGINT"], &rows, &mut params);
        assert_eq!(params.len(), 1 + 3 * 2);
        assert_eq!(
            super::to_postgres(&list),
            "(VALUES ($2::TEXT, $3::BIGINT), ($4::TEXT, $5::BIGINT), \
             ($6::TEXT, $7::BIGINT), (NULL, NULL))"
        );
    }
}

//! Writes replica rows: consecutive changes of one kind on one replica become multi-row
//! statements (upserts by primary key, deletes by key), within the placeholder and packet
//! limits, with values always bound. The stream's applier and the copier share it.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::mysql::{MySqlArguments, MySqlConnection};
use sqlx::{Arguments, AssertSqlSafe};

use super::{target, SinkError};
use crate::model::event::RowChange;
use crate::model::filter::EvalError;
use crate::model::name::quote_ident;
use crate::model::sql::SESSION_SQL_MODE;
use crate::model::value::Value;
use crate::routing::mapping::Projection;

/// Most placeholders one prepared statement may carry.
const MAX_PLACEHOLDERS: usize = 65_535;

/// Most keys one DELETE joins (each is a SELECT of a UNION the server parses).
const MAX_DELETE_KEYS: usize = 256;

/// One replica write, in source order.
pub enum Op {
    Upsert(Arc<Projection>, Vec<Value>),
    Delete(Arc<Projection>, Vec<Value>),
    Truncate(String),
}

impl Op {
    pub fn size(&self) -> usize {
        match self {
            Op::Upsert(_, v) | Op::Delete(_, v) => v.iter().map(Value::size_hint).sum(),
            Op::Truncate(_) => 64,
        }
    }
}

/// One encoded write: its text and its bound values.
pub struct Statement {
    sql: Arc<str>,
    /// `None`: a statement without placeholders.
    args: Option<MySqlArguments>,
    /// Holds an ENUM's empty error value, which only the source sessions' mode accepts.
    error_enum: bool,
}

impl Statement {
    /// Runs the statement on `conn`, in the session's open transaction (or autocommit).
    pub async fn run(self, conn: &mut MySqlConnection) -> Result<(), SinkError> {
        let Some(args) = self.args else {
            return target::exec(conn, &self.sql).await;
        };
        if self.error_enum {
            target::set_sql_mode(conn, SESSION_SQL_MODE).await?;
        }
        let written = sqlx::query_with(AssertSqlSafe(self.sql.clone()), args)
            .execute(&mut *conn)
            .await
            .map_err(|e| SinkError::db(self.sql.to_string(), e));
        if self.error_enum {
            target::set_sql_mode(conn, target::TARGET_SQL_MODE).await?;
        }
        written.map(|_| ())
    }
}

/// Builds the write statements for one target (see `Statement` for running them).
pub struct RowWriter {
    /// Most rows in one statement.
    batch_rows: usize,
    max_statement_bytes: usize,
    /// Statement text per (replica, its column list, upsert?, rows): a schema change gives a
    /// new column list and so a new statement.
    sql_cache: HashMap<(String, Vec<String>, bool, usize), Arc<str>>,
}

impl RowWriter {
    /// A writer for `conn`, sized by its `max_allowed_packet`.
    pub async fn new(
        conn: &mut MySqlConnection,
        batch_rows: usize,
    ) -> Result<RowWriter, SinkError> {
        const PACKET: &str = "SELECT @@max_allowed_packet";
        let (packet,): (u64,) = sqlx::query_as(PACKET)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| SinkError::db(PACKET, e))?;
        Ok(RowWriter {
            batch_rows: batch_rows.max(1),
            // Leave room for the statement text and protocol overhead.
            max_statement_bytes: (packet as usize / 2).clamp(64 * 1024, 16 * 1024 * 1024),
            sql_cache: HashMap::new(),
        })
    }

    /// Bytes of buffered values worth one write.
    pub fn max_statement_bytes(&self) -> usize {
        self.max_statement_bytes
    }

    /// Writes `ops` in order into the session's open transaction (or autocommit).
    pub async fn write(&mut self, conn: &mut MySqlConnection, ops: &[Op]) -> Result<(), SinkError> {
        for statement in self.encode(ops)? {
            statement.run(conn).await?;
        }
        Ok(())
    }

    /// The statements that write `ops` in order, values bound: the CPU half of a write, so a
    /// caller can encode the next statements while a connection runs the previous ones.
    pub fn encode(&mut self, ops: &[Op]) -> Result<Vec<Statement>, SinkError> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < ops.len() {
            // A run of consecutive ops of one kind on one replica becomes one statement (or a
            // few, within the placeholder and packet limits).
            let mut j = i + 1;
            while j < ops.len() && same_run(&ops[i], &ops[j]) {
                j += 1;
            }
            match &ops[i] {
                Op::Truncate(replica) => out.push(Statement {
                    sql: format!("DELETE FROM {}", quote_ident(replica)).into(),
                    args: None,
                    error_enum: false,
                }),
                Op::Upsert(p, _) | Op::Delete(p, _) => {
                    let p = p.clone();
                    let upsert = matches!(ops[i], Op::Upsert(..));
                    let rows: Vec<&Vec<Value>> = ops[i..j]
                        .iter()
                        .map(|op| match op {
                            Op::Upsert(_, v) | Op::Delete(_, v) => v,
                            Op::Truncate(_) => unreachable!("runs never mix kinds"),
                        })
                        .collect();
                    self.encode_rows(&p, upsert, &rows, &mut out)?;
                }
            }
            i = j;
        }
        Ok(out)
    }

    fn encode_rows(
        &mut self,
        p: &Projection,
        upsert: bool,
        rows: &[&Vec<Value>],
        out: &mut Vec<Statement>,
    ) -> Result<(), SinkError> {
        let width = rows.first().map(|r| r.len()).unwrap_or(1).max(1);
        let most = if upsert {
            self.batch_rows
        } else {
            MAX_DELETE_KEYS
        };
        let max_rows = (MAX_PLACEHOLDERS / width).min(most.max(1));
        let mut start = 0;
        while start < rows.len() {
            // Statement sizes are powers of two so few distinct statements get prepared.
            let mut n = (rows.len() - start).min(max_rows);
            n = 1 << (usize::BITS - 1 - n.leading_zeros());
            let mut bytes: usize = rows[start..start + n]
                .iter()
                .map(|r| r.iter().map(Value::size_hint).sum::<usize>())
                .sum();
            while n > 1 && bytes > self.max_statement_bytes {
                n /= 2;
                bytes = rows[start..start + n]
                    .iter()
                    .map(|r| r.iter().map(Value::size_hint).sum::<usize>())
                    .sum();
            }
            let sql = self.statement(p, upsert, n);
            let mut args = MySqlArguments::default();
            // ENUM index 0, the empty error value a non-strict source session can store, is
            // refused by the strict target mode: such statements run in the source's mode.
            let mut error_enum = false;
            for row in &rows[start..start + n] {
                for v in row.iter() {
                    error_enum |= matches!(v, Value::Enum(0));
                    bind(&mut args, v)
                        .map_err(|e| SinkError::db(sql.to_string(), sqlx::Error::Encode(e)))?;
                }
            }
            out.push(Statement {
                sql,
                args: Some(args),
                error_enum,
            });
            start += n;
        }
        Ok(())
    }

    fn statement(&mut self, p: &Projection, upsert: bool, n: usize) -> Arc<str> {
        let key = (p.replica.clone(), p.names.clone(), upsert, n);
        if let Some(sql) = self.sql_cache.get(&key) {
            return sql.clone();
        }
        let table = quote_ident(&p.replica);
        let sql = if upsert {
            let cols: Vec<String> = p.names.iter().map(|c| quote_ident(c)).collect();
            let one = format!("({})", vec!["?"; cols.len()].join(","));
            let updates: Vec<String> = p
                .names
                .iter()
                .enumerate()
                .filter(|(i, _)| !p.key.contains(i))
                .map(|(_, c)| format!("{0}=VALUES({0})", quote_ident(c)))
                .collect();
            let updates = if updates.is_empty() {
                // Only key columns: nothing to update, but the statement must not fail.
                format!("{0}={0}", cols[p.key[0]])
            } else {
                updates.join(",")
            };
            format!(
                "INSERT INTO {table} ({}) VALUES {} ON DUPLICATE KEY UPDATE {updates}",
                cols.join(","),
                vec![one; n].join(",")
            )
        } else {
            // Keys are joined from a derived table, which always runs as primary key lookups:
            // `WHERE k IN (…)` becomes a full scan once the keys are a good share of the table,
            // and a scan waits for the row locks of every other lane's rows (`sink::lanes`).
            let names: Vec<String> = p.key.iter().map(|&k| quote_ident(&p.names[k])).collect();
            let first = names
                .iter()
                .map(|c| format!("? AS {c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let rest = format!(" UNION ALL SELECT {}", vec!["?"; names.len()].join(", "));
            let on = names
                .iter()
                .map(|c| format!("{table}.{c} = `rowsync_keys`.{c}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                "DELETE {table} FROM (SELECT {first}{}) AS `rowsync_keys` STRAIGHT_JOIN {table} ON {on}",
                rest.repeat(n - 1)
            )
        };
        let sql: Arc<str> = sql.into();
        self.sql_cache.insert(key, sql.clone());
        sql
    }
}

/// The replica writes for source changes under each projection, filters applied: an update
/// that moves a row out of a filter deletes it, one that moves a row in inserts it.
pub fn changes_to_ops(
    changes: &[RowChange],
    projections: &[Arc<Projection>],
) -> Result<Vec<Op>, EvalError> {
    let mut ops = Vec::with_capacity(changes.len() * projections.len());
    for change in changes {
        for p in projections {
            match change {
                RowChange::Insert(row) => {
                    if p.keeps(row)? {
                        ops.push(Op::Upsert(p.clone(), p.row(row)));
                    }
                }
                RowChange::Update { before, after } => {
                    let (was, is) = (p.keeps(before)?, p.keeps(after)?);
                    let old_key = p.key_of(before);
                    if was && (!is || old_key != p.key_of(after)) {
                        ops.push(Op::Delete(p.clone(), old_key));
                    }
                    if is {
                        ops.push(Op::Upsert(p.clone(), p.row(after)));
                    }
                }
                RowChange::Delete(row) => {
                    // A row the filter never kept is not in the replica.
                    if p.keeps(row)? {
                        ops.push(Op::Delete(p.clone(), p.key_of(row)));
                    }
                }
            }
        }
    }
    Ok(ops)
}

fn same_run(a: &Op, b: &Op) -> bool {
    match (a, b) {
        (Op::Upsert(p, _), Op::Upsert(q, _)) | (Op::Delete(p, _), Op::Delete(q, _)) => {
            Arc::ptr_eq(p, q) || (p.replica == q.replica && p.names == q.names)
        }
        _ => false,
    }
}

fn bind(args: &mut MySqlArguments, v: &Value) -> Result<(), sqlx::error::BoxDynError> {
    match v {
        Value::Null => args.add(Option::<i64>::None),
        Value::Int(i) => args.add(*i),
        Value::UInt(u) | Value::Bit(u) | Value::Set(u) => args.add(*u),
        Value::Float(f) => args.add(*f),
        Value::Double(d) => args.add(*d),
        Value::Year(y) | Value::Enum(y) => args.add(*y),
        Value::Decimal(s) | Value::Temporal(s) | Value::Text(s) | Value::Json(s) => {
            args.add(s.as_str())
        }
        Value::Bytes(b) => args.add(b.as_slice()),
    }
}

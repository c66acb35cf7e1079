//! Consistent reads of the source for the initial copy.
//!
//! # Method
//! On MariaDB, `START TRANSACTION WITH CONSISTENT SNAPSHOT` takes an InnoDB read view and, in
//! the same instant, records the binlog position it corresponds to (`binlog_snapshot_file` /
//! `binlog_snapshot_position`) — no global lock, writers never wait. `BINLOG_GTID_POS` turns
//! that position into the GTID state. Every chunk read in that transaction sees the source as
//! of that one transaction boundary, and the stream continues from exactly there.
//! MySQL has no `binlog_snapshot_*`: there the snapshot is taken under a brief `FLUSH TABLES
//! WITH READ LOCK` (needs RELOAD), released as soon as the position is read.
//!
//! Tables are read in primary-key order, in keyset chunks (`WHERE key > last ORDER BY key
//! LIMIT n`, never OFFSET), so memory is one chunk and a resumed copy restarts at a key.
//! Values come back typed like the binlog decoder's: ENUM, SET and BIT are read as numbers,
//! temporal values as the same text, so filters and writes treat copied and streamed rows
//! alike.

use compact_str::{format_compact, CompactString};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Row, Value as MyValue};

use super::catalog::{self, CatalogColumn, CatalogTable};
use super::conn::connect;
use super::info::SourceInfo;
use super::value::push_fraction;
use super::SourceError;
use crate::model::definition::SourceDefinition;
use crate::model::name::{quote_ident, TableName};
use crate::model::position::{BinlogFile, Checkpoint, Flavor, Position};
use crate::model::value::Value;

/// An open consistent snapshot and the position it stands at.
pub struct Snapshot {
    conn: Conn,
    pub checkpoint: Checkpoint,
}

/// A table as the copy reads it.
#[derive(Debug, Clone)]
pub struct CopyTable {
    pub name: TableName,
    pub catalog: CatalogTable,
}

impl CopyTable {
    pub fn column_names(&self) -> Vec<String> {
        self.catalog
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }
}

impl Snapshot {
    pub async fn open(opts: &Opts, info: &SourceInfo) -> Result<Snapshot, SourceError> {
        let mut conn = connect(opts).await?;
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await?;
        let checkpoint = match info.flavor() {
            Flavor::Mariadb => begin_read(&mut conn, info).await?,
            Flavor::Mysql => {
                conn.query_drop("FLUSH TABLES WITH READ LOCK").await?;
                let result = begin_read(&mut conn, info).await;
                conn.query_drop("UNLOCK TABLES").await?;
                result?
            }
        };
        check_no_prepared_xa(&mut conn).await?;
        Ok(Snapshot { conn, checkpoint })
    }

    /// The columns and key of `table`, read now.
    pub async fn table(&mut self, name: &TableName) -> Result<CopyTable, SourceError> {
        Ok(CopyTable {
            name: name.clone(),
            catalog: catalog::load(&mut self.conn, name).await?,
        })
    }

    /// The definition of `table` (`SHOW CREATE TABLE`), as the snapshot's session sees it.
    pub async fn definition(&mut self, name: &TableName) -> Result<SourceDefinition, SourceError> {
        catalog::definition(&mut self.conn, name).await
    }

    /// The server's estimates for `table`: its rows, and their average size in bytes.
    pub async fn estimate(&mut self, name: &TableName) -> Result<(u64, u64), SourceError> {
        let n: Option<(Option<u64>, Option<u64>)> = self
            .conn
            .exec_first(
                "SELECT TABLE_ROWS, AVG_ROW_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&name.db, &name.table),
            )
            .await?;
        let (rows, size) = n.unwrap_or_default();
        Ok((rows.unwrap_or(0), size.unwrap_or(0)))
    }

    /// Up to `limit` rows of `table` after key `after` (from the start when `None`), in key
    /// order, each in source column order.
    pub async fn chunk(
        &mut self,
        table: &CopyTable,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Vec<Value>>, SourceError> {
        let range = KeyRange {
            after: after.map(<[Value]>::to_vec),
            upto: None,
        };
        read_rows(&mut self.conn, table, &range, Some(limit)).await
    }

    /// Ends the snapshot transaction.
    pub async fn close(mut self) -> Result<(), SourceError> {
        self.conn.query_drop("COMMIT").await?;
        Ok(())
    }
}

/// Starts a consistent read on `conn` and says where it stands: exactly on MariaDB (its
/// `binlog_snapshot_*`, taken with the read view), on MySQL an upper bound (the head read
/// just after the read view), enough for a caller that waits until a target has passed it.
pub async fn begin_read(conn: &mut Conn, info: &SourceInfo) -> Result<Checkpoint, SourceError> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await?;
    if info.flavor() == Flavor::Mysql {
        return info.head(conn).await;
    }
    let status: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let get = |name: &str| {
        status
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let file: BinlogFile = get("binlog_snapshot_file")
        .parse()
        .map_err(|_| SourceError::BinlogOff)?;
    let offset: u64 = get("binlog_snapshot_position").parse().unwrap_or(4);
    let position = Position::new(file, offset);
    Ok(Checkpoint {
        gtid: Some(super::info::gtid_at(conn, &position).await?),
        position,
        source: info.identity.clone(),
        source_time: 0,
    })
}

/// Starts a consistent read on `conn` and says a position it includes: exactly on MariaDB,
/// on MySQL a lower bound (the head read just before the read view), for a caller that must
/// not read older than a position it knows.
pub async fn begin_read_including(
    conn: &mut Conn,
    info: &SourceInfo,
) -> Result<Checkpoint, SourceError> {
    if info.flavor() == Flavor::Mariadb {
        return begin_read(conn, info).await;
    }
    let head = info.head(conn).await?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await?;
    Ok(head)
}

/// The rows of `table` in `range` (at most `limit`), in key order, each in source column
/// order, read in `conn`'s current transaction (or now, outside one).
pub async fn read_rows(
    conn: &mut Conn,
    table: &CopyTable,
    range: &KeyRange,
    limit: Option<usize>,
) -> Result<Vec<Vec<Value>>, SourceError> {
    let cols = &table.catalog.columns;
    let key: Vec<&CatalogColumn> = table
        .catalog
        .primary_key
        .iter()
        .map(|&i| &cols[i])
        .collect();
    let select: Vec<String> = cols.iter().map(number_as_binlog).collect();
    let order: Vec<String> = key.iter().map(|c| quote_ident(&c.name)).collect();
    let mut params: Vec<MyValue> = Vec::new();
    let filter = range.sql(&key, &mut params);
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {}{limit}",
        select.join(", "),
        table.name.quoted(),
        order.join(", ")
    );
    let rows: Vec<Row> = conn.exec(sql, params).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.unwrap()
                .into_iter()
                .zip(cols)
                .map(|(v, c)| from_mysql(v, c))
                .collect()
        })
        .collect())
}

/// Selects column `c` the way the binlog carries it: ENUM, SET and BIT as numbers.
pub fn number_as_binlog(c: &CatalogColumn) -> String {
    let q = quote_ident(&c.name);
    if matches!(c.data_type.as_str(), "enum" | "set" | "bit") {
        format!("({q} + 0) AS {q}")
    } else {
        q
    }
}

/// A branch prepared before the snapshot and committed after it is in neither the copy nor
/// (its rows precede the snapshot's position) the stream: a copy, or a target starting from a
/// position without one, waits until none is prepared. Checked once the snapshot stands, so a
/// branch prepared before it and still open shows.
pub async fn check_no_prepared_xa(conn: &mut Conn) -> Result<(), SourceError> {
    match conn.query::<Row, _>("XA RECOVER").await {
        Ok(rows) if rows.is_empty() => Ok(()),
        Ok(rows) => Err(SourceError::PreparedXa { count: rows.len() }),
        // Without the privilege to list them, the stream still stops loudly at the commit
        // of a branch it never saw prepared.
        Err(mysql_async::Error::Server(e)) if matches!(e.code, 1227 | 1044 | 1142 | 1370) => {
            tracing::warn!(error = %e.message, "cannot list prepared XA transactions (XA RECOVER); grant XA_RECOVER_ADMIN on MySQL 8");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Primary-key values after `after` (exclusive) up to `upto` (inclusive); open where `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyRange {
    pub after: Option<Vec<Value>>,
    pub upto: Option<Vec<Value>>,
}

impl KeyRange {
    /// ` WHERE …` selecting this range of `key` (empty when it is unbounded), its parameters
    /// pushed onto `params`.
    pub fn sql(&self, key: &[&CatalogColumn], params: &mut Vec<MyValue>) -> String {
        let mut parts = Vec::new();
        if let Some(after) = &self.after {
            parts.push(bound(key, after, ">", false, params));
        }
        if let Some(upto) = &self.upto {
            parts.push(bound(key, upto, "<", true, params));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE ({})", parts.join(") AND ("))
        }
    }
}

/// `(a > ?) OR (a = ? AND b > ?) OR …` — the tuple comparison spelled as a range every
/// optimizer uses — with `op` the strict comparison and the all-equal case when `inclusive`.
fn bound(
    key: &[&CatalogColumn],
    values: &[Value],
    op: &str,
    inclusive: bool,
    params: &mut Vec<MyValue>,
) -> String {
    let mut ors = Vec::new();
    let n = key.len().min(values.len());
    for i in 0..n + usize::from(inclusive) {
        let mut ands = Vec::new();
        for (j, c) in key.iter().enumerate().take((i + 1).min(n)) {
            let cmp = if j == i { op } else { "=" };
            ands.push(format!(
                "{} {cmp} {}",
                quote_ident(&c.name),
                key_param(c, &values[j])
            ));
            params.push(to_mysql(&values[j]));
        }
        ors.push(format!("({})", ands.join(" AND ")));
    }
    ors.join(" OR ")
}

/// The placeholder for a key value of column `c`. A DECIMAL column compared with a string
/// parameter is compared as a double, which skips keys beyond 2^53 that differ by less than
/// a double can tell; cast to a DECIMAL that holds `v` exactly, it compares as a decimal.
fn key_param(c: &CatalogColumn, v: &Value) -> String {
    match (c.data_type.as_str(), v) {
        ("decimal", Value::Decimal(text) | Value::Text(text)) => {
            let digits = |s: &str| s.chars().filter(char::is_ascii_digit).count();
            let (int, frac) = text.split_once('.').unwrap_or((text, ""));
            let scale = digits(frac).min(38);
            let precision = (digits(int) + scale).clamp(1, 65).max(scale);
            format!("CAST(? AS DECIMAL({precision}, {scale}))")
        }
        _ => "?".into(),
    }
}

/// A key value as a query parameter.
pub fn to_mysql(v: &Value) -> MyValue {
    match v {
        Value::Null => MyValue::NULL,
        Value::Int(i) => MyValue::Int(*i),
        Value::UInt(u) | Value::Bit(u) | Value::Set(u) => MyValue::UInt(*u),
        Value::Year(y) | Value::Enum(y) => MyValue::UInt(u64::from(*y)),
        Value::Float(f) => MyValue::Float(*f),
        Value::Double(d) => MyValue::Double(*d),
        Value::Decimal(s) | Value::Temporal(s) | Value::Text(s) | Value::Json(s) => {
            MyValue::Bytes(s.as_bytes().to_vec())
        }
        Value::Bytes(b) => MyValue::Bytes(b.clone()),
    }
}

/// DATE or DATETIME/TIMESTAMP text from the protocol's date parts `(y, m, d, h, i, s, µs)`.
fn datetime_text(
    (y, m, d, h, i, s, us): (u16, u8, u8, u8, u8, u8, u32),
    c: &CatalogColumn,
) -> CompactString {
    if c.data_type == "date" {
        return format_compact!("{y:04}-{m:02}-{d:02}");
    }
    let mut out = format_compact!("{y:04}-{m:02}-{d:02} {h:02}:{i:02}:{s:02}");
    push_fraction(&mut out, u64::from(us), c.fsp);
    out
}

/// A value read through the binary protocol, typed like the binlog decoder's.
pub fn from_mysql(v: MyValue, c: &CatalogColumn) -> Value {
    let t = c.data_type.as_str();
    match v {
        MyValue::NULL => Value::Null,
        MyValue::Int(i) => number(i as u64, i, c),
        MyValue::UInt(u) => number(u, u as i64, c),
        MyValue::Float(f) => Value::Float(f),
        MyValue::Double(d) => Value::Double(d),
        MyValue::Date(y, m, d, h, i, s, us) => {
            Value::Temporal(datetime_text((y, m, d, h, i, s, us), c))
        }
        MyValue::Time(neg, days, h, m, s, us) => {
            let hours = days * 24 + u32::from(h);
            let mut out = format_compact!("{}{hours:02}:{m:02}:{s:02}", if neg { "-" } else { "" });
            push_fraction(&mut out, u64::from(us), c.fsp);
            Value::Temporal(out)
        }
        MyValue::Bytes(b) => match t {
            "decimal" | "numeric" => Value::Decimal(CompactString::from_utf8_lossy(&b)),
            "json" => Value::Json(CompactString::from_utf8_lossy(&b)),
            _ if c.charset.as_deref().is_some_and(|cs| cs != "binary") => {
                match CompactString::from_utf8(&b) {
                    Ok(s) => Value::Text(s),
                    Err(_) => Value::Bytes(b),
                }
            }
            _ => Value::Bytes(b),
        },
    }
}

fn number(u: u64, i: i64, c: &CatalogColumn) -> Value {
    match c.data_type.as_str() {
        "enum" => Value::Enum(u as u16),
        "set" => Value::Set(u),
        "bit" => Value::Bit(u),
        "year" => Value::Year(u as u16),
        _ if c.unsigned => Value::UInt(u),
        _ => Value::Int(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(data_type: &str, unsigned: bool, fsp: u8) -> CatalogColumn {
        CatalogColumn {
            name: "c".into(),
            data_type: data_type.into(),
            unsigned,
            charset: None,
            fsp,
        }
    }

    #[test]
    fn read_values_match_the_binlog_decoders() {
        assert_eq!(
            from_mysql(MyValue::Int(-1), &col("int", false, 0)),
            Value::Int(-1)
        );
        assert_eq!(
            from_mysql(MyValue::UInt(u64::MAX), &col("bigint", true, 0)),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            from_mysql(MyValue::Int(2), &col("enum", false, 0)),
            Value::Enum(2)
        );
        assert_eq!(
            from_mysql(
                MyValue::Date(2024, 2, 29, 1, 2, 3, 450_000),
                &col("datetime", false, 3)
            ),
            Value::Temporal("2024-02-29 01:02:03.450".into())
        );
        assert_eq!(
            from_mysql(MyValue::Date(0, 0, 0, 0, 0, 0, 0), &col("date", false, 0)),
            Value::Temporal("0000-00-00".into())
        );
        assert_eq!(
            from_mysql(
                MyValue::Time(true, 34, 22, 59, 59, 0),
                &col("time", false, 0)
            ),
            Value::Temporal("-838:59:59".into())
        );
        assert_eq!(
            from_mysql(MyValue::Bytes(b"12.50".to_vec()), &col("decimal", false, 0)),
            Value::Decimal("12.50".into())
        );
    }
}

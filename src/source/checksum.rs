//! Checksums of key ranges, computed inside a MySQL/MariaDB server, for `verify`. The engine
//! runs the same queries on the source table and on its replica, so both sides hash one
//! canonical text form and only hashes and keys cross the network.
//!
//! # The canonical form
//! A row is hashed over the mapped columns, in mapping order, each as `n` (NULL) or the MD5
//! of its canonical value: binary strings and spatial values as their bytes; character
//! strings, ENUM, SET and JSON as their utf8mb4 text (so a replica in another character set
//! compares by content); everything else as `CAST(… AS CHAR)`, whose text is fixed by the
//! type, the session's time zone (UTC in every rowsync session, so TIMESTAMPs compare as
//! instants) and nothing else. Fixed-length digests cannot shift into each other across
//! columns, and no intermediate string grows with the row. The row's hash is the first 64
//! bits of the MD5 of those digests joined; a range's checksum is the row count and the XOR
//! of its rows' hashes, which does not depend on the order rows are read in.
//!
//! A replica column must have its source column's type (rowsync creates it so, and checks an
//! adopted one); then equal values give equal text on both sides.

use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value as MyValue};

use super::catalog::{CatalogColumn, CatalogTable};
use super::snapshot::{from_mysql, number_as_binlog, KeyRange};
use super::SourceError;
use crate::model::name::{quote_ident, TableName};
use crate::model::value::Value;

/// What to hash in one table: columns by index into its catalog.
#[derive(Debug, Clone)]
pub struct HashSpec {
    pub table: TableName,
    pub catalog: CatalogTable,
    /// The hashed columns, in mapping order.
    pub hashed: Vec<usize>,
    /// The key columns, in the source's key order (both sides order by it).
    pub key: Vec<usize>,
    /// Columns read beside each row's hash (the source's filter columns).
    pub extra: Vec<usize>,
}

/// A column a `HashSpec` names that the table lacks.
#[derive(Debug, thiserror::Error)]
#[error("{table} has no column `{column}`")]
pub struct MissingColumn {
    pub table: TableName,
    pub column: String,
}

impl HashSpec {
    /// Resolves column names (matched case-insensitively, as MySQL does) against `catalog`.
    pub fn new(
        table: TableName,
        catalog: CatalogTable,
        hashed: &[String],
        key: &[String],
        extra: &[String],
    ) -> Result<HashSpec, MissingColumn> {
        let find = |names: &[String]| -> Result<Vec<usize>, MissingColumn> {
            names
                .iter()
                .map(|n| {
                    catalog
                        .columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(n))
                        .ok_or_else(|| MissingColumn {
                            table: table.clone(),
                            column: n.clone(),
                        })
                })
                .collect()
        };
        let (hashed, key, extra) = (find(hashed)?, find(key)?, find(extra)?);
        Ok(HashSpec {
            table,
            catalog,
            hashed,
            key,
            extra,
        })
    }

    fn key_columns(&self) -> Vec<&CatalogColumn> {
        self.key.iter().map(|&i| &self.catalog.columns[i]).collect()
    }

    fn order_by(&self) -> String {
        self.key_columns()
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The SQL of one row's 64-bit hash: of the MD5s of its columns' canonical texts, so no
    /// intermediate string grows past `max_allowed_packet` with the row (the server would
    /// make it NULL). NULL only when a single value is that large; callers refuse it.
    fn row_hash(&self) -> String {
        let parts: Vec<String> = self
            .hashed
            .iter()
            .map(|&i| {
                let c = &self.catalog.columns[i];
                let q = quote_ident(&c.name);
                format!("IF({q} IS NULL, 'n', MD5({}))", canonical(c))
            })
            .collect();
        // CONCAT, not CONCAT_WS: a NULL digest must make the row's hash NULL (refused),
        // not drop out of it.
        format!(
            "CAST(CONV(LEFT(MD5(CONCAT({})), 16), 16, 10) AS UNSIGNED)",
            parts.join(", ',', ")
        )
    }

    fn select_key_and(&self, more: &[usize]) -> Vec<String> {
        self.key
            .iter()
            .chain(more)
            .map(|&i| number_as_binlog(&self.catalog.columns[i]))
            .collect()
    }

    fn decode(&self, row: Vec<MyValue>, columns: &[usize]) -> Vec<Value> {
        row.into_iter()
            .zip(columns)
            .map(|(v, &i)| from_mysql(v, &self.catalog.columns[i]))
            .collect()
    }
}

/// The value of column `c` in the canonical form (see the module doc), as the input of MD5.
fn canonical(c: &CatalogColumn) -> String {
    let q = quote_ident(&c.name);
    let binary = c.charset.as_deref().is_none_or(|cs| cs == "binary");
    match c.data_type.as_str() {
        "bit" => format!("CAST({q} + 0 AS CHAR)"),
        "json" => format!("CONVERT(CAST({q} AS CHAR) USING utf8mb4)"),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
            if !binary =>
        {
            format!("CONVERT({q} USING utf8mb4)")
        }
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "char"
        | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "geometry" | "point"
        | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" | "geomcollection" => q,
        _ => format!("CAST({q} AS CHAR)"),
    }
}

/// Row count and XOR of row hashes of a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub rows: u64,
    pub xor: u64,
}

impl Summary {
    pub fn add(&mut self, hash: u64) {
        self.rows += 1;
        self.xor ^= hash;
    }
}

/// A row the server could not hash (its checksum came back NULL).
fn unhashable(table: &TableName) -> SourceError {
    SourceError::Unhashable {
        table: table.clone(),
    }
}

/// One row's key, hash and extra columns.
#[derive(Debug, Clone, PartialEq)]
pub struct RowHash {
    pub key: Vec<Value>,
    pub hash: u64,
    pub extra: Vec<Value>,
}

/// The key of the `n`th row after `after` (from the start when `None`): the inclusive end of
/// a chunk of `n` rows; `None` when fewer rows are left.
pub async fn boundary(
    conn: &mut Conn,
    spec: &HashSpec,
    after: Option<&[Value]>,
    n: usize,
) -> Result<Option<Vec<Value>>, SourceError> {
    let mut params = Vec::new();
    let range = KeyRange {
        after: after.map(<[Value]>::to_vec),
        upto: None,
    };
    let filter = range.sql(&spec.key_columns(), &mut params);
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT 1 OFFSET {}",
        spec.select_key_and(&[]).join(", "),
        spec.table.quoted(),
        spec.order_by(),
        n.saturating_sub(1)
    );
    let row: Option<Row> = conn.exec_first(sql, params).await?;
    Ok(row.map(|r| spec.decode(r.unwrap(), &spec.key)))
}

/// The checksum of `range`, computed by the server.
pub async fn summary(
    conn: &mut Conn,
    spec: &HashSpec,
    range: &KeyRange,
) -> Result<Summary, SourceError> {
    let mut params = Vec::new();
    let filter = range.sql(&spec.key_columns(), &mut params);
    let sql = format!(
        "SELECT COUNT(*), COUNT(h), CAST(COALESCE(BIT_XOR(h), 0) AS UNSIGNED) FROM (SELECT {} AS h FROM {}{filter}) AS chunk",
        spec.row_hash(),
        spec.table.quoted()
    );
    let row: Option<(u64, u64, u64)> = conn.exec_first(sql, params).await?;
    let (rows, hashed, xor) = row.unwrap_or_default();
    if hashed != rows {
        return Err(unhashable(&spec.table));
    }
    Ok(Summary { rows, xor })
}

/// Every row of `range` as key, hash and extra columns, in key order.
pub async fn rows(
    conn: &mut Conn,
    spec: &HashSpec,
    range: &KeyRange,
) -> Result<Vec<RowHash>, SourceError> {
    let mut params = Vec::new();
    let filter = range.sql(&spec.key_columns(), &mut params);
    let mut select = spec.select_key_and(&spec.extra);
    select.push(spec.row_hash());
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {}",
        select.join(", "),
        spec.table.quoted(),
        spec.order_by()
    );
    let rows: Vec<Row> = conn.exec(sql, params).await?;
    let (nk, ne) = (spec.key.len(), spec.extra.len());
    rows.into_iter()
        .map(|row| {
            let mut values = row.unwrap();
            let hash = match values.pop() {
                Some(MyValue::UInt(h)) => h,
                Some(MyValue::Int(h)) => h as u64,
                Some(MyValue::Bytes(b)) => String::from_utf8_lossy(&b)
                    .parse()
                    .map_err(|_| unhashable(&spec.table))?,
                _ => return Err(unhashable(&spec.table)),
            };
            if values.len() != nk + ne {
                return Err(SourceError::Protocol {
                    reason: format!("checksum query returned {} columns", values.len() + 1),
                });
            }
            let extra = values.split_off(nk);
            Ok(RowHash {
                key: spec.decode(values, &spec.key),
                hash,
                extra: spec.decode(extra, &spec.extra),
            })
        })
        .collect()
}

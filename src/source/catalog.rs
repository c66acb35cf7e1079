//! Column names and keys from `information_schema`, for sources whose binlog lacks them
//! (`binlog_row_metadata` MINIMAL or NO_LOG — MariaDB's default — and MySQL 5.7).
//!
//! A catalog read happens "now", while the row it describes was written earlier; it is only
//! right if no DDL on that table lies in between. So the reader reads it when a table is first
//! seen and again after every DDL on it in the stream, and checks it against what the
//! TABLE_MAP itself says — column count and each column's type. A mismatch stops the table
//! ("needs re-copy") instead of mapping values to the wrong columns. What the check cannot see
//! is a rename or reorder of same-typed columns between the stream position and now: run with
//! `binlog_row_metadata=FULL` to rule that out.

use mysql_async::prelude::*;
use mysql_async::Conn;
use mysql_common::constants::ColumnType;

use super::SourceError;
use crate::model::definition::SourceDefinition;
use crate::model::name::TableName;
use crate::model::schema::Codec;

/// One column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    pub name: String,
    /// `DATA_TYPE`, lower case: `bigint`, `varchar`, ...
    pub data_type: String,
    pub unsigned: bool,
    pub charset: Option<String>,
    /// Fractional-second digits of temporal columns.
    pub fsp: u8,
}

/// A table's columns (in ordinal order) and primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogTable {
    pub columns: Vec<CatalogColumn>,
    pub primary_key: Vec<usize>,
}

impl CatalogColumn {
    pub fn codec(&self) -> Codec {
        // information_schema gives binary strings no charset.
        match self.charset.as_deref() {
            Some(charset) => Codec::for_charset(charset),
            None if matches!(
                self.data_type.to_ascii_lowercase().as_str(),
                "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            ) =>
            {
                Codec::Binary
            }
            None => Codec::Raw,
        }
    }
}

/// Whether a binlog column type can hold a column of `data_type`.
pub fn type_matches(ty: ColumnType, data_type: &str) -> bool {
    use ColumnType::*;
    let names: &[&str] = match ty {
        MYSQL_TYPE_TINY => &["tinyint", "bool", "boolean"],
        MYSQL_TYPE_SHORT => &["smallint"],
        MYSQL_TYPE_INT24 => &["mediumint"],
        MYSQL_TYPE_LONG => &["int", "integer"],
        MYSQL_TYPE_LONGLONG => &["bigint"],
        MYSQL_TYPE_FLOAT => &["float"],
        MYSQL_TYPE_DOUBLE => &["double", "real"],
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => &["decimal", "numeric"],
        MYSQL_TYPE_YEAR => &["year"],
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => &["date"],
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => &["time"],
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => &["datetime"],
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => &["timestamp"],
        MYSQL_TYPE_BIT => &["bit"],
        MYSQL_TYPE_ENUM => &["enum"],
        MYSQL_TYPE_SET => &["set"],
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => &["varchar", "varbinary"],
        MYSQL_TYPE_STRING => &["char", "binary"],
        MYSQL_TYPE_BLOB | MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB => {
            &[
                "tinyblob",
                "blob",
                "mediumblob",
                "longblob",
                "tinytext",
                "text",
                "mediumtext",
                "longtext",
                // MariaDB's JSON is LONGTEXT underneath.
                "json",
            ]
        }
        MYSQL_TYPE_GEOMETRY => &[
            "geometry",
            "point",
            "linestring",
            "polygon",
            "multipoint",
            "multilinestring",
            "multipolygon",
            "geometrycollection",
            "geomcollection",
        ],
        MYSQL_TYPE_JSON => &["json"],
        _ => &[],
    };
    names.contains(&data_type)
}

/// Reads `table`'s catalog entry now.
pub async fn load(conn: &mut Conn, table: &TableName) -> Result<CatalogTable, SourceError> {
    // name, DATA_TYPE, COLUMN_TYPE, charset, DATETIME_PRECISION
    type ColumnRow = (String, String, String, Option<String>, Option<u8>);
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), CHARACTER_SET_NAME, DATETIME_PRECISION FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (&table.db, &table.table),
        )
        .await?;
    let columns: Vec<CatalogColumn> = rows
        .into_iter()
        .map(
            |(name, data_type, column_type, charset, fsp)| CatalogColumn {
                name,
                data_type,
                unsigned: column_type.contains("unsigned"),
                charset,
                fsp: fsp.unwrap_or(0),
            },
        )
        .collect();
    let key: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (&table.db, &table.table),
        )
        .await?;
    let primary_key = key
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    Ok(CatalogTable {
        columns,
        primary_key,
    })
}

/// Source tables (existing now) that `selects` picks.
pub async fn tables(
    src: &mut Conn,
    selects: impl Fn(&TableName) -> bool,
) -> Result<Vec<TableName>, SourceError> {
    let all: Vec<(String, String)> = src
        .query("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1, 2")
        .await?;
    Ok(all
        .into_iter()
        .map(|(d, t)| TableName::new(d, t))
        .filter(|t| selects(t))
        .collect())
}

/// `table`'s definition as it is now (`SHOW CREATE TABLE`).
pub async fn definition(
    src: &mut Conn,
    table: &TableName,
) -> Result<SourceDefinition, SourceError> {
    let row: Option<(String, String)> = src
        .query_first(format!("SHOW CREATE TABLE {}", table.quoted()))
        .await?;
    let (_, create) = row.ok_or_else(|| SourceError::Definition {
        table: table.clone(),
        reason: "SHOW CREATE TABLE returned nothing".into(),
    })?;
    SourceDefinition::parse(table.clone(), &create).map_err(|reason| SourceError::Definition {
        table: table.clone(),
        reason,
    })
}

/// A source table as the mapping editor shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOutline {
    pub table: TableName,
    /// (name, column type as the server prints it), in order.
    pub columns: Vec<(String, String)>,
    pub primary_key: Vec<String>,
}

/// Every base table of the source outside the system schemas, with its columns and key, in
/// two queries.
pub async fn outline(src: &mut Conn) -> Result<Vec<TableOutline>, SourceError> {
    const SYSTEM: &str = "('mysql', 'information_schema', 'performance_schema', 'sys')";
    let columns: Vec<(String, String, String, String)> = src
        .query(format!("SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, LOWER(c.COLUMN_TYPE) FROM information_schema.COLUMNS c JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME WHERE t.TABLE_TYPE = 'BASE TABLE' AND c.TABLE_SCHEMA NOT IN {SYSTEM} ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION"))
        .await?;
    let keys: Vec<(String, String, String)> = src
        .query(format!("SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE INDEX_NAME = 'PRIMARY' AND TABLE_SCHEMA NOT IN {SYSTEM} ORDER BY TABLE_SCHEMA, TABLE_NAME, SEQ_IN_INDEX"))
        .await?;
    let mut out: Vec<TableOutline> = Vec::new();
    for (db, table, column, ty) in columns {
        let name = TableName::new(db, table);
        match out.last_mut() {
            Some(t) if t.table == name => t.columns.push((column, ty)),
            _ => out.push(TableOutline {
                table: name,
                columns: vec![(column, ty)],
                primary_key: Vec::new(),
            }),
        }
    }
    for (db, table, column) in keys {
        let name = TableName::new(db, table);
        if let Some(t) = out.iter_mut().find(|t| t.table == name) {
            t.primary_key.push(column);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_types_match_catalog_types() {
        assert!(type_matches(ColumnType::MYSQL_TYPE_LONGLONG, "bigint"));
        assert!(type_matches(ColumnType::MYSQL_TYPE_BLOB, "json"));
        assert!(type_matches(ColumnType::MYSQL_TYPE_VARCHAR, "varbinary"));
        assert!(!type_matches(ColumnType::MYSQL_TYPE_LONG, "bigint"));
        assert!(!type_matches(ColumnType::MYSQL_TYPE_VARCHAR, "int"));
    }
}

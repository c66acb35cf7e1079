//! Table schemas as the binlog describes them at each point of the stream.
//!
//! With `binlog_row_metadata=FULL` every TABLE_MAP event carries column names, signedness,
//! charsets and the primary key, so the schema used to decode a row is the one in force when
//! the row was written — never the schema of "now" (the classic cause of mis-mapped columns
//! after an ALTER). A table map without column names is refused with the setting to change.

use std::sync::Arc;

use mysql_common::binlog::events::{OptionalMetaExtractor, TableMapEvent};
use mysql_common::constants::ColumnType;

use super::catalog::{type_matches, CatalogTable};
use super::charset::Charsets;
use crate::model::name::TableName;
use crate::model::schema::{Codec, ColumnFormat, ColumnSchema, TableSchema};

/// Why a TABLE_MAP cannot give a usable schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("table map of {0} has no column names and no catalog entry was read")]
    NoColumnNames(TableName),
    #[error("{table}: information_schema does not match the binlog at this point ({reason}); the table changed since — re-copy it, or run the source with binlog_row_metadata=FULL")]
    CatalogMismatch { table: TableName, reason: String },
    #[error("table map of {table} is malformed: {reason}")]
    Malformed { table: TableName, reason: String },
}

/// Whether the TABLE_MAP carries column names (binlog_row_metadata=FULL).
pub fn has_column_names(tme: &TableMapEvent<'_>) -> bool {
    OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map(|m| m.iter_column_name().next().is_some())
        .unwrap_or(false)
}

/// Builds the schema of the table a TABLE_MAP event describes. Without column names in the
/// event, `catalog` (information_schema, read by the caller) supplies names, signedness,
/// charsets and the key, after a check that it matches the event's column types.
pub fn from_table_map(
    tme: &TableMapEvent<'_>,
    charsets: &Charsets,
    catalog: Option<&CatalogTable>,
) -> Result<Arc<TableSchema>, SchemaError> {
    let name = TableName::new(tme.database_name(), tme.table_name());
    let malformed = |reason: String| SchemaError::Malformed {
        table: name.clone(),
        reason,
    };
    let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map_err(|e| malformed(e.to_string()))?;
    let mut signedness = meta.iter_signedness();
    let mut charset = meta.iter_charset();
    let mut enum_set_charset = meta.iter_enum_and_set_charset();
    let mut names = meta.iter_column_name();
    let nulls = tme.null_bitmask();

    let count = tme.columns_count() as usize;
    let fallback = if has_column_names(tme) { None } else { catalog };
    if let Some(cat) = fallback {
        if cat.columns.len() != count {
            return Err(SchemaError::CatalogMismatch {
                table: name,
                reason: format!(
                    "{} columns in the binlog, {} in information_schema",
                    count,
                    cat.columns.len()
                ),
            });
        }
    }
    let mut columns = Vec::with_capacity(count);
    for i in 0..count {
        let ty = match tme.get_column_type(i) {
            Ok(Some(ty)) => ty,
            Ok(None) => return Err(malformed(format!("column {i} has no type"))),
            Err(e) => return Err(malformed(format!("column {i}: {e}"))),
        };
        let raw_meta = tme.get_column_metadata(i).unwrap_or(&[]);
        let meta2 = [
            raw_meta.first().copied().unwrap_or(0),
            raw_meta.get(1).copied().unwrap_or(0),
        ];
        let unsigned = ty.is_numeric_type() && signedness.next().unwrap_or(false);
        // The server gives GEOMETRY (a BLOB underneath) a charset entry too; mysql_common's
        // `is_character_type` leaves it out, which would shift every later column's charset.
        let collation = if ty.is_character_type() || ty == ColumnType::MYSQL_TYPE_GEOMETRY {
            charset
                .next()
                .transpose()
                .map_err(|e| malformed(e.to_string()))?
        } else if ty.is_enum_or_set_type() {
            enum_set_charset
                .next()
                .transpose()
                .map_err(|e| malformed(e.to_string()))?
        } else {
            None
        };
        let (col_name, unsigned, codec) = match (names.next(), fallback) {
            (Some(Ok(n)), _) => {
                let codec = match (ty, collation) {
                    (ColumnType::MYSQL_TYPE_JSON, _) => Codec::Utf8,
                    (_, Some(id)) => charsets.codec(id),
                    (_, None) => Codec::Raw,
                };
                (n.name().into_owned(), unsigned, codec)
            }
            (Some(Err(e)), _) => return Err(malformed(e.to_string())),
            (None, Some(cat)) => {
                let c = &cat.columns[i];
                if !type_matches(ty, &c.data_type) {
                    return Err(SchemaError::CatalogMismatch {
                        table: name,
                        reason: format!(
                            "column {} is {:?} in the binlog but `{}` {} in information_schema",
                            i + 1,
                            ty,
                            c.name,
                            c.data_type
                        ),
                    });
                }
                let codec = if ty == ColumnType::MYSQL_TYPE_JSON {
                    Codec::Utf8
                } else {
                    c.codec()
                };
                (c.name.clone(), c.unsigned, codec)
            }
            (None, None) => return Err(SchemaError::NoColumnNames(name)),
        };
        columns.push(ColumnSchema {
            name: col_name,
            format: ColumnFormat {
                ty,
                meta: meta2,
                unsigned,
                codec,
            },
            nullable: nulls.get(i).map(|b| *b).unwrap_or(true),
        });
    }
    let primary_key = match fallback {
        Some(cat) => cat.primary_key.clone(),
        None => meta
            .iter_primary_key()
            .map(|r| r.map(|i| i as usize))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| malformed(e.to_string()))?,
    };
    if primary_key.iter().any(|&i| i >= count) {
        return Err(malformed("primary key names a missing column".into()));
    }
    Ok(Arc::new(TableSchema {
        name,
        columns,
        primary_key,
    }))
}

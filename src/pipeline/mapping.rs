//! Mappings: which source tables go to which target, under what name, with which columns.
//!
//! A `Router` holds one target's mappings. It answers the binlog reader's question "is this
//! table selected?" (so rows of other tables are skipped before decoding) and turns a source
//! row into the replica row of every mapping that selects its table.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::filter::{EvalError, Filter};
use crate::config::Config;
use crate::source::schema::{TableName, TableSchema};
use crate::source::value::Value;

/// `db.table` where either side may contain `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    db: String,
    table: String,
}

impl FromStr for TablePattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (db, table) = s
            .split_once('.')
            .ok_or_else(|| format!("`{s}` is not of the form db.table"))?;
        if db.is_empty() || table.is_empty() || table.contains('.') {
            return Err(format!("`{s}` is not of the form db.table"));
        }
        Ok(TablePattern {
            db: db.to_owned(),
            table: table.to_owned(),
        })
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.table)
    }
}

/// Glob match where `*` matches any run of characters. Names compare case-sensitively, as
/// table names do on Linux servers.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(remaining) = text.strip_prefix(head) else {
                return false;
            };
            (0..=remaining.len())
                .filter(|i| remaining.is_char_boundary(*i))
                .any(|i| glob(rest, &remaining[i..]))
        }
    }
}

impl TablePattern {
    pub fn matches(&self, name: &TableName) -> bool {
        glob(&self.db, &name.db) && glob(&self.table, &name.table)
    }

    pub fn is_exact(&self) -> bool {
        !self.db.contains('*') && !self.table.contains('*')
    }

    /// The one table an exact pattern names.
    pub fn exact(&self) -> Option<TableName> {
        self.is_exact()
            .then(|| TableName::new(&self.db, &self.table))
    }
}

/// One mapping as it applies to one target.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub source: TablePattern,
    /// Replica table name; the source table's name when `None`.
    pub table: Option<String>,
    pub columns: Option<Vec<String>>,
    /// Only rows for which this is true are replicated.
    pub filter: Option<Filter>,
}

impl Mapping {
    pub fn replica_name(&self, source: &TableName) -> String {
        self.table.clone().unwrap_or_else(|| source.table.clone())
    }

    /// What the replica's rows depend on besides the source table: the column list and the
    /// filter. A replica filled under one shape must be copied again under another.
    pub fn shape(&self) -> String {
        serde_json::json!({
            "columns": self.columns,
            "where": self.filter.as_ref().map(|f| f.text()),
        })
        .to_string()
    }
}

/// Why a mapping cannot be applied to a source table.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MappingError {
    #[error("{table} has no primary key; rowsync keys every replica row by it")]
    NoPrimaryKey { table: TableName },
    #[error("{table}: mapped column `{column}` does not exist in the source")]
    UnknownColumn { table: TableName, column: String },
    #[error("{table}: the column list must include the primary key column `{column}`")]
    MissingKey { table: TableName, column: String },
    #[error("{table}: the row filter names column `{column}`, which the table does not have")]
    FilterColumn { table: TableName, column: String },
    #[error("replica table `{replica}` does not exist in the target")]
    MissingReplica { replica: String },
    #[error("replica table `{replica}` has no column `{column}` (a source ALTER it did not follow?); re-copy the table")]
    ReplicaLacksColumn { replica: String, column: String },
}

/// A mapping resolved against one source schema: positions of the replica's columns in the
/// source row, and of the key in the replica row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    pub replica: String,
    /// Source column index of each replica column, in replica column order.
    pub columns: Vec<usize>,
    /// Replica column names, in order.
    pub names: Vec<String>,
    /// Positions of the primary key columns within `columns`.
    pub key: Vec<usize>,
    pub filter: Option<Filter>,
    /// Source column names, which the filter refers to.
    source_names: Vec<String>,
}

impl Projection {
    pub fn new(mapping: &Mapping, schema: &Arc<TableSchema>) -> Result<Projection, MappingError> {
        let names: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
        Self::from_columns(mapping, &schema.name, names, &schema.primary_key)
    }

    /// The projection of a table with source columns `source_names` and key `primary_key`
    /// (indexes into `source_names`).
    pub fn from_columns(
        mapping: &Mapping,
        table: &TableName,
        source_names: Vec<String>,
        primary_key: &[usize],
    ) -> Result<Projection, MappingError> {
        if primary_key.is_empty() {
            return Err(MappingError::NoPrimaryKey {
                table: table.clone(),
            });
        }
        let index = |c: &str| source_names.iter().position(|n| n.eq_ignore_ascii_case(c));
        let columns: Vec<usize> = match &mapping.columns {
            None => (0..source_names.len()).collect(),
            Some(list) => list
                .iter()
                .map(|c| {
                    index(c).ok_or_else(|| MappingError::UnknownColumn {
                        table: table.clone(),
                        column: c.clone(),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let key = primary_key
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| c == k)
                    .ok_or_else(|| MappingError::MissingKey {
                        table: table.clone(),
                        column: source_names[*k].clone(),
                    })
            })
            .collect::<Result<_, _>>()?;
        if let Some(f) = &mapping.filter {
            if let Some(column) = f.columns().into_iter().find(|c| index(c).is_none()) {
                return Err(MappingError::FilterColumn {
                    table: table.clone(),
                    column,
                });
            }
        }
        Ok(Projection {
            filter: mapping.filter.clone(),
            replica: mapping.replica_name(table),
            names: columns.iter().map(|&i| source_names[i].clone()).collect(),
            source_names,
            columns,
            key,
        })
    }

    /// Whether a source row passes the mapping's filter.
    pub fn keeps(&self, source_row: &[Value]) -> Result<bool, EvalError> {
        match &self.filter {
            None => Ok(true),
            Some(f) => f.matches(&self.source_names, source_row),
        }
    }

    /// The replica row for a source row.
    pub fn row(&self, source_row: &[Value]) -> Vec<Value> {
        self.columns
            .iter()
            .map(|&i| source_row[i].clone())
            .collect()
    }

    /// The replica key of a source row.
    pub fn key_of(&self, source_row: &[Value]) -> Vec<Value> {
        self.key
            .iter()
            .map(|&k| source_row[self.columns[k]].clone())
            .collect()
    }
}

/// The mappings of one target.
#[derive(Debug, Clone, Default)]
pub struct Router {
    mappings: Vec<Mapping>,
}

impl Router {
    pub fn for_target(config: &Config, target: &str) -> Router {
        let mappings = config
            .mappings
            .iter()
            .filter(|m| m.targets.iter().any(|t| t.eq_ignore_ascii_case(target)))
            .map(|m| Mapping {
                // Validated at load time.
                source: m.source.parse().unwrap_or_else(|_| TablePattern {
                    db: String::new(),
                    table: String::new(),
                }),
                table: m.table.clone(),
                columns: m.columns.clone(),
                // Validated at load time.
                filter: m.filter.as_deref().and_then(|f| f.parse().ok()),
            })
            .collect();
        Router { mappings }
    }

    pub fn new(mappings: Vec<Mapping>) -> Router {
        Router { mappings }
    }

    pub fn selects(&self, table: &TableName) -> bool {
        self.mappings.iter().any(|m| m.source.matches(table))
    }

    pub fn mappings_for<'a>(&'a self, table: &'a TableName) -> impl Iterator<Item = &'a Mapping> {
        self.mappings
            .iter()
            .filter(move |m| m.source.matches(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_wildcards() {
        let p: TablePattern = "product.*".parse().unwrap();
        assert!(p.matches(&TableName::new("product", "category")));
        assert!(!p.matches(&TableName::new("products", "category")));
        let p: TablePattern = "shop_*.item_*_v2".parse().unwrap();
        assert!(p.matches(&TableName::new("shop_eu", "item_x_v2")));
        assert!(!p.matches(&TableName::new("shop_eu", "item_x_v3")));
        assert!("nodot".parse::<TablePattern>().is_err());
        assert!("a.b.c".parse::<TablePattern>().is_err());
    }
}

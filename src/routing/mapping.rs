//! Mappings: which source tables go to which target, under what name, with which columns.
//!
//! A `Router` holds one target's mappings. It answers the binlog reader's question "is this
//! table selected?" (so rows of other tables are skipped before decoding) and turns a source
//! row into the replica row of every mapping that selects its table.

use std::sync::Arc;

use crate::config::{Config, MappingConfig};
use crate::model::definition::SourceDefinition;
use crate::model::filter::{EvalError, Filter};
use crate::model::name::{TableName, TablePattern};
use crate::model::schema::TableSchema;
use crate::model::value::Value;

/// One mapping as it applies to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub source: TablePattern,
    /// Replica table name; the source table's name when `None`.
    pub table: Option<String>,
    pub columns: Option<Vec<String>>,
    /// Only rows for which this is true are replicated.
    pub filter: Option<Filter>,
}

impl From<&MappingConfig> for Mapping {
    fn from(m: &MappingConfig) -> Self {
        Mapping {
            source: m.source.clone(),
            table: m.table.clone(),
            columns: m.columns.clone(),
            filter: m.filter.clone(),
        }
    }
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

    /// The replica's columns for the source table `def` defines, checked against it.
    pub fn columns_of(&self, def: &SourceDefinition) -> Result<Vec<String>, MappingError> {
        if def.primary_key.is_empty() {
            return Err(MappingError::NoPrimaryKey {
                table: def.table.clone(),
            });
        }
        let names: Vec<String> = match &self.columns {
            None => def.columns.iter().map(|(n, _)| n.clone()).collect(),
            Some(list) => list
                .iter()
                .map(|c| {
                    def.columns
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(c))
                        .map(|(n, _)| n.clone())
                        .ok_or_else(|| MappingError::UnknownColumn {
                            table: def.table.clone(),
                            column: c.clone(),
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        for k in &def.primary_key {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                return Err(MappingError::MissingKey {
                    table: def.table.clone(),
                    column: k.clone(),
                });
            }
        }
        Ok(names)
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
    /// Whether each key column of the replica compares as bytes (a whole BINARY, VARBINARY or
    /// BLOB column), as its applier finds the replica (`false` until then: the parallel apply
    /// folds such keys conservatively).
    pub binary_key: Vec<bool>,
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
        let key: Vec<usize> = primary_key
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
            binary_key: vec![false; key.len()],
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Router {
    mappings: Vec<Mapping>,
}

impl Router {
    pub fn for_target(config: &Config, target: &str) -> Router {
        let mappings = config
            .mappings
            .iter()
            .filter(|m| m.targets.iter().any(|t| t.eq_ignore_ascii_case(target)))
            .map(Mapping::from)
            .collect();
        Router { mappings }
    }

    pub fn new(mappings: Vec<Mapping>) -> Router {
        Router { mappings }
    }

    /// Whether some mapping may fill the replica table `replica` (a renamed one, or a source
    /// table of that name).
    pub fn may_fill(&self, replica: &str) -> bool {
        self.mappings.iter().any(|m| match &m.table {
            Some(t) => t == replica,
            None => m.source.may_name(replica),
        })
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

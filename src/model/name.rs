//! Names: schema-qualified table names, `db.table` patterns with `*` wildcards, and identifier
//! quoting for generated SQL (every identifier rowsync puts into SQL goes through
//! `quote_ident`; values are always bound, never spliced).

use std::fmt;
use std::str::FromStr;

/// Quotes an identifier for MySQL/MariaDB: backticks, with embedded backticks doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A schema-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub db: String,
    pub table: String,
}

impl TableName {
    pub fn new(db: impl Into<String>, table: impl Into<String>) -> Self {
        TableName {
            db: db.into(),
            table: table.into(),
        }
    }

    /// `db`.`table`, quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.db), quote_ident(&self.table))
    }
}

impl FromStr for TableName {
    type Err = String;

    /// `db.table`, split at the first dot (database names have none).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split_once('.')
            .filter(|(db, table)| !db.is_empty() && !table.is_empty())
            .map(|(db, table)| TableName::new(db, table))
            .ok_or_else(|| format!("`{s}` is not of the form db.table"))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.table)
    }
}

/// `db.table` where either side may contain `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// Whether a table of this pattern, in some database, may be named `table`.
    pub fn may_name(&self, table: &str) -> bool {
        glob(&self.table, table)
    }

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

crate::model::serde_as_text!(TableName, TablePattern);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_escaped() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(TableName::new("db", "t`x").quoted(), "`db`.`t``x`");
    }

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

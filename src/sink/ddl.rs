//! Following source ALTER TABLE statements on a replica.
//!
//! An ALTER on a selected table is parsed (sqlparser, MySQL dialect) and turned into column
//! changes for each replica: ADD, DROP, MODIFY and CHANGE/RENAME COLUMN. Each change is applied
//! as its own statement after checking the replica's current columns, so replaying an ALTER
//! after a crash (it ran, but the checkpoint after it was not stored yet) changes nothing.
//! Whatever cannot be followed safely — a primary key change, dropping or renaming a column a
//! column list names, a table rename, an unparseable statement — stops that table with the
//! reason, rather than risk mis-mapped columns.

use sqlparser::ast::{
    AlterTableOperation, ColumnOption, ColumnOptionDef, Statement, TableConstraint,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use crate::model::definition::{column_definition, replica_option};
use crate::model::name::quote_ident;
use crate::routing::mapping::Mapping;

/// One change to a replica's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnChange {
    /// `def` is the full column definition, name first.
    Add {
        name: String,
        def: String,
    },
    Drop {
        name: String,
    },
    Modify {
        name: String,
        def: String,
    },
    /// `def` is the new definition when the type is restated (CHANGE COLUMN).
    Rename {
        from: String,
        to: String,
        def: Option<String>,
    },
}

impl ColumnChange {
    /// The statement for `replica`, or `None` when `columns` (the replica's current ones) show
    /// it is already done.
    pub fn statement(&self, replica: &str, columns: &[String]) -> Option<String> {
        let has = |n: &str| columns.iter().any(|c| c.eq_ignore_ascii_case(n));
        let table = quote_ident(replica);
        match self {
            ColumnChange::Add { name, def } => {
                (!has(name)).then(|| format!("ALTER TABLE {table} ADD COLUMN {def}"))
            }
            ColumnChange::Drop { name } => {
                has(name).then(|| format!("ALTER TABLE {table} DROP COLUMN {}", quote_ident(name)))
            }
            ColumnChange::Modify { def, .. } => {
                Some(format!("ALTER TABLE {table} MODIFY COLUMN {def}"))
            }
            ColumnChange::Rename { from, to, def } => {
                if !has(from) && has(to) {
                    return None;
                }
                Some(match def {
                    Some(def) => format!(
                        "ALTER TABLE {table} CHANGE COLUMN {} {def}",
                        quote_ident(from)
                    ),
                    None => format!(
                        "ALTER TABLE {table} RENAME COLUMN {} TO {}",
                        quote_ident(from),
                        quote_ident(to)
                    ),
                })
            }
        }
    }
}

/// The options of a column an ALTER adds or changes; `Err` when it touches the primary key.
fn replica_options<'a>(
    options: impl IntoIterator<Item = &'a ColumnOption>,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for o in options {
        if let ColumnOption::PrimaryKey(_) = o {
            return Err("the ALTER changes the primary key".into());
        }
        out.extend(replica_option(o));
    }
    Ok(out)
}

/// Table options and index renames change nothing a replica holds (storage, comments, a
/// rebuild); sqlparser does not know most of them, so they are taken out before parsing.
const IGNORED_CLAUSES: &[&str] = &[
    "ENGINE",
    "COMMENT",
    "FORCE",
    "ROW_FORMAT",
    "KEY_BLOCK_SIZE",
    "STATS_PERSISTENT",
    "STATS_AUTO_RECALC",
    "STATS_SAMPLE_PAGES",
    "PACK_KEYS",
    "CHECKSUM",
    "PAGE_CHECKSUM",
    "MAX_ROWS",
    "MIN_ROWS",
    "AVG_ROW_LENGTH",
    "DELAY_KEY_WRITE",
    "TRANSACTIONAL",
    "PAGE_COMPRESSED",
    "PAGE_COMPRESSION_LEVEL",
    "ALGORITHM",
    "LOCK",
    "AUTO_INCREMENT",
];

/// `sql` without the clauses that change nothing in a replica (`IGNORED_CLAUSES`, ALTER
/// COLUMN … SET/DROP DEFAULT, RENAME INDEX/KEY); `None` when no clause is left.
fn without_table_options(sql: &str) -> Option<String> {
    let (head, clauses) = split_alter(sql);
    let kept: Vec<&str> = clauses
        .into_iter()
        .filter(|clause| {
            let words: Vec<String> = clause
                .split(|c: char| c.is_whitespace() || c == '=')
                .filter(|w| !w.is_empty())
                .take(4)
                .map(|w| w.to_ascii_uppercase())
                .collect();
            let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
            let default_change = w(0) == "ALTER"
                && matches!(
                    (w(1), w(2), w(3)),
                    ("COLUMN", _, "SET" | "DROP") | (_, "SET" | "DROP", _)
                );
            !(IGNORED_CLAUSES.contains(&w(0))
                || default_change
                || (w(0) == "RENAME" && matches!(w(1), "INDEX" | "KEY")))
        })
        .collect();
    (!kept.is_empty()).then(|| format!("{head} {}", kept.join(", ")))
}

/// `ALTER TABLE name` and the top-level, comma-separated clauses after it.
fn split_alter(sql: &str) -> (&str, Vec<&str>) {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None, 0);
    let mut head_end = None;
    let bytes = sql.as_bytes();
    let mut words = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        match quote {
            Some(q) if c == '\\' && q != '`' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' | '`' => quote = Some(c),
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 && head_end.is_some() => {
                    parts.push(sql[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            },
        }
        // The head ends after the table name: ALTER [ONLINE] [IGNORE] TABLE [IF EXISTS] name.
        if head_end.is_none() && quote.is_none() && c.is_whitespace() {
            let word = sql[..i].split_whitespace().last().unwrap_or("");
            let upper = word.to_ascii_uppercase();
            if !matches!(
                upper.as_str(),
                "ALTER" | "ONLINE" | "IGNORE" | "TABLE" | "IF" | "EXISTS"
            ) || words > 6
            {
                head_end = Some(i);
                start = i;
            }
            words += 1;
        }
        i += 1;
    }
    let Some(head_end) = head_end else {
        return (sql, Vec::new());
    };
    parts.push(sql[start..].trim());
    parts.retain(|p| !p.is_empty());
    (sql[..head_end].trim(), parts)
}

/// The replica changes that follow `sql` (an ALTER TABLE on the mapped source table) under
/// `mapping`, whose primary key columns are `key`. `Err` explains why the table must stop.
pub fn plan_alter(
    sql: &str,
    mapping: &Mapping,
    key: &[String],
) -> Result<Vec<ColumnChange>, String> {
    let Some(sql) = without_table_options(sql) else {
        return Ok(Vec::new());
    };
    let statements = Parser::parse_sql(&MySqlDialect {}, &sql)
        .map_err(|e| format!("cannot parse the ALTER ({e})"))?;
    let [Statement::AlterTable(alter)] = statements.as_slice() else {
        return Err("not a single ALTER TABLE statement".into());
    };
    let mapped = |name: &str| match &mapping.columns {
        None => true,
        Some(list) => list.iter().any(|c| c.eq_ignore_ascii_case(name)),
    };
    let listed = |name: &str| {
        mapping
            .columns
            .as_ref()
            .is_some_and(|l| l.iter().any(|c| c.eq_ignore_ascii_case(name)))
    };
    let is_key = |name: &str| key.iter().any(|k| k.eq_ignore_ascii_case(name));
    let mut changes = Vec::new();
    for op in &alter.operations {
        match op {
            AlterTableOperation::AddColumn { column_def, .. } => {
                let name = column_def.name.value.clone();
                if mapped(&name) {
                    let options = replica_options(
                        column_def
                            .options
                            .iter()
                            .map(|o: &ColumnOptionDef| &o.option),
                    )?;
                    changes.push(ColumnChange::Add {
                        def: column_definition(&name, &column_def.data_type, &options),
                        name,
                    });
                }
            }
            AlterTableOperation::DropColumn { column_names, .. } => {
                for c in column_names {
                    let name = &c.value;
                    if is_key(name) {
                        return Err(format!("primary key column `{name}` is dropped"));
                    }
                    if listed(name) {
                        return Err(format!("column `{name}` of the mapping's column list is dropped; update the mapping"));
                    }
                    if mapped(name) {
                        changes.push(ColumnChange::Drop { name: name.clone() });
                    }
                }
            }
            AlterTableOperation::ModifyColumn {
                col_name,
                data_type,
                options,
                ..
            } => {
                if mapped(&col_name.value) {
                    let opts = replica_options(options)?;
                    changes.push(ColumnChange::Modify {
                        name: col_name.value.clone(),
                        def: column_definition(&col_name.value, data_type, &opts),
                    });
                }
            }
            AlterTableOperation::ChangeColumn {
                old_name,
                new_name,
                data_type,
                options,
                ..
            } => {
                let (from, to) = (&old_name.value, &new_name.value);
                if !mapped(from) {
                    continue;
                }
                let opts = replica_options(options)?;
                if from.eq_ignore_ascii_case(to) {
                    changes.push(ColumnChange::Modify {
                        name: to.clone(),
                        def: column_definition(to, data_type, &opts),
                    });
                } else if listed(from) || is_key(from) {
                    return Err(format!("column `{from}` is renamed to `{to}`; the mapping or key names the old name"));
                } else {
                    changes.push(ColumnChange::Rename {
                        from: from.clone(),
                        to: to.clone(),
                        def: Some(column_definition(to, data_type, &opts)),
                    });
                }
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let (from, to) = (&old_column_name.value, &new_column_name.value);
                if !mapped(from) {
                    continue;
                }
                if listed(from) || is_key(from) {
                    return Err(format!("column `{from}` is renamed to `{to}`; the mapping or key names the old name"));
                }
                changes.push(ColumnChange::Rename {
                    from: from.clone(),
                    to: to.clone(),
                    def: None,
                });
            }
            AlterTableOperation::AddConstraint { constraint, .. } => {
                if matches!(constraint, TableConstraint::PrimaryKey(_)) {
                    return Err("the ALTER adds a primary key".into());
                }
                // Secondary keys, unique keys, foreign keys and checks stay on the source.
            }
            AlterTableOperation::DropPrimaryKey { .. } => {
                return Err("the ALTER drops the primary key".into())
            }
            AlterTableOperation::DropIndex { .. }
            | AlterTableOperation::DropConstraint { .. }
            | AlterTableOperation::DropForeignKey { .. }
            | AlterTableOperation::Algorithm { .. }
            | AlterTableOperation::Lock { .. }
            | AlterTableOperation::AutoIncrement { .. } => {}
            other => return Err(format!("ALTER operation `{other}` is not followed")),
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Mapping {
        Mapping {
            source: "p.t".parse().unwrap(),
            table: None,
            columns: None,
            filter: None,
        }
    }

    fn subset() -> Mapping {
        Mapping {
            columns: Some(vec!["id".into(), "code".into()]),
            ..all()
        }
    }

    fn key() -> Vec<String> {
        vec!["id".into()]
    }

    #[test]
    fn add_modify_rename_drop_are_followed() {
        let plan = plan_alter(
            "ALTER TABLE t ADD COLUMN note VARCHAR(20) CHARACTER SET latin1 NULL DEFAULT 'x' AFTER id, MODIFY code VARCHAR(64) NOT NULL, RENAME COLUMN model TO model_name, DROP COLUMN old",
            &all(),
            &key(),
        )
        .unwrap();
        assert_eq!(plan.len(), 4, "{plan:?}");
        let cols: Vec<String> = ["id", "code", "model", "old"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let sql: Vec<String> = plan
            .iter()
            .filter_map(|c| c.statement("r", &cols))
            .collect();
        assert!(
            sql[0].starts_with("ALTER TABLE `r` ADD COLUMN `note` VARCHAR(20)"),
            "{sql:?}"
        );
        assert!(sql[0].contains("DEFAULT 'x'"), "{sql:?}");
        assert!(!sql[0].contains("AFTER"), "{sql:?}");
        assert_eq!(
            sql[1],
            "ALTER TABLE `r` MODIFY COLUMN `code` VARCHAR(64) NOT NULL"
        );
        assert_eq!(
            sql[2],
            "ALTER TABLE `r` RENAME COLUMN `model` TO `model_name`"
        );
        assert_eq!(sql[3], "ALTER TABLE `r` DROP COLUMN `old`");
    }

    #[test]
    fn table_options_and_defaults_need_no_recopy() {
        for sql in [
            "ALTER TABLE t ENGINE=InnoDB",
            "ALTER TABLE `p`.`t` COMMENT = 'a, (b)'",
            "ALTER TABLE t FORCE",
            "ALTER ONLINE TABLE t ENGINE = InnoDB, ALGORITHM=INPLACE, LOCK=NONE",
            "ALTER TABLE t ALTER COLUMN code SET DEFAULT 'x,y'",
            "alter table t alter code drop default, ROW_FORMAT=DYNAMIC",
            "ALTER TABLE t RENAME INDEX a TO b",
        ] {
            assert_eq!(plan_alter(sql, &all(), &key()), Ok(vec![]), "{sql}");
        }
        // What is left is still followed.
        let plan = plan_alter(
            "ALTER TABLE t ENGINE=InnoDB, ADD COLUMN z INT DEFAULT 1, COMMENT 'c'",
            &all(),
            &key(),
        )
        .unwrap();
        assert_eq!(
            plan,
            vec![ColumnChange::Add {
                name: "z".into(),
                def: "`z` INT DEFAULT 1".into()
            }]
        );
    }

    #[test]
    fn replayed_changes_are_skipped() {
        let add = ColumnChange::Add {
            name: "note".into(),
            def: "`note` INT".into(),
        };
        assert_eq!(add.statement("r", &["id".into(), "note".into()]), None);
        let drop = ColumnChange::Drop { name: "old".into() };
        assert_eq!(drop.statement("r", &["id".into()]), None);
    }

    #[test]
    fn unsafe_changes_stop_the_table() {
        assert!(plan_alter("ALTER TABLE t DROP PRIMARY KEY", &all(), &key()).is_err());
        assert!(plan_alter("ALTER TABLE t DROP COLUMN code", &subset(), &key()).is_err());
        assert!(plan_alter("ALTER TABLE t RENAME COLUMN code TO c2", &subset(), &key()).is_err());
        assert!(plan_alter("ALTER TABLE t RENAME TO t2", &all(), &key()).is_err());
        assert!(plan_alter("ALTER TABLE t ADD COLUMN z INT PRIMARY KEY", &all(), &key()).is_err());
        // Columns outside a column list are not the replica's business.
        assert_eq!(
            plan_alter(
                "ALTER TABLE t ADD COLUMN z INT, DROP COLUMN y",
                &subset(),
                &key()
            )
            .unwrap(),
            vec![]
        );
        // Indexes stay on the source.
        assert_eq!(
            plan_alter(
                "ALTER TABLE t ADD UNIQUE KEY uk (code), ADD INDEX i (code)",
                &all(),
                &key()
            )
            .unwrap(),
            vec![]
        );
    }
}

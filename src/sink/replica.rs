//! Replica tables: created from the source definition (`SHOW CREATE TABLE`, reduced to the
//! mapped columns), or checked for compatibility when they exist.
//!
//! A replica keeps the source's column types, charsets and primary key, on InnoDB. Unique
//! secondary keys are dropped (an upsert could hit the wrong row through them), as are foreign
//! keys and CHECK constraints (the source already enforced them; the replica must accept
//! whatever the source holds). Plain secondary keys stay, so replicas are good to query.
//!
//! A replica created for an initial copy gets its secondary keys only after the copy: InnoDB
//! builds a key from sorted rows far faster than it maintains it row by row (a quarter of
//! the target's work for a table with one key). The keys wait in `rowsync_deferred_keys`, so
//! a crash in between still ends with them added (`add_deferred_keys`).

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Executor};

use super::checkpoint;
use super::SinkError;
use crate::model::definition::SourceDefinition;
use crate::model::name::quote_ident;
use crate::routing::mapping::{Mapping, Projection};

/// The first column of `sql` run with the replica name bound.
async fn names(
    target: &mut MySqlConnection,
    sql: &'static str,
    replica: &str,
) -> Result<Vec<String>, SinkError> {
    let rows: Vec<(String,)> = sqlx::query_as(sql)
        .bind(replica)
        .fetch_all(&mut *target)
        .await
        .map_err(|e| SinkError::db(sql, e))?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// The replica's primary key columns that compare as bytes: whole columns (no key prefix) of
/// a binary string type. The parallel apply hashes their values exactly (`sink::lanes`).
pub async fn binary_key_columns(
    target: &mut MySqlConnection,
    replica: &str,
) -> Result<Vec<String>, SinkError> {
    // Both sides are restricted to the table, so neither reads the whole catalog.
    const SQL: &str = "SELECT s.COLUMN_NAME FROM information_schema.STATISTICS s JOIN information_schema.COLUMNS c ON c.COLUMN_NAME = s.COLUMN_NAME WHERE s.TABLE_SCHEMA = DATABASE() AND s.TABLE_NAME = ? AND c.TABLE_SCHEMA = DATABASE() AND c.TABLE_NAME = ? AND s.INDEX_NAME = 'PRIMARY' AND s.SUB_PART IS NULL AND c.CHARACTER_SET_NAME IS NULL AND c.DATA_TYPE IN ('binary', 'varbinary', 'tinyblob', 'blob', 'mediumblob', 'longblob')";
    let rows: Vec<(String,)> = sqlx::query_as(SQL)
        .bind(replica)
        .bind(replica)
        .fetch_all(&mut *target)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// The replica's column names (empty if it does not exist).
pub async fn columns(
    target: &mut MySqlConnection,
    replica: &str,
) -> Result<Vec<String>, SinkError> {
    names(target, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", replica).await
}

/// The replica's primary key columns, in key order.
pub async fn primary_key(
    target: &mut MySqlConnection,
    replica: &str,
) -> Result<Vec<String>, SinkError> {
    names(target, "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", replica).await
}

/// Makes sure the replica of `def`'s table under `mapping` exists and fits; creates it if
/// missing.
/// With `defer_keys_of` (a pipeline about to copy the table), a new replica's secondary keys
/// are recorded for `add_deferred_keys` instead of created now.
pub async fn ensure_replica(
    target: &mut MySqlConnection,
    def: &SourceDefinition,
    mapping: &Mapping,
    defer_keys_of: Option<&str>,
) -> Result<(), SinkError> {
    let table = &def.table;
    let columns = mapping.columns_of(def)?;
    let replica = mapping.replica_name(table);
    let engine = transactional(target, &replica).await?;
    let incompatible = |reason: String| SinkError::Incompatible {
        table: replica.clone(),
        reason,
    };
    match engine {
        None => {
            let keys = def.secondary_keys(&columns);
            let defer = match defer_keys_of {
                // Recorded before the table exists, so no crash can leave it without them.
                Some(pipeline) if !keys.is_empty() => {
                    checkpoint::defer_keys(target, pipeline, &replica, &keys).await?;
                    true
                }
                _ => false,
            };
            let ddl = def.replica_ddl(&replica, &columns, !defer);
            tracing::info!(replica = %replica, source = %table, deferred_keys = defer, "creating replica table");
            target
                .execute(AssertSqlSafe(ddl.clone()))
                .await
                .map_err(|e| SinkError::db(ddl, e))?;
        }
        Some(()) => {
            // Columns are checked when rows arrive, against the schema of that point of the
            // stream: the source may already have columns whose ALTER is still to be replayed.
            let pk: Vec<String> = primary_key(target, &replica)
                .await?
                .into_iter()
                .map(|n| n.to_ascii_lowercase())
                .collect();
            let want: Vec<String> = def
                .primary_key
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect();
            if pk != want {
                return Err(incompatible(format!(
                    "its primary key is ({}) but the source's is ({})",
                    pk.join(", "),
                    want.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// Checks that an existing replica rowsync did not fill itself (made by hand, or by another
/// tool) can hold the source's values: every mapped column exists with the source's type
/// (integer display widths aside) and a charset that holds the source's text. A narrower
/// column would truncate silently in rowsync's permissive `sql_mode`.
pub async fn check_adopted(
    target: &mut MySqlConnection,
    def: &SourceDefinition,
    mapping: &Mapping,
) -> Result<(), SinkError> {
    let replica = mapping.replica_name(&def.table);
    const SQL: &str = "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";
    let have: Vec<(String, String, Option<String>)> = sqlx::query_as(SQL)
        .bind(&replica)
        .fetch_all(&mut *target)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    // An upsert meeting another row through a unique key of the replica's own would overwrite
    // that row (the source may hold both).
    let unique = names(target, "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY'", &replica).await?;
    if let Some(index) = unique.first() {
        return Err(SinkError::Incompatible {
            table: replica.clone(),
            reason: format!(
                "its unique key `{index}` could make an upsert overwrite another row; drop it or make it a plain key"
            ),
        });
    }
    // A key on a column's prefix makes rows one that the source keeps apart — unless the
    // column is a BLOB or TEXT, which the source can only key on a prefix too.
    let prefixed = names(target, "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' AND SUB_PART IS NOT NULL", &replica).await?;
    let whole_in_source = |column: &String| {
        def.columns
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(column))
            .is_none_or(|(_, line)| {
                let ty = column_type(line).to_ascii_lowercase();
                !(ty.starts_with("blob")
                    || ty.ends_with("blob")
                    || ty.ends_with("text")
                    || ty.starts_with("text"))
            })
    };
    if let Some(column) = prefixed.iter().find(|c| whole_in_source(c)) {
        return Err(SinkError::Incompatible {
            table: replica.clone(),
            reason: format!(
                "its primary key covers only a prefix of `{column}`; give it the whole column"
            ),
        });
    }
    let mapped = mapping.columns_of(def)?;
    // A column of its own must take a value when rowsync writes none.
    const REQUIRED: &str = "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND IS_NULLABLE = 'NO' AND COLUMN_DEFAULT IS NULL AND EXTRA NOT LIKE '%auto_increment%' AND EXTRA NOT LIKE '%GENERATED%'";
    let required: Vec<(String,)> = sqlx::query_as(REQUIRED)
        .bind(&replica)
        .fetch_all(&mut *target)
        .await
        .map_err(|e| SinkError::db(REQUIRED, e))?;
    if let Some((extra,)) = required
        .iter()
        .find(|(n,)| !mapped.iter().any(|m| m.eq_ignore_ascii_case(n)))
    {
        return Err(SinkError::Incompatible {
            table: replica.clone(),
            reason: format!(
                "its column `{extra}`, which no mapped column fills, is NOT NULL without a default"
            ),
        });
    }
    for name in mapped {
        let Some((_, line)) = def.columns.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        let incompatible = |reason: String| SinkError::Incompatible {
            table: replica.clone(),
            reason,
        };
        let Some((_, ty, charset)) = have.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(&name))
        else {
            return Err(incompatible(format!("it has no column `{name}`")));
        };
        let want = column_type(line);
        if normal_type(ty) != normal_type(&want) {
            return Err(incompatible(format!(
                "its column `{name}` is {ty} but the source's is {want}; drop the replica to let rowsync make it, or give it the source's type"
            )));
        }
        let source_charset = column_charset(line).or_else(|| def.default_charset());
        // `utf8` is `utf8mb3`; servers print either.
        let same = |a: &str, b: &str| {
            let norm = |c: &str| match c.to_ascii_lowercase().as_str() {
                "utf8" => "utf8mb3".to_string(),
                other => other.to_string(),
            };
            norm(a) == norm(b)
        };
        if let (Some(have), Some(want)) = (charset, source_charset) {
            if !same(have, &want) && !have.eq_ignore_ascii_case("utf8mb4") {
                return Err(incompatible(format!(
                    "its column `{name}` has charset {have} but the source's has {want}, which it cannot always hold"
                )));
            }
        }
    }
    Ok(())
}

/// The type of a `SHOW CREATE TABLE` column line: the word after the name (with its
/// parentheses) and `unsigned`/`zerofill` after it.
fn column_type(line: &str) -> String {
    let rest = line
        .strip_prefix('`')
        .and_then(|r| {
            let mut chars = r.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == '`' {
                    if chars.peek().map(|(_, n)| *n) == Some('`') {
                        chars.next();
                        continue;
                    }
                    return Some(&r[i + 1..]);
                }
            }
            None
        })
        .unwrap_or(line)
        .trim_start();
    let (mut depth, mut quote) = (0, None);
    let mut end = rest.len();
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'') => quote = Some('\''),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, c) if c.is_whitespace() && depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let mut ty = rest[..end].to_owned();
    for word in rest[end..].split_whitespace() {
        if word.eq_ignore_ascii_case("unsigned") || word.eq_ignore_ascii_case("zerofill") {
            ty.push(' ');
            ty.push_str(word);
        } else {
            break;
        }
    }
    ty
}

/// A column type compared without case and without integer display widths (`int(11)`),
/// which MySQL 8 no longer prints.
fn normal_type(ty: &str) -> String {
    let ty = ty.to_ascii_lowercase();
    // YEAR(4) is the only YEAR; newer servers print it without the width.
    if ty == "year(4)" {
        return "year".into();
    }
    for int in ["tinyint", "smallint", "mediumint", "bigint", "int"] {
        if let Some(rest) = ty.strip_prefix(int).and_then(|r| r.strip_prefix('(')) {
            if let Some(close) = rest.find(')') {
                if rest[..close].chars().all(|c| c.is_ascii_digit()) {
                    return format!("{int}{}", &rest[close + 1..]);
                }
            }
        }
    }
    ty
}

/// The `CHARACTER SET x` of a column line, if it names one.
fn column_charset(line: &str) -> Option<String> {
    let upper = line.to_ascii_uppercase();
    let at = upper.find(" CHARACTER SET ")? + " CHARACTER SET ".len();
    line[at..].split_whitespace().next().map(str::to_owned)
}

/// `Some` when `replica` exists, and `Err` when it is not transactional: rows and checkpoint
/// must commit together, so a MyISAM (or other) replica is refused, never rebuilt.
pub async fn transactional(
    target: &mut MySqlConnection,
    replica: &str,
) -> Result<Option<()>, SinkError> {
    const EXISTS: &str = "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";
    let engine: Option<(Option<String>,)> = sqlx::query_as(EXISTS)
        .bind(replica)
        .fetch_optional(&mut *target)
        .await
        .map_err(|e| SinkError::db(EXISTS, e))?;
    match engine {
        None => Ok(None),
        Some((Some(e),)) if e.eq_ignore_ascii_case("InnoDB") => Ok(Some(())),
        Some((engine,)) => Err(SinkError::Incompatible {
            table: replica.to_owned(),
            reason: format!(
                "it uses engine {}; replicas must be transactional (InnoDB) so rows and checkpoint commit together",
                engine.unwrap_or_default()
            ),
        }),
    }
}

/// Whether the replica exists and can take the rows of `projection`: it has every mapped
/// column and the same primary key. Extra columns are no harm (they keep their defaults).
/// A replica that is not transactional is an error (see `transactional`).
pub async fn fits(
    target: &mut MySqlConnection,
    projection: &Projection,
) -> Result<bool, SinkError> {
    if transactional(target, &projection.replica).await?.is_none() {
        return Ok(false);
    }
    let have = columns(target, &projection.replica).await?;
    let has_all = projection
        .names
        .iter()
        .all(|n| have.iter().any(|h| h.eq_ignore_ascii_case(n)));
    let pk = primary_key(target, &projection.replica).await?;
    let same_key = pk.len() == projection.key.len()
        && projection
            .key
            .iter()
            .zip(&pk)
            .all(|(&k, p)| projection.names[k].eq_ignore_ascii_case(p));
    Ok(!have.is_empty() && has_all && same_key)
}

/// Drops a replica table rowsync filled and no mapping fills any more, with what rowsync
/// recorded about it.
pub async fn drop_unused(
    target: &mut MySqlConnection,
    pipeline: &str,
    replica: &str,
) -> Result<(), SinkError> {
    let drop = format!("DROP TABLE IF EXISTS {}", quote_ident(replica));
    target
        .execute(AssertSqlSafe(drop.clone()))
        .await
        .map_err(|e| SinkError::db(drop, e))?;
    checkpoint::forget_replica(target, pipeline, replica).await?;
    checkpoint::clear_deferred_keys(target, pipeline, replica).await
}

/// Drops the replica of `def`'s table under `mapping` and creates it again from `def`; with
/// `defer_keys_of`, its secondary keys wait for the copy that follows.
pub async fn rebuild(
    target: &mut MySqlConnection,
    def: &SourceDefinition,
    mapping: &Mapping,
    defer_keys_of: Option<&str>,
) -> Result<(), SinkError> {
    let replica = mapping.replica_name(&def.table);
    let drop = format!("DROP TABLE IF EXISTS {}", quote_ident(&replica));
    tracing::info!(replica = %replica, source = %def.table, "making the replica again from the source's current definition");
    target
        .execute(AssertSqlSafe(drop.clone()))
        .await
        .map_err(|e| SinkError::db(drop, e))?;
    if let Some(pipeline) = defer_keys_of {
        checkpoint::clear_deferred_keys(target, pipeline, &replica).await?;
    }
    ensure_replica(target, def, mapping, defer_keys_of).await
}

/// Adds the secondary keys deferred by `ensure_replica` that a replica still lacks, in one
/// `ALTER TABLE` per replica, and forgets them. Idempotent: keys already there are skipped.
pub async fn add_deferred_keys(
    target: &mut MySqlConnection,
    pipeline: &str,
) -> Result<(), SinkError> {
    for (replica, keys) in checkpoint::deferred_keys(target, pipeline).await? {
        const HAVE: &str = "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";
        let have: Vec<(String,)> = sqlx::query_as(HAVE)
            .bind(&replica)
            .fetch_all(&mut *target)
            .await
            .map_err(|e| SinkError::db(HAVE, e))?;
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| !have.iter().any(|(n,)| n.eq_ignore_ascii_case(&k.name)))
            .map(|k| format!("ADD {}", k.definition))
            .collect();
        // A replica that is gone (dropped by hand) has nothing to add.
        if !have.is_empty() && !missing.is_empty() {
            let ddl = format!(
                "ALTER TABLE {} {}",
                quote_ident(&replica),
                missing.join(", ")
            );
            tracing::info!(replica = %replica, keys = missing.len(), "adding the replica's secondary keys after its copy");
            target
                .execute(AssertSqlSafe(ddl.clone()))
                .await
                .map_err(|e| SinkError::db(ddl, e))?;
        }
        checkpoint::clear_deferred_keys(target, pipeline, &replica).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::name::TableName;
    use crate::routing::mapping::MappingError;

    const CREATE: &str = "CREATE TABLE `product` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `code` varchar(32) NOT NULL,
  `model` varchar(100) CHARACTER SET latin1 COLLATE latin1_swedish_ci DEFAULT NULL,
  `category_id` int(11) NOT NULL,
  `total` int(11) GENERATED ALWAYS AS (`category_id` * 2) VIRTUAL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_code` (`code`),
  KEY `idx_cat` (`category_id`),
  KEY `idx_model` (`model`(10),`code`),
  CONSTRAINT `fk_cat` FOREIGN KEY (`category_id`) REFERENCES `category` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB AUTO_INCREMENT=42 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci";

    #[test]
    fn replica_ddl_keeps_types_and_drops_unique_and_foreign_keys() {
        let def = SourceDefinition::parse(TableName::new("p", "product"), CREATE).unwrap();
        assert_eq!(def.primary_key, vec!["id"]);
        let all = Mapping {
            source: "p.product".parse().unwrap(),
            table: None,
            columns: None,
            filter: None,
        };
        let cols = all.columns_of(&def).unwrap();
        let ddl = def.replica_ddl("product_copy", &cols, true);
        assert!(ddl.starts_with("CREATE TABLE `product_copy` ("), "{ddl}");
        assert!(
            ddl.contains("`model` varchar(100) CHARACTER SET latin1"),
            "{ddl}"
        );
        assert!(ddl.contains("KEY `idx_cat` (`category_id`)"), "{ddl}");
        assert!(!ddl.contains("UNIQUE"), "{ddl}");
        assert!(!ddl.contains("FOREIGN"), "{ddl}");
        assert!(!ddl.contains("GENERATED"), "{ddl}");
        assert!(
            ddl.ends_with(
                "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 DEFAULT COLLATE=utf8mb4_general_ci"
            ),
            "{ddl}"
        );
        // Deferred for a copy: the same keys, by name, to add afterwards.
        let keys = def.secondary_keys(&cols);
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["idx_cat", "idx_model"]);
        assert_eq!(keys[1].definition, "KEY `idx_model` (`model`(10),`code`)");
        let bare = def.replica_ddl("product_copy", &cols, false);
        assert!(!bare.contains("idx_"), "{bare}");
    }

    #[test]
    fn column_types_compare_without_display_widths() {
        assert_eq!(
            column_type("`id` bigint(20) unsigned NOT NULL AUTO_INCREMENT"),
            "bigint(20) unsigned"
        );
        assert_eq!(
            column_type("`e` enum('a b','c') DEFAULT NULL"),
            "enum('a b','c')"
        );
        assert_eq!(
            column_type("`we``ird` varchar(10) CHARACTER SET latin1"),
            "varchar(10)"
        );
        assert_eq!(
            normal_type("bigint(20) unsigned"),
            normal_type("BIGINT unsigned")
        );
        assert_ne!(normal_type("varchar(50)"), normal_type("varchar(100)"));
        assert_eq!(
            column_charset("`m` varchar(100) CHARACTER SET latin1 COLLATE latin1_swedish_ci"),
            Some("latin1".into())
        );
        let def = SourceDefinition::parse(TableName::new("p", "product"), CREATE).unwrap();
        assert_eq!(def.default_charset().as_deref(), Some("utf8mb4"));
    }

    #[test]
    fn column_subsets_must_keep_the_key() {
        let def = SourceDefinition::parse(TableName::new("p", "product"), CREATE).unwrap();
        let subset = Mapping {
            source: "p.product".parse().unwrap(),
            table: Some("prod".into()),
            columns: Some(vec!["id".into(), "code".into()]),
            filter: None,
        };
        let cols = subset.columns_of(&def).unwrap();
        let ddl = def.replica_ddl("prod", &cols, true);
        assert!(!ddl.contains("idx_cat"), "{ddl}");
        let no_key = Mapping {
            columns: Some(vec!["code".into()]),
            ..subset
        };
        assert!(matches!(
            no_key.columns_of(&def),
            Err(MappingError::MissingKey { .. })
        ));
    }
}

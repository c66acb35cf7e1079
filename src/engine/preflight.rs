//! The pre-flight check behind `rowsync check`: connects to the source and every target (never
//! opening a binlog dump) and reports each problem as one line with its fix. Problems make the
//! check fail; warnings do not.

use std::fmt;

use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::config::Config;
use crate::model::name::TableName;
use crate::model::position::Flavor;
use crate::routing::mapping::Router;
use crate::sink::{checkpoint, target};
use crate::source::catalog;
use crate::source::conn::source_opts;
use crate::source::info::SourceInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag} {}", self.message)
    }
}

#[derive(Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, level: Level, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            message: message.into(),
        });
    }
    fn ok(&mut self, m: impl Into<String>) {
        self.push(Level::Ok, m)
    }
    fn warn(&mut self, m: impl Into<String>) {
        self.push(Level::Warn, m)
    }
    fn fail(&mut self, m: impl Into<String>) {
        self.push(Level::Fail, m)
    }

    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.level != Level::Fail)
    }
}

/// Runs every check of `config`.
pub async fn run(config: &Config) -> Report {
    let mut report = Report::default();
    check_source(config, &mut report).await;
    for t in &config.targets {
        match target::connect(t).await {
            Ok(mut conn) => {
                match checkpoint::ensure_tables(&mut conn).await {
                    Ok(()) => report.ok(format!("target `{}` is reachable and writable", t.name)),
                    Err(e) => report.fail(format!(
                        "target `{}` refuses rowsync's tables: {e} — grant CREATE, INSERT, UPDATE, DELETE, SELECT on its database",
                        t.name
                    )),
                }
                check_read_only(config, t, &mut conn, &mut report).await;
            }
            Err(e) => report.fail(format!(
                "target `{}` is unreachable: {e} — check targets.{}.url and that the server runs",
                t.name, t.name
            )),
        }
    }
    report
}

/// Replica tables are rowsync's to write: any other account that may change them (an
/// application user granted too much) is reported with the REVOKE that fixes it.
async fn check_read_only(
    config: &Config,
    t: &crate::config::TargetConfig,
    conn: &mut sqlx::mysql::MySqlConnection,
    report: &mut Report,
) {
    let mut replicas: Vec<String> = checkpoint::replicas(conn, &config.pipeline)
        .await
        .map(|r| r.into_iter().map(|r| r.replica).collect())
        .unwrap_or_default();
    replicas.extend(
        config
            .mappings
            .iter()
            .filter(|m| m.targets.iter().any(|n| n.eq_ignore_ascii_case(&t.name)))
            .filter_map(|m| {
                m.table
                    .clone()
                    .or_else(|| m.source.exact().map(|e| e.table))
            }),
    );
    match target::replica_writers(conn, &replicas).await {
        Ok(writers) if writers.is_empty() => report.ok(format!(
            "target `{}`: no other account may change its replica tables",
            t.name
        )),
        Ok(writers) => {
            for w in writers {
                let privileges = w.privileges.join(", ");
                report.warn(format!(
                    "target `{}`: account {} may {privileges} replica tables (granted ON {}) — replicas are rowsync's to write; fix: REVOKE {privileges} ON {} FROM {};",
                    t.name, w.account, w.on, w.on, w.account
                ));
            }
        }
        Err(e) => report.warn(format!(
            "target `{}`: cannot list other accounts' privileges on the replica tables ({e}) — grant rowsync SELECT on mysql.user, mysql.db and mysql.tables_priv to check",
            t.name
        )),
    }
}

async fn check_source(config: &Config, report: &mut Report) {
    let opts = match source_opts(&config.source.url, config.source.tls.as_ref()) {
        Ok(o) => o,
        Err(e) => return report.fail(format!("source.url is not usable: {e}")),
    };
    let mut conn = match crate::source::conn::connect(&opts).await {
        Ok(c) => c,
        Err(e) => {
            return report.fail(format!(
                "source is unreachable: {e} — check source.url and that the server runs"
            ))
        }
    };
    let info = match SourceInfo::read(&mut conn).await {
        Ok(i) => i,
        Err(e) => return report.fail(format!("cannot read source settings: {e}")),
    };
    report.ok(format!(
        "source is {} (server_id {})",
        info.version, info.identity.server_id
    ));
    if !info.log_bin {
        report.fail("source has log_bin OFF — start it with --log-bin (and binlog_format=ROW)");
    }
    if !info.binlog_format.eq_ignore_ascii_case("ROW") {
        report.fail(format!(
            "source binlog_format is {} — set binlog_format=ROW (global and in my.cnf); rowsync reads row events only",
            info.binlog_format
        ));
    }
    if !info.binlog_row_image.eq_ignore_ascii_case("FULL") {
        report.fail(format!(
            "source binlog_row_image is {} — set binlog_row_image=FULL; rowsync needs whole rows to upsert",
            info.binlog_row_image
        ));
    }
    const FALLBACK: &str = "rowsync falls back to information_schema for column names and keys, read when a table is first seen and after each DDL on it, and checked against every TABLE_MAP's column types (a mismatch stops the table); a rename or reorder of same-typed columns between the stream position and now goes unseen";
    match info.binlog_row_metadata.as_deref() {
        Some(m) if m.eq_ignore_ascii_case("FULL") => {}
        Some(m) => report.warn(format!(
            "source binlog_row_metadata is {m}: {FALLBACK} — set binlog_row_metadata=FULL"
        )),
        None => report.warn(format!(
            "source has no binlog_row_metadata setting (MySQL before 8.0.1): {FALLBACK}"
        )),
    }
    match conn.query_first::<String, _>("SELECT @@sync_binlog").await {
        Ok(Some(v)) if v != "1" => report.warn(format!(
            "source sync_binlog is {v} — a source crash can lose binlog events its replicas then never see; set sync_binlog=1"
        )),
        _ => {}
    }
    check_grants(&mut conn, info.flavor(), report).await;
    check_server_ids(&mut conn, config, &info, report).await;
    check_tables(&mut conn, config, report).await;
}

async fn check_grants(conn: &mut Conn, flavor: Flavor, report: &mut Report) {
    let grants: Vec<String> = match conn.query("SHOW GRANTS").await {
        Ok(g) => g,
        Err(e) => return report.warn(format!("cannot read grants: {e}")),
    };
    let global: Vec<String> = grants
        .iter()
        .filter(|g| g.contains(" ON *.* "))
        .map(|g| g.to_ascii_uppercase())
        .collect();
    let has = |p: &str| {
        global
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || g.contains(p))
    };
    let mut missing = Vec::new();
    if !has("REPLICATION SLAVE") && !has("REPLICATION REPLICA") {
        missing.push("REPLICATION SLAVE");
    }
    let monitor = match flavor {
        Flavor::Mariadb => has("BINLOG MONITOR") || has("REPLICATION CLIENT") || has("SUPER"),
        Flavor::Mysql => has("REPLICATION CLIENT") || has("SUPER"),
    };
    if !monitor {
        missing.push(match flavor {
            Flavor::Mariadb => "BINLOG MONITOR",
            Flavor::Mysql => "REPLICATION CLIENT",
        });
    }
    let select = has("SELECT")
        || grants
            .iter()
            .any(|g| g.to_ascii_uppercase().contains("GRANT SELECT"));
    if !select {
        missing.push("SELECT");
    }
    if missing.is_empty() {
        report.ok("source user has the replication privileges");
    } else {
        report.fail(format!(
            "source user lacks {} — GRANT {} ON *.* TO the rowsync user",
            missing.join(", "),
            missing.join(", ")
        ));
    }
}

async fn check_server_ids(
    conn: &mut Conn,
    config: &Config,
    info: &SourceInfo,
    report: &mut Report,
) {
    let ours: Vec<u32> = (0..config.targets.len() as u32)
        .map(|i| config.source.server_id + i)
        .collect();
    if ours.contains(&info.identity.server_id) {
        report.fail(format!(
            "source.server_id range {}..={} includes the source's own server_id {} — pick another base",
            ours[0],
            ours[ours.len() - 1],
            info.identity.server_id
        ));
    }
    let hosts: Result<Vec<mysql_async::Row>, _> = conn.query("SHOW SLAVE HOSTS").await;
    match hosts {
        Ok(rows) => {
            let live: Vec<u32> = rows.iter().filter_map(|r| r.get::<u32, _>(0)).collect();
            let clash: Vec<u32> = ours
                .iter()
                .copied()
                .filter(|id| live.contains(id))
                .collect();
            if clash.is_empty() {
                report.ok(format!(
                    "replica server ids {}..={} are free",
                    ours[0],
                    ours[ours.len() - 1]
                ));
            } else {
                report.fail(format!(
                    "server id(s) {clash:?} are used by a live replica of the source — two dump connections with one id make the server drop the first; change source.server_id (or stop the other rowsync)"
                ));
            }
        }
        Err(e) => report.warn(format!("cannot list the source's replicas: {e}")),
    }
}

async fn check_tables(conn: &mut Conn, config: &Config, report: &mut Report) {
    let mut selected: Vec<TableName> = Vec::new();
    for t in &config.targets {
        let router = Router::for_target(config, &t.name);
        let tables = match catalog::tables(conn, |t| router.selects(t)).await {
            Ok(t) => t,
            Err(e) => return report.fail(format!("cannot list source tables: {e}")),
        };
        for table in tables {
            for m in router.mappings_for(&table) {
                match catalog::definition(conn, &table).await {
                    Ok(def) => {
                        if let Err(e) = m.columns_of(&def) {
                            report.fail(format!("mapping of {table} to `{}`: {e}", t.name));
                        }
                        let missing =
                            m.filter.iter().flat_map(|f| f.columns()).find(|c| {
                                !def.columns.iter().any(|(n, _)| n.eq_ignore_ascii_case(c))
                            });
                        if let Some(c) = missing {
                            report.fail(format!(
                                "mapping of {table} to `{}`: the row filter names column `{c}`, which the table does not have",
                                t.name
                            ));
                        }
                    }
                    Err(e) => report.fail(format!("{table}: {e}")),
                }
            }
            if !selected.contains(&table) {
                selected.push(table);
            }
        }
    }
    for m in &config.mappings {
        if let Some(exact) = m.source.exact() {
            if !selected.contains(&exact) {
                report.warn(format!(
                    "mapping source {exact} does not exist on the source yet; it is picked up when created"
                ));
            }
        }
    }
    if selected.is_empty() {
        return;
    }
    report.ok(format!(
        "{} selected table(s): {}",
        selected.len(),
        selected
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let fks: Vec<(String, String, String, String, String, String, String)> = match conn
        .query(
            "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME, DELETE_RULE, UPDATE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE DELETE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT') OR UPDATE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT')",
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => return report.warn(format!("cannot read foreign keys: {e}")),
    };
    for (db, table, name, ref_db, ref_table, on_delete, on_update) in fks {
        let child = TableName::new(&db, &table);
        let parent = TableName::new(&ref_db, &ref_table);
        if selected.contains(&child) || selected.contains(&parent) {
            report.fail(format!(
                "foreign key {name} on {child} → {parent} has ON DELETE {on_delete} / ON UPDATE {on_update}: the rows it changes are not in the binlog, so replicas of {child} would drift — use RESTRICT/NO ACTION and let the application delete children, or do not select {child}"
            ));
        }
    }
}

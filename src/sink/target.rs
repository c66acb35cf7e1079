//! Connections to a target database: URL, TLS and the session settings (UTC, and a strict
//! `sql_mode` that still accepts every value the source holds).

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Executor};

use super::SinkError;
use crate::config::{TargetConfig, TlsConfig, TlsVerify};
use crate::model::name::quote_ident;
use crate::model::sql::session_init;

/// Connect options for a target; errors name the bad URL part.
pub fn connect_options(
    url: &str,
    tls: Option<&TlsConfig>,
) -> Result<MySqlConnectOptions, SinkError> {
    let url = url.replacen("mariadb://", "mysql://", 1);
    let mut opts =
        MySqlConnectOptions::from_str(&url).map_err(|e| SinkError::db("parse target URL", e))?;
    opts = opts
        .statement_cache_capacity(256)
        .timezone(Some("+00:00".to_string()));
    opts = match tls {
        None => opts.ssl_mode(MySqlSslMode::Disabled),
        Some(tls) => {
            let mode = match tls.verify {
                TlsVerify::Full => MySqlSslMode::VerifyIdentity,
                TlsVerify::Ca => MySqlSslMode::VerifyCa,
                TlsVerify::None => MySqlSslMode::Required,
            };
            let mut o = opts.ssl_mode(mode);
            if let Some(ca) = &tls.ca {
                o = o.ssl_ca(ca);
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                o = o.ssl_client_cert(cert).ssl_client_key(key);
            }
            o
        }
    };
    Ok(opts.disable_statement_logging())
}

/// The `sql_mode` of target sessions: the source sessions' mode made strict, so a value a
/// replica column cannot hold (a column narrower than the source's, changed by hand) is an
/// error that stops the target (the table, in a copy) rather than a silent truncation. The one value the source may
/// hold that strict mode refuses, an ENUM's empty error value, is written in the source
/// sessions' mode (`RowWriter`), as are followed ALTERs (`Applier::follow_alter`).
pub const TARGET_SQL_MODE: &str =
    "STRICT_TRANS_TABLES,ALLOW_INVALID_DATES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION";

/// `SET SESSION sql_mode` to `mode`.
pub async fn set_sql_mode(conn: &mut MySqlConnection, mode: &str) -> Result<(), SinkError> {
    const SQL: &str = "SET SESSION sql_mode = ?";
    sqlx::query(SQL)
        .bind(mode)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Lets the server close `conn`'s session after `timeout` without a statement (see
/// `sink::lock`: a frozen process's sessions must not outlive its lock for long).
pub async fn set_wait_timeout(
    conn: &mut MySqlConnection,
    timeout: std::time::Duration,
) -> Result<(), SinkError> {
    exec(
        conn,
        &format!("SET SESSION wait_timeout = {}", timeout.as_secs().max(1)),
    )
    .await
}

/// How long opening a target session may take: behind a network partition (packets vanish,
/// nothing is refused) a connect would otherwise wait for as long as it lasts.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens a session on `target` with rowsync's session settings, within `CONNECT_TIMEOUT`.
pub async fn connect(target: &TargetConfig) -> Result<MySqlConnection, SinkError> {
    let opts = connect_options(&target.url, target.tls.as_ref())?;
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, opts.connect())
        .await
        .map_err(|_| SinkError::ConnectTimeout {
            target: target.name.clone(),
            after: CONNECT_TIMEOUT,
        })?
        .map_err(|e| SinkError::db(format!("connect to target `{}`", target.name), e))?;
    let strict = format!("SET sql_mode = '{TARGET_SQL_MODE}'");
    for stmt in session_init().into_iter().chain([strict]) {
        conn.execute(AssertSqlSafe(stmt.clone()))
            .await
            .map_err(|e| SinkError::db(stmt, e))?;
    }
    Ok(conn)
}

/// Runs one statement of rowsync's own (transaction control, DDL) on a target.
pub async fn exec(conn: &mut MySqlConnection, sql: &str) -> Result<(), SinkError> {
    conn.execute(AssertSqlSafe(sql.to_owned()))
        .await
        .map_err(|e| SinkError::db(sql, e))?;
    Ok(())
}

/// An account other than rowsync's own that may change replica tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaWriter {
    /// `'user'@'host'`
    pub account: String,
    /// Where the grant applies: `*.*`, `` `db`.* `` or `` `db`.`table` ``.
    pub on: String,
    /// Of INSERT, UPDATE, DELETE, ALTER, DROP.
    pub privileges: Vec<&'static str>,
}

const WRITES: [&str; 5] = ["INSERT", "UPDATE", "DELETE", "ALTER", "DROP"];

/// The accounts besides the connected one that may INSERT, UPDATE, DELETE, ALTER or DROP the
/// replica tables of this target's database (`replicas`: their names): globally, on the
/// database, or on one of those tables. Reads `mysql.user`, `mysql.db` and
/// `mysql.tables_priv`, which needs SELECT on them.
pub async fn replica_writers(
    conn: &mut MySqlConnection,
    replicas: &[String],
) -> Result<Vec<ReplicaWriter>, SinkError> {
    let account =
        |u: &str, h: &str| format!("'{}'@'{}'", u.replace('\'', "''"), h.replace('\'', "''"));
    const ME: &str = "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), SUBSTRING_INDEX(CURRENT_USER(), '@', -1), DATABASE()";
    let (me_user, me_host, db): (String, String, String) = sqlx::query_as(ME)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| SinkError::db(ME, e))?;
    let me = account(&me_user, &me_host);
    let flags = |row: [&str; 5]| -> Vec<&'static str> {
        WRITES
            .iter()
            .zip(row)
            .filter(|(_, v)| *v == "Y")
            .map(|(p, _)| *p)
            .collect()
    };
    let mut out = Vec::new();
    const GLOBAL: &str = "SELECT User, Host, Insert_priv, Update_priv, Delete_priv, Alter_priv, Drop_priv FROM mysql.user";
    type Row = (String, String, String, String, String, String, String);
    let rows: Vec<Row> = sqlx::query_as(GLOBAL)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(GLOBAL, e))?;
    for (u, h, i, up, d, a, dr) in rows {
        out.push(ReplicaWriter {
            account: account(&u, &h),
            on: "*.*".into(),
            privileges: flags([&i, &up, &d, &a, &dr]),
        });
    }
    const DB: &str = "SELECT User, Host, Insert_priv, Update_priv, Delete_priv, Alter_priv, Drop_priv FROM mysql.db WHERE ? LIKE Db";
    let rows: Vec<Row> = sqlx::query_as(DB)
        .bind(&db)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(DB, e))?;
    for (u, h, i, up, d, a, dr) in rows {
        out.push(ReplicaWriter {
            account: account(&u, &h),
            on: format!("{}.*", quote_ident(&db)),
            privileges: flags([&i, &up, &d, &a, &dr]),
        });
    }
    const TABLES: &str =
        "SELECT User, Host, Table_name, Table_priv FROM mysql.tables_priv WHERE Db = ?";
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(TABLES)
        .bind(&db)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(TABLES, e))?;
    for (u, h, table, privs) in rows {
        if !replicas.iter().any(|r| r == &table) {
            continue;
        }
        let granted: Vec<String> = privs
            .split(',')
            .map(|p| p.trim().to_ascii_uppercase())
            .collect();
        out.push(ReplicaWriter {
            account: account(&u, &h),
            on: format!("{}.{}", quote_ident(&db), quote_ident(&table)),
            privileges: WRITES
                .iter()
                .filter(|w| granted.iter().any(|g| g == *w))
                .copied()
                .collect(),
        });
    }
    out.retain(|w| w.account != me && !w.privileges.is_empty());
    Ok(out)
}

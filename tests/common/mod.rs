//! Test harness: throwaway `mariadbd` servers on free ports in temp dirs, the `rowsync` binary
//! run against them, and helpers to compare replicas with the source.
//!
//! A template datadir is made once (by `mariadb-install-db`) under `target/` and copied for
//! each server, so a server starts in well under a second. Durability is relaxed on all of
//! them (`innodb_flush_log_at_trx_commit=2`, `sync_binlog=0`): tests kill rowsync, never the
//! servers, unless a test says otherwise.
#![allow(dead_code)]

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value};
pub use rowsync::local::Role;
use rowsync::local::{Binaries, LocalServer};

static SERVER_ID: AtomicU32 = AtomicU32::new(1);

fn binaries() -> Binaries {
    Binaries::find().unwrap_or_else(|e| panic!("{e}"))
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is per-package scratch space under target/.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// The shared template datadir, created on first use by any test process. Threads of one
/// process create it once; processes race through an atomic rename of their own staging dir.
fn template() -> PathBuf {
    static TEMPLATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(make_template).clone()
}

fn make_template() -> PathBuf {
    let dir = target_dir().join("mariadb-template-v1");
    if dir.join("mysql").exists() {
        return dir;
    }
    let staging = target_dir().join(format!(
        "mariadb-template-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let _ = std::fs::remove_dir_all(&staging);
    rowsync::local::install(&binaries(), &staging).unwrap_or_else(|e| panic!("{e}"));
    // Another process may have won the race; either copy is fine.
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

/// A running throwaway server with its own copy of the template datadir.
pub struct Server {
    inner: LocalServer,
    pub port: u16,
    pub server_id: u32,
    dir: tempfile::TempDir,
}

impl Server {
    pub fn start(role: Role) -> Server {
        Self::start_with(role, &[])
    }

    pub fn start_with(role: Role, extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("rowsync-db-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        copy_dir(&template(), &data);
        let server_id =
            1000 + SERVER_ID.fetch_add(1, Ordering::SeqCst) + std::process::id() % 10_000 * 10;
        let inner = LocalServer::start(&binaries(), &data, dir.path(), role, server_id, extra)
            .unwrap_or_else(|e| panic!("{e}"));
        Server {
            port: inner.port,
            server_id,
            inner,
            dir,
        }
    }

    /// `mysql://root@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        self.inner.url(db)
    }

    pub async fn conn(&self, db: &str) -> Conn {
        let opts = OptsBuilder::from_opts(Opts::from_url(&self.url(db)).unwrap())
            .prefer_socket(false)
            .init(vec!["SET time_zone = '+00:00'", "SET NAMES utf8mb4"]);
        Conn::new(opts).await.expect("connect to test server")
    }

    /// Stops the server (SIGKILL when `hard`), keeping its data for `resume`.
    pub fn stop(&mut self, hard: bool) {
        self.inner.stop(hard);
    }

    pub fn resume(&mut self) {
        self.inner.resume().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }
}

/// Runs SQL statements one by one.
pub async fn exec(conn: &mut Conn, statements: &[&str]) {
    for s in statements {
        conn.query_drop(*s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// Every row of `table` ordered by `order`, each rendered as text, for exact comparison.
pub async fn dump(conn: &mut Conn, table: &str, order: &str) -> Vec<String> {
    try_dump(conn, table, order)
        .await
        .unwrap_or_else(|e| panic!("dump {table}: {e}"))
}

/// `dump`, with the error (e.g. a replica table not created yet) returned.
pub async fn try_dump(
    conn: &mut Conn,
    table: &str,
    order: &str,
) -> Result<Vec<String>, mysql_async::Error> {
    try_rows(conn, &format!("SELECT * FROM {table} ORDER BY {order}")).await
}

/// Polls until `table` on `replica` equals the source's, or panics with the difference.
pub async fn wait_equal(
    source: &mut Conn,
    replica: &mut Conn,
    table: &str,
    order: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let a = dump(source, table, order).await;
        // A replica table that does not exist (yet) never counts as equal.
        let b = try_dump(replica, table, order).await.ok();
        if b.as_ref() == Some(&a) {
            return;
        }
        let b = b.unwrap_or_default();
        if Instant::now() > deadline {
            let first_diff = a
                .iter()
                .zip(b.iter())
                .find(|(x, y)| x != y)
                .map(|(x, y)| format!("source: {x}\nreplica: {y}"))
                .unwrap_or_else(|| format!("source has {} rows, replica {}", a.len(), b.len()));
            panic!("{table} did not converge within {within:?}:\n{first_diff}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every row `sql` returns, rendered as text (an error, e.g. a missing table, as `Err`).
pub async fn try_rows(conn: &mut Conn, sql: &str) -> Result<Vec<String>, mysql_async::Error> {
    let rows: Vec<Row> = conn.query(sql).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    Value::NULL => "NULL".to_string(),
                    Value::Bytes(b) => format!("'{}'", String::from_utf8_lossy(&b)),
                    other => other.as_sql(true),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect())
}

/// Polls until `replica_sql` on the replica returns what `source_sql` returns on the source
/// (a filtered or projected mapping), or panics with the difference.
pub async fn wait_same_rows(
    source: &mut Conn,
    source_sql: &str,
    replica: &mut Conn,
    replica_sql: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let a = try_rows(source, source_sql)
            .await
            .unwrap_or_else(|e| panic!("{source_sql}: {e}"));
        let b = try_rows(replica, replica_sql).await;
        if b.as_ref().ok() == Some(&a) {
            return;
        }
        if Instant::now() > deadline {
            panic!("`{replica_sql}` did not converge to `{source_sql}` within {within:?}:\nsource: {a:?}\nreplica: {b:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `rowsync status` output for `cfg`.
pub fn status_text(cfg: &Path) -> String {
    rowsync_cmd(&["status", "--config", cfg.to_str().unwrap()]).1
}

/// Sends SIGHUP (reload the configuration) to `pid`.
pub fn hup(pid: u32) {
    assert!(Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
}

/// Writes a rowsync config file into `dir` and returns its path.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("rowsync.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// The standard config: one source, targets named by (name, url), mappings as TOML text.
pub fn config_text(
    source: &Server,
    server_id: u32,
    targets: &[(&str, String)],
    mappings: &str,
    extra_source: &str,
) -> String {
    let mut s = format!(
        "[source]\nurl = \"{}\"\nserver_id = {server_id}\nheartbeat_secs = 1\n{extra_source}\n",
        source.url("")
    );
    for (name, url) in targets {
        s.push_str(&format!(
            "\n[[targets]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
    }
    s.push('\n');
    s.push_str(mappings);
    s
}

/// A running `rowsync run`.
pub struct Rowsync {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Rowsync {
    pub fn start(config: &Path) -> Rowsync {
        let log = config.with_extension(format!(
            "log.{}",
            Instant::now().elapsed().as_nanos() + rand_suffix()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rowsync"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("ROWSYNC_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn rowsync");
        Rowsync {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "rowsync did not exit within 30 s of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; returns the log then.
    pub async fn wait_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log_text();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in the log within {within:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn rand_suffix() -> u128 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    RandomState::new().hash_one(std::process::id()) as u128 % 1_000_000
}

impl Drop for Rowsync {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- rowsync log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        self.kill9();
    }
}

/// Runs a `rowsync` subcommand to completion; returns (exit code, stdout + stderr).
pub fn rowsync_cmd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rowsync"))
        .args(args)
        .output()
        .expect("run rowsync");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The product/category/batch schema of the examples.
pub const PRODUCT_SCHEMA: &[&str] = &[
    "CREATE DATABASE product",
    "CREATE TABLE product.category (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, parent_id INT NULL) ENGINE=InnoDB",
    "CREATE TABLE product.product (id BIGINT UNSIGNED PRIMARY KEY, code VARCHAR(32) NOT NULL, model VARCHAR(100), category_id INT NOT NULL, production_year YEAR, price DECIMAL(12,2), version INT NOT NULL DEFAULT 0, UNIQUE KEY uk_code (code), KEY idx_cat (category_id)) ENGINE=InnoDB",
    "CREATE TABLE product.batch (product_id BIGINT UNSIGNED NOT NULL, batch_no INT NOT NULL, qty INT NOT NULL, made_at DATETIME(6) NOT NULL, PRIMARY KEY (product_id, batch_no)) ENGINE=InnoDB",
    "CREATE TABLE product.ignored (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
];

pub const PRODUCT_MAPPINGS: &str = r#"
[[mappings]]
source = "product.product"
targets = ["order", "purchase"]

[[mappings]]
source = "product.category"
targets = ["order", "purchase"]

[[mappings]]
source = "product.batch"
targets = ["order", "purchase"]
"#;

/// Waits until the target's initial copy is done and its stream has a checkpoint.
pub async fn wait_started(target: &Server, db: &str, rowsync: &Rowsync) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = target.conn(db).await;
    loop {
        let n: Option<u64> = conn
            .query_first("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'rowsync_checkpoint'")
            .await
            .unwrap();
        if n == Some(1) {
            let c: Option<u64> = conn
                .query_first("SELECT COUNT(*) FROM rowsync_checkpoint WHERE phase = 'streaming'")
                .await
                .unwrap();
            if c == Some(1) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "rowsync did not start; log:\n{}",
            rowsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A source with `schema` applied and one target server per name, each with database
/// `<name>_db`, plus a config replicating `mappings` into them.
pub struct Cluster {
    pub source: Server,
    pub targets: Vec<Server>,
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
}

impl Cluster {
    /// Starts `rowsync run` and waits until every target's pipeline has started.
    pub async fn run(&self) -> Rowsync {
        let rowsync = Rowsync::start(&self.cfg);
        for (server, db) in self.targets.iter().zip(self.databases()) {
            wait_started(server, &db, &rowsync).await;
        }
        rowsync
    }

    fn databases(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.cfg).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("url = \"mysql://"))
            .filter_map(|rest| rest.split_once('/'))
            .map(|(_, db)| db.trim_end_matches('"').to_string())
            .filter(|db| !db.is_empty())
            .collect()
    }

    /// Appends `text` (TOML sections) to the config file.
    pub fn append_config(&self, text: &str) {
        let config = std::fs::read_to_string(&self.cfg).unwrap();
        std::fs::write(&self.cfg, format!("{config}{text}")).unwrap();
    }

    /// Points the config's URLs of `proxy`'s server (the source or a target) at the proxy.
    pub fn route_through(&self, proxy: &proxy::Proxy) {
        let config = std::fs::read_to_string(&self.cfg).unwrap();
        let routed = proxy.route(&config);
        assert_ne!(routed, config, "no URL of the proxy's server in the config");
        std::fs::write(&self.cfg, routed).unwrap();
    }

    /// Replaces `from` by `to` in the config file (e.g. another account in a target URL).
    pub fn edit_config(&self, from: &str, to: &str) {
        let config = std::fs::read_to_string(&self.cfg).unwrap();
        assert!(
            config.contains(from),
            "no `{from}` in the config:\n{config}"
        );
        std::fs::write(&self.cfg, config.replace(from, to)).unwrap();
    }

    /// A session on the source's `product` database.
    pub async fn source_conn(&self) -> Conn {
        self.source.conn("product").await
    }

    /// A session on target `i`'s database.
    pub async fn replica_conn(&self, i: usize) -> Conn {
        let db = self.databases()[i].clone();
        self.targets[i].conn(&db).await
    }

    /// Asserts that `status` shows `table` as needing a re-copy, with `reason` in the text.
    pub fn assert_needs_recopy(&self, table: &str, reason: &str) {
        let (code, text) = rowsync_cmd(&["status", "--config", self.cfg.to_str().unwrap()]);
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains(&format!("table {table} NEEDS RE-COPY")) && text.contains(reason),
            "expected {table} to need a re-copy ({reason}):\n{text}"
        );
    }

    /// The product schema replicated into one target, `order`.
    pub async fn order_only(server_id: u32) -> Cluster {
        Self::start(
            PRODUCT_SCHEMA,
            &["order"],
            &PRODUCT_MAPPINGS.replace(", \"purchase\"", ""),
            server_id,
        )
        .await
    }

    pub async fn start(schema: &[&str], names: &[&str], mappings: &str, server_id: u32) -> Cluster {
        Self::start_with(
            Server::start(Role::Source),
            schema,
            names,
            mappings,
            server_id,
        )
        .await
    }

    pub async fn start_with(
        source: Server,
        schema: &[&str],
        names: &[&str],
        mappings: &str,
        server_id: u32,
    ) -> Cluster {
        exec(&mut source.conn("").await, schema).await;
        let mut targets = Vec::new();
        let mut urls = Vec::new();
        for name in names {
            let t = Server::start(Role::Target);
            exec(
                &mut t.conn("").await,
                &[&format!("CREATE DATABASE {name}_db")],
            )
            .await;
            urls.push((*name, t.url(&format!("{name}_db"))));
            targets.push(t);
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(
            dir.path(),
            &config_text(&source, server_id, &urls, mappings, ""),
        );
        Cluster {
            source,
            targets,
            dir,
            cfg,
        }
    }
}

/// The peak resident set size of process `pid` in MB (0 if unknown).
pub fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// A TCP port nobody listens on right now.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `[[admin.users]]` (password hashed here) or `[[admin.tokens]]` entry.
#[allow(dead_code)]
pub enum Login<'a> {
    User {
        name: &'a str,
        role: &'a str,
        password: &'a str,
    },
    Token {
        name: &'a str,
        role: &'a str,
        token_hash: &'a str,
    },
}

impl Cluster {
    /// Turns the admin API on at a free port, with `logins`; returns the port.
    #[allow(dead_code)]
    pub fn enable_admin(&self, logins: &[Login<'_>]) -> u16 {
        let port = free_port();
        let mut text = format!("\n[admin]\nlisten = \"127.0.0.1:{port}\"\n");
        for login in logins {
            text.push_str(&match login {
                Login::User {
                    name,
                    role,
                    password,
                } => {
                    let hash = rowsync::admin::auth::hash_password(password).unwrap();
                    format!("\n[[admin.users]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{hash}\"\n")
                }
                Login::Token {
                    name,
                    role,
                    token_hash,
                } => format!(
                    "\n[[admin.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_hash = \"{token_hash}\"\n"
                ),
            });
        }
        self.append_config(&text);
        port
    }
}

/// `GET /api/v1/status` of the admin API at `port`, with an API token.
#[allow(dead_code)]
pub async fn api_status(port: u16, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A table `log` of (id, version) and triggers writing each row `table` inserts or updates
/// into it: run on the source and on a replica, the two logs are equal exactly when every
/// change was applied once.
#[allow(dead_code)]
pub fn version_triggers(table: &str, log: &str) -> Vec<String> {
    vec![
        format!("CREATE TABLE {log} (id BIGINT NOT NULL, version BIGINT NOT NULL, KEY (id, version)) ENGINE=InnoDB"),
        format!("CREATE TRIGGER {table}_ai AFTER INSERT ON {table} FOR EACH ROW INSERT INTO {log} VALUES (NEW.id, NEW.version)"),
        format!("CREATE TRIGGER {table}_au AFTER UPDATE ON {table} FOR EACH ROW INSERT INTO {log} VALUES (NEW.id, NEW.version)"),
    ]
}

/// The rows of a `version_triggers` log, sorted.
#[allow(dead_code)]
pub async fn version_log(conn: &mut Conn, log: &str) -> Vec<(i64, i64)> {
    conn.query(format!(
        "SELECT id, version FROM {log} ORDER BY id, version"
    ))
    .await
    .unwrap()
}

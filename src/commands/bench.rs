//! `rowsync bench`: rowsync's speed side by side with what a user would otherwise run, on one
//! machine in one run, on throwaway local servers. Parts (all by default, `--only` picks):
//!
//! - `decode`: rowsync's binlog reader alone on workload W1, beside `mariadb-binlog --raw`
//!   (transfer only) and `mariadb-binlog -v` (decoding) reading the same binlog remotely.
//! - `catchup`: W1 is written to the source before any replica starts — `products` inserts in
//!   transactions of 100 rows, then `updates` updates in transactions of 10. Each contender
//!   catches up on that same backlog into a durable server (`innodb_flush_log_at_trx_commit=1`,
//!   `sync_binlog=1`, binlog on): rowsync into one and into two targets; MariaDB replication
//!   restricted to the same tables, serial and optimistic parallel ×4; and the apply floor —
//!   the same rows as large multi-row upserts piped straight into a fresh server.
//! - `lag`: a constant rate of row changes into two durable targets; each transaction inserts
//!   a row carrying its write time in microseconds, and pollers on the targets measure when it
//!   becomes visible.
//! - `memory`: peak RSS of a `rowsync run` process applying one huge transaction.
//! - `copy`: the initial copy of one big table beside `mariadb-dump | mariadb`.
//!
//! Every replica must equal the source afterwards, or no figure is reported.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Engine, Handle};
use crate::local::{self, Binaries, LocalServer, Role};
use crate::model::event::{event_channel, RowChange, SourceEvent};
use crate::model::name::TableName;
use crate::model::value::Value;
use crate::routing::mapping::Router;
use crate::source::conn::{connect, source_opts};
use crate::source::info::SourceInfo;
use crate::source::reader::{BinlogReader, ReaderOptions};

/// One part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Decode,
    Catchup,
    Lag,
    Memory,
    Copy,
}

/// Sizes of the run (the `rowsync bench` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Product rows inserted (transactions of 100).
    #[arg(long, default_value_t = 200_000)]
    pub products: u64,
    /// Row updates (transactions of 10).
    #[arg(long, default_value_t = 200_000)]
    pub updates: u64,
    /// Rows of the single big transaction whose memory use is measured.
    #[arg(long, default_value_t = 1_000_000)]
    pub big_rows: u64,
    /// Rows of the table whose initial copy is timed beside mariadb-dump.
    #[arg(long, default_value_t = 5_000_000)]
    pub copy_rows: u64,
    /// Row changes per second of the steady-lag load.
    #[arg(long, default_value_t = 5_000)]
    pub lag_rate: u64,
    /// Seconds the steady-lag load runs.
    #[arg(long, default_value_t = 60)]
    pub lag_secs: u64,
    /// Run only these parts (comma-separated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
}

impl BenchOptions {
    fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

const DURABLE: &[&str] = &[
    "--innodb-flush-log-at-trx-commit=1",
    "--sync-binlog=1",
    "--log-bin=replica-bin",
    "--innodb-buffer-pool-size=256M",
];

const TABLE: &str = "CREATE TABLE product.product (id BIGINT UNSIGNED PRIMARY KEY, code VARCHAR(32) NOT NULL, model VARCHAR(100) NOT NULL, category_id INT NOT NULL, production_year YEAR NOT NULL, price DECIMAL(12,2) NOT NULL, version INT NOT NULL, KEY idx_category (category_id)) ENGINE=InnoDB";

/// One contender's result.
struct Figure {
    name: String,
    seconds: f64,
    /// Row changes applied (twice W1 for two targets).
    changes: u64,
    /// CPU seconds the target server(s) spent meanwhile.
    target_cpu: f64,
}

/// CPU seconds (user + system) `servers` have used so far.
fn cpu_seconds(servers: &[&LocalServer]) -> f64 {
    // /proc/PID/stat counts in USER_HZ, which Linux fixes at 100 for user space.
    const TICKS_PER_SECOND: f64 = 100.0;
    servers
        .iter()
        .filter_map(|s| s.pid())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the parenthesized command name; utime and stime are 14th and 15th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / TICKS_PER_SECOND)
        })
        .sum()
}

/// Where the run's servers live.
struct Bench {
    bins: Binaries,
    dir: PathBuf,
}

impl Bench {
    /// Starts a fresh server named `name` (a directory of its own), off the async threads.
    async fn server(
        &self,
        name: &str,
        role: Role,
        id: u32,
        extra: &[&str],
    ) -> anyhow::Result<LocalServer> {
        let (bins, run) = (self.bins.clone(), self.dir.join(name));
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || -> anyhow::Result<LocalServer> {
            std::fs::create_dir_all(&run)?;
            let data = run.join("data");
            local::install(&bins, &data)?;
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            Ok(LocalServer::start(&bins, &data, &run, role, id, &extra)?)
        })
        .await?
    }

    /// A MariaDB client program: beside the server binary when there, else from `PATH`.
    fn program(&self, name: &str) -> PathBuf {
        let beside = self.bins.mariadbd.with_file_name(name);
        if beside.is_file() {
            beside
        } else {
            PathBuf::from(name)
        }
    }
}

async fn conn(server: &LocalServer, db: &str) -> anyhow::Result<Conn> {
    Ok(Conn::new(Opts::from_url(&server.url(db))?).await?)
}

/// Writes W1 to the source; returns the number of row changes.
async fn write_workload(src: &mut Conn, opts: &BenchOptions) -> anyhow::Result<u64> {
    let mut batch = Vec::new();
    let flush = |batch: &mut Vec<String>| std::mem::take(batch).join(";");
    let mut first = 1;
    while first <= opts.products {
        let last = (first + 99).min(opts.products);
        batch.push(format!(
            "INSERT INTO product SELECT seq, CONCAT('PRD-', seq), CONCAT('model ', seq % 97), 1 + seq % 12, 2015 + seq % 11, 10 + seq % 1000, 0 FROM seq_{first}_to_{last}"
        ));
        if batch.len() == 50 {
            src.query_drop(flush(&mut batch)).await?;
        }
        first = last + 1;
    }
    let mut done = 0;
    let mut id = 1;
    while done < opts.updates {
        let last = (id + 9)
            .min(opts.products.max(1))
            .min(id + (opts.updates - done) - 1);
        batch.push(format!(
            "UPDATE product SET price = price + 1, version = version + 1 WHERE id BETWEEN {id} AND {last}"
        ));
        done += last - id + 1;
        id = if last >= opts.products { 1 } else { last + 1 };
        if batch.len() == 200 {
            src.query_drop(flush(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        src.query_drop(flush(&mut batch)).await?;
    }
    Ok(opts.products + opts.updates)
}

/// A fingerprint of the product table, equal on equal tables.
async fn fingerprint(c: &mut Conn) -> anyhow::Result<(u64, String)> {
    let row: Option<(u64, Option<String>)> = c
        .query_first("SELECT COUNT(*), CAST(SUM(CRC32(CONCAT_WS('|', id, code, model, category_id, production_year, price, version))) AS CHAR) FROM product.product")
        .await?;
    let (n, sum) = row.context("no fingerprint")?;
    Ok((n, sum.unwrap_or_default()))
}

async fn wait_until(
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done().await? {
        if Instant::now() > deadline {
            bail!("no catch-up within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Starts rowsync in this process on the configuration `text` (named `name` in `dir`).
fn spawn_rowsync(text: &str, dir: &Path, name: &str) -> anyhow::Result<Handle> {
    let config = Config::from_toml(text, &dir.join(name), std::iter::empty())?;
    Ok(Engine::start(Arc::new(config)))
}

/// A rowsync configuration replicating `tables` (`db.table` or `db.*`) from `source` into
/// database `db` — created here — on each of `targets` (named t0, t1, …). `start` is the
/// `source.start` value (the default, a snapshot copy, when `None`).
async fn replica_config(
    source: &LocalServer,
    server_id: u32,
    start: Option<&str>,
    targets: &[&LocalServer],
    tables: &str,
    state: &Path,
) -> anyhow::Result<String> {
    let db = tables.split('.').next().unwrap_or(tables);
    let mut text = format!(
        "[source]\nurl = \"{}\"\nserver_id = {server_id}\nheartbeat_secs = 1\n",
        source.url("")
    );
    if let Some(start) = start {
        let _ = writeln!(text, "start = \"{start}\"");
    }
    let _ = write!(text, "\n[state]\npath = \"{}\"\n", state.display());
    let mut names = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        conn(target, "")
            .await?
            .query_drop(format!("CREATE DATABASE {db}"))
            .await?;
        let _ = write!(
            text,
            "\n[[targets]]\nname = \"t{i}\"\nurl = \"{}\"\n",
            target.url(db)
        );
        names.push(format!("\"t{i}\""));
    }
    let _ = write!(
        text,
        "\n[[mappings]]\nsource = \"{tables}\"\ntargets = [{}]\n",
        names.join(", ")
    );
    Ok(text)
}

/// Waits until rowsync's initial copy into database `db` of `target` is done.
async fn wait_streaming(target: &LocalServer, db: &str, limit: Duration) -> anyhow::Result<()> {
    let mut t = conn(target, db).await?;
    wait_until(
        async || {
            let phase: Option<Option<String>> = t
                .query_first("SELECT phase FROM rowsync_checkpoint")
                .await
                .unwrap_or(None);
            Ok(phase.flatten().as_deref() == Some("streaming"))
        },
        limit,
    )
    .await
}

/// rowsync catching up into every server of `targets` at once; returns the seconds until the
/// last one has applied everything.
async fn rowsync_catch_up(
    source: &LocalServer,
    targets: &[&LocalServer],
    start_gtid: &str,
    head: &str,
    dir: &Path,
) -> anyhow::Result<f64> {
    let text = replica_config(
        source,
        4901,
        Some(&format!("gtid:{start_gtid}")),
        targets,
        "product.*",
        &dir.join(format!("bench-{}.state.db", targets.len())),
    )
    .await?;
    let started = Instant::now();
    let rowsync = spawn_rowsync(&text, dir, "bench.toml")?;
    for target in targets {
        let mut t = conn(target, "product").await?;
        let head = head.to_string();
        wait_until(
            async || {
                let g: Option<Option<String>> = t
                    .query_first("SELECT gtid FROM rowsync_checkpoint")
                    .await
                    .unwrap_or(None);
                Ok(g.flatten().as_deref() == Some(head.as_str()))
            },
            Duration::from_secs(1800),
        )
        .await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    rowsync.shutdown().await;
    Ok(seconds)
}

async fn native_catch_up(
    source: &LocalServer,
    replica: &LocalServer,
    start_gtid: &str,
    head: &str,
) -> anyhow::Result<f64> {
    let mut r = conn(replica, "").await?;
    r.query_drop("CREATE DATABASE product").await?;
    r.query_drop(TABLE).await?;
    r.exec_drop("SET GLOBAL gtid_slave_pos = ?", (start_gtid,))
        .await?;
    r.query_drop(format!(
        "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'root', MASTER_PASSWORD = '', MASTER_USE_GTID = slave_pos",
        source.port
    ))
    .await?;
    let started = Instant::now();
    r.query_drop("START SLAVE").await?;
    let head = head.to_string();
    wait_until(
        async || {
            let pos: Option<String> = r.query_first("SELECT @@gtid_slave_pos").await?;
            Ok(pos.as_deref() == Some(head.as_str()))
        },
        Duration::from_secs(1800),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    r.query_drop("STOP SLAVE").await?;
    Ok(seconds)
}

/// The target server alone taking the final rows as large multi-row upserts.
async fn apply_floor(server: &LocalServer, opts: &BenchOptions) -> anyhow::Result<f64> {
    let mut c = conn(server, "").await?;
    c.query_drop("CREATE DATABASE product").await?;
    c.query_drop(TABLE).await?;
    let row = |id: u64, version: u64| {
        format!(
            "({id}, 'PRD-{id}', 'model {}', {}, {}, {}, {version})",
            id % 97,
            1 + id % 12,
            2015 + id % 11,
            10 + id % 1000 + version
        )
    };
    let mut statements = Vec::new();
    let ids: Vec<u64> = (1..=opts.products).collect();
    for chunk in ids.chunks(1000) {
        let values: Vec<String> = chunk.iter().map(|&id| row(id, 0)).collect();
        statements.push(format!(
            "INSERT INTO product.product VALUES {}",
            values.join(",")
        ));
    }
    let updated: Vec<u64> = (0..opts.updates)
        .map(|i| i % opts.products.max(1) + 1)
        .collect();
    for chunk in updated.chunks(1000) {
        let values: Vec<String> = chunk.iter().map(|&id| row(id, 1)).collect();
        statements.push(format!(
            "INSERT INTO product.product VALUES {} ON DUPLICATE KEY UPDATE price = VALUES(price), version = VALUES(version)",
            values.join(",")
        ));
    }
    let started = Instant::now();
    for s in statements {
        c.query_drop(s).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Peak RSS (MB) of a `rowsync run` process applying one `rows`-row source transaction, and
/// whether a reader on the target only ever saw none or all of it.
async fn big_transaction(
    source: &LocalServer,
    target: &LocalServer,
    rows: u64,
    dir: &Path,
) -> anyhow::Result<(u64, bool)> {
    let mut src = conn(source, "product").await?;
    src.query_drop(
        "CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(60) NOT NULL) ENGINE=InnoDB",
    )
    .await?;
    let from: String = src
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .unwrap_or_default();
    src.query_drop(format!(
        "INSERT INTO big SELECT seq, REPEAT('x', 50) FROM seq_1_to_{rows}"
    ))
    .await?;
    let head: String = src
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .unwrap_or_default();
    let text = replica_config(
        source,
        4950,
        Some(&format!("gtid:{from}")),
        &[target],
        "product.big",
        &dir.join("big.state.db"),
    )
    .await?;
    let config = dir.join("big.toml");
    std::fs::write(&config, text)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["run", "--config"])
        .arg(&config)
        .env("ROWSYNC_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id();
    let peak_kb = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    };
    let mut t = conn(target, "product").await?;
    let mut atomic = true;
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        peak = peak.max(peak_kb());
        let n: Option<u64> = t
            .query_first("SELECT COUNT(*) FROM big")
            .await
            .unwrap_or(None);
        let n = n.unwrap_or(0);
        atomic &= n == 0 || n == rows;
        let at: Option<Option<String>> = t
            .query_first("SELECT gtid FROM rowsync_checkpoint")
            .await
            .unwrap_or(None);
        if at.flatten().as_deref() == Some(head.as_str()) && n == rows {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the big transaction did not arrive");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peak = peak.max(peak_kb());
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.wait();
    Ok((peak / 1024, atomic))
}

/// Seconds for rowsync's initial copy of a `rows`-row table, and for `mariadb-dump | mariadb`
/// of the same table, each into a fresh durable server; both copies must equal the source.
async fn initial_copy(
    bench: &Bench,
    source: &LocalServer,
    rows: u64,
) -> anyhow::Result<(f64, f64)> {
    let mut src = conn(source, "").await?;
    src.query_drop("CREATE DATABASE copying").await?;
    src.query_drop("USE copying").await?;
    src.query_drop(TABLE.replace("product.product", "copying.product"))
        .await?;
    let mut first = 1;
    while first <= rows {
        let last = (first + 499_999).min(rows);
        src.query_drop(format!("INSERT INTO product SELECT seq, CONCAT('PRD-', seq), CONCAT('model ', seq % 97), 1 + seq % 12, 2015 + seq % 11, 10 + seq % 1000, 0 FROM seq_{first}_to_{last}")).await?;
        first = last + 1;
    }
    let fingerprint_sql = "SELECT COUNT(*), CAST(SUM(CRC32(CONCAT_WS('|', id, code, model, category_id, production_year, price, version))) AS CHAR) FROM copying.product";
    let want: Option<(u64, Option<String>)> = src.query_first(fingerprint_sql).await?;

    let ours = bench
        .server("copy-target", Role::Target, 9, DURABLE)
        .await?;
    let text = replica_config(
        source,
        4970,
        None,
        &[&ours],
        "copying.product",
        &bench.dir.join("copy.state.db"),
    )
    .await?;
    let started = Instant::now();
    let rowsync = spawn_rowsync(&text, &bench.dir, "copy.toml")?;
    wait_streaming(&ours, "copying", Duration::from_secs(3600)).await?;
    let ours_secs = started.elapsed().as_secs_f64();
    rowsync.shutdown().await;
    let mut t = conn(&ours, "copying").await?;
    let got: Option<(u64, Option<String>)> = t.query_first(fingerprint_sql).await?;
    if got != want {
        bail!("rowsync's copy differs from the source: {got:?} vs {want:?}");
    }
    has_secondary_key(&mut t, "rowsync").await?;
    drop(t);
    drop(ours);

    let dumped = bench
        .server("dump-target", Role::Target, 10, DURABLE)
        .await?;
    conn(&dumped, "")
        .await?
        .query_drop("CREATE DATABASE copying")
        .await?;
    let script = format!(
        "set -o pipefail; {} --no-defaults -h127.0.0.1 -P{} -uroot --single-transaction copying product | {} --no-defaults -h127.0.0.1 -P{} -uroot copying",
        bench.program("mariadb-dump").display(),
        source.port,
        bench.program("mariadb").display(),
        dumped.port
    );
    let started = Instant::now();
    let status = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .status()
        .await?;
    let dump_secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("mariadb-dump | mariadb failed: {status}");
    }
    let mut d = conn(&dumped, "copying").await?;
    let got: Option<(u64, Option<String>)> = d.query_first(fingerprint_sql).await?;
    if got != want {
        bail!("the dump's copy differs from the source: {got:?} vs {want:?}");
    }
    has_secondary_key(&mut d, "mariadb-dump").await?;
    Ok((ours_secs, dump_secs))
}

/// Both copies must end with the same indexes, so neither skips work the other does.
async fn has_secondary_key(c: &mut Conn, who: &str) -> anyhow::Result<()> {
    let n: Option<u64> = c
        .query_first("SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = 'copying' AND TABLE_NAME = 'product' AND INDEX_NAME = 'idx_category'")
        .await?;
    if n != Some(1) {
        bail!("{who}'s copy lacks the secondary key idx_category");
    }
    Ok(())
}

/// W1 as written to the source.
struct Backlog {
    start_gtid: String,
    head: String,
    changes: u64,
    inserts: u64,
    fingerprint: (u64, String),
}

/// Runs of each binlog read; the best one counts (the first also warms the server's cache).
const READ_RUNS: usize = 3;

/// Seconds for rowsync's binlog reader alone to decode W1 (every row image of the selected
/// tables decoded to typed values, checksums verified), and for `mariadb-binlog` to fetch the
/// same binlog raw and to print it decoded (`-v`); each the best of `READ_RUNS`.
async fn decode(bench: &Bench, source: &LocalServer, w1: &Backlog) -> anyhow::Result<[f64; 3]> {
    let text = format!(
        "[source]\nurl = \"{}\"\nserver_id = 4990\nheartbeat_secs = 1\nstart = \"gtid:{}\"\n\n[[targets]]\nname = \"t\"\nurl = \"mysql://unused@127.0.0.1:1/unused\"\n\n[[mappings]]\nsource = \"product.*\"\ntargets = [\"t\"]\n\n[state]\npath = \"{}\"\n",
        source.url(""),
        w1.start_gtid,
        bench.dir.join("decode.state.db").display()
    );
    let config = Config::from_toml(&text, &bench.dir.join("decode.toml"), std::iter::empty())?;
    let mut seconds = [f64::MAX; 3];
    for _ in 0..READ_RUNS {
        seconds[0] = seconds[0].min(read_w1(&config, w1).await?);
    }
    let mut c = conn(source, "").await?;
    let first: Option<(String, u64)> = c.query_first("SHOW BINARY LOGS").await?;
    let (first, _) = first.context("the source has no binlog")?;
    let raw_dir = bench.dir.join("raw-binlog");
    std::fs::create_dir_all(&raw_dir)?;
    for (i, extra) in [["--raw", "--result-file"], ["-v", ""]].iter().enumerate() {
        for _ in 0..READ_RUNS {
            let mut cmd = tokio::process::Command::new(bench.program("mariadb-binlog"));
            cmd.args([
                "--no-defaults",
                "--read-from-remote-server",
                "--host=127.0.0.1",
                "--user=root",
            ])
            .arg(format!("--port={}", source.port))
            .arg(extra[0]);
            if !extra[1].is_empty() {
                cmd.arg(format!("{}={}/", extra[1], raw_dir.display()));
            }
            cmd.arg(&first)
                .arg("--to-last-log")
                .stdout(std::process::Stdio::null());
            let started = Instant::now();
            let status = cmd.status().await?;
            seconds[i + 1] = seconds[i + 1].min(started.elapsed().as_secs_f64());
            if !status.success() {
                bail!("mariadb-binlog {} failed: {status}", extra[0]);
            }
        }
    }
    Ok(seconds)
}

/// One read of W1 by rowsync's binlog reader; checks the decoded values add up.
async fn read_w1(config: &Config, w1: &Backlog) -> anyhow::Result<f64> {
    let opts = source_opts(&config.source.url, None)?;
    let mut c = connect(&opts).await?;
    let info = SourceInfo::read(&mut c).await?;
    let start = info.resolve_start(&mut c, &config.source.start).await?;
    let reader = BinlogReader::new(
        ReaderOptions {
            opts,
            server_id: config.source.server_id,
            heartbeat: config.source.heartbeat(),
            read_timeout: config.source.read_timeout(),
        },
        {
            let router = Router::for_target(config, "t");
            Arc::new(move |t: &TableName| router.selects(t))
        },
        HashSet::new(),
    );
    let (tx, mut rx) = event_channel(config.apply.queue_events);
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(reader.run(start, tx, cancel.clone()));
    let (mut rows, mut versions) = (0u64, 0i64);
    while let Some(event) = rx.recv().await {
        match event {
            SourceEvent::Rows(batch) => {
                let version = batch.table.column_index("version");
                for change in &batch.changes {
                    rows += 1;
                    let after = match change {
                        RowChange::Insert(r) | RowChange::Delete(r) => r,
                        RowChange::Update { after, .. } => after,
                    };
                    if let Some(Value::Int(v)) = version.map(|i| &after[i]) {
                        versions += v;
                    }
                }
            }
            SourceEvent::Commit { checkpoint, .. }
                if checkpoint.gtid.as_ref().map(|g| g.to_string()).as_deref()
                    == Some(w1.head.as_str()) =>
            {
                break
            }
            _ => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    cancel.cancel();
    drop(rx);
    let _ = task.await;
    // Every update raised one row's version by one: the decoded values must add up.
    if rows != w1.changes || versions as u64 != w1.changes - w1.inserts {
        bail!(
            "the reader decoded {rows} row changes (version sum {versions}), expected {}",
            w1.changes
        );
    }
    Ok(seconds)
}

/// Commit-to-visible lag, in milliseconds, of a steady load into two durable targets.
struct Lag {
    rate: f64,
    samples: Vec<f64>,
}

/// Runs `rate` row changes per second for `secs` seconds — transactions of 10: nine product
/// updates and one insert of a row stamped with its write time in microseconds — with rowsync
/// replicating into two durable targets, and measures when each stamped row becomes visible on
/// each target (polled every 5 ms, so samples are up to 5 ms late).
async fn steady_lag(
    bench: &Bench,
    source: &LocalServer,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Lag> {
    const POLL: Duration = Duration::from_millis(5);
    let mut src = conn(source, "").await?;
    src.query_drop("CREATE DATABASE steady").await?;
    src.query_drop("USE steady").await?;
    src.query_drop(TABLE.replace("product.product", "steady.product"))
        .await?;
    src.query_drop("CREATE TABLE steady.tick (id BIGINT UNSIGNED PRIMARY KEY, written_us BIGINT NOT NULL) ENGINE=InnoDB").await?;
    src.query_drop("INSERT INTO steady.product SELECT seq, CONCAT('PRD-', seq), CONCAT('model ', seq % 97), 1 + seq % 12, 2015 + seq % 11, 10 + seq % 1000, 0 FROM seq_1_to_10000").await?;
    let targets = [
        bench.server("lag-order", Role::Target, 11, DURABLE).await?,
        bench
            .server("lag-purchase", Role::Target, 12, DURABLE)
            .await?,
    ];
    let text = replica_config(
        source,
        4980,
        None,
        &[&targets[0], &targets[1]],
        "steady.*",
        &bench.dir.join("lag.state.db"),
    )
    .await?;
    let rowsync = spawn_rowsync(&text, &bench.dir, "lag.toml")?;
    for target in &targets {
        wait_streaming(target, "steady", Duration::from_secs(600)).await?;
    }
    let now_us = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
    };
    let transactions = (rate * secs / 10).max(1);
    let every = Duration::from_secs_f64(10.0 / rate.max(1) as f64);
    let writer = async {
        let began = tokio::time::Instant::now();
        for id in 1..=transactions {
            tokio::time::sleep_until(began + every.mul_f64((id - 1) as f64)).await;
            let first = (id * 9) % 9_990 + 1;
            src.query_drop(format!(
                "BEGIN; UPDATE steady.product SET version = version + 1 WHERE id BETWEEN {first} AND {}; INSERT INTO steady.tick VALUES ({id}, {}); COMMIT",
                first + 8,
                now_us()
            ))
            .await?;
        }
        anyhow::Ok(transactions as f64 * 10.0 / began.elapsed().as_secs_f64())
    };
    let poll = |target: &LocalServer| {
        let url = target.url("steady");
        async move {
            let mut t = Conn::new(Opts::from_url(&url)?).await?;
            let mut seen = 0u64;
            let mut lags = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(secs + 600);
            while seen < transactions {
                if Instant::now() > deadline {
                    bail!("the steady load did not arrive");
                }
                let rows: Vec<(u64, i64)> = t
                    .exec(
                        "SELECT id, written_us FROM tick WHERE id > ? ORDER BY id",
                        (seen,),
                    )
                    .await
                    .unwrap_or_default();
                let at = now_us();
                for (id, written) in rows {
                    lags.push((at - written) as f64 / 1000.0);
                    seen = seen.max(id);
                }
                tokio::time::sleep(POLL).await;
            }
            anyhow::Ok(lags)
        }
    };
    let (rate, a, b) = tokio::join!(writer, poll(&targets[0]), poll(&targets[1]));
    rowsync.shutdown().await;
    let mut samples = a?;
    samples.extend(b?);
    let want: Option<(u64, Option<String>)> = src
        .query_first("SELECT COUNT(*), CAST(SUM(version) AS CHAR) FROM steady.product")
        .await?;
    for target in &targets {
        let got: Option<(u64, Option<String>)> = conn(target, "steady")
            .await?
            .query_first("SELECT COUNT(*), CAST(SUM(version) AS CHAR) FROM steady.product")
            .await?;
        if got != want {
            bail!("a steady-load replica differs from the source: {got:?} vs {want:?}");
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(Lag {
        rate: rate?,
        samples,
    })
}

impl Lag {
    fn percentile(&self, p: f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let i = ((self.samples.len() - 1) as f64 * p).round() as usize;
        self.samples[i]
    }
}

/// Writes W1 and measures the reader alone and the catch-up of every contender.
async fn backlog_parts(
    bench: &Bench,
    source: &LocalServer,
    opts: &BenchOptions,
    out: &mut String,
) -> anyhow::Result<()> {
    let mut src = conn(source, "product").await?;
    let start_gtid: String = src
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .unwrap_or_default();
    let written = Instant::now();
    let changes = write_workload(&mut src, opts).await?;
    let write_secs = written.elapsed().as_secs_f64();
    let head: String = src
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .unwrap_or_default();
    let w1 = Backlog {
        start_gtid,
        head,
        changes,
        inserts: opts.products,
        fingerprint: fingerprint(&mut src).await?,
    };
    let _ = writeln!(out, "W1: {} row changes ({} inserts in transactions of 100, {} updates in transactions of 10), written in {write_secs:.1}s", changes, opts.products, opts.updates);

    if opts.runs(Part::Decode) {
        let [ours, raw, verbose] = decode(bench, source, &w1).await?;
        let rate = |s: f64| changes as f64 / s;
        let _ = writeln!(
            out,
            "\nbinlog read of W1 from the server          seconds     changes/s"
        );
        for (name, s) in [
            ("rowsync reader (decoded, checksums checked)", ours),
            ("mariadb-binlog --raw (transfer only)", raw),
            ("mariadb-binlog -v (decoded, printed)", verbose),
        ] {
            let _ = writeln!(out, "{name:<44} {s:>7.2} {:>13.0}", rate(s));
        }
        let _ = writeln!(
            out,
            "rowsync reader: {:.2}x mariadb-binlog -v, {:.0}% of the raw transfer rate",
            verbose / ours,
            raw / ours * 100.0
        );
    }
    if opts.runs(Part::Catchup) {
        catch_up(bench, source, &w1, opts, out).await?;
    }
    Ok(())
}

/// Every contender catching up on W1.
async fn catch_up(
    bench: &Bench,
    source: &LocalServer,
    w1: &Backlog,
    opts: &BenchOptions,
    out: &mut String,
) -> anyhow::Result<()> {
    let changes = w1.changes;
    let want = &w1.fingerprint;
    let mut figures = Vec::new();
    let target = bench
        .server("rowsync-target", Role::Target, 2, DURABLE)
        .await?;
    let cpu = cpu_seconds(&[&target]);
    let secs = rowsync_catch_up(source, &[&target], &w1.start_gtid, &w1.head, &bench.dir).await?;
    figures.push(Figure {
        name: "rowsync, 1 durable target".into(),
        seconds: secs,
        changes,
        target_cpu: cpu_seconds(&[&target]) - cpu,
    });
    let order = bench
        .server("rowsync-order", Role::Target, 6, DURABLE)
        .await?;
    let purchase = bench
        .server("rowsync-purchase", Role::Target, 7, DURABLE)
        .await?;
    let cpu = cpu_seconds(&[&order, &purchase]);
    let secs = rowsync_catch_up(
        source,
        &[&order, &purchase],
        &w1.start_gtid,
        &w1.head,
        &bench.dir,
    )
    .await?;
    figures.push(Figure {
        name: "rowsync, 2 durable targets (total)".into(),
        seconds: secs,
        changes: 2 * changes,
        target_cpu: cpu_seconds(&[&order, &purchase]) - cpu,
    });
    for server in [&target, &order, &purchase] {
        let got = fingerprint(&mut conn(server, "").await?).await?;
        if &got != want {
            bail!("a rowsync replica differs from the source: {got:?} vs {want:?}");
        }
    }
    drop((target, order, purchase));
    let native = |threads: &'static str, mode: &'static str| {
        [
            DURABLE,
            &[
                "--log-slave-updates=ON",
                "--replicate-wild-do-table=product.%",
                threads,
                mode,
            ],
        ]
        .concat()
    };
    for (name, dir, id, args) in [
        (
            "MariaDB replication, serial",
            "native-serial",
            3,
            native(
                "--slave-parallel-threads=0",
                "--slave-parallel-mode=conservative",
            ),
        ),
        (
            "MariaDB replication, optimistic parallel x4",
            "native-parallel",
            4,
            native(
                "--slave-parallel-threads=4",
                "--slave-parallel-mode=optimistic",
            ),
        ),
    ] {
        let server = bench.server(dir, Role::Target, id, &args).await?;
        let cpu = cpu_seconds(&[&server]);
        let secs = native_catch_up(source, &server, &w1.start_gtid, &w1.head).await?;
        let target_cpu = cpu_seconds(&[&server]) - cpu;
        let got = fingerprint(&mut conn(&server, "").await?).await?;
        if &got != want {
            bail!("{name}: the replica differs from the source: {got:?} vs {want:?}");
        }
        figures.push(Figure {
            name: name.into(),
            seconds: secs,
            changes,
            target_cpu,
        });
    }
    let floor = bench.server("floor", Role::Target, 5, DURABLE).await?;
    let cpu = cpu_seconds(&[&floor]);
    let floor_secs = apply_floor(&floor, opts).await?;
    figures.push(Figure {
        name: "apply floor (multi-row upserts piped in)".into(),
        seconds: floor_secs,
        changes,
        target_cpu: cpu_seconds(&[&floor]) - cpu,
    });

    // Compared as rates, so two targets count their total.
    let rate = |f: &Figure| f.changes as f64 / f.seconds;
    let native_best = figures
        .iter()
        .filter(|f| f.name.starts_with("MariaDB"))
        .map(rate)
        .fold(0.0, f64::max);
    let floor_rate = changes as f64 / floor_secs;
    let _ = writeln!(
        out,
        "\n{:<46} {:>9} {:>13} {:>11} {:>9} {:>11}",
        "catch-up on W1", "seconds", "changes/s", "vs native", "of floor", "target CPU"
    );
    for f in &figures {
        let _ = writeln!(
            out,
            "{:<46} {:>9.2} {:>13.0} {:>10.2}x {:>8.0}% {:>10.2}s",
            f.name,
            f.seconds,
            rate(f),
            rate(f) / native_best,
            rate(f) / floor_rate * 100.0,
            f.target_cpu
        );
    }
    let _ = writeln!(
        out,
        "every replica equals the source ({} rows, checksum {})",
        want.0, want.1
    );
    Ok(())
}

/// Runs the benchmark and returns its report.
pub async fn run(opts: BenchOptions) -> anyhow::Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("rowsync-bench-")
        .tempdir()?;
    let bench = Bench {
        bins: Binaries::find()?,
        dir: dir.path().to_owned(),
    };
    let mut source = bench.server("source", Role::Source, 1, &[]).await?;
    let mut src = conn(&source, "").await?;
    src.query_drop("CREATE DATABASE product").await?;
    src.query_drop(TABLE).await?;
    let mut out = String::new();
    if opts.runs(Part::Decode) || opts.runs(Part::Catchup) {
        backlog_parts(&bench, &source, &opts, &mut out).await?;
    }
    if opts.runs(Part::Lag) {
        let lag = steady_lag(&bench, &source, opts.lag_rate, opts.lag_secs).await?;
        let _ = writeln!(
            out,
            "\nsteady load, {:.0} row changes/s for {}s into 2 durable targets: commit-to-visible lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples); both replicas equal the source",
            lag.rate,
            opts.lag_secs,
            lag.percentile(0.5),
            lag.percentile(0.99),
            lag.samples.last().copied().unwrap_or(0.0),
            lag.samples.len()
        );
    }
    if opts.runs(Part::Memory) {
        let big = bench.server("big-target", Role::Target, 8, DURABLE).await?;
        let (peak_mb, atomic) = big_transaction(&source, &big, opts.big_rows, &bench.dir).await?;
        if !atomic {
            bail!("a reader saw part of the {}-row transaction", opts.big_rows);
        }
        let _ = writeln!(
            out,
            "\none {}-row source transaction: rowsync's peak RSS {peak_mb} MB; readers saw none or all of it",
            opts.big_rows
        );
    }
    if opts.runs(Part::Copy) {
        let (ours, dumped) = initial_copy(&bench, &source, opts.copy_rows).await?;
        let _ = writeln!(
            out,
            "\ninitial copy of a {}-row table: rowsync {ours:.2}s, mariadb-dump | mariadb {dumped:.2}s ({:.2}x); both equal the source",
            opts.copy_rows,
            dumped / ours
        );
    }
    source.stop(false);
    dir.close()?;
    Ok(out)
}

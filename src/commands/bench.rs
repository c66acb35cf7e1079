//! `rowsync bench`: rowsync's speed side by side with what a user would otherwise run, on one
//! machine in one run, on throwaway local servers. Parts (all by default, `--only` picks):
//!
//! - `decode`: rowsync's binlog reader alone on workload W1, beside `mariadb-binlog --raw`
//!   (transfer only) and `mariadb-binlog -v` (decoding) reading the same binlog remotely.
//! - `catchup`, per workload (W1 narrow rows, W2 wide rows; see [`workload`]): the workload is
//!   written to the source before any of its replicas starts — `products` inserts in
//!   transactions of 100 rows, then `updates` updates in transactions of 10, in a database of
//!   its own, so each catch-up waits for its own backlog only. Each contender catches up on
//!   that same backlog into a durable server (`innodb_flush_log_at_trx_commit=1`,
//!   `sync_binlog=1`, binlog on): rowsync into one and into two targets; MariaDB replication
//!   restricted to the same tables, serial and optimistic parallel ×4; and the apply floor —
//!   the same rows as large multi-row upserts piped straight into a fresh server.
//! - `lag`, per workload: a constant rate of row changes into two durable targets; each
//!   transaction updates nine rows of the workload's table and inserts a row carrying its
//!   write time in microseconds, and pollers on the targets measure when it becomes visible.
//! - `memory`: peak RSS of a `rowsync run` process applying one huge transaction.
//! - `copy`: the initial copy of one big table beside `mariadb-dump | mariadb`.
//!
//! Every replica must equal the source afterwards, or no figure is reported. Each contender's
//! clock starts only once the machine is idle, and the previous contender's server is
//! stopped by then, so no one pays for another's purge or page flushing.

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

mod workload;

pub use workload::Workload;

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
    /// Workloads of the catch-up and lag parts (comma-separated). The decode part reads W1
    /// and runs only when W1 is one of them.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Workload::ALL)]
    pub workloads: Vec<Workload>,
    /// rowsync's `apply.lanes` (its default when not given).
    #[arg(long)]
    pub lanes: Option<usize>,
}

impl BenchOptions {
    fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }

    /// The chosen workloads, each once, W1 first.
    fn workloads(&self) -> impl Iterator<Item = Workload> + '_ {
        Workload::ALL
            .into_iter()
            .filter(|w| self.workloads.contains(w))
    }
}

const DURABLE: &[&str] = &[
    "--innodb-flush-log-at-trx-commit=1",
    "--sync-binlog=1",
    "--log-bin=replica-bin",
    "--innodb-buffer-pool-size=256M",
];

/// One contender's result.
struct Figure {
    name: String,
    seconds: f64,
    /// Row changes applied (twice the workload's for two targets).
    changes: u64,
    /// CPU seconds the target server(s) spent meanwhile.
    target_cpu: f64,
    /// rowsync's own CPU and its lanes' utilisation.
    note: Option<String>,
}

/// CPU seconds (user + system) `servers` have used so far.
fn cpu_seconds(servers: &[&LocalServer]) -> f64 {
    servers
        .iter()
        .filter_map(|s| s.pid())
        .map(|pid| process_cpu(&pid.to_string()))
        .sum()
}

/// CPU seconds (user + system) of process `pid` (`self`: this one, where the bench runs
/// rowsync's engine).
fn process_cpu(pid: &str) -> f64 {
    // /proc/PID/stat counts in USER_HZ, which Linux fixes at 100 for user space.
    const TICKS_PER_SECOND: f64 = 100.0;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the parenthesized command name; utime and stime are 14th and 15th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / TICKS_PER_SECOND)
        })
        .unwrap_or(0.0)
}

/// Waits, at most 10 s, until the machine's CPUs are idle (under 10 % busy over half a
/// second, waiting on I/O counted as busy): the source's purge and page flushing after a
/// backlog, or a previous contender's, must not run on the next contender's clock. (On a
/// quiet machine it is idle by then; the wait guards against what else runs on it.)
async fn settle() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = cpu_ticks();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu_ticks();
        match (last, now) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                if ((busy1 - busy0) as f64) < 0.1 * (total1 - total0) as f64 {
                    return;
                }
            }
            // No /proc/stat: nothing to wait for.
            _ => return,
        }
        last = now;
    }
    tracing::warn!(
        "the machine stayed busy for 10 s before a bench contender: its figures may be low"
    );
}

/// `(busy, total)` CPU ticks of the whole machine since boot, from `/proc/stat`.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu user nice system idle iowait irq softirq steal …
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    Some((total - ticks.get(3)?, total))
}

/// Where the run's servers live.
struct Bench {
    bins: Binaries,
    dir: PathBuf,
    /// Appended to every rowsync configuration (`--lanes`).
    rowsync_extra: String,
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

/// Writes workload `w` to the source (`src` has its database as the current one); returns the
/// number of row changes.
async fn write_workload(src: &mut Conn, w: Workload, opts: &BenchOptions) -> anyhow::Result<u64> {
    let db = w.database();
    let mut batch = Vec::new();
    let flush = |batch: &mut Vec<String>| std::mem::take(batch).join(";");
    let mut first = 1;
    while first <= opts.products {
        let last = (first + 99).min(opts.products);
        batch.push(w.insert(db, first, last));
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
        batch.push(w.update(db, id, last));
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

/// A fingerprint of `db.product` of workload `w`, equal on equal tables.
async fn fingerprint(c: &mut Conn, w: Workload, db: &str) -> anyhow::Result<(u64, String)> {
    let row: Option<(u64, Option<String>)> = c.query_first(w.fingerprint_sql(db)).await?;
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

/// rowsync catching up on backlog `b` of workload `w` into every server of `targets` at once;
/// returns the seconds until the last one has applied everything, and a note of rowsync's
/// CPU and how busy its apply lanes were.
async fn rowsync_catch_up(
    source: &LocalServer,
    targets: &[&LocalServer],
    w: Workload,
    b: &Backlog,
    bench: &Bench,
) -> anyhow::Result<(f64, String)> {
    let dir = bench.dir.as_path();
    let db = w.database();
    let name = w.dir(&format!("bench-{}", targets.len()));
    let text = replica_config(
        source,
        4901 + w.id_offset(),
        Some(&format!("gtid:{}", b.start_gtid)),
        targets,
        &format!("{db}.*"),
        &dir.join(format!("{name}.state.db")),
    )
    .await?;
    let text = text + &bench.rowsync_extra;
    settle().await;
    let started = Instant::now();
    let cpu = process_cpu("self");
    let rowsync = spawn_rowsync(&text, dir, &format!("{name}.toml"))?;
    for target in targets {
        let mut t = conn(target, db).await?;
        let head = b.head.clone();
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
    let cpu = process_cpu("self") - cpu;
    let lanes: Vec<String> = rowsync
        .snapshots()
        .iter()
        .map(|s| {
            let busy: Vec<String> = s
                .lane_busy
                .iter()
                .map(|b| format!("{:.0}%", b / seconds * 100.0))
                .collect();
            format!("{} {}", s.target, busy.join(" "))
        })
        .collect();
    rowsync.shutdown().await;
    let note = format!(
        "rowsync CPU {cpu:.2}s; lanes busy (of the wall time): {}",
        lanes.join("; ")
    );
    Ok((seconds, note))
}

/// Fails unless rowsync's replica on `server` holds workload `w`'s rows as `want`.
async fn check_replica(
    server: &LocalServer,
    w: Workload,
    want: &(u64, String),
) -> anyhow::Result<()> {
    let got = fingerprint(&mut conn(server, "").await?, w, w.database()).await?;
    if &got != want {
        bail!(
            "a rowsync replica of {} differs from the source: {got:?} vs {want:?}",
            w.name()
        );
    }
    Ok(())
}

/// MariaDB replication catching up on backlog `b` of workload `w` into `replica` (started
/// with `replicate-wild-do-table` on the workload's database).
async fn native_catch_up(
    source: &LocalServer,
    replica: &LocalServer,
    w: Workload,
    b: &Backlog,
) -> anyhow::Result<f64> {
    let db = w.database();
    let mut r = conn(replica, "").await?;
    r.query_drop(format!("CREATE DATABASE {db}")).await?;
    r.query_drop(w.create_table(db)).await?;
    r.exec_drop("SET GLOBAL gtid_slave_pos = ?", (&b.start_gtid,))
        .await?;
    r.query_drop(format!(
        "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'root', MASTER_PASSWORD = '', MASTER_USE_GTID = slave_pos",
        source.port
    ))
    .await?;
    settle().await;
    let started = Instant::now();
    r.query_drop("START SLAVE").await?;
    let head = b.head.clone();
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

/// The target server alone taking workload `w`'s rows as large multi-row statements: every
/// row as inserted, then one upsert per row update, each carrying the row as it is after that
/// update (so the last one leaves the source's final row) — the same row writes as the
/// backlog, without replication.
async fn apply_floor(
    server: &LocalServer,
    w: Workload,
    opts: &BenchOptions,
) -> anyhow::Result<f64> {
    let db = w.database();
    let mut c = conn(server, "").await?;
    c.query_drop(format!("CREATE DATABASE {db}")).await?;
    c.query_drop(w.create_table(db)).await?;
    let mut statements = Vec::new();
    let ids: Vec<u64> = (1..=opts.products).collect();
    for chunk in ids.chunks(1000) {
        let values: Vec<String> = chunk.iter().map(|&id| w.floor_row(id, 0)).collect();
        statements.push(format!(
            "INSERT INTO {db}.product VALUES {}",
            values.join(",")
        ));
    }
    // Updates go round the table: the i-th one is row i % products + 1's (i / products + 1)-th.
    let products = opts.products.max(1);
    let updated: Vec<(u64, u64)> = (0..opts.updates)
        .map(|i| (i % products + 1, i / products + 1))
        .collect();
    for chunk in updated.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|&(id, version)| w.floor_row(id, version))
            .collect();
        statements.push(format!(
            "INSERT INTO {db}.product VALUES {} ON DUPLICATE KEY UPDATE {}",
            values.join(","),
            w.floor_upsert()
        ));
    }
    settle().await;
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
    src.query_drop(Workload::W1.create_table("copying")).await?;
    let mut first = 1;
    while first <= rows {
        let last = (first + 499_999).min(rows);
        src.query_drop(Workload::W1.insert("copying", first, last))
            .await?;
        first = last + 1;
    }
    let want = fingerprint(&mut src, Workload::W1, "copying").await?;

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
    settle().await;
    let started = Instant::now();
    let rowsync = spawn_rowsync(&text, &bench.dir, "copy.toml")?;
    wait_streaming(&ours, "copying", Duration::from_secs(3600)).await?;
    let ours_secs = started.elapsed().as_secs_f64();
    rowsync.shutdown().await;
    let mut t = conn(&ours, "copying").await?;
    let got = fingerprint(&mut t, Workload::W1, "copying").await?;
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
    settle().await;
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
    let got = fingerprint(&mut d, Workload::W1, "copying").await?;
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

/// A workload's backlog as written to the source.
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
    /// The part of each sample after the source's COMMIT returned (rowsync's own share).
    after_commit: Vec<f64>,
}

/// Runs `rate` row changes per second for `secs` seconds — transactions of 10: nine updates of
/// rows of workload `w` (its table pre-filled with 10,000 rows in a database of its own) and
/// one insert of a row stamped with its write time in microseconds — with rowsync replicating
/// into two durable targets, and measures when each stamped row becomes visible on each target
/// (polled every 5 ms, so samples are up to 5 ms late).
async fn steady_lag(
    bench: &Bench,
    source: &LocalServer,
    w: Workload,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Lag> {
    const POLL: Duration = Duration::from_millis(5);
    let db = w.steady_database();
    let mut src = conn(source, "").await?;
    src.query_drop(format!("CREATE DATABASE {db}")).await?;
    src.query_drop(format!("USE {db}")).await?;
    src.query_drop(w.create_table(db)).await?;
    src.query_drop("CREATE TABLE tick (id BIGINT UNSIGNED PRIMARY KEY, written_us BIGINT NOT NULL) ENGINE=InnoDB").await?;
    src.query_drop(w.insert(db, 1, 10_000)).await?;
    let server_id = |n: u32| n + w.id_offset();
    let targets = [
        bench
            .server(&w.dir("lag-order"), Role::Target, server_id(11), DURABLE)
            .await?,
        bench
            .server(&w.dir("lag-purchase"), Role::Target, server_id(12), DURABLE)
            .await?,
    ];
    let name = w.dir("lag");
    let text = replica_config(
        source,
        server_id(4980),
        None,
        &[&targets[0], &targets[1]],
        &format!("{db}.*"),
        &bench.dir.join(format!("{name}.state.db")),
    )
    .await?
        + &bench.rowsync_extra;
    let rowsync = spawn_rowsync(&text, &bench.dir, &format!("{name}.toml"))?;
    for target in &targets {
        wait_streaming(target, db, Duration::from_secs(600)).await?;
    }
    settle().await;
    let now_us = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
    };
    let transactions = (rate * secs / 10).max(1);
    let every = Duration::from_secs_f64(10.0 / rate.max(1) as f64);
    // When each transaction's COMMIT returned, by id.
    let committed = std::sync::Mutex::new(vec![0i64; transactions as usize + 1]);
    let writer = async {
        let began = tokio::time::Instant::now();
        for id in 1..=transactions {
            tokio::time::sleep_until(began + every.mul_f64((id - 1) as f64)).await;
            let first = (id * 9) % 9_990 + 1;
            src.query_drop(format!(
                "BEGIN; {}; INSERT INTO {db}.tick VALUES ({id}, {}); COMMIT",
                w.update(db, first, first + 8),
                now_us()
            ))
            .await?;
            if let Ok(mut c) = committed.lock() {
                c[id as usize] = now_us();
            }
        }
        anyhow::Ok(transactions as f64 * 10.0 / began.elapsed().as_secs_f64())
    };
    let poll = |target: &LocalServer| {
        let url = target.url(db);
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
                    lags.push((id, written, at));
                    seen = seen.max(id);
                }
                tokio::time::sleep(POLL).await;
            }
            anyhow::Ok(lags)
        }
    };
    let (rate, a, b) = tokio::join!(writer, poll(&targets[0]), poll(&targets[1]));
    rowsync.shutdown().await;
    let mut seen = a?;
    seen.extend(b?);
    let committed = committed.into_inner().unwrap_or_default();
    let mut samples: Vec<f64> = seen
        .iter()
        .map(|(_, written, at)| (at - written) as f64 / 1000.0)
        .collect();
    // Seen before the COMMIT's answer reached the writer: no lag of rowsync's own.
    let mut after_commit: Vec<f64> = seen
        .iter()
        .map(|(id, _, at)| {
            let done = committed.get(*id as usize).copied().unwrap_or(0);
            (at - done).max(0) as f64 / 1000.0
        })
        .collect();
    let want = fingerprint(&mut src, w, db).await?;
    for target in &targets {
        let got = fingerprint(&mut conn(target, db).await?, w, db).await?;
        if got != want {
            bail!("a steady-load replica differs from the source: {got:?} vs {want:?}");
        }
    }
    samples.sort_by(f64::total_cmp);
    after_commit.sort_by(f64::total_cmp);
    Ok(Lag {
        rate: rate?,
        samples,
        after_commit,
    })
}

/// The `p` quantile of sorted `samples`.
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// Writes workload `w`'s backlog to the source — its table created first, outside the backlog
/// — and describes it in `out`.
async fn write_backlog(
    source: &LocalServer,
    w: Workload,
    opts: &BenchOptions,
    out: &mut String,
) -> anyhow::Result<Backlog> {
    let db = w.database();
    let mut src = conn(source, "").await?;
    src.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .await?;
    src.query_drop(format!("USE {db}")).await?;
    src.query_drop(w.create_table(db)).await?;
    let start_gtid: String = src
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .unwrap_or_default();
    let written = Instant::now();
    let changes = write_workload(&mut src, w, opts).await?;
    let write_secs = written.elapsed().as_secs_f64();
    let head: String = src
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .unwrap_or_default();
    let row_bytes: Option<Option<u64>> = src
        .query_first(format!(
            "SELECT CAST(AVG(LENGTH({})) AS UNSIGNED) FROM {db}.product",
            w.row_text()
        ))
        .await?;
    let _ = writeln!(
        out,
        "{}{} ({}): {changes} row changes to {db}.product ({} inserts in transactions of 100, {} updates in transactions of 10; rows of {} bytes as text), written in {write_secs:.1}s",
        if out.is_empty() { "" } else { "\n" },
        w.name(),
        w.kind(),
        opts.products,
        opts.updates,
        row_bytes.flatten().unwrap_or(0)
    );
    Ok(Backlog {
        start_gtid,
        head,
        changes,
        inserts: opts.products,
        fingerprint: fingerprint(&mut src, w, db).await?,
    })
}

/// The reader alone on W1's backlog, beside `mariadb-binlog`.
async fn decode_part(
    bench: &Bench,
    source: &LocalServer,
    w1: &Backlog,
    out: &mut String,
) -> anyhow::Result<()> {
    let [ours, raw, verbose] = decode(bench, source, w1).await?;
    let rate = |s: f64| w1.changes as f64 / s;
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
    Ok(())
}

/// Every contender catching up on backlog `b` of workload `w`.
async fn catch_up(
    bench: &Bench,
    source: &LocalServer,
    w: Workload,
    b: &Backlog,
    opts: &BenchOptions,
    out: &mut String,
) -> anyhow::Result<()> {
    let db = w.database();
    let server_id = |n: u32| n + w.id_offset();
    let changes = b.changes;
    let want = &b.fingerprint;
    let mut figures = Vec::new();
    let target = bench
        .server(
            &w.dir("rowsync-target"),
            Role::Target,
            server_id(2),
            DURABLE,
        )
        .await?;
    let cpu = cpu_seconds(&[&target]);
    let (secs, note) = rowsync_catch_up(source, &[&target], w, b, bench).await?;
    figures.push(Figure {
        name: "rowsync, 1 durable target".into(),
        seconds: secs,
        changes,
        target_cpu: cpu_seconds(&[&target]) - cpu,
        note: Some(note),
    });
    // Checked and stopped now: its purge must not run beside the next contender.
    check_replica(&target, w, want).await?;
    drop(target);
    let order = bench
        .server(&w.dir("rowsync-order"), Role::Target, server_id(6), DURABLE)
        .await?;
    let purchase = bench
        .server(
            &w.dir("rowsync-purchase"),
            Role::Target,
            server_id(7),
            DURABLE,
        )
        .await?;
    let cpu = cpu_seconds(&[&order, &purchase]);
    let (secs, note) = rowsync_catch_up(source, &[&order, &purchase], w, b, bench).await?;
    figures.push(Figure {
        name: "rowsync, 2 durable targets (total)".into(),
        seconds: secs,
        changes: 2 * changes,
        target_cpu: cpu_seconds(&[&order, &purchase]) - cpu,
        note: Some(note),
    });
    for server in [&order, &purchase] {
        check_replica(server, w, want).await?;
    }
    drop((order, purchase));
    let wild = format!("--replicate-wild-do-table={db}.%");
    let native = |threads: &'static str, mode: &'static str| {
        [DURABLE, &["--log-slave-updates=ON", &wild, threads, mode]].concat()
    };
    for (name, dir, n, args) in [
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
        let server = bench
            .server(&w.dir(dir), Role::Target, server_id(n), &args)
            .await?;
        let cpu = cpu_seconds(&[&server]);
        let secs = native_catch_up(source, &server, w, b).await?;
        let target_cpu = cpu_seconds(&[&server]) - cpu;
        let got = fingerprint(&mut conn(&server, "").await?, w, db).await?;
        if &got != want {
            bail!(
                "{name}: the replica of {} differs from the source: {got:?} vs {want:?}",
                w.name()
            );
        }
        figures.push(Figure {
            name: name.into(),
            seconds: secs,
            changes,
            target_cpu,
            note: None,
        });
    }
    let floor = bench
        .server(&w.dir("floor"), Role::Target, server_id(5), DURABLE)
        .await?;
    let cpu = cpu_seconds(&[&floor]);
    let floor_secs = apply_floor(&floor, w, opts).await?;
    figures.push(Figure {
        name: "apply floor (multi-row upserts piped in)".into(),
        seconds: floor_secs,
        changes,
        target_cpu: cpu_seconds(&[&floor]) - cpu,
        note: None,
    });
    let got = fingerprint(&mut conn(&floor, "").await?, w, db).await?;
    if &got != want {
        bail!(
            "the apply floor's rows of {} differ from the source: {got:?} vs {want:?}",
            w.name()
        );
    }

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
        "\ncatch-up on {} ({})\n{:<46} {:>9} {:>13} {:>11} {:>9} {:>11}",
        w.name(),
        w.kind(),
        "",
        "seconds",
        "changes/s",
        "vs native",
        "of floor",
        "target CPU"
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
    for f in &figures {
        if let Some(note) = &f.note {
            let _ = writeln!(out, "{}: {note}", f.name);
        }
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
        rowsync_extra: opts
            .lanes
            .map(|n| format!("\n[apply]\nlanes = {n}\n"))
            .unwrap_or_default(),
    };
    let mut source = bench.server("source", Role::Source, 1, &[]).await?;
    // The memory part's table lives there too.
    conn(&source, "")
        .await?
        .query_drop("CREATE DATABASE product")
        .await?;
    let mut out = String::new();
    // Each workload's backlog is written right before its own measurements; decode reads W1's.
    for w in opts.workloads() {
        let decode = w == Workload::W1 && opts.runs(Part::Decode);
        if !decode && !opts.runs(Part::Catchup) {
            continue;
        }
        let backlog = write_backlog(&source, w, &opts, &mut out).await?;
        if decode {
            decode_part(&bench, &source, &backlog, &mut out).await?;
        }
        if opts.runs(Part::Catchup) {
            catch_up(&bench, &source, w, &backlog, &opts, &mut out).await?;
        }
    }
    if opts.runs(Part::Decode) && !opts.workloads.contains(&Workload::W1) {
        let _ = writeln!(
            out,
            "decode skipped: it reads W1, which --workloads leaves out"
        );
    }
    for w in opts.workloads().filter(|_| opts.runs(Part::Lag)) {
        let lag = steady_lag(&bench, &source, w, opts.lag_rate, opts.lag_secs).await?;
        let _ = writeln!(
            out,
            "\nsteady load on {}, {:.0} row changes/s for {}s into 2 durable targets: commit-to-visible lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples); after the source's COMMIT returned: p50 {:.1} ms, p99 {:.1} ms; both replicas equal the source",
            w.name(),
            lag.rate,
            opts.lag_secs,
            percentile(&lag.samples, 0.5),
            percentile(&lag.samples, 0.99),
            lag.samples.last().copied().unwrap_or(0.0),
            lag.samples.len(),
            percentile(&lag.after_commit, 0.5),
            percentile(&lag.after_commit, 0.99),
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

//! `rowsync bench`: catch-up speed side by side with MariaDB's own replication, on one machine
//! in one run, on throwaway local servers.
//!
//! Workload W1 is written to the source before any replica starts: `products` inserts in
//! transactions of 100 rows, then `updates` updates in transactions of 10. Each contender then
//! catches up on that same backlog into a durable server (`innodb_flush_log_at_trx_commit=1`,
//! `sync_binlog=1`, binlog on): rowsync into one target; MariaDB replication restricted to the
//! same tables, serial and with optimistic parallel apply (4 threads); and the apply floor —
//! the same rows as large multi-row upserts piped straight into a fresh server. Every replica
//! must equal the source afterwards, or no figure is reported.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::local::{self, Binaries, LocalServer, Role};
use crate::pipeline::runner;
use crate::pipeline::status::TargetStatus;

/// Sizes of the run.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    pub products: u64,
    pub updates: u64,
    /// Rows of the one big transaction whose memory use is measured.
    pub big_rows: u64,
    /// Rows of the table whose initial copy is timed beside `mariadb-dump | mariadb`.
    pub copy_rows: u64,
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
}

async fn conn(server: &LocalServer, db: &str) -> anyhow::Result<Conn> {
    Ok(Conn::new(Opts::from_url(&server.url(db))?).await?)
}

fn start(
    bins: &Binaries,
    dir: &Path,
    name: &str,
    role: Role,
    id: u32,
    extra: &[&str],
) -> anyhow::Result<LocalServer> {
    let run = dir.join(name);
    std::fs::create_dir_all(&run)?;
    let data = run.join("data");
    local::install(bins, &data)?;
    Ok(LocalServer::start(bins, &data, &run, role, id, extra)?)
}

/// Writes W1 to the source; returns the number of row changes.
async fn write_workload(src: &mut Conn, opts: BenchOptions) -> anyhow::Result<u64> {
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
fn spawn_rowsync(
    text: &str,
    dir: &Path,
    name: &str,
) -> anyhow::Result<(CancellationToken, tokio::task::JoinHandle<()>)> {
    let config = Arc::new(Config::from_toml(
        text,
        &dir.join(name),
        std::iter::empty(),
    )?);
    let cancel = CancellationToken::new();
    let statuses = TargetStatus::for_targets(&config);
    let pipeline = tokio::spawn(runner::run_all(config, statuses, cancel.clone()));
    Ok((cancel, pipeline))
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
    let mut text = format!(
        "[source]\nurl = \"{}\"\nserver_id = 4901\nheartbeat_secs = 1\nstart = \"gtid:{start_gtid}\"\n\n[state]\npath = \"{}\"\n",
        source.url(""),
        dir.join(format!("bench-{}.state.db", targets.len())).display()
    );
    let mut names = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        conn(target, "")
            .await?
            .query_drop("CREATE DATABASE product")
            .await?;
        let _ = write!(
            text,
            "\n[[targets]]\nname = \"t{i}\"\nurl = \"{}\"\n",
            target.url("product")
        );
        names.push(format!("\"t{i}\""));
    }
    let _ = write!(
        text,
        "\n[[mappings]]\nsource = \"product.*\"\ntargets = [{}]\n",
        names.join(", ")
    );
    let started = Instant::now();
    let (cancel, pipeline) = spawn_rowsync(&text, dir, "bench.toml")?;
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
    cancel.cancel();
    pipeline.await?;
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
async fn apply_floor(server: &LocalServer, opts: BenchOptions) -> anyhow::Result<f64> {
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
    conn(target, "")
        .await?
        .query_drop("CREATE DATABASE product")
        .await?;
    let config = dir.join("big.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\nserver_id = 4950\nheartbeat_secs = 1\nstart = \"gtid:{from}\"\n\n[[targets]]\nname = \"t\"\nurl = \"{}\"\n\n[[mappings]]\nsource = \"product.big\"\ntargets = [\"t\"]\n\n[state]\npath = \"{}\"\n",
            source.url(""),
            target.url("product"),
            dir.join("big.state.db").display()
        ),
    )?;
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
    bins: &Binaries,
    source: &LocalServer,
    ours: &LocalServer,
    dumped: &LocalServer,
    rows: u64,
    dir: &Path,
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

    conn(ours, "")
        .await?
        .query_drop("CREATE DATABASE copying")
        .await?;
    let text = format!(
        "[source]\nurl = \"{}\"\nserver_id = 4970\nheartbeat_secs = 1\n\n[[targets]]\nname = \"t\"\nurl = \"{}\"\n\n[[mappings]]\nsource = \"copying.product\"\ntargets = [\"t\"]\n\n[copy]\nchunk_rows = 20000\n\n[state]\npath = \"{}\"\n",
        source.url(""),
        ours.url("copying"),
        dir.join("copy.state.db").display()
    );
    let started = Instant::now();
    let (cancel, pipeline) = spawn_rowsync(&text, dir, "copy.toml")?;
    let mut t = conn(ours, "copying").await?;
    wait_until(
        async || {
            let phase: Option<Option<String>> = t
                .query_first("SELECT phase FROM rowsync_checkpoint")
                .await
                .unwrap_or(None);
            Ok(phase.flatten().as_deref() == Some("streaming"))
        },
        Duration::from_secs(3600),
    )
    .await?;
    let ours_secs = started.elapsed().as_secs_f64();
    cancel.cancel();
    pipeline.await?;
    let got: Option<(u64, Option<String>)> = t.query_first(fingerprint_sql).await?;
    if got != want {
        bail!("rowsync's copy differs from the source: {got:?} vs {want:?}");
    }

    conn(dumped, "")
        .await?
        .query_drop("CREATE DATABASE copying")
        .await?;
    let program = |name: &str| {
        let beside = bins.mariadbd.with_file_name(name);
        if beside.is_file() {
            beside.display().to_string()
        } else {
            name.to_string()
        }
    };
    let script = format!(
        "set -o pipefail; {} --no-defaults -h127.0.0.1 -P{} -uroot --single-transaction copying product | {} --no-defaults -h127.0.0.1 -P{} -uroot copying",
        program("mariadb-dump"),
        source.port,
        program("mariadb"),
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
    let got: Option<(u64, Option<String>)> =
        conn(dumped, "").await?.query_first(fingerprint_sql).await?;
    if got != want {
        bail!("the dump's copy differs from the source: {got:?} vs {want:?}");
    }
    Ok((ours_secs, dump_secs))
}

/// Runs the benchmark and returns its report.
pub async fn run(opts: BenchOptions) -> anyhow::Result<String> {
    let bins = Binaries::find()?;
    let dir = tempfile::Builder::new()
        .prefix("rowsync-bench-")
        .tempdir()?;
    let path = dir.path().to_owned();
    let b = bins.clone();
    let p = path.clone();
    let source = tokio::task::spawn_blocking(move || start(&b, &p, "source", Role::Source, 1, &[]))
        .await??;
    let mut src = conn(&source, "").await?;
    src.query_drop("CREATE DATABASE product").await?;
    src.query_drop(TABLE).await?;
    src.query_drop("USE product").await?;
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
    let want = fingerprint(&mut src).await?;

    let servers = {
        let (b, p) = (bins.clone(), path.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok((
                start(&b, &p, "rowsync-target", Role::Target, 2, DURABLE)?,
                start(&b, &p, "rowsync-order", Role::Target, 6, DURABLE)?,
                start(&b, &p, "rowsync-purchase", Role::Target, 7, DURABLE)?,
                start(
                    &b,
                    &p,
                    "native-serial",
                    Role::Target,
                    3,
                    &[
                        DURABLE,
                        &[
                            "--log-slave-updates=ON",
                            "--replicate-wild-do-table=product.%",
                            "--slave-parallel-threads=0",
                        ],
                    ]
                    .concat(),
                )?,
                start(
                    &b,
                    &p,
                    "native-parallel",
                    Role::Target,
                    4,
                    &[
                        DURABLE,
                        &[
                            "--log-slave-updates=ON",
                            "--replicate-wild-do-table=product.%",
                            "--slave-parallel-threads=4",
                            "--slave-parallel-mode=optimistic",
                        ],
                    ]
                    .concat(),
                )?,
                start(&b, &p, "floor", Role::Target, 5, DURABLE)?,
                start(&b, &p, "big-target", Role::Target, 8, DURABLE)?,
                start(&b, &p, "copy-target", Role::Target, 9, DURABLE)?,
                start(&b, &p, "dump-target", Role::Target, 10, DURABLE)?,
            ))
        })
        .await??
    };
    let (target, order, purchase, serial, parallel, floor, big, copy_target, dump_target) = servers;
    let mut figures = Vec::new();
    let secs = rowsync_catch_up(&source, &[&target], &start_gtid, &head, &path).await?;
    figures.push(Figure {
        name: "rowsync, 1 durable target".into(),
        seconds: secs,
        changes,
    });
    let secs = rowsync_catch_up(&source, &[&order, &purchase], &start_gtid, &head, &path).await?;
    figures.push(Figure {
        name: "rowsync, 2 durable targets (total)".into(),
        seconds: secs,
        changes: 2 * changes,
    });
    for server in [&target, &order, &purchase] {
        let got = fingerprint(&mut conn(server, "").await?).await?;
        if got != want {
            bail!("a rowsync replica differs from the source: {got:?} vs {want:?}");
        }
    }
    for (name, server) in [
        ("MariaDB replication, serial", &serial),
        ("MariaDB replication, optimistic parallel x4", &parallel),
    ] {
        let secs = native_catch_up(&source, server, &start_gtid, &head).await?;
        let got = fingerprint(&mut conn(server, "").await?).await?;
        if got != want {
            bail!("{name}: the replica differs from the source: {got:?} vs {want:?}");
        }
        figures.push(Figure {
            name: name.into(),
            seconds: secs,
            changes,
        });
    }
    let floor_secs = apply_floor(&floor, opts).await?;
    figures.push(Figure {
        name: "apply floor (multi-row upserts piped in)".into(),
        seconds: floor_secs,
        changes,
    });

    // Compared as rates, so two targets count their total.
    let rate = |f: &Figure| f.changes as f64 / f.seconds;
    let native_best = figures
        .iter()
        .filter(|f| f.name.starts_with("MariaDB"))
        .map(rate)
        .fold(0.0, f64::max);
    let floor_rate = changes as f64 / floor_secs;
    let mut out = String::new();
    let _ = writeln!(out, "W1: {} row changes ({} inserts in transactions of 100, {} updates in transactions of 10), written in {write_secs:.1}s", changes, opts.products, opts.updates);
    let _ = writeln!(
        out,
        "{:<46} {:>9} {:>13} {:>11} {:>9}",
        "contender", "seconds", "changes/s", "vs native", "of floor"
    );
    for f in &figures {
        let _ = writeln!(
            out,
            "{:<46} {:>9.2} {:>13.0} {:>10.2}x {:>8.0}%",
            f.name,
            f.seconds,
            rate(f),
            rate(f) / native_best,
            rate(f) / floor_rate * 100.0
        );
    }
    let _ = writeln!(
        out,
        "every replica equals the source ({} rows, checksum {})",
        want.0, want.1
    );
    let (peak_mb, atomic) = big_transaction(&source, &big, opts.big_rows, &path).await?;
    if !atomic {
        bail!("a reader saw part of the {}-row transaction", opts.big_rows);
    }
    let _ = writeln!(
        out,
        "one {}-row source transaction: rowsync's peak RSS {peak_mb} MB; readers saw none or all of it",
        opts.big_rows
    );
    let (ours, dumped) = initial_copy(
        &bins,
        &source,
        &copy_target,
        &dump_target,
        opts.copy_rows,
        &path,
    )
    .await?;
    let _ = writeln!(
        out,
        "initial copy of a {}-row table: rowsync {ours:.2}s, mariadb-dump | mariadb {dumped:.2}s ({:.2}x); both equal the source",
        opts.copy_rows,
        dumped / ours
    );
    for mut s in [
        source,
        target,
        order,
        purchase,
        serial,
        parallel,
        floor,
        big,
        copy_target,
        dump_target,
    ] {
        s.stop(false);
    }
    dir.close()?;
    Ok(out)
}

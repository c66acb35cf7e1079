//! `rowsync demo`: the whole product on one machine, with no setup. It starts local MariaDB
//! servers for the Product source and the Order and Purchase targets in a temp dir, fills the
//! source with product/category/batch rows, runs a gentle workload on it, replicates
//! product+category+batch to Order and a filtered product plus category to Purchase (initial
//! copy, then streaming), and prints what happens until Ctrl-C, which stops everything it
//! started and removes the temp dir.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mysql_async::prelude::*;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::run::Beside;
use crate::config::Config;
use crate::engine::status::{Snapshot, State};
use crate::engine::Engine;
use crate::local::{self, Binaries, LocalServer, Role};

const SCHEMA: &[&str] = &[
    "CREATE DATABASE product",
    "USE product",
    "CREATE TABLE product.category (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, parent_id INT NULL) ENGINE=InnoDB",
    "CREATE TABLE product.product (id BIGINT UNSIGNED PRIMARY KEY, code VARCHAR(32) NOT NULL, model VARCHAR(100) NOT NULL, category_id INT NOT NULL, production_year YEAR NOT NULL, price DECIMAL(10,2) NOT NULL, updated_at DATETIME(3) NOT NULL, UNIQUE KEY uk_code (code), KEY idx_category (category_id)) ENGINE=InnoDB",
    "CREATE TABLE product.batch (product_id BIGINT UNSIGNED NOT NULL, batch_no INT NOT NULL, quantity INT NOT NULL, made_on DATE NOT NULL, PRIMARY KEY (product_id, batch_no)) ENGINE=InnoDB",
    "INSERT INTO product.category VALUES (1, 'Hydraulic pumps', NULL), (2, 'Gear pumps', 1), (3, 'Piston pumps', 1), (4, 'Electric motors', NULL), (5, 'Gear motors', 4), (6, 'Valves', NULL), (7, 'Ball valves', 6), (8, 'Check valves', 6), (9, 'Bearings', NULL), (10, 'Seals', NULL), (11, 'Couplings', NULL), (12, 'Sensors', NULL)",
    "INSERT INTO product.product SELECT seq, CONCAT('PRD-', LPAD(seq, 6, '0')), CONCAT(ELT(1 + seq % 5, 'HX', 'PX', 'MX', 'TX', 'QX'), '-', 100 + seq % 400), 1 + seq % 12, 2015 + seq % 11, ROUND(12 + (seq % 500) * 1.37, 2), '2025-01-01 00:00:00' + INTERVAL seq MINUTE FROM seq_1_to_4000",
    "INSERT INTO product.batch SELECT 1 + seq % 4000, seq, 10 + seq % 90, '2024-01-01' + INTERVAL seq % 700 DAY FROM seq_1_to_8000",
];

const MAPPINGS: &str = r#"
[[mappings]]
source = "product.product"
targets = ["order"]

# The Purchase service only cares about current models.
[[mappings]]
source = "product.product"
targets = ["purchase"]
where = "production_year >= 2020"

[[mappings]]
source = "product.category"
targets = ["order", "purchase"]

[[mappings]]
source = "product.batch"
targets = ["order"]
"#;

/// The servers and temp dir of a running demo; dropping it stops and removes everything.
struct Servers {
    source: LocalServer,
    order: LocalServer,
    purchase: LocalServer,
    // Declared last: removed after the servers above have stopped.
    dir: tempfile::TempDir,
}

fn start_servers(bins: &Binaries) -> anyhow::Result<Servers> {
    let dir = tempfile::Builder::new().prefix("rowsync-demo-").tempdir()?;
    let start = |name: &str, role: Role, id: u32| -> anyhow::Result<LocalServer> {
        let run = dir.path().join(name);
        std::fs::create_dir_all(&run)?;
        let data = run.join("data");
        local::install(bins, &data)?;
        Ok(LocalServer::start(bins, &data, &run, role, id, &[])?)
    };
    Ok(Servers {
        source: start("source", Role::Source, 1)?,
        order: start("order", Role::Target, 2)?,
        purchase: start("purchase", Role::Target, 3)?,
        dir,
    })
}

async fn prepare(servers: &Servers) -> anyhow::Result<()> {
    let mut src =
        mysql_async::Conn::new(mysql_async::Opts::from_url(&servers.source.url(""))?).await?;
    for stmt in SCHEMA {
        src.query_drop(*stmt)
            .await
            .with_context(|| stmt.to_string())?;
    }
    for (server, db) in [
        (&servers.order, "order_db"),
        (&servers.purchase, "purchase_db"),
    ] {
        let mut t = mysql_async::Conn::new(mysql_async::Opts::from_url(&server.url(""))?).await?;
        t.query_drop(format!("CREATE DATABASE {db}")).await?;
    }
    Ok(())
}

/// The demo's configuration, written to `demo.toml` in the temp dir (the admin UI edits its
/// mappings there), with the admin API on `admin` and user `admin`'s `password`.
fn config(servers: &Servers, admin: SocketAddr, password: &str) -> anyhow::Result<Config> {
    let text = format!(
        "[source]\nurl = \"{}\"\nserver_id = 4101\nheartbeat_secs = 1\n\n[[targets]]\nname = \"order\"\nurl = \"{}\"\n\n[[targets]]\nname = \"purchase\"\nurl = \"{}\"\n{MAPPINGS}\n[state]\npath = \"{}\"\n\n[admin]\nlisten = \"{admin}\"\n",
        servers.source.url(""),
        servers.order.url("order_db"),
        servers.purchase.url("purchase_db"),
        servers.dir.path().join("state.db").display()
    );
    let path = servers.dir.path().join("demo.toml");
    std::fs::write(&path, &text)?;
    let mut config = Config::from_toml(&text, &path, std::iter::empty())?;
    // Only in memory: the password is never written to a file.
    config.admin.password = Some(password.to_owned());
    Ok(config)
}

/// 127.0.0.1:8080 when it is free, else any free port.
fn admin_address() -> SocketAddr {
    let preferred: SocketAddr = ([127, 0, 0, 1], 8080).into();
    std::net::TcpListener::bind(preferred)
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .and_then(|l| l.local_addr())
        .unwrap_or(preferred)
}

/// A password for the demo's admin user, printed once.
fn generated_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 16)
}

/// A gentle, continuous stream of product changes until `cancel`.
async fn workload(url: String, cancel: CancellationToken) -> anyhow::Result<u64> {
    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url)?).await?;
    let mut next_id: u64 = 4001;
    let mut changes = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(150));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(changes),
            _ = tick.tick() => {}
        }
        let (kind, id, n) = {
            let mut rng = rand::rng();
            (
                rng.random_range(0..10u8),
                rng.random_range(1..next_id),
                rng.random_range(1..500u32),
            )
        };
        let sql = match kind {
            0..=2 => {
                next_id += 1;
                format!(
                    "INSERT INTO product.product VALUES ({next_id}, 'PRD-{next_id:06}', 'NX-{n}', {}, {}, {}.50, NOW(3))",
                    1 + n % 12,
                    2015 + n % 11,
                    10 + n
                )
            }
            3..=7 => format!("UPDATE product.product SET price = price + 0.25, updated_at = NOW(3) WHERE id = {id}"),
            8 => format!("INSERT IGNORE INTO product.batch VALUES ({id}, {}, {n}, CURDATE())", 10_000 + n),
            _ => format!("DELETE FROM product.product WHERE id = {id}"),
        };
        conn.query_drop(sql).await?;
        changes += 1;
    }
}

fn describe(s: &Snapshot) -> String {
    match &s.state {
        State::Copying => {
            let (copied, estimated): (u64, u64) = s.copy.iter().fold((0, 0), |(a, b), p| {
                (a + p.rows_copied, b + p.rows_estimated)
            });
            format!("{}: copying {copied}/~{estimated} rows", s.target)
        }
        State::Streaming => {
            let copied: u64 = s.copy.iter().map(|p| p.rows_copied).sum();
            format!(
                "{}: streaming at {}, lag {}s, {} changes applied (initial copy: {copied} rows)",
                s.target,
                s.checkpoint
                    .as_ref()
                    .map(|c| c.position.to_string())
                    .unwrap_or_default(),
                s.lag_secs().unwrap_or(0),
                s.rows_applied
            )
        }
        other => format!("{}: {other:?}", s.target),
    }
}

/// Runs the demo until Ctrl-C (or `run_for`, for tests), with `beside` (the admin UI) served
/// next to the engine.
pub async fn run(run_for: Option<Duration>, beside: Beside) -> anyhow::Result<()> {
    let bins = Binaries::find()?;
    let mut out = std::io::stdout();
    let servers = tokio::task::spawn_blocking(move || start_servers(&bins)).await??;
    let dir: &Path = servers.dir.path();
    writeln!(
        out,
        "rowsync demo: local MariaDB servers in {}",
        dir.display()
    )?;
    writeln!(out, "  source   {}", servers.source.url("product"))?;
    writeln!(
        out,
        "  order    {}  (product, category, batch)",
        servers.order.url("order_db")
    )?;
    writeln!(
        out,
        "  purchase {}  (product where production_year >= 2020, category)",
        servers.purchase.url("purchase_db")
    )?;
    let admin = admin_address();
    let password = generated_password();
    writeln!(
        out,
        "  admin UI http://{admin}/  (user admin, password {password})"
    )?;
    writeln!(out, "Ctrl-C stops everything and removes the temp dir.")?;
    out.flush()?;
    prepare(&servers).await?;
    let config = Arc::new(config(&servers, admin, &password)?);

    let cancel = CancellationToken::new();
    let rowsync = Arc::new(Engine::start(config.clone()));
    let served = tokio::spawn(beside(config.clone(), rowsync.clone(), cancel.clone()));
    let load = tokio::spawn(workload(servers.source.url(""), cancel.child_token()));

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let deadline = async {
            match run_for {
                Some(d) => tokio::time::sleep(d.saturating_sub(started.elapsed())).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = crate::commands::shutdown_signal() => break,
            _ = deadline => break,
            _ = tick.tick() => {
                let line: Vec<String> = rowsync.snapshots().iter().map(describe).collect();
                writeln!(out, "[{:>4}s] {}", started.elapsed().as_secs(), line.join(" | "))?;
                out.flush()?;
            }
        }
    }
    writeln!(out, "stopping…")?;
    cancel.cancel();
    let changes = load.await?.unwrap_or(0);
    rowsync.shutdown().await;
    let _ = served.await;
    let shown = dir.display().to_string();
    let Servers {
        mut source,
        mut order,
        mut purchase,
        dir,
    } = servers;
    tokio::task::spawn_blocking(move || {
        for s in [&mut source, &mut order, &mut purchase] {
            s.stop(false);
        }
    })
    .await?;
    dir.close()?;
    writeln!(
        out,
        "stopped after {changes} workload changes; removed {shown}"
    )?;
    Ok(())
}

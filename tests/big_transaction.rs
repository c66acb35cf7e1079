//! A single source transaction of 1M rows: it reaches the target atomically (a concurrent
//! reader sees either none or all of its rows) and rowsync's memory stays bounded (peak RSS
//! well under the 200 MB budget), because the transaction streams through in batches inside
//! one open target transaction.
//!
//! Run: `cargo nextest run --test big_transaction`

mod common;

use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;

const ROWS: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_million_rows_in_one_transaction() {
    let c = Cluster::start(
        &[
            "CREATE DATABASE product",
            "CREATE TABLE product.big (id INT PRIMARY KEY, code VARCHAR(40) NOT NULL, qty INT NOT NULL, note VARCHAR(100)) ENGINE=InnoDB",
        ],
        &["order"],
        "[[mappings]]\nsource = \"product.big\"\ntargets = [\"order\"]\n\n[apply]\nlanes = 4\n",
        5101,
    )
    .await;
    let (source, order) = (c.source, &c.targets[0]);
    let rowsync = Rowsync::start(&c.cfg);
    wait_started(order, "order_db", &rowsync).await;
    let mut src = source.conn("product").await;
    let started = Instant::now();
    src.query_drop(format!(
        "INSERT INTO big SELECT seq, CONCAT('code-', seq), seq % 1000, REPEAT('n', 40) FROM seq_1_to_{ROWS}"
    ))
    .await
    .unwrap();

    let mut rep = order.conn("order_db").await;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut reads = 0;
    loop {
        let n: Option<u64> = rep.query_first("SELECT COUNT(*) FROM big").await.unwrap();
        let n = n.unwrap_or(0);
        assert!(
            n == 0 || n == ROWS,
            "a reader saw {n} of the transaction's {ROWS} rows"
        );
        reads += 1;
        if n == ROWS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the transaction did not arrive; log:\n{}",
            rowsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let peak = peak_rss_mb(rowsync.pid());
    eprintln!(
        "{ROWS} rows in one transaction applied in {:?}; {reads} reads; rowsync peak RSS {peak} MB",
        started.elapsed()
    );
    assert!(peak > 0 && peak < 200, "rowsync peak RSS {peak} MB");
    let sum: Option<u64> = rep.query_first("SELECT SUM(qty) FROM big").await.unwrap();
    let want: Option<u64> = src.query_first("SELECT SUM(qty) FROM big").await.unwrap();
    assert_eq!(sum, want);
}

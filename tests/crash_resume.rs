//! kill -9 of `rowsync` at random moments, ten times, during a 50k-change workload: after the
//! final restart both replicas equal the source, and no change was lost or applied twice.
//!
//! Double-applies are seen directly: identical AFTER INSERT/UPDATE triggers on the source
//! table and on each replica log (id, version) for every row change they see, and every
//! change sets a version number never used before. Replaying an upsert fires the replica's
//! trigger again (MariaDB fires AFTER UPDATE even for an unchanged row), so the replica's log
//! equals the source's log exactly only if every change was applied once.
//!
//! It runs on four apply lanes (`sink::lanes`), so kills land between groups committed in
//! order on different connections.
//!
//! Run: `cargo nextest run --test crash_resume`

mod common;

use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use rand::Rng;

const CHANGES: usize = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_ten_times_loses_and_repeats_nothing() {
    let c = Cluster::start(
        &[
            "CREATE DATABASE product",
            "CREATE TABLE product.product (id BIGINT PRIMARY KEY, code VARCHAR(40) NOT NULL, version BIGINT NOT NULL) ENGINE=InnoDB",
        ],
        &["order", "purchase"],
        "[[mappings]]\nsource = \"product.product\"\ntargets = [\"order\", \"purchase\"]\n\n[apply]\nmax_group_transactions = 200\nbatch_rows = 300\nlanes = 4\n",
        4301,
    )
    .await;
    let (source, cfg) = (c.source, c.cfg);
    let mut targets = c.targets.into_iter();
    let (order, purchase) = (targets.next().unwrap(), targets.next().unwrap());
    let mut src = source.conn("product").await;
    for s in version_triggers("product", "changes") {
        src.query_drop(s).await.unwrap();
    }
    let mut rowsync = Rowsync::start(&cfg);
    wait_started(&order, "order_db", &rowsync).await;
    wait_started(&purchase, "purchase_db", &rowsync).await;
    for (server, db) in [(&order, "order_db"), (&purchase, "purchase_db")] {
        let mut rep = server.conn(db).await;
        for s in version_triggers("product", "applied") {
            rep.query_drop(s).await.unwrap();
        }
    }

    // The workload: transactions of 1..=20 changes (insert, update or delete), each change
    // with a fresh version number.
    let workload = tokio::spawn(async move {
        let mut src = source.conn("product").await;
        let mut version: i64 = 0;
        let mut next_id: i64 = 1;
        let mut live: Vec<i64> = Vec::new();
        let mut done = 0;
        while done < CHANGES {
            let (n, picks): (usize, Vec<(u8, usize)>) = {
                let mut rng = rand::rng();
                let n = rng.random_range(1..=20usize).min(CHANGES - done);
                (
                    n,
                    (0..n)
                        .map(|_| (rng.random_range(0..10u8), rng.random_range(0..usize::MAX)))
                        .collect(),
                )
            };
            let mut stmts = vec!["START TRANSACTION".to_string()];
            for (kind, pick) in picks {
                version += 1;
                if live.is_empty() || kind < 4 {
                    stmts.push(format!(
                        "INSERT INTO product VALUES ({next_id}, 'code-{next_id}', {version})"
                    ));
                    live.push(next_id);
                    next_id += 1;
                } else if kind < 9 {
                    let id = live[pick % live.len()];
                    stmts.push(format!("UPDATE product SET version = {version}, code = CONCAT('c', {version}) WHERE id = {id}"));
                } else {
                    let id = live.swap_remove(pick % live.len());
                    stmts.push(format!("DELETE FROM product WHERE id = {id}"));
                }
            }
            stmts.push("COMMIT".into());
            src.query_drop(stmts.join(";")).await.unwrap();
            done += n;
        }
        source
    });

    // Ten kills at random moments while the workload runs.
    let mut kills = 0;
    while kills < 10 {
        let wait_ms = rand::rng().random_range(300..1500u64);
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        rowsync.kill9();
        kills += 1;
        rowsync = Rowsync::start(&cfg);
    }
    let source = workload.await.unwrap();
    let workload_done = Instant::now();

    let mut src = source.conn("product").await;
    let expected_log = version_log(&mut src, "changes").await;
    assert!(
        expected_log.len() > CHANGES / 2,
        "workload too small: {}",
        expected_log.len()
    );
    for (server, db) in [(&order, "order_db"), (&purchase, "purchase_db")] {
        let mut rep = server.conn(db).await;
        wait_equal(
            &mut src,
            &mut rep,
            "product",
            "id",
            Duration::from_secs(300),
        )
        .await;
        let applied = version_log(&mut rep, "applied").await;
        let mut dupes = applied.clone();
        dupes.dedup();
        assert_eq!(
            dupes.len(),
            applied.len(),
            "{db}: some change was applied twice ({} log rows, {} distinct)",
            applied.len(),
            dupes.len()
        );
        assert_eq!(
            applied, expected_log,
            "{db}: the replica's change log differs from the source's"
        );
    }
    eprintln!(
        "{} changes, {kills} kills; converged {:?} after the workload ended",
        expected_log.len(),
        workload_done.elapsed()
    );
    assert_eq!(rowsync.terminate(), Some(0), "{}", rowsync.log_text());
}

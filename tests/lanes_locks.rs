//! Parallel apply (`apply.lanes`) where two groups' write sets are disjoint but their
//! statements could still meet on a row lock in InnoDB: the later group takes a lock first and
//! then waits, outside InnoDB, for the earlier group to commit, while the earlier group waits in
//! InnoDB for the later one's lock — a cycle nobody detects. Each scenario: source transaction
//! 1 writes 8,000 filler rows (so its lane is busy for a while) and then deletes; source
//! transaction 2 upserts one row. The replica must converge within 25 s.
//!
//! - `a_multi_key_delete_on_a_small_table_does_not_stall`: a delete of 8 keys on a 10-row
//!   table, which MariaDB would run as a full scan for `WHERE k IN (…)` (and in READ COMMITTED
//!   wait for every row's lock); rowsync deletes through a join on the keys, by primary key.
//! - `case_variants_of_a_raw_charset_key_do_not_stall`: a `cp850_general_ci` key (carried raw)
//!   stored as 'Ç' is deleted, then inserted again as 'ç': one row to the collation, so the
//!   write sets must conflict.
//! - `the_same_scenario_on_one_lane`: the first scenario with `lanes = 1`.
//! - `a_lane_blocked_longer_than_the_takeover_does_not_restart_the_pipeline`: a replica row
//!   locked by another session for longer than the takeover time; the writer's own session,
//!   idle meanwhile, must not time out.
//!
//! Run: `cargo nextest run --test lanes_locks`

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::*;

/// `LANES_CONVERGE_SECS` overrides it (e.g. 70, to see the lock wait time out).
fn converge() -> Duration {
    let secs = std::env::var("LANES_CONVERGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    Duration::from_secs(secs)
}

async fn scenario(
    server_id: u32,
    lanes: usize,
    key_type: &str,
    rows: &str,
    second: &str,
    delete: &str,
) {
    let create =
        format!("CREATE TABLE product.q (k {key_type} PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB");
    let insert = format!("INSERT INTO product.q VALUES {rows}");
    let c = Cluster::start(
        &[
            "CREATE DATABASE product",
            &create,
            "CREATE TABLE product.filler (id BIGINT PRIMARY KEY, pad VARCHAR(200) NOT NULL) ENGINE=InnoDB",
            &insert,
        ],
        &["order"],
        &format!("[[mappings]]\nsource = \"product.*\"\ntargets = [\"order\"]\n\n[apply]\nlanes = {lanes}\nbatch_rows = 1000\n"),
        server_id,
    )
    .await;
    let rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "q", "k", Duration::from_secs(30)).await;

    // Transaction 1: heavy, then the delete; transaction 2: one upsert, right behind it.
    src.query_drop(format!(
        "START TRANSACTION; \
         INSERT INTO filler SELECT seq, REPEAT('f', 200) FROM seq_1_to_8000; \
         {delete}; \
         COMMIT; \
         {second}"
    ))
    .await
    .unwrap();

    let started = std::time::Instant::now();
    // What the target's sessions do a few seconds in (printed if the test fails).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut root = c.targets[0].conn("").await;
    let sessions: Vec<(u64, Option<String>, Option<String>, u64)> = root
        .query("SELECT ID, STATE, LEFT(INFO, 120), TIME FROM information_schema.PROCESSLIST WHERE DB = 'order_db' AND ID <> CONNECTION_ID()")
        .await
        .unwrap();
    eprintln!("target sessions 5 s after the two transactions: {sessions:#?}");
    wait_equal(&mut src, &mut rep, "q", "k", converge()).await;
    wait_equal(&mut src, &mut rep, "filler", "id", converge()).await;
    let log = rowsync.log_text();
    assert!(
        !log.contains("Lock wait timeout"),
        "a lane waited for a lock a later group held (converged after {:?}):\n{log}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_key_delete_on_a_small_table_does_not_stall() {
    small_table_delete(5931, 2).await;
}

/// Eight of a ten-row table's keys deleted behind a heavy write, one other key upserted after.
async fn small_table_delete(server_id: u32, lanes: usize) {
    scenario(
        server_id,
        lanes,
        "INT",
        "(1,0),(2,0),(3,0),(4,0),(5,0),(6,0),(7,0),(8,0),(9,0),(10,0)",
        "UPDATE q SET v = v + 1 WHERE k = 1",
        "DELETE FROM q WHERE k BETWEEN 2 AND 9",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_variants_of_a_raw_charset_key_do_not_stall() {
    scenario(
        5941,
        2,
        "VARCHAR(10) CHARACTER SET cp850 COLLATE cp850_general_ci",
        "(_cp850 0x80, 1), (_cp850 0x41, 1)",
        "INSERT INTO q VALUES (_cp850 0x87, 2)",
        "DELETE FROM q WHERE k = _cp850 0x80 COLLATE cp850_bin",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_scenario_on_one_lane() {
    small_table_delete(5951, 1).await;
}

/// The writer's own session no longer runs the rows: while it waits for a lane (here: a
/// second change to a row whose first change is blocked on the replica by someone's
/// `LOCK TABLES`, as a backup holds it), it sits idle longer than the takeover time. It keeps
/// the server's default `wait_timeout` (lanes have the takeover time and ping while they
/// wait), so the pipeline goes on without a restart once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_blocked_longer_than_the_takeover_does_not_restart_the_pipeline() {
    let c = Cluster::start(
        &[
            "CREATE DATABASE product",
            "CREATE TABLE product.q (k INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB",
            "INSERT INTO product.q VALUES (1, 0), (2, 0)",
        ],
        &["order"],
        "[[mappings]]\nsource = \"product.*\"\ntargets = [\"order\"]\n\n[apply]\nlanes = 2\n\n[standby]\ntakeover_secs = 5\n",
        5961,
    )
    .await;
    let rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    // Once, so the writer knows the replica's columns before it is locked.
    src.query_drop("UPDATE q SET v = 1 WHERE k = 2")
        .await
        .unwrap();
    wait_equal(&mut src, &mut rep, "q", "k", Duration::from_secs(30)).await;

    let mut locker = c.replica_conn(0).await;
    locker.query_drop("LOCK TABLES q WRITE").await.unwrap();
    src.query_drop("UPDATE q SET v = 1 WHERE k = 1")
        .await
        .unwrap();
    // The first change's group is on a lane, blocked by the lock; the second waits for it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    src.query_drop("UPDATE q SET v = 2 WHERE k = 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    locker.query_drop("UNLOCK TABLES").await.unwrap();

    wait_equal(&mut src, &mut rep, "q", "k", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = rowsync.log_text();
    assert!(
        !log.contains("retrying"),
        "the pipeline restarted after the replica's lock:\n{log}"
    );
}

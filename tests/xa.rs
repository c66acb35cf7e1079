//! XA transactions: a prepared branch's rows are held until its XA COMMIT (applied then,
//! atomically, at the commit's place in the stream) or XA ROLLBACK (dropped), while ordinary
//! transactions interleaved with it flow on. Covered: prepare→commit, prepare→rollback,
//! one-phase commit, kill -9 between prepare and commit (the restart reads the branch again
//! from its floor), a branch whose prepare and commit lie in different binlog files, and a
//! branch larger than memory holds (the rest on disk).
//!
//! Run: `cargo nextest run --test xa`

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::*;

const WAIT: Duration = Duration::from_secs(60);

/// Every replica table of the product schema equals the source's, and nothing stopped.
async fn assert_all_equal(c: &Cluster) {
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    wait_equal(&mut src, &mut rep, "batch", "product_id, batch_no", WAIT).await;
    let status = status_text(&c.cfg);
    assert!(!status.contains("NEEDS RE-COPY"), "{status}");
}

/// Opens a session, prepares branch `xid` with `statements`, and disconnects, leaving the
/// branch prepared for any session to resolve.
async fn prepare(c: &Cluster, xid: &str, statements: &[&str]) {
    let mut s = c.source_conn().await;
    exec(&mut s, &[&format!("XA START '{xid}'")]).await;
    exec(&mut s, statements).await;
    exec(
        &mut s,
        &[&format!("XA END '{xid}'"), &format!("XA PREPARE '{xid}'")],
    )
    .await;
    s.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_branches_apply_at_commit_and_vanish_at_rollback() {
    let c = Cluster::order_only(6901).await;
    let _rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    prepare(
        &c,
        "x1",
        &[
            "INSERT INTO category VALUES (1, 'xa one', NULL)",
            "INSERT INTO product VALUES (1, 'P-1', 'xa', 1, 2020, 1.00, 0)",
        ],
    )
    .await;
    prepare(
        &c,
        "x2",
        &["INSERT INTO category VALUES (2, 'rolled back', NULL)"],
    )
    .await;
    // Interleaved ordinary transactions flow while the branches wait.
    exec(
        &mut src,
        &["INSERT INTO product VALUES (2, 'P-2', 'plain', 1, 2020, 2.00, 0)"],
    )
    .await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    let held: Option<u64> = rep
        .query_first("SELECT COUNT(*) FROM category")
        .await
        .unwrap();
    assert_eq!(
        held,
        Some(0),
        "a prepared branch was applied before its commit"
    );

    exec(
        &mut src,
        &[
            "XA COMMIT 'x1'",
            "XA ROLLBACK 'x2'",
            // One phase: a transaction like any other.
            "XA START 'x3'",
            "INSERT INTO batch VALUES (1, 1, 10, '2024-01-01 00:00:00')",
            "XA END 'x3'",
            "XA COMMIT 'x3' ONE PHASE",
        ],
    )
    .await;
    assert_all_equal(&c).await;
    let held: Option<u64> = rep
        .query_first("SELECT COUNT(*) FROM rowsync_xa")
        .await
        .unwrap();
    assert_eq!(held, Some(0), "resolved branches are still recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_prepare_and_commit_across_a_rotation() {
    let c = Cluster::order_only(6911).await;
    let mut rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    prepare(
        &c,
        "k1",
        &[
            "INSERT INTO category VALUES (1, 'held', NULL)",
            "INSERT INTO product SELECT seq, CONCAT('X-', seq), 'xa', 1, 2020, seq, 0 FROM seq_1_to_50",
        ],
    )
    .await;
    exec(
        &mut src,
        &[
            "FLUSH BINARY LOGS",
            "INSERT INTO product VALUES (1000, 'P-1000', 'after the prepare', 1, 2020, 1.00, 0)",
        ],
    )
    .await;
    // The checkpoint passes the prepare; the branch is recorded as unresolved.
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    let recorded: Option<u64> = rep
        .query_first("SELECT COUNT(*) FROM rowsync_xa")
        .await
        .unwrap();
    assert_eq!(recorded, Some(1));
    rowsync.kill9();

    exec(
        &mut src,
        &[
            "XA COMMIT 'k1'",
            "UPDATE product SET version = 2 WHERE id IN (1, 1000)",
        ],
    )
    .await;
    let mut rowsync = c.run().await;
    assert_all_equal(&c).await;

    // Restarted again after the commit was applied: nothing is applied twice.
    rowsync.kill9();
    prepare(
        &c,
        "k2",
        &["UPDATE category SET name = 'rolled back' WHERE id = 1"],
    )
    .await;
    let _rowsync = c.run().await;
    exec(
        &mut src,
        &[
            "XA ROLLBACK 'k2'",
            "INSERT INTO category VALUES (2, 'b', NULL)",
        ],
    )
    .await;
    assert_all_equal(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_copy_waits_for_prepared_branches() {
    let c = Cluster::order_only(6921).await;
    let mut src = c.source_conn().await;
    exec(&mut src, &["INSERT INTO category VALUES (1, 'a', NULL)"]).await;
    prepare(
        &c,
        "w1",
        &["INSERT INTO category VALUES (2, 'prepared before the copy', NULL)"],
    )
    .await;
    let rowsync = Rowsync::start(&c.cfg);
    rowsync.wait_log("prepared XA transaction", WAIT).await;
    exec(&mut src, &["XA COMMIT 'w1'"]).await;
    assert_all_equal(&c).await;
    drop(rowsync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_larger_than_memory_is_held_on_disk() {
    let c = Cluster::order_only(6931).await;
    // 50-row batches: 500 changes are held in memory, the rest of a branch in a temp file.
    c.append_config("\n[apply]\nbatch_rows = 50\n");
    let mut rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    prepare(
        &c,
        "big",
        &[
            "INSERT INTO product SELECT seq, CONCAT('B-', seq), REPEAT('x', 50), 1, 2020, seq / 7, 0 FROM seq_1_to_3000",
            "UPDATE product SET version = 1, model = 'naïve 😀' WHERE id % 3 = 0",
            "DELETE FROM product WHERE id % 10 = 0",
        ],
    )
    .await;
    exec(
        &mut src,
        &["INSERT INTO category VALUES (1, 'flows', NULL)"],
    )
    .await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    rowsync
        .wait_log("the rest goes to a temporary file", WAIT)
        .await;
    // Killed while the branch is held: the restart collects it again.
    rowsync.kill9();
    let rowsync = c.run().await;
    rowsync
        .wait_log("the rest goes to a temporary file", WAIT)
        .await;
    exec(&mut src, &["XA COMMIT 'big'"]).await;
    assert_all_equal(&c).await;
}

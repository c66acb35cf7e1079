//! The initial copy: a new target starts from a consistent snapshot of the source's existing
//! rows, then streams from the snapshot's position, while the source keeps taking writes.
//!
//! Proves: with 200k existing rows and writes running during the copy, both replicas end equal
//! to the source (row by row, for a whole table, a filtered and renamed column subset, and a
//! composite key); kill -9 during the copy resumes after the last committed chunk (fewer rows
//! copied the second time) and still ends equal; the replicas' secondary keys, deferred during
//! the copy, exist afterwards (also after the kill); `status` shows copy progress.
//!
//! Run: `cargo nextest run --test initial_copy`

mod common;

use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;

const ROWS: u64 = 200_000;
const WAIT: Duration = Duration::from_secs(300);

const MAPPINGS: &str = r#"
[copy]
chunk_rows = 2000

[[mappings]]
source = "product.product"
targets = ["order"]

[[mappings]]
source = "product.product"
targets = ["purchase"]
table = "product_lite"
columns = ["id", "code", "category_id"]
where = "category_id IN (1, 2) AND version < 3"

[[mappings]]
source = "product.category"
targets = ["order", "purchase"]

[[mappings]]
source = "product.batch"
targets = ["order"]
"#;

async fn populated() -> Cluster {
    let c = Cluster::start(PRODUCT_SCHEMA, &["order", "purchase"], MAPPINGS, 5901).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &[
            "INSERT INTO category SELECT seq, CONCAT('cat ', seq), NULL FROM seq_1_to_5",
            &format!("INSERT INTO product SELECT seq, CONCAT('P-', seq), CONCAT('model ', seq % 97), seq % 5 + 1, 2000 + seq % 25, seq / 100, 0 FROM seq_1_to_{ROWS}"),
            "INSERT INTO batch SELECT seq % 1000 + 1, seq, seq % 50, '2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_20000",
        ],
    )
    .await;
    c
}

/// Writes while the copy runs: updates (moving rows in and out of the filter), inserts and
/// deletes across the key range, in small transactions.
async fn workload(source: &Server, rounds: std::ops::Range<u64>) {
    let mut src = source.conn("product").await;
    for i in rounds {
        let id = (i * 7919) % ROWS + 1;
        exec(
            &mut src,
            &[
                "START TRANSACTION",
                &format!(
                    "UPDATE product SET version = version + 1, category_id = {} WHERE id = {id}",
                    i % 5 + 1
                ),
                &format!("DELETE FROM product WHERE id = {}", (id * 31) % ROWS + 1),
                &format!(
                    "INSERT INTO product VALUES ({}, 'new-{i}', 'm', {}, 2020, 1.00, 0)",
                    ROWS + 1 + i,
                    i % 3 + 1
                ),
                &format!(
                    "UPDATE batch SET qty = qty + 1 WHERE product_id = {} ",
                    i % 1000 + 1
                ),
                "COMMIT",
            ],
        )
        .await;
    }
}

async fn assert_replicas_equal(c: &Cluster) {
    let mut src = c.source_conn().await;
    let mut order = c.replica_conn(0).await;
    let mut purchase = c.replica_conn(1).await;
    wait_equal(&mut src, &mut order, "product", "id", WAIT).await;
    wait_equal(&mut src, &mut order, "batch", "product_id, batch_no", WAIT).await;
    wait_equal(&mut src, &mut order, "category", "id", WAIT).await;
    wait_equal(&mut src, &mut purchase, "category", "id", WAIT).await;
    let want: Vec<(u64, String, i64)> = src
        .query("SELECT id, code, category_id FROM product WHERE category_id IN (1, 2) AND version < 3 ORDER BY id")
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let got: Vec<(u64, String, i64)> = purchase
            .query("SELECT id, code, category_id FROM product_lite ORDER BY id")
            .await
            .unwrap();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "product_lite differs: {} rows vs {} wanted",
            got.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        want.len() > 1000,
        "the filtered replica should not be trivially small"
    );
    // Secondary keys are added once the copy is done (the unique one is dropped on purpose).
    for (conn, table) in [(&mut order, "product"), (&mut purchase, "product_lite")] {
        let keys: Vec<String> = conn
            .exec(
                "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY INDEX_NAME",
                (table,),
            )
            .await
            .unwrap();
        assert_eq!(keys, ["idx_cat", "PRIMARY"], "keys of {table}");
        let pending: Option<u64> = conn
            .query_first("SELECT COUNT(*) FROM rowsync_deferred_keys")
            .await
            .unwrap();
        assert_eq!(pending, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_with_writes_running_ends_equal() {
    let c = populated().await;
    let rowsync = Rowsync::start(&c.cfg);
    // Writes start while the copy is under way.
    rowsync
        .wait_log("copying table", Duration::from_secs(60))
        .await;
    let (_, text) = rowsync_cmd(&["status", "--config", c.cfg.to_str().unwrap()]);
    assert!(
        text.contains("INITIAL COPY in progress") || text.contains("checkpoint"),
        "{text}"
    );
    workload(&c.source, 0..300).await;
    assert_replicas_equal(&c).await;
    let log = rowsync.log_text();
    assert!(log.contains("initial copy done"), "{log}");
    assert!(
        log.contains("adding the replica's secondary keys after its copy"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_the_copy_resumes_after_the_last_chunk() {
    let c = populated().await;
    let mut rowsync = Rowsync::start(&c.cfg);
    // Kill once some, but not all, of the product table is copied.
    let mut order = c.replica_conn(0).await;
    let deadline = Instant::now() + WAIT;
    let copied_before = loop {
        let n: Option<u64> = order
            .query_first(
                "SELECT rows_copied FROM rowsync_copy WHERE source_table = 'product.product'",
            )
            .await
            .unwrap_or(None);
        if let Some(n) = n.filter(|n| *n >= 10_000) {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "copy did not progress; log:\n{}",
            rowsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    rowsync.kill9();
    workload(&c.source, 0..100).await;
    assert!(copied_before < ROWS, "killed too late to show a resume");

    let rowsync = Rowsync::start(&c.cfg);
    let log = rowsync.wait_log("initial copy done", WAIT).await;
    // The second run resumed: it started the product table after the rows already there.
    let resumed = log
        .lines()
        .find(|l| l.contains("copying table") && l.contains("product.product"))
        .unwrap_or_default()
        .to_string();
    assert!(log.contains("resuming the initial copy"), "{log}");
    assert!(
        !resumed.contains("already=0"),
        "the product copy restarted from scratch: {resumed}"
    );
    workload(&c.source, 100..150).await;
    assert_replicas_equal(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimal_keys_beyond_two_to_the_53_are_all_copied() {
    // Keys 2^60 + i: as doubles, runs of 256 of them are one number.
    let schema = &[
        "CREATE DATABASE product",
        "CREATE TABLE product.ledger (id DECIMAL(30, 2) PRIMARY KEY, v INT)",
        "INSERT INTO product.ledger SELECT 1152921504606846976 + seq + 0.25, seq FROM product.seq_1_to_1000",
    ];
    let mappings = "[[mappings]]\nsource = \"product.ledger\"\ntargets = [\"order\"]\n";
    let c = Cluster::start(schema, &["order"], mappings, 6801).await;
    c.append_config("\n[copy]\nchunk_rows = 100\n");
    let _rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "ledger", "id", Duration::from_secs(60)).await;
}

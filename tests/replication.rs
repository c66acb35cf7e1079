//! Streaming to two targets on real MariaDB servers.
//!
//! Proves: inserts, updates (including primary key changes), deletes and multi-table
//! transactions on product/category/batch reach both targets and the replicas equal the
//! source; unselected tables are not replicated; a concurrent reader on a target never sees
//! half of a source transaction; SIGTERM exits 0 and a restart resumes from the checkpoint.
//!
//! Run: `cargo nextest run --test replication`

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::*;

const WAIT: Duration = Duration::from_secs(60);

async fn setup() -> (
    Server,
    Server,
    Server,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let c = Cluster::start(
        PRODUCT_SCHEMA,
        &["order", "purchase"],
        PRODUCT_MAPPINGS,
        4101,
    )
    .await;
    let mut targets = c.targets.into_iter();
    let (order, purchase) = (targets.next().unwrap(), targets.next().unwrap());
    (c.source, order, purchase, c.dir, c.cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_both_targets_and_replicas_equal_the_source() {
    let (source, order, purchase, _dir, cfg) = setup().await;
    let mut rowsync = Rowsync::start(&cfg);
    wait_started(&order, "order_db", &rowsync).await;
    wait_started(&purchase, "purchase_db", &rowsync).await;

    let mut src = source.conn("product").await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'Engines', NULL), (2, 'Pumps', 1), (3, 'Valves', NULL)",
            "INSERT INTO product VALUES (1, 'P-1', 'X100', 1, 2021, 10.50, 0), (2, 'P-2', 'X200', 2, 2022, 99.99, 0), (3, 'P-3', NULL, 3, NULL, NULL, 0)",
            // A multi-table transaction.
            "START TRANSACTION",
            "INSERT INTO product VALUES (4, 'P-4', 'Y1', 1, 2023, 5.00, 0)",
            "INSERT INTO batch VALUES (4, 1, 100, '2024-01-02 03:04:05.123456'), (4, 2, 50, '2024-01-03 00:00:00')",
            "UPDATE category SET name = 'Engines & Motors' WHERE id = 1",
            "COMMIT",
            "UPDATE product SET model = 'X100b', version = version + 1 WHERE id = 1",
            // Primary key changes, single and composite.
            "UPDATE product SET id = 10 WHERE id = 2",
            "UPDATE batch SET batch_no = 3 WHERE product_id = 4 AND batch_no = 2",
            "DELETE FROM product WHERE id = 3",
            "DELETE FROM category WHERE id = 3",
            "INSERT INTO ignored VALUES (1, 1)",
            // Swapping unique codes through a temporary value: order must be kept.
            "START TRANSACTION",
            "UPDATE product SET code = 'tmp' WHERE id = 1",
            "UPDATE product SET code = 'P-1' WHERE id = 4",
            "UPDATE product SET code = 'P-4' WHERE id = 1",
            "COMMIT",
        ],
    )
    .await;

    for (server, db) in [(&order, "order_db"), (&purchase, "purchase_db")] {
        let mut rep = server.conn(db).await;
        wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
        wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
        wait_equal(&mut src, &mut rep, "batch", "product_id, batch_no", WAIT).await;
        let ignored: Option<u64> = rep
            .query_first("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'ignored'")
            .await
            .unwrap();
        assert_eq!(ignored, Some(0), "an unselected table was replicated");
        // The replica drops the unique key (upserts must only ever hit the primary key).
        let uniques: Option<u64> = rep
            .query_first("SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'product' AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY'")
            .await
            .unwrap();
        assert_eq!(uniques, Some(0));
    }
    assert_eq!(
        rowsync.terminate(),
        Some(0),
        "SIGTERM must exit 0; log:\n{}",
        rowsync.log_text()
    );

    // Changes made while rowsync is down arrive after a restart, exactly once.
    exec(
        &mut src,
        &[
            "INSERT INTO product VALUES (20, 'P-20', 'Z', 2, 2020, 1.00, 0)",
            "DELETE FROM batch",
        ],
    )
    .await;
    let rowsync = Rowsync::start(&cfg);
    for (server, db) in [(&order, "order_db"), (&purchase, "purchase_db")] {
        let mut rep = server.conn(db).await;
        wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
        wait_equal(&mut src, &mut rep, "batch", "product_id, batch_no", WAIT).await;
    }
    // A binlog rotation while streaming: positions move to the new file.
    exec(
        &mut src,
        &[
            "FLUSH BINARY LOGS",
            "INSERT INTO product VALUES (21, 'P-21', 'rotated', 2, 2020, 1.00, 0)",
        ],
    )
    .await;
    for (server, db) in [(&order, "order_db"), (&purchase, "purchase_db")] {
        wait_equal(&mut src, &mut server.conn(db).await, "product", "id", WAIT).await;
    }
    let (code, text) = rowsync_cmd(&["status", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("target order: checkpoint mysql-bin.000002:")
            && text.contains("target purchase: checkpoint mysql-bin.000002:"),
        "{text}"
    );
    drop(rowsync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_half_a_transaction() {
    let (source, order, _purchase, _dir, cfg) = setup().await;
    let rowsync = Rowsync::start(&cfg);
    wait_started(&order, "order_db", &rowsync).await;
    let mut src = source.conn("product").await;
    // parent_id holds an account balance here: transfers keep the sum at 1000.
    exec(
        &mut src,
        &["INSERT INTO category VALUES (1, 'a', 500), (2, 'b', 500)"],
    )
    .await;
    let mut rep = order.conn("order_db").await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;

    let writer = tokio::spawn(async move {
        let mut src = source.conn("product").await;
        for i in 0..300 {
            let amount = (i % 7) + 1;
            exec(
                &mut src,
                &[
                    "START TRANSACTION",
                    &format!("UPDATE category SET parent_id = parent_id - {amount} WHERE id = 1"),
                    &format!("UPDATE category SET parent_id = parent_id + {amount} WHERE id = 2"),
                    "COMMIT",
                ],
            )
            .await;
        }
        source
    });
    let mut reads = 0;
    while !writer.is_finished() {
        let sum: Option<i64> = rep
            .query_first("SELECT SUM(parent_id) FROM category")
            .await
            .unwrap();
        assert_eq!(sum, Some(1000), "a reader saw a torn transaction");
        reads += 1;
    }
    let source = writer.await.unwrap();
    let mut src = source.conn("product").await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    assert!(reads > 10, "the reader ran only {reads} times");
    drop(rowsync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_is_followed_in_stream_order_or_stops_only_its_table() {
    let (source, order, _purchase, _dir, cfg) = setup().await;
    let rowsync = Rowsync::start(&cfg);
    wait_started(&order, "order_db", &rowsync).await;
    let mut src = source.conn("product").await;
    let mut rep = order.conn("order_db").await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'a', NULL), (2, 'b', NULL)",
            "INSERT INTO batch VALUES (1, 1, 5, '2024-01-01 00:00:00')",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    // TRUNCATE empties the replica at its place in the stream; rows after it land.
    exec(
        &mut src,
        &[
            "TRUNCATE TABLE category",
            "INSERT INTO category VALUES (3, 'after', NULL)",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;

    // ADD and DROP COLUMN are followed at their place in the stream: rows before and after
    // land with the right columns.
    exec(
        &mut src,
        &[
            "INSERT INTO batch VALUES (1, 2, 6, '2024-01-02 00:00:00')",
            "ALTER TABLE batch ADD COLUMN note VARCHAR(20) CHARACTER SET latin1 NULL DEFAULT 'n/a'",
            "INSERT INTO batch VALUES (1, 3, 7, '2024-01-03 00:00:00', 'caf\u{e9}')",
            "UPDATE batch SET qty = qty + 1",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "batch", "product_id, batch_no", WAIT).await;
    exec(
        &mut src,
        &[
            "ALTER TABLE batch DROP COLUMN made_at, MODIFY qty BIGINT NOT NULL",
            "INSERT INTO batch VALUES (1, 4, 9000000000, 'x')",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "batch", "product_id, batch_no", WAIT).await;

    // A rename (what online schema change tools do) stops that table only, visibly.
    exec(
        &mut src,
        &[
            "RENAME TABLE category TO category_old",
            "INSERT INTO product VALUES (7, 'P-7', 'still flowing', 1, 2020, 1.00, 0)",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    let (code, text) = rowsync_cmd(&["status", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("table product.category NEEDS RE-COPY since mysql-bin.")
            && text.contains("RENAME TABLE category TO category_old"),
        "{text}"
    );
    drop(rowsync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_under_a_pattern_is_created_and_streamed() {
    let c = Cluster::start(
        PRODUCT_SCHEMA,
        &["order"],
        "[[mappings]]\nsource = \"product.*\"\ntargets = [\"order\"]\n",
        4151,
    )
    .await;
    let rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    exec(
        &mut src,
        &[
            "CREATE TABLE supplier (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, UNIQUE KEY uk (name)) ENGINE=InnoDB",
            "INSERT INTO supplier VALUES (1, 'Acme'), (2, 'Globex')",
            "UPDATE supplier SET name = 'Initech' WHERE id = 2",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "supplier", "id", WAIT).await;
    drop(rowsync);
}

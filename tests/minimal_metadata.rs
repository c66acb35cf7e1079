//! A source without FULL row metadata (MariaDB's default `binlog_row_metadata=NO_LOG`): column
//! names and keys come from information_schema, re-read after every DDL on the table, and a
//! catalog that no longer matches the binlog stops the table instead of mis-mapping columns.
//!
//! Run: `cargo nextest run --test minimal_metadata`

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);

async fn cluster(server_id: u32) -> Cluster {
    let source = Server::start_with(Role::Source, &["--binlog-row-metadata=NO_LOG"]);
    Cluster::start_with(
        source,
        PRODUCT_SCHEMA,
        &["order"],
        &PRODUCT_MAPPINGS.replace(", \"purchase\"", ""),
        server_id,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_from_the_catalog_and_follows_alters() {
    let c = cluster(5501).await;
    let (code, out) = rowsync_cmd(&["check", "--config", c.cfg.to_str().unwrap()]);
    assert!(
        out.contains("binlog_row_metadata is NO_LOG: rowsync falls back to information_schema"),
        "{out}"
    );
    let _ = code;
    let _rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    exec(
        &mut src,
        &[
            "INSERT INTO product VALUES (18446744073709551615, 'max', 'caf\u{e9}', -5, 2155, -1.50, 1)",
            "INSERT INTO product VALUES (2, 'P-2', NULL, 2, NULL, 3.00, 0)",
            "UPDATE product SET id = 3 WHERE id = 2",
            "INSERT INTO batch VALUES (3, 1, 5, '2024-01-01 00:00:00.5')",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    wait_equal(&mut src, &mut rep, "batch", "product_id, batch_no", WAIT).await;
    // The catalog is read again after the ALTER, at its place in the stream.
    exec(
        &mut src,
        &[
            "ALTER TABLE product ADD COLUMN weight DECIMAL(8,3) NULL",
            "INSERT INTO product VALUES (4, 'P-4', 'w', 1, 2020, 1.00, 0, 12.5)",
            "UPDATE product SET weight = 1.25 WHERE id = 3",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_newer_than_the_binlog_stops_the_table() {
    let c = cluster(5601).await;
    let mut rowsync = Rowsync::start(&c.cfg);
    wait_started(&c.targets[0], "order_db", &rowsync).await;
    assert_eq!(rowsync.terminate(), Some(0));
    // While rowsync is down: rows in the old shape, then an ALTER. On restart the catalog
    // (read now) has one more column than the binlog rows before the ALTER.
    let mut src = c.source.conn("product").await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'old shape', NULL)",
            "ALTER TABLE category ADD COLUMN note VARCHAR(10) NULL",
            "INSERT INTO product VALUES (1, 'P-1', 'still flowing', 1, 2020, 1.00, 0)",
        ],
    )
    .await;
    let rowsync = Rowsync::start(&c.cfg);
    let mut rep = c.targets[0].conn("order_db").await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    let (code, text) = rowsync_cmd(&["status", "--config", c.cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("table product.category NEEDS RE-COPY")
            && text.contains("information_schema does not match the binlog"),
        "{text}\nlog:\n{}",
        rowsync.log_text()
    );
}

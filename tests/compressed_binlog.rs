//! MariaDB compressed binlog events (`log_bin_compress=ON`): compressed rows events (insert,
//! update, delete) and compressed QUERY events (DDL, TRUNCATE) replicate like plain ones.
//!
//! Run: `cargo nextest run --test compressed_binlog`

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_events_replicate() {
    let source = Server::start_with(
        Role::Source,
        &["--log-bin-compress=ON", "--log-bin-compress-min-len=10"],
    );
    let c = Cluster::start_with(
        source,
        PRODUCT_SCHEMA,
        &["order"],
        &PRODUCT_MAPPINGS.replace(", \"purchase\"", ""),
        5201,
    )
    .await;
    let rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    let mut inserts = vec!["START TRANSACTION".to_string()];
    for i in 0..300 {
        inserts.push(format!(
            "INSERT INTO product VALUES ({i}, 'P-{i}', REPEAT('model ', 10), {}, 2020, {i}.25, 0)",
            i % 7
        ));
    }
    inserts.push("COMMIT".into());
    let inserts: Vec<&str> = inserts.iter().map(String::as_str).collect();
    exec(&mut src, &inserts).await;
    exec(
        &mut src,
        &[
            "UPDATE product SET model = CONCAT(model, ' v2'), version = version + 1 WHERE id % 3 = 0",
            "DELETE FROM product WHERE id % 5 = 0",
            "INSERT INTO category VALUES (1, 'a category with a long enough name', NULL)",
            "ALTER TABLE category ADD COLUMN description VARCHAR(200) NULL DEFAULT 'a long enough default value'",
            "INSERT INTO category VALUES (2, 'second', 1, 'described')",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "product", "id", Duration::from_secs(60)).await;
    wait_equal(
        &mut src,
        &mut rep,
        "category",
        "id",
        Duration::from_secs(60),
    )
    .await;
    exec(&mut src, &["TRUNCATE TABLE product"]).await;
    wait_equal(&mut src, &mut rep, "product", "id", Duration::from_secs(60)).await;
    // The source really wrote compressed rows and query events.
    let kinds: Vec<String> = mysql_async::prelude::Queryable::query_map(
        &mut src,
        "SHOW BINLOG EVENTS",
        |row: mysql_async::Row| row.get::<String, _>("Event_type").unwrap_or_default(),
    )
    .await
    .unwrap();
    for wanted in [
        "Query_compressed",
        "Write_rows_compressed",
        "Update_rows_compressed",
        "Delete_rows_compressed",
    ] {
        assert!(
            kinds.iter().any(|k| k.starts_with(wanted)),
            "no {wanted} event in {kinds:?}"
        );
    }
    let log = std::fs::read_to_string(&rowsync.log).unwrap_or_default();
    assert!(!log.contains("ERROR"), "{log}");
}

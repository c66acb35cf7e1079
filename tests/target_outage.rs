//! One target's server stopped during a workload: the other target keeps up meanwhile, and
//! the stopped one catches up from its own checkpoint after it returns.
//!
//! Run: `cargo nextest run --test target_outage`

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_does_not_hold_back_the_other() {
    let c = Cluster::start(
        PRODUCT_SCHEMA,
        &["order", "purchase"],
        PRODUCT_MAPPINGS,
        4401,
    )
    .await;
    let (source, cfg) = (c.source, c.cfg);
    let mut targets = c.targets.into_iter();
    let (order, mut purchase) = (targets.next().unwrap(), targets.next().unwrap());
    let rowsync = Rowsync::start(&cfg);
    wait_started(&order, "order_db", &rowsync).await;
    wait_started(&purchase, "purchase_db", &rowsync).await;

    let mut src = source.conn("product").await;
    let mut rep_order = order.conn("order_db").await;
    exec(
        &mut src,
        &["INSERT INTO category VALUES (1, 'before', NULL)"],
    )
    .await;
    wait_equal(
        &mut src,
        &mut rep_order,
        "category",
        "id",
        Duration::from_secs(30),
    )
    .await;

    purchase.stop(true);
    for i in 0..2000 {
        exec(
            &mut src,
            &[&format!(
                "INSERT INTO product VALUES ({i}, 'P-{i}', 'M', 1, 2020, 1.00, 0)"
            )],
        )
        .await;
    }
    exec(
        &mut src,
        &[
            "UPDATE product SET version = version + 1 WHERE id % 3 = 0",
            "DELETE FROM product WHERE id % 5 = 0",
        ],
    )
    .await;
    // The live target keeps up while the other is down.
    wait_equal(
        &mut src,
        &mut rep_order,
        "product",
        "id",
        Duration::from_secs(60),
    )
    .await;

    purchase.resume();
    let mut rep_purchase = purchase.conn("purchase_db").await;
    wait_equal(
        &mut src,
        &mut rep_purchase,
        "product",
        "id",
        Duration::from_secs(120),
    )
    .await;
    wait_equal(
        &mut src,
        &mut rep_purchase,
        "category",
        "id",
        Duration::from_secs(30),
    )
    .await;
    let log = rowsync.log_text();
    assert!(
        log.contains("retrying"),
        "the outage should have been retried; log:\n{log}"
    );
}

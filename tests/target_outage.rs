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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfixable_target_error_stops_only_that_target() {
    let c = Cluster::start(
        PRODUCT_SCHEMA,
        &["order", "purchase"],
        PRODUCT_MAPPINGS,
        4451,
    )
    .await;
    let (source, order, purchase) = (&c.source, &c.targets[0], &c.targets[1]);
    let rowsync = Rowsync::start(&c.cfg);
    wait_started(order, "order_db", &rowsync).await;
    wait_started(purchase, "purchase_db", &rowsync).await;
    // The purchase replica refuses one value: a constraint the replica does not satisfy.
    exec(
        &mut purchase.conn("purchase_db").await,
        &["CREATE TRIGGER no_poison BEFORE INSERT ON category FOR EACH ROW IF NEW.name = 'poison' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison row refused'; END IF"],
    )
    .await;
    let mut src = source.conn("product").await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'fine', NULL)",
            "INSERT INTO category VALUES (2, 'poison', NULL)",
            "INSERT INTO category VALUES (3, 'after', NULL)",
        ],
    )
    .await;
    let mut rep_order = order.conn("order_db").await;
    wait_equal(
        &mut src,
        &mut rep_order,
        "category",
        "id",
        Duration::from_secs(60),
    )
    .await;

    // The stop is visible in status, with the statement and reason, and is not retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (_, text) = rowsync_cmd(&["status", "--config", c.cfg.to_str().unwrap()]);
        if text.contains("daemon: target purchase STOPPED") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stopped state in status:\n{text}\nlog:\n{}",
            rowsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        text.contains("poison row refused") && text.contains("INSERT INTO `category`"),
        "{text}"
    );
    assert!(text.contains("daemon: target order STREAMING"), "{text}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = rowsync.log_text();
    assert_eq!(log.matches("target pipeline stopped").count(), 1, "{log}");
    assert!(
        !log.contains("retrying"),
        "a definite error must not be retried: {log}"
    );
    // Nothing of the failed group reached the stopped replica.
    let n: Option<u64> = mysql_async::prelude::Queryable::query_first(
        &mut purchase.conn("purchase_db").await,
        "SELECT COUNT(*) FROM category WHERE id >= 2",
    )
    .await
    .unwrap();
    assert_eq!(n, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_transactional_replica_is_refused() {
    let c = Cluster::start(
        PRODUCT_SCHEMA,
        &["order"],
        "[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\"]\n",
        4461,
    )
    .await;
    exec(
        &mut c.targets[0].conn("order_db").await,
        &["CREATE TABLE category (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, parent_id INT NULL) ENGINE=MyISAM"],
    )
    .await;
    // Its table stops with the reason; nothing is written into it.
    let _rowsync = c.run().await;
    c.assert_needs_recopy("product.category", "uses engine MyISAM");
    let status = status_text(&c.cfg);
    assert!(status.contains("transactional"), "{status}");
}

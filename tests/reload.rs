//! SIGHUP reloads the configuration: an added mapping is copied (while the other tables keep
//! streaming) and then streams; a removed one stops applying, its replica table staying.
//! An invalid file is refused and the running configuration kept.
//!
//! Run: `cargo nextest run --test reload`

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_mappings() {
    let first = "[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\"]\n\n[[mappings]]\nsource = \"product.batch\"\ntargets = [\"order\"]\n";
    let c = Cluster::start(PRODUCT_SCHEMA, &["order"], first, 6201).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'a', NULL), (2, 'b', NULL)",
            "INSERT INTO product SELECT seq, CONCAT('P-', seq), 'm', 1, 2020, seq, 0 FROM seq_1_to_2000",
        ],
    )
    .await;
    let rowsync = c.run().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;

    // An invalid file is refused; the running configuration goes on.
    let good = std::fs::read_to_string(&c.cfg).unwrap();
    std::fs::write(&c.cfg, good.replace("server_id", "serverid")).unwrap();
    hup(rowsync.pid());
    rowsync.wait_log("keeping the running one", WAIT).await;
    exec(&mut src, &["INSERT INTO category VALUES (3, 'c', NULL)"]).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;

    // product added, category removed.
    let reloaded = good.replace(
        "source = \"product.category\"",
        "source = \"product.product\"",
    );
    std::fs::write(&c.cfg, reloaded).unwrap();
    hup(rowsync.pid());
    rowsync.wait_log("SIGHUP: reloading", WAIT).await;
    exec(
        &mut src,
        &[
            "INSERT INTO product VALUES (5000, 'P-5000', 'after reload', 2, 2021, 1.00, 0)",
            "UPDATE product SET version = version + 1 WHERE id <= 10",
            "INSERT INTO batch VALUES (1, 1, 10, '2024-01-01 00:00:00')",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    wait_equal(&mut src, &mut rep, "batch", "product_id, batch_no", WAIT).await;
    exec(
        &mut src,
        &["INSERT INTO category VALUES (4, 'not replicated any more', NULL)"],
    )
    .await;
    exec(
        &mut src,
        &["INSERT INTO product VALUES (5001, 'P-5001', 'later', 2, 2021, 1.00, 0)"],
    )
    .await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    let categories: Option<u64> = rep
        .query_first("SELECT COUNT(*) FROM category")
        .await
        .unwrap();
    assert_eq!(
        categories,
        Some(3),
        "the removed mapping kept applying (or its table was dropped)"
    );
}

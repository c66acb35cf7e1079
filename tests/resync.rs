//! `rowsync resync` re-copies one table into one target: it clears "needs re-copy", repairs
//! drift, and the stream catches the table up from the copy's snapshot — changes made before,
//! during and after the re-copy neither lost nor applied twice — while the other tables go on
//! from the target's checkpoint. Without a daemon the command copies and the next run catches
//! up; with `rowsync run` running, the daemon re-copies online while the others keep streaming.
//!
//! Run: `cargo nextest run --test resync`

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::*;

const WAIT: Duration = Duration::from_secs(60);

fn resync(c: &Cluster) -> (i32, String) {
    rowsync_cmd(&[
        "resync",
        "--config",
        c.cfg.to_str().unwrap(),
        "--target",
        "order",
        "--table",
        "product.product",
    ])
}

async fn bump(src: &mut mysql_async::Conn, round: u32) {
    exec(
        src,
        &[
            &format!(
                "UPDATE product SET version = version + 1, model = 'r{round}' WHERE id % 3 = {}",
                round % 3
            ),
            &format!(
                "INSERT INTO product VALUES ({0}, 'N-{0}', 'new', 1, 2020, 1.00, 0)",
                1000 + round
            ),
            &format!("DELETE FROM product WHERE id = {}", 10 + round),
            &format!(
                "UPDATE category SET name = CONCAT(name, '+') WHERE id = {}",
                1 + round % 3
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_clears_needs_recopy_and_repairs_drift_exactly() {
    let c = Cluster::order_only(6001).await;
    let mut rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'a', NULL), (2, 'b', NULL), (3, 'c', NULL)",
            "INSERT INTO product SELECT seq, CONCAT('P-', seq), 'm', 1 + seq % 3, 2020, seq, 0 FROM seq_1_to_300",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    // A statement-logged change stops the table; the replica drifts on top of that.
    exec(
        &mut src,
        &[
            "SET SESSION binlog_format = 'STATEMENT'",
            "UPDATE product SET model = 'by statement' WHERE id = 1",
            "SET SESSION binlog_format = 'ROW'",
        ],
    )
    .await;
    bump(&mut src, 1).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    c.assert_needs_recopy("product.product", "logged as a statement");
    exec(
        &mut rep,
        &[
            "DELETE FROM product WHERE id = 2",
            "UPDATE product SET model = 'drift' WHERE id = 3",
        ],
    )
    .await;

    assert_eq!(rowsync.terminate(), Some(0));
    bump(&mut src, 2).await;
    // Every write to the replica from here on is logged with the row's version: a change
    // applied twice would show up as a repeated (id, version).
    exec(
        &mut rep,
        &[
            "CREATE TABLE applied (id BIGINT, version INT)",
            "CREATE TRIGGER p_ai AFTER INSERT ON product FOR EACH ROW INSERT INTO applied VALUES (NEW.id, NEW.version)",
            "CREATE TRIGGER p_au AFTER UPDATE ON product FOR EACH ROW INSERT INTO applied VALUES (NEW.id, NEW.version)",
        ],
    )
    .await;
    let (code, out) = resync(&c);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("re-copied product.product into target `order`"),
        "{out}"
    );
    let (_, status) = rowsync_cmd(&["status", "--config", c.cfg.to_str().unwrap()]);
    assert!(
        status.contains("table product.product re-copied, catching up from"),
        "{status}"
    );
    assert!(!status.contains("NEEDS RE-COPY"), "{status}");

    bump(&mut src, 3).await;
    let _rowsync = c.run().await;
    bump(&mut src, 4).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    let dupes: Vec<(i64, i64, i64)> = rep
        .query("SELECT id, version, COUNT(*) FROM applied GROUP BY id, version HAVING COUNT(*) > 1")
        .await
        .unwrap();
    assert!(dupes.is_empty(), "changes applied twice: {dupes:?}");
    let logged: Option<u64> = rep
        .query_first("SELECT COUNT(*) FROM applied")
        .await
        .unwrap();
    assert!(
        logged.unwrap_or(0) >= 290,
        "the copy should have written the table again"
    );
    // Caught up: the table's floor is gone once the stream passed it.
    let mut round = 10;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, status) = rowsync_cmd(&["status", "--config", c.cfg.to_str().unwrap()]);
        if !status.contains("catching up") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        round += 1;
        bump(&mut src, round).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_resync_while_run_keeps_streaming() {
    let c = Cluster::start(
        &[
            "CREATE DATABASE product",
            "CREATE TABLE product.product (id BIGINT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB",
            "CREATE TABLE product.other (id BIGINT PRIMARY KEY, version BIGINT NOT NULL) ENGINE=InnoDB",
            "USE product",
            "INSERT INTO product.product SELECT seq, 0 FROM seq_1_to_20000",
            "INSERT INTO product.other SELECT seq, 0 FROM seq_1_to_50",
        ],
        &["order"],
        "[copy]\nchunk_rows = 500\n\n[[mappings]]\nsource = \"product.*\"\ntargets = [\"order\"]\n",
        6101,
    )
    .await;
    let rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    // Every change to `other` on the replica is logged with its version, which each change
    // increments: a change applied twice would repeat a pair.
    exec(
        &mut rep,
        &[
            "CREATE TABLE applied (id BIGINT, version BIGINT)",
            "CREATE TRIGGER o_ai AFTER INSERT ON other FOR EACH ROW INSERT INTO applied VALUES (NEW.id, NEW.version)",
            "CREATE TRIGGER o_au AFTER UPDATE ON other FOR EACH ROW INSERT INTO applied VALUES (NEW.id, NEW.version)",
        ],
    )
    .await;
    // The replica of `product` drifts.
    exec(
        &mut rep,
        &[
            "DELETE FROM product WHERE id <= 100",
            "UPDATE product SET v = -1 WHERE id > 19000",
        ],
    )
    .await;

    // Writes to both tables run throughout.
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let stop = stop.clone();
        let url = c.source.url("product");
        tokio::spawn(async move {
            let mut src = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
                .await
                .unwrap();
            let mut i: u64 = 0;
            while !stop.is_cancelled() {
                i += 1;
                src.query_drop(format!(
                    "UPDATE other SET version = version + 1 WHERE id = {}; UPDATE product SET v = v + 1 WHERE id = {}",
                    i % 50 + 1,
                    (i * 37) % 20000 + 1
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Option<u64> = rep
        .query_first("SELECT COUNT(*) FROM applied")
        .await
        .unwrap();
    let (code, out) = resync(&c);
    assert_eq!(code, 0, "{out}\nlog:\n{}", rowsync.log_text());
    assert!(
        out.contains("re-copied product.product into target `order`"),
        "{out}"
    );
    // `other` kept streaming while the daemon re-copied `product`.
    let during: Option<u64> = rep
        .query_first("SELECT COUNT(*) FROM applied")
        .await
        .unwrap();
    assert!(
        during > before,
        "no change to other tables arrived during the re-copy"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let writes = writer.await.unwrap();
    assert!(writes > 50, "the workload barely ran");
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    wait_equal(&mut src, &mut rep, "other", "id", WAIT).await;
    let dupes: Vec<(i64, i64, i64)> = rep
        .query("SELECT id, version, COUNT(*) FROM applied GROUP BY id, version HAVING COUNT(*) > 1")
        .await
        .unwrap();
    assert!(
        dupes.is_empty(),
        "changes to `other` applied twice: {dupes:?}"
    );
    let log = rowsync.log_text();
    assert!(
        log.contains("restarting the target's stream from its floors"),
        "{log}"
    );
}

//! Re-copies where the table changed under the replica, and table states that must survive
//! the stream around them:
//! - after an online schema change swapped in a table with a new column, and after a primary
//!   key change, `rowsync resync` (the daemon running) makes the replica again from the
//!   current definition and the replica equals the source;
//! - an initial copy killed mid-table, whose table then changes its primary key, starts that
//!   table over and ends equal (it used to index the stored key with the old shape);
//! - a table that stops while it still catches up after an online re-copy stays stopped,
//!   with its reason in `status` (a later floor update used to overwrite the stop), and the
//!   state machine's floor updates, driven directly on a real target, never overwrite a stop
//!   or a re-copy;
//! - kill -9 in the middle of an online re-copy resumes it.
//!
//! Run: `cargo nextest run --test recopy`

mod common;

use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;

const WAIT: Duration = Duration::from_secs(90);

fn resync(c: &Cluster, table: &str) -> (i32, String) {
    resync_later(c, table).join().unwrap()
}

/// `rowsync resync` of `table` into target `order`, run in a thread (it returns once the
/// running daemon has copied the table).
fn resync_later(c: &Cluster, table: &str) -> std::thread::JoinHandle<(i32, String)> {
    let (cfg, table) = (c.cfg.clone(), table.to_owned());
    std::thread::spawn(move || {
        rowsync_cmd(&[
            "resync",
            "--config",
            cfg.to_str().unwrap(),
            "--target",
            "order",
            "--table",
            &table,
        ])
    })
}

async fn replica_key(rep: &mut mysql_async::Conn, table: &str) -> Vec<String> {
    rep.query(format!("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_after_a_schema_swap_or_key_change_rebuilds_the_replica() {
    let c = Cluster::order_only(6701).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'a', NULL), (2, 'b', 1), (3, 'c', 1)",
            "INSERT INTO product SELECT seq, CONCAT('P-', seq), 'm', 1 + seq % 3, 2020, seq, 0 FROM seq_1_to_500",
        ],
    )
    .await;
    let _rowsync = c.run().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;

    // gh-ost's cut-over: a ghost table with a new column swapped in by RENAME.
    exec(
        &mut src,
        &[
            "CREATE TABLE _product_gho LIKE product",
            "ALTER TABLE _product_gho ADD COLUMN weight INT NOT NULL DEFAULT 7",
            "INSERT INTO _product_gho SELECT *, 7 FROM product",
            "RENAME TABLE product TO _product_del, _product_gho TO product",
            "DROP TABLE _product_del",
            "UPDATE product SET weight = 9 WHERE id <= 10",
            // A primary key change the stream cannot follow.
            "ALTER TABLE category DROP PRIMARY KEY, ADD PRIMARY KEY (id, name)",
            "INSERT INTO category VALUES (1, 'a2', 2)",
        ],
    )
    .await;
    let deadline = Instant::now() + WAIT;
    while !(status_text(&c.cfg).contains("table product.category NEEDS RE-COPY")
        && status_text(&c.cfg).contains("table product.product NEEDS RE-COPY"))
    {
        assert!(Instant::now() < deadline, "{}", status_text(&c.cfg));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for table in ["product.product", "product.category"] {
        let (code, out) = resync(&c, table);
        assert_eq!(code, 0, "{out}");
    }
    exec(
        &mut src,
        &[
            "UPDATE product SET weight = 11 WHERE id BETWEEN 20 AND 30",
            "INSERT INTO category VALUES (4, 'd', 3)",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    wait_equal(&mut src, &mut rep, "category", "id, name", WAIT).await;
    assert_eq!(replica_key(&mut rep, "category").await, ["id", "name"]);
    let status = status_text(&c.cfg);
    assert!(!status.contains("NEEDS RE-COPY"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_resumed_after_a_key_change_starts_that_table_over() {
    let c = Cluster::order_only(6711).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &["INSERT INTO batch SELECT seq, 1, seq, '2024-01-01 00:00:00' FROM seq_1_to_60000"],
    )
    .await;
    c.append_config("\n[copy]\nchunk_rows = 500\nwriters = 1\nparallel_tables = 1\n");
    let mut rowsync = Rowsync::start(&c.cfg);
    let mut rep = c.replica_conn(0).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let n: Option<u64> = rep
            .query_first("SELECT rows_copied FROM rowsync_copy WHERE source_table = 'product.batch' AND state = 'copying'")
            .await
            .unwrap_or(None);
        if n.is_some_and(|n| n >= 1000) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", rowsync.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rowsync.kill9();
    // The key gets a third column: the stored last key has two.
    exec(
        &mut src,
        &["ALTER TABLE batch DROP PRIMARY KEY, ADD PRIMARY KEY (product_id, batch_no, qty)"],
    )
    .await;
    let rowsync = Rowsync::start(&c.cfg);
    rowsync.wait_log("initial copy done", WAIT).await;
    wait_equal(&mut src, &mut rep, "batch", "product_id, batch_no", WAIT).await;
    assert_eq!(
        replica_key(&mut rep, "batch").await,
        ["product_id", "batch_no", "qty"]
    );
    let log = rowsync.log_text();
    assert!(log.contains("starts over"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_stopped_while_catching_up_stays_stopped() {
    let c = Cluster::order_only(6721).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'a', NULL)",
            "INSERT INTO product SELECT seq, CONCAT('P-', seq), 'm', 1, 2020, seq, 0 FROM seq_1_to_2000",
        ],
    )
    .await;
    // One target commit per source transaction, so the stop and later floor moves are
    // separate commits.
    c.append_config(
        "\n[copy]\nchunk_rows = 200\nwriters = 1\n\n[apply]\nmax_group_transactions = 1\n",
    );
    let rowsync = c.run().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;

    // An online re-copy; while it copies, the table gets a change the stream cannot apply,
    // followed by more transactions that the table's catching up replays. A read lock on the
    // replica holds the copy until the stream has passed all of them.
    let mut blocker = c.replica_conn(0).await;
    exec(&mut blocker, &["LOCK TABLES product READ"]).await;
    let resync = resync_later(&c, "product.product");
    // The re-copy's snapshot is taken once its floor is recorded.
    let deadline = Instant::now() + WAIT;
    loop {
        let floor: Option<String> = rep
            .query_first("SELECT since_position FROM rowsync_table_state WHERE source_table = 'product.product' AND state = 'copying'")
            .await
            .unwrap();
        if floor.is_some_and(|f| !f.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", rowsync.log_text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    exec(
        &mut src,
        &[
            "SET SESSION binlog_format = 'STATEMENT'",
            "UPDATE product SET model = 'by statement' WHERE id = 1",
            "SET SESSION binlog_format = 'ROW'",
        ],
    )
    .await;
    for i in 0..20 {
        exec(
            &mut src,
            &[
                &format!(
                    "UPDATE product SET version = version + 1 WHERE id = {}",
                    2 + i
                ),
                &format!("UPDATE category SET name = 'a{i}' WHERE id = 1"),
            ],
        )
        .await;
    }
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    exec(&mut blocker, &["UNLOCK TABLES"]).await;
    // The command may see the table stop again before it sees it caught up.
    let (code, out) = resync.join().unwrap();
    assert!(
        code == 0 || out.contains("ended in state `needs_recopy`"),
        "{out}"
    );
    exec(
        &mut src,
        &["INSERT INTO category VALUES (2, 'after', NULL)"],
    )
    .await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    // Past the whole catch-up window: the stop is still there.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let status = status_text(&c.cfg);
        assert!(
            status.contains("table product.product NEEDS RE-COPY")
                && status.contains("logged as a statement"),
            "the stop was overwritten:\n{status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(rowsync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_an_online_recopy_copies_and_catches_up() {
    let c = Cluster::order_only(6731).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'a', NULL)",
            "INSERT INTO product SELECT seq, CONCAT('P-', seq), 'm', 1, 2020, seq, 0 FROM seq_1_to_30000",
        ],
    )
    .await;
    c.append_config("\n[copy]\nchunk_rows = 100\nwriters = 1\n");
    let mut rowsync = c.run().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    let resync = resync_later(&c, "product.product");
    // Killed mid-copy, with writes to the table and the others before and after.
    let deadline = Instant::now() + WAIT;
    loop {
        let copied: Option<u64> = rep
            .query_first("SELECT c.rows_copied FROM rowsync_copy c JOIN rowsync_table_state s ON s.source_table = c.source_table WHERE c.source_table = 'product.product' AND s.state = 'copying' AND c.state = 'copying'")
            .await
            .unwrap();
        if copied.is_some_and(|n| n >= 1000) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", rowsync.log_text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    exec(
        &mut src,
        &["UPDATE product SET version = 1 WHERE id % 100 = 0"],
    )
    .await;
    rowsync.kill9();
    exec(
        &mut src,
        &[
            "UPDATE product SET version = version + 1 WHERE id % 70 = 0",
            "DELETE FROM product WHERE id % 999 = 0",
            "UPDATE category SET name = 'b' WHERE id = 1",
        ],
    )
    .await;
    let rowsync = Rowsync::start(&c.cfg);
    rowsync.wait_log("resuming", WAIT).await;
    exec(
        &mut src,
        &["UPDATE product SET model = 'after' WHERE id % 50 = 0"],
    )
    .await;
    let (code, out) = resync.join().unwrap();
    assert_eq!(code, 0, "{out}");
    exec(&mut src, &["UPDATE category SET name = 'c' WHERE id = 1"]).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    let status = status_text(&c.cfg);
    assert!(!status.contains("NEEDS RE-COPY"), "{status}");
    drop(rowsync);
}

/// The table-state machine on a real target: a floor update moves only a table that is still
/// catching up, so neither a stop nor a re-copy recorded meanwhile is overwritten, and the end
/// of a catch-up never erases them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_updates_never_overwrite_a_stop_or_a_recopy() {
    use rowsync::config::TargetConfig;
    use rowsync::model::name::TableName;
    use rowsync::model::position::{Checkpoint, Flavor, GtidSet, SourceIdentity};
    use rowsync::model::table::{StoppedTable, TableState};
    use rowsync::sink::checkpoint;

    let target = Server::start(Role::Target);
    exec(&mut target.conn("").await, &["CREATE DATABASE t_db"]).await;
    let config = TargetConfig {
        name: "t".into(),
        url: target.url("t_db"),
        tls: None,
    };
    let mut conn = rowsync::sink::target::connect(&config).await.unwrap();
    checkpoint::ensure_tables(&mut conn).await.unwrap();
    let at = |seq: u64| Checkpoint {
        position: format!("mysql-bin.000001:{}", 100 * seq).parse().unwrap(),
        gtid: Some(GtidSet::parse_maria(&format!("0-1-{seq}")).unwrap()),
        source: SourceIdentity {
            flavor: Flavor::Mariadb,
            server_id: 1,
            server_uuid: None,
            binlog_base: "mysql-bin".into(),
        },
        source_time: 0,
    };
    let table = TableName::new("p", "t");

    checkpoint::mark_table(
        &mut conn,
        "rowsync",
        &table,
        TableState::CatchingUp,
        Some(&at(1)),
        "",
    )
    .await
    .unwrap();
    checkpoint::set_floor(&mut conn, "rowsync", &table, Some(&at(2)))
        .await
        .unwrap();
    assert_eq!(
        checkpoint::table_state(&mut conn, "rowsync", &table)
            .await
            .unwrap(),
        Some(TableState::CatchingUp)
    );

    // Stopped while catching up: later floor moves and the catch-up's end leave the stop.
    let stop = StoppedTable {
        table: table.clone(),
        state: TableState::NeedsRecopy,
        since: "mysql-bin.000001:300".into(),
        statement: None,
        reason: "logged as a statement".into(),
    };
    checkpoint::stop_table(&mut conn, "rowsync", &stop, None)
        .await
        .unwrap();
    checkpoint::set_floor(&mut conn, "rowsync", &table, Some(&at(4)))
        .await
        .unwrap();
    assert_eq!(
        checkpoint::table_state(&mut conn, "rowsync", &table)
            .await
            .unwrap(),
        Some(TableState::NeedsRecopy)
    );
    checkpoint::set_floor(&mut conn, "rowsync", &table, None)
        .await
        .unwrap();
    assert_eq!(
        checkpoint::table_state(&mut conn, "rowsync", &table)
            .await
            .unwrap(),
        Some(TableState::NeedsRecopy)
    );
    let stopped = checkpoint::stopped_tables(&mut conn, "rowsync")
        .await
        .unwrap();
    assert_eq!(stopped[0].reason, "logged as a statement");

    // Re-copied while catching up: the old floor never turns `copying` back.
    checkpoint::mark_table(&mut conn, "rowsync", &table, TableState::Copying, None, "")
        .await
        .unwrap();
    checkpoint::set_floor(&mut conn, "rowsync", &table, Some(&at(5)))
        .await
        .unwrap();
    checkpoint::set_floor(&mut conn, "rowsync", &table, None)
        .await
        .unwrap();
    assert_eq!(
        checkpoint::table_state(&mut conn, "rowsync", &table)
            .await
            .unwrap(),
        Some(TableState::Copying)
    );
}

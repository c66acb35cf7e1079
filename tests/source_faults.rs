//! The source misbehaving: frozen with SIGSTOP (the reader notices through its read timeout
//! and reconnects once the source resumes), writing in two GTID domains (positions resume per
//! domain across a restart), and changes the stream cannot apply (partial row images,
//! statement-logged DML) stopping only their table. XA has its own file, `xa.rs`.
//!
//! Run: `cargo nextest run --test source_faults`

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use mysql_async::prelude::*;

const WAIT: Duration = Duration::from_secs(90);

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_source_is_detected_and_reconnected() {
    let c = Cluster::order_only(4701).await;
    let rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    exec(
        &mut src,
        &["INSERT INTO category VALUES (1, 'before', NULL)"],
    )
    .await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    drop(src);

    // Heartbeats come every second; the read timeout is 4 s. Freeze for longer.
    let pid = c.source.pid().unwrap();
    signal(pid, "-STOP");
    tokio::time::sleep(Duration::from_secs(7)).await;
    signal(pid, "-CONT");

    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &["INSERT INTO category VALUES (2, 'after', NULL)"],
    )
    .await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    let log = rowsync.log_text();
    assert!(
        log.contains("the connection looks dead"),
        "the freeze went unnoticed; log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gtid_domains_resume_after_a_restart() {
    let c = Cluster::order_only(4801).await;
    let mut rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    for round in 0..3 {
        for i in 0..20 {
            let id = round * 100 + i;
            let domain = i % 2;
            exec(
                &mut src,
                &[
                    &format!("SET SESSION gtid_domain_id = {domain}"),
                    &format!("INSERT INTO category VALUES ({id}, 'd{domain}', {round})"),
                ],
            )
            .await;
        }
        wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
        assert_eq!(rowsync.terminate(), Some(0), "{}", rowsync.log_text());
        // Writes while rowsync is down, in both domains.
        for domain in 0..2 {
            let id = round * 100 + 50 + domain;
            exec(
                &mut src,
                &[
                    &format!("SET SESSION gtid_domain_id = {domain}"),
                    &format!("INSERT INTO category VALUES ({id}, 'down', {round})"),
                ],
            )
            .await;
        }
        rowsync = Rowsync::start(&c.cfg);
    }
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    let gtid: Option<String> = rep
        .query_first("SELECT gtid FROM rowsync_checkpoint")
        .await
        .unwrap();
    let gtid = gtid.unwrap_or_default();
    assert!(
        gtid.starts_with("0-") && gtid.contains(",1-"),
        "checkpoint should hold both domains: {gtid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_row_images_and_statement_dml_stop_only_their_table() {
    let c = Cluster::order_only(5301).await;
    let _rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'a', NULL)",
            "INSERT INTO batch VALUES (1, 1, 1, '2024-01-01 00:00:00')",
            // A session with a minimal row image: the update's images lack columns.
            "SET SESSION binlog_row_image = 'MINIMAL'",
            "UPDATE category SET name = 'minimal' WHERE id = 1",
            "SET SESSION binlog_row_image = 'FULL'",
            // A session logging statements.
            "SET SESSION binlog_format = 'STATEMENT'",
            "INSERT INTO batch VALUES (1, 2, 2, '2024-01-02 00:00:00')",
            "SET SESSION binlog_format = 'ROW'",
            "INSERT INTO product VALUES (1, 'P-1', 'still flowing', 1, 2020, 1.00, 0)",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    c.assert_needs_recopy("product.category", "binlog_row_image must be FULL");
    c.assert_needs_recopy("product.batch", "logged as a statement");
    // The replicas keep the state from before the bad events, never a mis-mapped row.
    let name: Option<String> = rep
        .query_first("SELECT name FROM category WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_start_position_is_a_clear_fatal_error() {
    let c = Cluster::order_only(5401).await;
    let (source, order) = (c.source, &c.targets[0]);
    let mut rowsync = Rowsync::start(&c.cfg);
    wait_started(order, "order_db", &rowsync).await;
    assert_eq!(rowsync.terminate(), Some(0));
    let mut rep = order.conn("order_db").await;
    let before = (
        dump(&mut rep, "category", "id").await,
        dump(&mut rep, "rowsync_checkpoint", "pipeline").await,
    );
    let mut src = source.conn("product").await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'lost while down', NULL)",
            "FLUSH BINARY LOGS",
            "INSERT INTO category VALUES (2, 'x', NULL)",
        ],
    )
    .await;
    // PURGE skips a file a dump thread still reads; the old rowsync's thread may linger on the
    // server for a moment, so repeat until only the newest file is left.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let files: Vec<String> = src
            .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
                row.get::<String, _>(0).unwrap_or_default()
            })
            .await
            .unwrap();
        if files.len() == 1 {
            break;
        }
        src.query_drop(format!("PURGE BINARY LOGS TO '{}'", files.last().unwrap()))
            .await
            .unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "could not purge: {files:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let rowsync = Rowsync::start(&c.cfg);
    let log = rowsync
        .wait_log("is not available on the source", WAIT)
        .await;
    assert!(log.contains("Re-copy"), "{log}");
    let log = rowsync.wait_log("target pipeline stopped", WAIT).await;
    assert!(
        !log.contains("retrying"),
        "must be fatal, not retried: {log}"
    );
    // The replica and its checkpoint are as they were.
    let after = (
        dump(&mut rep, "category", "id").await,
        dump(&mut rep, "rowsync_checkpoint", "pipeline").await,
    );
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_master_is_refused_not_silently_skipped() {
    let c = Cluster::order_only(5701).await;
    let (source, order) = (c.source, &c.targets[0]);
    let mut rowsync = Rowsync::start(&c.cfg);
    wait_started(order, "order_db", &rowsync).await;
    let mut src = source.conn("product").await;
    exec(&mut src, &["INSERT INTO category VALUES (1, 'a', NULL)"]).await;
    wait_equal(
        &mut src,
        &mut order.conn("order_db").await,
        "category",
        "id",
        WAIT,
    )
    .await;
    assert_eq!(rowsync.terminate(), Some(0));
    exec(
        &mut src,
        &[
            "RESET MASTER",
            "INSERT INTO category VALUES (2, 'after reset', NULL)",
        ],
    )
    .await;
    let rowsync = Rowsync::start(&c.cfg);
    let log = rowsync.wait_log("target pipeline stopped", WAIT).await;
    assert!(log.contains("is not available on the source"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_gtid_state_is_an_error_not_an_empty_one() {
    use rowsync::model::position::Position;
    use rowsync::source::info::gtid_at;
    let source = Server::start(Role::Source);
    let mut conn = source.conn("").await;
    exec(
        &mut conn,
        &["CREATE DATABASE d", "CREATE TABLE d.t (id INT PRIMARY KEY)"],
    )
    .await;
    let row: mysql_async::Row = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    let (file, offset): (String, u64) = (row.get(0).unwrap(), row.get(1).unwrap());
    let at = |file: &str, offset: u64| Position::new(file.parse().unwrap(), offset);
    // The head has a state; a file the server does not have has none (NULL): an error that a
    // retry does not fix, where it used to be a panic.
    let head = gtid_at(&mut conn, &at(&file, offset)).await.unwrap();
    assert!(!head.is_empty());
    let missing = file.replace(".000001", ".999999");
    let err = gtid_at(&mut conn, &at(&missing, 4)).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("BINLOG_GTID_POS() returned NULL"),
        "{err}"
    );
}

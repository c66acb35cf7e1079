//! The engine's handle, in process: statuses to read and commands (pause, resume, re-copy,
//! reload as a diff); and `rowsync status` needing nothing but SELECT on a target.
//!
//! Run: `cargo nextest run --test engine`

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use rowsync::config::Config;
use rowsync::engine::status::{Snapshot, State};
use rowsync::engine::{Command, CommandError, Engine, Handle};
use rowsync::model::name::TableName;

const WAIT: Duration = Duration::from_secs(60);

/// Waits until `pred` holds for target `name`'s snapshot.
async fn wait_for(handle: &Handle, name: &str, what: &str, pred: impl Fn(&Snapshot) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let snap = handle.snapshots().into_iter().find(|s| s.target == name);
        if snap.as_ref().is_some_and(&pred) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: not {what}: {snap:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn streaming(s: &Snapshot) -> bool {
    s.state == State::Streaming && s.checkpoint.is_some()
}

async fn count(conn: &mut mysql_async::Conn, sql: &str) -> u64 {
    conn.query_first(sql).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_pauses_resumes_recopies_and_reloads_only_what_changed() {
    let mappings =
        "[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\", \"purchase\"]\n";
    let c = Cluster::start(PRODUCT_SCHEMA, &["order", "purchase"], mappings, 6951).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &["INSERT INTO category VALUES (1, 'a', NULL), (2, 'b', 1)"],
    )
    .await;
    let handle = Engine::start(Arc::new(Config::load(&c.cfg).unwrap()));
    wait_for(&handle, "order", "streaming", streaming).await;
    wait_for(&handle, "purchase", "streaming", streaming).await;
    let mut order = c.replica_conn(0).await;
    let mut purchase = c.replica_conn(1).await;
    wait_equal(&mut src, &mut order, "category", "id", WAIT).await;

    // Paused, order applies nothing while purchase goes on; resumed, it catches up.
    handle
        .send(Command::Pause {
            target: "order".into(),
        })
        .await
        .unwrap();
    assert_eq!(handle.snapshots()[0].state, State::Paused);
    assert!(matches!(
        handle
            .send(Command::Pause {
                target: "order".into()
            })
            .await,
        Err(CommandError::AlreadyPaused(_))
    ));
    exec(&mut src, &["INSERT INTO category VALUES (3, 'c', 1)"]).await;
    wait_equal(&mut src, &mut purchase, "category", "id", WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&mut order, "SELECT COUNT(*) FROM category").await, 2);
    handle
        .send(Command::Resume {
            target: "order".into(),
        })
        .await
        .unwrap();
    assert_ne!(handle.snapshots()[0].state, State::Paused);
    wait_equal(&mut src, &mut order, "category", "id", WAIT).await;

    // A re-copy through the handle repairs a replica changed by hand.
    exec(&mut order, &["DELETE FROM category WHERE id = 1"]).await;
    handle
        .send(Command::Recopy {
            target: "order".into(),
            table: TableName::new("product", "category"),
        })
        .await
        .unwrap();
    wait_equal(&mut src, &mut order, "category", "id", WAIT).await;
    let refused = handle
        .send(Command::Recopy {
            target: "order".into(),
            table: TableName::new("product", "ignored"),
        })
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("no mapping sends product.ignored")),
        "{refused:?}"
    );
    assert!(matches!(
        handle
            .send(Command::Resume {
                target: "billing".into()
            })
            .await,
        Err(CommandError::UnknownTarget(_))
    ));

    // A reload that adds a mapping for purchase restarts purchase only.
    wait_for(&handle, "order", "streaming", streaming).await;
    let order_status = handle.statuses()[0].clone();
    let order_runs = order_status.snapshot().runs;
    c.append_config("\n[[mappings]]\nsource = \"product.batch\"\ntargets = [\"purchase\"]\n");
    exec(
        &mut src,
        &["INSERT INTO batch VALUES (1, 1, 5, '2024-01-01 00:00:00.250000')"],
    )
    .await;
    handle
        .send(Command::Reload(Arc::new(Config::load(&c.cfg).unwrap())))
        .await
        .unwrap();
    wait_equal(
        &mut src,
        &mut purchase,
        "batch",
        "product_id, batch_no",
        WAIT,
    )
    .await;
    exec(&mut src, &["INSERT INTO category VALUES (4, 'd', 2)"]).await;
    wait_equal(&mut src, &mut order, "category", "id", WAIT).await;
    wait_equal(&mut src, &mut purchase, "category", "id", WAIT).await;
    assert!(Arc::ptr_eq(&handle.statuses()[0], &order_status));
    assert_eq!(
        order_status.snapshot().runs,
        order_runs,
        "order was restarted"
    );
    let tables: Vec<String> = order
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'batch'")
        .await
        .unwrap();
    assert!(tables.is_empty(), "batch reached order: {tables:?}");
    handle.shutdown().await;
    assert!(handle
        .snapshots()
        .iter()
        .all(|s| s.state == State::ShutDown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_needs_only_select_on_a_target() {
    let c = Cluster::order_only(6961).await;
    let target = &c.targets[0];
    exec(
        &mut target.conn("").await,
        &[
            "CREATE USER reader@'%' IDENTIFIED BY 'pw'",
            "GRANT SELECT ON order_db.* TO reader@'%'",
        ],
    )
    .await;
    let root_url = target.url("order_db");
    let reader_url = root_url.replace("root@", "reader:pw@");
    let text = std::fs::read_to_string(&c.cfg).unwrap();
    let reader_cfg = c.dir.path().join("reader.toml");
    std::fs::write(&reader_cfg, text.replace(&root_url, &reader_url)).unwrap();
    let status = || rowsync_cmd(&["status", "--config", reader_cfg.to_str().unwrap()]);

    // Before rowsync ever ran: nothing to read, and nothing created.
    let (code, out) = status();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("target order: no checkpoint yet"), "{out}");
    let mut root = target.conn("order_db").await;
    let made: Vec<String> = root
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'order_db'")
        .await
        .unwrap();
    assert!(made.is_empty(), "status created {made:?}");

    // Once it runs, the same account reads the checkpoint.
    let mut src = c.source_conn().await;
    exec(&mut src, &["INSERT INTO category VALUES (1, 'a', NULL)"]).await;
    let rowsync = c.run().await;
    wait_equal(&mut src, &mut root, "category", "id", WAIT).await;
    let (code, out) = status();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("target order: checkpoint"),
        "{out}\n{}",
        rowsync.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_records_a_removed_target_and_hears_sigterm_during_a_reload() {
    let mappings =
        "[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\", \"purchase\"]\n";
    let c = Cluster::start(PRODUCT_SCHEMA, &["order", "purchase"], mappings, 6971).await;
    let both = std::fs::read_to_string(&c.cfg).unwrap();
    let mut rowsync = c.run().await;

    // purchase leaves the file: its pipeline stops and the store says so.
    let purchase_url = c.targets[1].url("purchase_db");
    let order_only = both
        .replace(
            &format!("\n[[targets]]\nname = \"purchase\"\nurl = \"{purchase_url}\"\n"),
            "",
        )
        .replace(
            "targets = [\"order\", \"purchase\"]",
            "targets = [\"order\"]",
        );
    assert_ne!(order_only, both);
    std::fs::write(&c.cfg, &order_only).unwrap();
    hup(rowsync.pid());
    let deadline = Instant::now() + WAIT;
    loop {
        let text = status_text(&c.cfg);
        if text.contains("daemon: target purchase SHUT DOWN")
            && text.contains("daemon: target order STREAMING")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{text}\n{}", rowsync.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A SIGTERM right behind a SIGHUP (while the reload starts purchase again) still ends
    // the process at transaction boundaries.
    std::fs::write(&c.cfg, &both).unwrap();
    hup(rowsync.pid());
    rowsync.wait_log("SIGHUP: reloading", WAIT).await;
    assert_eq!(rowsync.terminate(), Some(0));
}

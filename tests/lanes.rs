//! Parallel apply (`apply.lanes`): groups run on several target connections at once but
//! commit in source order.
//!
//! - A reader on the replica never sees a later source transaction without every earlier
//!   one: each source transaction inserts the next number of a sequence (spread over two
//!   tables, so groups run on different lanes), and every read of both tables at once must
//!   find the numbers 1..n without a hole.
//!   Every seventh transaction also inserts 60 filler rows, so some groups are much heavier
//!   than the ones after them, which would commit first if commits were not ordered.
//! - Now and then a transaction updates one of a few hot rows, whose groups conflict and wait
//!   for each other; the replica still ends equal to the source.
//! - Groups writing different BINARY(16) keys run at once (binary keys are hashed exactly,
//!   not folded as text).
//!
//! Run: `cargo nextest run --test lanes`

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::*;

const TRANSACTIONS: u64 = 6_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_later_transaction_without_an_earlier_one() {
    let c = Cluster::start(
        &[
            "CREATE DATABASE product",
            "CREATE TABLE product.tick_a (id BIGINT PRIMARY KEY, pad VARCHAR(200) NOT NULL) ENGINE=InnoDB",
            "CREATE TABLE product.tick_b (id BIGINT PRIMARY KEY, pad VARCHAR(200) NOT NULL) ENGINE=InnoDB",
            "CREATE TABLE product.hot (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB",
            "CREATE TABLE product.filler (id BIGINT PRIMARY KEY, pad VARCHAR(200) NOT NULL) ENGINE=InnoDB",
            "INSERT INTO product.hot VALUES (1, 0), (2, 0), (3, 0)",
        ],
        &["order"],
        "[[mappings]]\nsource = \"product.*\"\ntargets = [\"order\"]\n\n[apply]\nlanes = 4\nbatch_rows = 50\n",
        5301,
    )
    .await;
    let (source, order) = (c.source, &c.targets[0]);
    let rowsync = Rowsync::start(&c.cfg);
    wait_started(order, "order_db", &rowsync).await;

    let writer = tokio::spawn({
        let url = source.url("product");
        async move {
            let mut src = mysql_async::Conn::from_url(url).await.unwrap();
            let mut batch = Vec::new();
            for id in 1..=TRANSACTIONS {
                let table = if id % 2 == 0 { "tick_a" } else { "tick_b" };
                let mut t = vec![format!(
                    "START TRANSACTION; INSERT INTO {table} VALUES ({id}, REPEAT('p', 150))"
                )];
                // Some groups are much heavier than the next ones, which would finish first.
                if id % 7 == 0 {
                    t.push(format!("INSERT INTO filler SELECT {id} * 100 + seq, REPEAT('f', 150) FROM seq_1_to_60"));
                }
                if id % 500 == 0 {
                    t.push(format!(
                        "UPDATE hot SET n = n + {id} WHERE id = {}",
                        id % 3 + 1
                    ));
                }
                t.push("COMMIT".into());
                batch.push(t.join(";"));
                if batch.len() == 100 {
                    src.query_drop(batch.join(";")).await.unwrap();
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                src.query_drop(batch.join(";")).await.unwrap();
            }
        }
    });

    // One statement reads both tables in one snapshot.
    const READ: &str = "SELECT (SELECT COUNT(*) FROM tick_a) + (SELECT COUNT(*) FROM tick_b), GREATEST((SELECT COALESCE(MAX(id), 0) FROM tick_a), (SELECT COALESCE(MAX(id), 0) FROM tick_b))";
    let mut rep = order.conn("order_db").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let (mut reads, mut partial, mut sessions) = (0u64, 0u64, 0u64);
    loop {
        if sessions == 0 {
            // The writer's own session and its four lanes.
            let n: u64 = rep
                .query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = 'order_db' AND ID <> CONNECTION_ID()")
                .await
                .unwrap()
                .unwrap();
            sessions = if n >= 5 { n } else { 0 };
        }
        let (count, max): (u64, u64) = rep.query_first(READ).await.unwrap().unwrap();
        assert_eq!(
            count, max,
            "a reader saw source transaction {max} but only {count} transactions"
        );
        reads += 1;
        if count > 0 && count < TRANSACTIONS {
            partial += 1;
        }
        if count == TRANSACTIONS {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no catch-up: {count}");
    }
    writer.await.unwrap();
    assert!(
        partial > 10,
        "the reader must watch the replica while it fills ({partial} of {reads} reads)"
    );
    let mut src = source.conn("product").await;
    for table in ["tick_a", "tick_b", "filler", "hot"] {
        wait_equal(&mut src, &mut rep, table, "id", Duration::from_secs(60)).await;
    }
    assert!(
        sessions >= 5,
        "rowsync held fewer than five target sessions"
    );
}

/// Keys of a `binary` column (BINARY(16) UUIDs with bytes of every kind) are told apart
/// exactly, so groups writing different UUIDs run at once: while one
/// lane waits for a row lock another session holds on the replica, the next group's lane has
/// already written its row (and waits only to commit after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_with_different_binary_keys_run_at_once() {
    const K1: &str = "UNHEX('9F00FF5B7B4111EE8C9000000000C300')";
    const K2: &str = "UNHEX('9F00FF5B7B4111EE8C9000000000C302')";
    const TRX: &str = "SELECT trx_state, trx_rows_modified FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID()";
    let c = Cluster::start(
        &[
            "CREATE DATABASE product",
            "CREATE TABLE product.u (k BINARY(16) PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB",
            &format!("INSERT INTO product.u VALUES ({K1}, 0), ({K2}, 0)"),
        ],
        &["order"],
        "[[mappings]]\nsource = \"product.*\"\ntargets = [\"order\"]\n\n[apply]\nlanes = 2\n",
        5311,
    )
    .await;
    let _rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "u", "k", Duration::from_secs(30)).await;

    let mut blocker = c.replica_conn(0).await;
    blocker
        .query_drop(format!(
            "START TRANSACTION; SELECT v FROM u WHERE k = {K1} FOR UPDATE"
        ))
        .await
        .unwrap();
    src.query_drop(format!("UPDATE u SET v = 1 WHERE k = {K1}"))
        .await
        .unwrap();
    // The second change is written only once the first group waits for the lock, so the two
    // cannot share a group.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut seen: Vec<(String, u64)> = Vec::new();
    while !seen.iter().any(|(state, _)| state == "LOCK WAIT") {
        assert!(
            std::time::Instant::now() < deadline,
            "the first group never waited for the lock: {seen:?}"
        );
        // INNODB_TRX is a cache refreshed only when not read in the last 100 ms.
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen = rep.query(TRX).await.unwrap();
    }
    src.query_drop(format!("UPDATE u SET v = 2 WHERE k = {K2}"))
        .await
        .unwrap();
    // In one look at the replica: the first group still waits, the second has its row.
    let both = |seen: &[(String, u64)]| {
        seen.iter().any(|(state, _)| state == "LOCK WAIT")
            && seen
                .iter()
                .any(|(state, rows)| state == "RUNNING" && *rows > 0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while !both(&seen) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen = rep.query(TRX).await.unwrap();
    }
    blocker.query_drop("ROLLBACK").await.unwrap();
    assert!(
        both(&seen),
        "the second group did not write while the first waited (transactions on the replica: {seen:?})"
    );
    wait_equal(&mut src, &mut rep, "u", "k", Duration::from_secs(30)).await;
    let hex: Vec<String> = rep
        .query("SELECT CONCAT(HEX(k), ':', v) FROM u ORDER BY k")
        .await
        .unwrap();
    assert_eq!(
        hex,
        [
            "9F00FF5B7B4111EE8C9000000000C300:1",
            "9F00FF5B7B4111EE8C9000000000C302:2"
        ]
    );
}

//! Fault injection: real MariaDB servers and the real `rowsync run`, with the network or the
//! servers broken on purpose while it works. Afterwards every replica must equal the source,
//! and no change may have been lost or applied twice.
//!
//! Scenarios:
//! - the source connection cut (RST) twice in the middle of a large multi-statement
//!   transaction, while it streams into the targets;
//! - the source connection cut twice in the middle of an initial copy, writes going on: the
//!   copy resumes after its last committed chunk and copies no row twice;
//! - the source slowed down (latency and a byte rate), dropping its connections every 700 ms,
//!   then partitioned (packets vanish, new connections hang) for longer than the read timeout,
//!   during a steady workload;
//! - one target's connection cut twice mid-apply, then dropping every 500 ms, then refused,
//!   while the other target keeps going;
//! - the source server restarted twice (SIGTERM, then kill -9) during a workload;
//! - INSERT, UPDATE and DELETE revoked from one target's account: that target is held back
//!   with the error in `rowsync status`, the other goes on; after the GRANT it catches up by
//!   itself (the operator procedure is spelled out in that test);
//! - one transaction touching 10,000 tables, ten of them selected: rowsync's peak RSS stays
//!   bounded and the replicas are right.
//!
//! Network faults go through `common::proxy::Proxy`, a TCP proxy whose port the config's URL
//! names instead of the server's.
//!
//! Double applies are seen directly, as in `crash_resume.rs`: AFTER INSERT/UPDATE/DELETE
//! triggers on the source table and on every replica log each row change they see (key,
//! version, write or delete), and every change sets a version never used before. A replayed
//! upsert fires the replica's trigger again (MariaDB fires AFTER UPDATE even for an unchanged
//! row), so a replica's log equals the source's exactly only if every change arrived once.
//!
//! Run: `cargo nextest run --test faults` (about two minutes on two cores).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::proxy::{Admit, Proxy};
use common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};
use rand::Rng;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(120);

const ITEM_SCHEMA: &[&str] = &[
    "CREATE DATABASE product",
    "CREATE TABLE product.item (id BIGINT PRIMARY KEY, code VARCHAR(40) NOT NULL, version BIGINT NOT NULL, pad VARCHAR(200) NOT NULL DEFAULT '') ENGINE=InnoDB",
];

/// `product.item` into the targets named.
fn item_mapping(targets: &[&str]) -> String {
    let names: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[mappings]]\nsource = \"product.item\"\ntargets = [{}]\n",
        names.join(", ")
    )
}

/// The change log of `table`: a `log` table and the triggers that fill it.
fn change_log(table: &str, log: &str) -> Vec<String> {
    vec![
        format!("CREATE TABLE {log} (id BIGINT NOT NULL, version BIGINT NOT NULL, kind CHAR(1) NOT NULL, KEY (id, version)) ENGINE=InnoDB"),
        format!("CREATE TRIGGER {table}_ai AFTER INSERT ON {table} FOR EACH ROW INSERT INTO {log} VALUES (NEW.id, NEW.version, 'W')"),
        format!("CREATE TRIGGER {table}_au AFTER UPDATE ON {table} FOR EACH ROW INSERT INTO {log} VALUES (NEW.id, NEW.version, 'W')"),
        format!("CREATE TRIGGER {table}_ad AFTER DELETE ON {table} FOR EACH ROW INSERT INTO {log} VALUES (OLD.id, OLD.version, 'D')"),
    ]
}

async fn add_change_log(conn: &mut Conn, table: &str, log: &str) {
    for s in change_log(table, log) {
        conn.query_drop(&s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// How many times each (id, version, kind) is in `log`.
async fn log_counts(conn: &mut Conn, log: &str) -> BTreeMap<(i64, i64, String), u64> {
    let rows: Vec<(i64, i64, String, u64)> = conn
        .query(format!(
            "SELECT id, version, kind, COUNT(*) FROM {log} GROUP BY id, version, kind"
        ))
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, version, kind, n)| ((id, version, kind), n))
        .collect()
}

/// Asserts that the replica's log of applied changes equals the source's log of changes made:
/// every change applied exactly once.
async fn assert_applied_once(src: &mut Conn, rep: &mut Conn, name: &str) {
    let made = log_counts(src, "changes").await;
    let applied = log_counts(rep, "applied").await;
    let keys: BTreeSet<_> = made.keys().chain(applied.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter_map(|k| {
            let (m, a) = (
                made.get(k).copied().unwrap_or(0),
                applied.get(k).copied().unwrap_or(0),
            );
            (m != a).then(|| format!("id {} version {} {}: made {m}, applied {a}", k.0, k.1, k.2))
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{name}: {} changes were not applied exactly once ({} made, {} applied); first: {:#?}",
        diffs.len(),
        made.values().sum::<u64>(),
        applied.values().sum::<u64>(),
        &diffs[..diffs.len().min(10)]
    );
}

/// Which server the proxy stands before.
enum Through {
    Source,
    Purchase,
}

/// `product.item` into targets `order` and `purchase`, one server reached through a proxy,
/// started with change logs (`start_logged`).
async fn logged_through_proxy(server_id: u32, through: Through) -> (Cluster, Proxy, Rowsync, Conn) {
    let c = Cluster::start(
        ITEM_SCHEMA,
        &["order", "purchase"],
        &item_mapping(&["order", "purchase"]),
        server_id,
    )
    .await;
    let proxy = Proxy::start(match through {
        Through::Source => c.source.port,
        Through::Purchase => c.targets[1].port,
    });
    c.route_through(&proxy);
    let (rowsync, src) = start_logged(&c).await;
    (c, proxy, rowsync, src)
}

/// Starts rowsync on `c` with change logs on the source table and on every replica (added once
/// the replicas exist, before any change). Returns rowsync and a source session.
async fn start_logged(c: &Cluster) -> (Rowsync, Conn) {
    let mut src = c.source_conn().await;
    add_change_log(&mut src, "item", "changes").await;
    let rowsync = c.run().await;
    for i in 0..c.targets.len() {
        add_change_log(&mut c.replica_conn(i).await, "item", "applied").await;
    }
    (rowsync, src)
}

/// Waits until every replica equals the source and applied each change exactly once, and
/// `rowsync verify` agrees.
async fn assert_replicas_right(c: &Cluster, src: &mut Conn) {
    for i in 0..c.targets.len() {
        let mut rep = c.replica_conn(i).await;
        wait_equal(src, &mut rep, "item", "id", WAIT).await;
        assert_applied_once(src, &mut rep, &format!("target {i}")).await;
    }
    let (code, report) = rowsync_cmd(&["verify", "--config", c.cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "verify:\n{report}");
    assert!(
        report.contains("product.item -> item") && report.contains(": equal"),
        "{report}"
    );
}

/// A session at `url`, retried while the server is away (for up to `WAIT`).
async fn connect_retrying(url: &str) -> Conn {
    let opts = OptsBuilder::from_opts(Opts::from_url(url).unwrap()).prefer_socket(false);
    let deadline = Instant::now() + WAIT;
    loop {
        match Conn::new(opts.clone()).await {
            Ok(conn) => return conn,
            Err(e) => assert!(Instant::now() < deadline, "cannot reach {url}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The workload's rows as the source has them: live ids, the next unused id, the next
/// version.
async fn workload_state(conn: &mut Conn, first_id: i64) -> Option<(Vec<i64>, i64, i64)> {
    let range = format!("id >= {first_id} AND id < {}", first_id + 1_000_000);
    let live: Vec<i64> = conn
        .query(format!("SELECT id FROM item WHERE {range}"))
        .await
        .ok()?;
    let next_id: Option<i64> = conn
        .query_first(format!(
            "SELECT COALESCE(MAX(id) + 1, {first_id}) FROM changes WHERE {range}"
        ))
        .await
        .ok()?;
    let version: Option<i64> = conn
        .query_first("SELECT COALESCE(MAX(version), 0) + 1 FROM changes")
        .await
        .ok()?;
    Some((live, next_id?, version?.max(1)))
}

/// Writes up to `changes` row changes to `product.item` at `url` (until `stop`), in
/// transactions of 1..=10 changes with `pause` between them: inserts of ids from `first_id`
/// (up to a million of them), updates and deletes of those rows, each setting a fresh positive
/// version. Survives the source going away: it reconnects and reads back which rows exist,
/// since a transaction whose COMMIT got no answer may or may not have committed (the source's
/// change log, written in the same transaction, is the truth the test compares against).
/// Returns the changes attempted.
async fn workload(
    url: String,
    first_id: i64,
    changes: usize,
    pause: Duration,
    stop: CancellationToken,
) -> usize {
    let mut conn = connect_retrying(&url).await;
    let mut state = None;
    let mut done = 0;
    while done < changes && !stop.is_cancelled() {
        let (mut live, mut next_id, mut version) = match state.take() {
            Some(s) => s,
            None => match workload_state(&mut conn, first_id).await {
                Some(s) => s,
                None => {
                    conn = connect_retrying(&url).await;
                    continue;
                }
            },
        };
        let picks: Vec<(u8, usize)> = {
            let mut rng = rand::rng();
            let n = rng.random_range(1..=10usize).min(changes - done);
            (0..n)
                .map(|_| (rng.random_range(0..10u8), rng.random_range(0..usize::MAX)))
                .collect()
        };
        let n = picks.len();
        let mut stmts = vec!["START TRANSACTION".to_string()];
        for (kind, pick) in picks {
            if live.is_empty() || kind < 4 {
                stmts.push(format!(
                    "INSERT INTO item (id, code, version) VALUES ({next_id}, 'w-{next_id}', {version})"
                ));
                live.push(next_id);
                next_id += 1;
            } else if kind < 9 {
                let id = live[pick % live.len()];
                stmts.push(format!(
                    "UPDATE item SET version = {version}, code = 'u-{version}' WHERE id = {id}"
                ));
            } else {
                let id = live.swap_remove(pick % live.len());
                stmts.push(format!("DELETE FROM item WHERE id = {id}"));
            }
            version += 1;
        }
        stmts.push("COMMIT".into());
        match conn.query_drop(stmts.join(";")).await {
            Ok(()) => state = Some((live, next_id, version)),
            // Whether it committed is read back after reconnecting.
            Err(_) => conn = connect_retrying(&url).await,
        }
        done += n;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    done
}

/// `workload` run to its end.
async fn workload_of(url: String, first_id: i64, changes: usize) -> usize {
    workload(
        url,
        first_id,
        changes,
        Duration::ZERO,
        CancellationToken::new(),
    )
    .await
}

/// One source transaction of several statements over `rows` new ids from `first_id`: insert
/// them all, update every third, delete every tenth, then update the first half's others.
/// Versions are negative (the workload's are positive), each change its own.
async fn big_transaction(src: &mut Conn, first_id: i64, rows: i64) {
    let last = first_id + rows - 1;
    let v = |band: i64| format!("-({band} * 100000000 + id - {first_id} + 1)");
    let statements = [
        "START TRANSACTION".to_string(),
        format!(
            "INSERT INTO item (id, code, version, pad) SELECT {first_id} + seq - 1, CONCAT('big-', seq), -(seq), REPEAT('b', 100) FROM seq_1_to_{rows}"
        ),
        format!(
            "UPDATE item SET version = {}, code = 'big-u' WHERE id BETWEEN {first_id} AND {last} AND id % 3 = 0",
            v(1)
        ),
        format!("DELETE FROM item WHERE id BETWEEN {first_id} AND {last} AND id % 10 = 0"),
        format!(
            "UPDATE item SET version = {}, pad = 'again' WHERE id BETWEEN {first_id} AND {} AND id % 3 <> 0",
            v(2),
            first_id + rows / 2
        ),
        "COMMIT".to_string(),
    ];
    src.query_drop(statements.join(";")).await.unwrap();
}

/// The open transaction on `conn`'s server that has modified the most rows: (id, rows).
async fn biggest_open_transaction(conn: &mut Conn) -> Option<(String, u64)> {
    conn.query_first(
        "SELECT CAST(trx_id AS CHAR), trx_rows_modified FROM information_schema.INNODB_TRX ORDER BY trx_rows_modified DESC LIMIT 1",
    )
    .await
    .unwrap()
}

/// Waits until a transaction on `conn`'s server other than `not` has modified at least `rows`
/// rows (rowsync applying a big source transaction); returns its id.
async fn wait_open_transaction(
    conn: &mut Conn,
    rows: u64,
    not: Option<&str>,
    rowsync: &Rowsync,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((id, n)) = biggest_open_transaction(conn).await {
            if n >= rows && Some(id.as_str()) != not {
                return id;
            }
        }
        if Instant::now() > deadline {
            let trx = try_rows(conn, "SELECT t.*, p.* FROM information_schema.INNODB_TRX t LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id").await;
            panic!(
                "no new transaction of {rows} rows opened on the target: {trx:#?}\nlog:\n{}",
                rowsync.log_text()
            );
        }
        // InnoDB refreshes what INNODB_TRX shows only when it was not read for 100 ms.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Waits until `rowsync status` shows every needle; returns the text.
async fn wait_status(cfg: &std::path::Path, needles: &[&str], rowsync: &Rowsync) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = status_text(cfg);
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {needles:?}:\n{text}\nlog:\n{}",
            rowsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_cut_in_the_middle_of_a_big_transaction() {
    let (c, proxy, rowsync, mut src) = logged_through_proxy(6101, Through::Source).await;
    workload_of(c.source.url("product"), 1_000_000, 300).await;

    // The binlog reaches rowsync at 3 MB/s, so the transaction (about 10 MB of events) is
    // still streaming when its first rows are in the target's open transaction.
    proxy.set_rate(Some(3_000_000));
    big_transaction(&mut src, 10_000_000, 60_000).await;
    let mut order = c.targets[0].conn("").await;
    let mut cut_in = None;
    for _ in 0..2 {
        // The second time, in the transaction that applies it again from the start.
        let trx = wait_open_transaction(&mut order, 5_000, cut_in.as_deref(), &rowsync).await;
        proxy.cut();
        cut_in = Some(trx);
    }
    proxy.heal();
    workload_of(c.source.url("product"), 1_000_000, 300).await;

    assert_replicas_right(&c, &mut src).await;
    let log = rowsync.log_text();
    assert!(log.contains("retrying"), "{log}");
}

/// Rows the initial copy has committed, and how many tables it finished.
async fn copy_progress(rep: &mut Conn) -> (u64, u64) {
    const SQL: &str = "SELECT CAST(COALESCE(SUM(rows_copied), 0) AS UNSIGNED), CAST(COALESCE(SUM(state = 'done'), 0) AS UNSIGNED) FROM rowsync_copy";
    // The table appears when the copy starts.
    rep.query_first(SQL).await.ok().flatten().unwrap_or((0, 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_cut_in_the_middle_of_the_initial_copy() {
    const ROWS: i64 = 100_000;
    let c = Cluster::start(
        ITEM_SCHEMA,
        &["order"],
        &format!(
            "{}\n[copy]\nchunk_rows = 2000\nparallel_tables = 1\nwriters = 1\n",
            item_mapping(&["order"])
        ),
        6201,
    )
    .await;
    let mut src = c.source_conn().await;
    // Rows that exist before the copy, never changed by the workload.
    src.query_drop(format!(
        "INSERT INTO item SELECT seq, CONCAT('old-', seq), 0, REPEAT('p', 150) FROM seq_1_to_{ROWS}"
    ))
    .await
    .unwrap();
    add_change_log(&mut src, "item", "changes").await;
    // The replica is made by hand, with its change log, so the copy's writes are logged too;
    // rowsync adopts a replica of the right shape (and empties it before copying).
    let mut rep = c.replica_conn(0).await;
    exec(
        &mut rep,
        &["CREATE TABLE item (id BIGINT PRIMARY KEY, code VARCHAR(40) NOT NULL, version BIGINT NOT NULL, pad VARCHAR(200) NOT NULL DEFAULT '') ENGINE=InnoDB"],
    )
    .await;
    add_change_log(&mut rep, "item", "applied").await;

    let proxy = Proxy::start(c.source.port);
    c.route_through(&proxy);
    // About 20 MB to read at 2 MB/s: the copy takes a while.
    proxy.set_rate(Some(2_000_000));
    let rowsync = Rowsync::start(&c.cfg);
    let stop = CancellationToken::new();
    let writes = tokio::spawn(workload(
        c.source.url("product"),
        1_000_000,
        usize::MAX,
        Duration::from_millis(20),
        stop.clone(),
    ));
    let mut at_cut = 0;
    for _ in 0..2 {
        let deadline = Instant::now() + WAIT;
        loop {
            let (rows, done) = copy_progress(&mut rep).await;
            assert_eq!(done, 0, "the copy ended before the cut");
            if rows >= at_cut + 10_000 {
                at_cut = rows;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the copy does not advance; log:\n{}",
                rowsync.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy.cut();
    }
    proxy.heal();
    wait_started(&c.targets[0], "order_db", &rowsync).await;
    stop.cancel();
    let written = writes.await.unwrap();
    wait_equal(&mut src, &mut rep, "item", "id", WAIT).await;

    // Each row that existed before was written once, by one chunk: none copied twice, none
    // skipped. (Rows the workload changed during the copy may be written again by the stream
    // replaying from the first snapshot's position, by design: see `engine::copy`.)
    let (n, distinct): (u64, u64) = rep
        .query_first(format!(
            "SELECT COUNT(*), COUNT(DISTINCT id) FROM applied WHERE id <= {ROWS}"
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (n, distinct),
        (ROWS as u64, ROWS as u64),
        "rows copied more than once or not at all"
    );
    let log = rowsync.log_text();
    assert!(log.contains("resuming the initial copy"), "{log}");
    eprintln!("copy cut at about 10k and {at_cut} rows; {written} changes written meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_flapping_then_partitioned_source_during_a_workload() {
    let (c, proxy, rowsync, mut src) = logged_through_proxy(6301, Through::Source).await;
    proxy.set_latency(Duration::from_millis(5));
    proxy.set_rate(Some(200_000));
    let stop = CancellationToken::new();
    let writes = tokio::spawn(workload(
        c.source.url("product"),
        1_000_000,
        usize::MAX,
        Duration::from_millis(20),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.flap(Duration::from_millis(700), Duration::from_secs(6));
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Once both binlog streams are open again, a partition longer than the read timeout
    // (4 s here): the streams fall silent, and reconnects hang until it lifts.
    let flapped = rowsync.log_text().len();
    for server_id in ["6301", "6302"] {
        // (The log's fields may be coloured: the id is looked for in the line.)
        let reopened = |log: &str| {
            log[flapped..]
                .lines()
                .any(|l| l.contains("binlog stream open") && l.contains(server_id))
        };
        let deadline = Instant::now() + WAIT;
        while !reopened(&rowsync.log_text()) {
            assert!(
                Instant::now() < deadline,
                "binlog stream {server_id} not open again after the flapping"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    proxy.set_admit(Admit::Blackhole);
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.heal();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let written = writes.await.unwrap();

    assert_replicas_right(&c, &mut src).await;
    let log = rowsync.log_text();
    assert!(log.contains("the connection looks dead"), "{log}");
    eprintln!(
        "{written} changes; {} cuts; {} connections through the proxy",
        proxy.cuts(),
        proxy.accepted()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_cut_mid_apply_and_dropping_repeatedly_spares_the_other() {
    let (c, proxy, rowsync, mut src) = logged_through_proxy(6401, Through::Purchase).await;

    // Writes to purchase go at 2 MB/s: the big transaction is applied for seconds.
    proxy.set_rate(Some(2_000_000));
    big_transaction(&mut src, 10_000_000, 60_000).await;
    let mut purchase = c.targets[1].conn("").await;
    let mut cut_in = None;
    for _ in 0..2 {
        let trx = wait_open_transaction(&mut purchase, 5_000, cut_in.as_deref(), &rowsync).await;
        proxy.cut();
        cut_in = Some(trx);
    }
    proxy.heal();

    let stop = CancellationToken::new();
    let writes = tokio::spawn(workload(
        c.source.url("product"),
        1_000_000,
        usize::MAX,
        Duration::from_millis(20),
        stop.clone(),
    ));
    proxy.flap(Duration::from_millis(500), Duration::from_secs(6));
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Purchase is unreachable now; order keeps up meanwhile.
    proxy.set_admit(Admit::Refuse);
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    writes.await.unwrap();
    let mut order = c.replica_conn(0).await;
    wait_equal(&mut src, &mut order, "item", "id", WAIT).await;
    assert_applied_once(&mut src, &mut order, "order").await;
    let text = wait_status(
        &c.cfg,
        &[
            "daemon: target purchase RETRYING (transient error)",
            "daemon: target order STREAMING",
        ],
        &rowsync,
    )
    .await;
    eprintln!("while purchase is unreachable:\n{text}");
    proxy.heal();
    let mut purchase = c.replica_conn(1).await;
    wait_equal(&mut src, &mut purchase, "item", "id", WAIT).await;

    // A partition: purchase's packets vanish (its lock session's pings go unanswered, its new
    // connections time out); order is not held back, and purchase goes on once it lifts.
    proxy.set_admit(Admit::Blackhole);
    workload_of(c.source.url("product"), 1_000_000, 300).await;
    wait_equal(&mut src, &mut order, "item", "id", WAIT).await;
    // `rowsync status` answers (it once hung for as long as the partition lasted).
    let text = status_text(&c.cfg);
    assert!(
        text.contains("target purchase: UNREACHABLE:")
            && text.contains("did not answer within")
            && text.contains("target order: checkpoint"),
        "{text}"
    );
    eprintln!("while purchase is partitioned:\n{text}");
    proxy.heal();
    assert_replicas_right(&c, &mut src).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_restarts_during_a_workload() {
    let mut c = Cluster::start(
        ITEM_SCHEMA,
        &["order", "purchase"],
        &item_mapping(&["order", "purchase"]),
        6501,
    )
    .await;
    let (rowsync, src) = start_logged(&c).await;
    drop(src);
    let stop = CancellationToken::new();
    let writes = tokio::spawn(workload(
        c.source.url("product"),
        1_000_000,
        usize::MAX,
        Duration::from_millis(10),
        stop.clone(),
    ));
    for hard in [false, true] {
        tokio::time::sleep(Duration::from_secs(3)).await;
        c.source.stop(hard);
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.source.resume();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let written = writes.await.unwrap();

    let mut src = c.source_conn().await;
    assert_replicas_right(&c, &mut src).await;
    // A restart is retried, never a stop (a SIGTERMed source ends the binlog stream without
    // an error, which once stopped every target for good).
    let log = rowsync.log_text();
    assert!(log.contains("retrying"), "{log}");
    assert!(!log.contains("target pipeline stopped"), "{log}");
    eprintln!("{written} changes across two source restarts");
}

/// The operator procedure this test follows, and what it shows:
/// 1. A REVOKE on the database (`REVOKE INSERT, UPDATE, DELETE ON purchase_db.* FROM
///    rowsync`) reaches rowsync's target sessions only when they reconnect (MariaDB reads
///    database-level privileges when a session selects its database); here the sessions are
///    killed to make it take effect.
/// 2. On reconnecting, the first write fails with error 1142 (command denied). A GRANT can
///    fix that, so the target retries with backoff (at most every 30 s), showing the error —
///    `rowsync status` "daemon: target purchase RETRYING (transient error): … command
///    denied …" — and the other target streams on.
/// 3. After the GRANT it resumes by itself from its checkpoint and catches up, nothing lost
///    and nothing applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_target_grants_hold_that_target_back_until_granted() {
    let c = Cluster::start(
        ITEM_SCHEMA,
        &["order", "purchase"],
        &item_mapping(&["order", "purchase"]),
        6601,
    )
    .await;
    let mut admin = c.targets[1].conn("").await;
    exec(
        &mut admin,
        &[
            "CREATE USER 'rowsync'@'%' IDENTIFIED BY 'pw'",
            "GRANT CREATE, ALTER, INDEX, DROP, SELECT, INSERT, UPDATE, DELETE ON purchase_db.* TO 'rowsync'@'%'",
        ],
    )
    .await;
    c.edit_config(
        &format!("mysql://root@127.0.0.1:{}/", c.targets[1].port),
        &format!("mysql://rowsync:pw@127.0.0.1:{}/", c.targets[1].port),
    );
    let (rowsync, mut src) = start_logged(&c).await;
    workload_of(c.source.url("product"), 1_000_000, 300).await;
    let mut purchase = c.replica_conn(1).await;
    wait_equal(&mut src, &mut purchase, "item", "id", WAIT).await;

    exec(
        &mut admin,
        &["REVOKE INSERT, UPDATE, DELETE ON purchase_db.* FROM 'rowsync'@'%'"],
    )
    .await;
    let sessions: Vec<u64> = admin
        .query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'rowsync'")
        .await
        .unwrap();
    assert!(!sessions.is_empty());
    for id in sessions {
        let _ = admin.query_drop(format!("KILL CONNECTION {id}")).await;
    }
    workload_of(c.source.url("product"), 1_000_000, 300).await;

    let mut order = c.replica_conn(0).await;
    wait_equal(&mut src, &mut order, "item", "id", WAIT).await;
    let text = wait_status(
        &c.cfg,
        &[
            "daemon: target purchase RETRYING (transient error)",
            "command denied",
        ],
        &rowsync,
    )
    .await;
    assert!(text.contains("daemon: target order STREAMING"), "{text}");
    eprintln!("with the grants revoked:\n{text}");
    // The order target keeps streaming while purchase is held back.
    workload_of(c.source.url("product"), 1_000_000, 100).await;
    wait_equal(&mut src, &mut order, "item", "id", WAIT).await;

    exec(
        &mut admin,
        &["GRANT INSERT, UPDATE, DELETE ON purchase_db.* TO 'rowsync'@'%'"],
    )
    .await;
    assert_replicas_right(&c, &mut src).await;
    wait_status(&c.cfg, &["daemon: target purchase STREAMING"], &rowsync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transaction_over_ten_thousand_tables() {
    const TABLES: usize = 10_000;
    // Every thousandth table is selected.
    let name = |i: usize| {
        if i.is_multiple_of(1000) {
            format!("s_{i:05}")
        } else {
            format!("n_{i:05}")
        }
    };
    let source = Server::start_with(
        Role::Source,
        &[
            "--innodb-file-per-table=0",
            "--table-definition-cache=11000",
            "--table-open-cache=11000",
        ],
    );
    let started = Instant::now();
    let mut create = vec!["CREATE DATABASE wide".to_string()];
    create.extend((0..TABLES).map(|i| {
        format!(
            "CREATE TABLE wide.{} (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB",
            name(i)
        )
    }));
    let mut conn = source.conn("").await;
    for chunk in create.chunks(500) {
        conn.query_drop(chunk.join(";")).await.unwrap();
    }
    let created = started.elapsed();
    let c = Cluster::start_with(
        source,
        &[],
        &["order"],
        "[[mappings]]\nsource = \"wide.s_*\"\ntargets = [\"order\"]\n",
        6701,
    )
    .await;
    let rowsync = c.run().await;
    let before = peak_rss_mb(rowsync.pid());

    // One transaction, a TABLE_MAP for each of the 10,000 tables (MariaDB itself needs about
    // half a minute for it here), then one more on a selected table.
    let mut src = c.source.conn("wide").await;
    let mut tx = vec!["START TRANSACTION".to_string()];
    tx.extend((0..TABLES).map(|i| format!("INSERT INTO {} VALUES (1, {i})", name(i))));
    tx.push(format!("UPDATE {} SET v = v + 100", name(0)));
    tx.push("COMMIT".into());
    src.query_drop(tx.join(";")).await.unwrap();
    src.query_drop(format!("INSERT INTO {} VALUES (2, 0)", name(9000)))
        .await
        .unwrap();
    let mut rep = c.replica_conn(0).await;
    for i in (0..TABLES).step_by(1000) {
        wait_equal(&mut src, &mut rep, &name(i), "id", WAIT).await;
    }
    let replicas: Vec<String> = rep
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME NOT LIKE 'rowsync%' ORDER BY 1")
        .await
        .unwrap();
    let want: Vec<String> = (0..TABLES).step_by(1000).map(name).collect();
    assert_eq!(replicas, want, "only the selected tables have replicas");
    let peak = peak_rss_mb(rowsync.pid());
    eprintln!(
        "{TABLES} tables created in {created:?}; rowsync peak RSS {before} MB before the transaction, {peak} MB after"
    );
    assert!(peak > 0 && peak < 200, "rowsync peak RSS {peak} MB");
}

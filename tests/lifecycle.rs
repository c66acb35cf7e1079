//! Lifecycle of mappings and tables while rowsync runs, with the replica compared to the
//! source after every step:
//! - a second mapping of a table the target already holds is copied online; so is a mapping
//!   whose `where` changes or whose `table` is renamed, and one removed and added back
//!   (changes made while it was removed arrive), also across kill -9 right after SIGHUP;
//! - two source tables that a `*` pattern resolves to one replica table: the first keeps it,
//!   the other stops with the reason in `status`, also for a table created at run time;
//! - tables a `*` pattern matches, created and dropped (or created LIKE another and dropped)
//!   while rowsync is stopped, never wedge the target: their replicas come from the stream's
//!   CREATE, a later change to another table arrives, and `status` says what became of them.
//!
//! Run: `cargo nextest run --test lifecycle`

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);

const CHILDREN: &str = "SELECT * FROM category WHERE parent_id IS NOT NULL ORDER BY id";

fn with_children(mapping: &str) -> String {
    format!("[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\"]\n\n[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\"]\n{mapping}\n")
}

/// Rewrites the config's mappings (everything from the first `[[mappings]]`).
fn set_mappings(c: &Cluster, mappings: &str) {
    let text = std::fs::read_to_string(&c.cfg).unwrap();
    let head = &text[..text.find("[[mappings]]").unwrap()];
    std::fs::write(&c.cfg, format!("{head}{mappings}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_changed_and_readded_mappings_are_copied_online() {
    let only = "[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\"]\n";
    let c = Cluster::start(PRODUCT_SCHEMA, &["order"], only, 6601).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &["INSERT INTO category VALUES (1, 'root', NULL), (2, 'tools', 1), (3, 'toys', 1)"],
    )
    .await;
    let mut rowsync = c.run().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;

    // A second mapping of a table the target already holds.
    set_mappings(
        &c,
        &with_children("table = \"category_children\"\nwhere = \"parent_id IS NOT NULL\""),
    );
    hup(rowsync.pid());
    exec(&mut src, &["INSERT INTO category VALUES (4, 'hammers', 2)"]).await;
    let children = "SELECT * FROM category_children ORDER BY id";
    wait_same_rows(&mut src, CHILDREN, &mut rep, children, WAIT).await;

    // Its filter changes: the replica is copied again under the new one.
    set_mappings(
        &c,
        &with_children("table = \"category_children\"\nwhere = \"parent_id = 1\""),
    );
    hup(rowsync.pid());
    let direct = "SELECT * FROM category WHERE parent_id = 1 ORDER BY id";
    wait_same_rows(&mut src, direct, &mut rep, children, WAIT).await;

    // Its replica is renamed: the new one is copied, the old one stays as it was.
    set_mappings(
        &c,
        &with_children("table = \"category_kids\"\nwhere = \"parent_id = 1\""),
    );
    hup(rowsync.pid());
    let kids = "SELECT * FROM category_kids ORDER BY id";
    wait_same_rows(&mut src, direct, &mut rep, kids, WAIT).await;

    // Removed, changed meanwhile, added back (and killed right after the reload).
    set_mappings(&c, only);
    hup(rowsync.pid());
    rowsync
        .wait_log("no mapping fills this replica table", WAIT)
        .await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (5, 'dolls', 1)",
            "UPDATE category SET name = 'power tools' WHERE id = 2",
            "DELETE FROM category WHERE id = 3",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    set_mappings(
        &c,
        &with_children("table = \"category_kids\"\nwhere = \"parent_id = 1\""),
    );
    hup(rowsync.pid());
    rowsync.wait_log("copying the table online", WAIT).await;
    rowsync.kill9();
    exec(&mut src, &["INSERT INTO category VALUES (6, 'blocks', 1)"]).await;
    let _rowsync = c.run().await;
    wait_same_rows(&mut src, direct, &mut rep, kids, WAIT).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    let status = status_text(&c.cfg);
    assert!(
        !status.contains("NEEDS RE-COPY") && !status.contains("COPY REQUESTED"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_source_tables_never_share_a_replica_table() {
    let schema = &[
        "CREATE DATABASE shop_a",
        "CREATE DATABASE shop_b",
        "CREATE TABLE shop_a.item (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE shop_b.item (id INT PRIMARY KEY, name VARCHAR(20))",
        "INSERT INTO shop_a.item VALUES (1, 'a1'), (2, 'a2')",
        "INSERT INTO shop_b.item VALUES (1, 'b1'), (3, 'b3')",
        "CREATE TABLE shop_a.other (id INT PRIMARY KEY)",
    ];
    let mappings = "[[mappings]]\nsource = \"shop_*.item\"\ntargets = [\"order\"]\n\n[[mappings]]\nsource = \"shop_a.other\"\ntargets = [\"order\"]\n";
    let c = Cluster::start(schema, &["order"], mappings, 6611).await;
    let rowsync = c.run().await;
    let mut a = c.source.conn("shop_a").await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut a, &mut rep, "item", "id", WAIT).await;
    let status = status_text(&c.cfg);
    assert!(
        status.contains("table shop_b.item NEEDS RE-COPY")
            && status.contains("already holds the rows of shop_a.item"),
        "{status}"
    );

    // Changes to the loser never reach the replica; the winner and other tables flow, also
    // when a third table the pattern matches appears.
    let mut b = c.source.conn("shop_b").await;
    exec(
        &mut b,
        &[
            "INSERT INTO shop_b.item VALUES (4, 'b4')",
            "TRUNCATE shop_b.item",
            "CREATE DATABASE shop_c",
            "CREATE TABLE shop_c.item (id INT PRIMARY KEY, name VARCHAR(20))",
            "INSERT INTO shop_c.item VALUES (9, 'c9')",
        ],
    )
    .await;
    exec(
        &mut a,
        &[
            "INSERT INTO item VALUES (5, 'a5')",
            "INSERT INTO other VALUES (1)",
        ],
    )
    .await;
    wait_equal(&mut a, &mut rep, "other", "id", WAIT).await;
    wait_equal(&mut a, &mut rep, "item", "id", WAIT).await;
    let status = status_text(&c.cfg);
    assert!(
        status.contains("table shop_c.item NEEDS RE-COPY")
            && status.contains("already holds the rows of shop_a.item"),
        "{status}"
    );
    drop(rowsync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_tables_created_and_dropped_while_behind_do_not_wedge_the_target() {
    let mappings = "[[mappings]]\nsource = \"product.*\"\ntargets = [\"order\"]\n";
    let c = Cluster::start(PRODUCT_SCHEMA, &["order"], mappings, 6621).await;
    let mut src = c.source_conn().await;
    exec(&mut src, &["INSERT INTO category VALUES (1, 'a', NULL)"]).await;
    let mut rowsync = c.run().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    assert_eq!(rowsync.terminate(), Some(0));

    exec(
        &mut src,
        &[
            // A staging table, gone before rowsync reads its CREATE.
            "CREATE TABLE tmp_x (id INT PRIMARY KEY, v VARCHAR(10) NOT NULL DEFAULT 'C:\\\\x')",
            "INSERT INTO tmp_x (id) VALUES (1), (2)",
            "DROP TABLE tmp_x",
            // An online schema change's ghost table, created LIKE another.
            "CREATE TABLE _category_gho LIKE category",
            "INSERT INTO _category_gho SELECT * FROM category",
            "DROP TABLE _category_gho",
            "INSERT INTO category VALUES (2, 'after the churn', 1)",
        ],
    )
    .await;
    let rowsync = c.run().await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    // The staging table's replica was made from its CREATE, backslash and all.
    assert_eq!(
        column_default(&mut rep, "tmp_x", "v").await.as_deref(),
        Some("'C:\\\\x'"),
        "a backslash in a DEFAULT was lost"
    );

    // A table created and altered while rowsync runs follows the stream's definitions.
    exec(
        &mut src,
        &[
            "CREATE TABLE fresh (id INT PRIMARY KEY, a INT, KEY k_a (a)) DEFAULT CHARSET=latin1",
            "INSERT INTO fresh VALUES (1, 10)",
            "ALTER TABLE fresh ADD COLUMN b VARCHAR(10) DEFAULT 'x\\\\y', ADD COLUMN g INT AS (a * 2) VIRTUAL",
            "INSERT INTO fresh (id, a, b) VALUES (2, 20, 'two')",
            "UPDATE fresh SET a = 11 WHERE id = 1",
            // Changes that touch nothing a replica holds.
            "ALTER TABLE fresh ENGINE=InnoDB, COMMENT='rebuilt, (again)'",
            "ALTER TABLE fresh ALTER COLUMN a SET DEFAULT 3",
            "ALTER TABLE fresh FORCE",
            "INSERT INTO fresh (id) VALUES (3)",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "fresh", "id", WAIT).await;
    assert_eq!(
        column_default(&mut rep, "fresh", "b").await,
        column_default(&mut src, "fresh", "b").await,
    );
    let status = status_text(&c.cfg);
    assert!(
        status.contains("table product.tmp_x NEEDS RE-COPY since ")
            && status.contains("the source table was dropped"),
        "{status}"
    );
    assert!(
        status.contains("table product._category_gho NEEDS RE-COPY since ")
            && status.contains("its definition is not known"),
        "{status}"
    );
    assert!(!status.contains("product.fresh"), "{status}");
    assert!(
        !status.contains("since :"),
        "a state without a position: {status}"
    );

    // Dropped and created again (with other columns), or replaced: the replica starts over
    // with the new table, also when rowsync restarts in between.
    exec(
        &mut src,
        &[
            "CREATE TABLE tmp_y (id INT PRIMARY KEY, a INT)",
            "INSERT INTO tmp_y VALUES (1, 1)",
            "DROP TABLE tmp_y",
            "CREATE TABLE tmp_y (id INT PRIMARY KEY, b VARCHAR(5))",
            "INSERT INTO tmp_y VALUES (2, 'x')",
            "CREATE OR REPLACE TABLE fresh (id INT PRIMARY KEY, c INT)",
            "INSERT INTO fresh VALUES (5, 5)",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "tmp_y", "id", WAIT).await;
    wait_equal(&mut src, &mut rep, "fresh", "id", WAIT).await;
    exec(&mut src, &["DROP TABLE tmp_y"]).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !status_text(&c.cfg).contains("table product.tmp_y NEEDS RE-COPY") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            status_text(&c.cfg)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(rowsync);
    exec(
        &mut src,
        &[
            "CREATE TABLE tmp_y (id INT PRIMARY KEY, z DATE)",
            "INSERT INTO tmp_y VALUES (3, '2024-02-29')",
        ],
    )
    .await;
    let _rowsync = c.run().await;
    wait_equal(&mut src, &mut rep, "tmp_y", "id", WAIT).await;
    let status = status_text(&c.cfg);
    assert!(!status.contains("product.tmp_y"), "{status}");
}

async fn column_default(conn: &mut mysql_async::Conn, table: &str, column: &str) -> Option<String> {
    mysql_async::prelude::Queryable::query_first(
        conn,
        format!("SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' AND COLUMN_NAME = '{column}'"),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_stops_only_its_table() {
    // `name = 1` compares text with a number: the filter cannot be evaluated.
    let mappings = "[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\"]\nwhere = \"name = 1\"\n\n[[mappings]]\nsource = \"product.product\"\ntargets = [\"order\"]\n";
    let c = Cluster::start(PRODUCT_SCHEMA, &["order"], mappings, 6631).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'a', NULL)",
            "INSERT INTO product SELECT seq, CONCAT('P-', seq), 'm', 1, 2020, seq, 0 FROM seq_1_to_100",
            "INSERT INTO batch VALUES (1, 1, 5, '2024-01-01 00:00:00')",
        ],
    )
    .await;
    let rowsync = c.run().await;
    let mut rep = c.replica_conn(0).await;
    exec(&mut src, &["UPDATE product SET version = 2 WHERE id < 10"]).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    let status = status_text(&c.cfg);
    assert!(
        status.contains("table product.category NEEDS RE-COPY")
            && status.contains("the filter compares"),
        "{status}"
    );

    // The same for a mapping added online: its table stops, the others stream on.
    c.append_config("\n[[mappings]]\nsource = \"product.batch\"\ntargets = [\"order\"]\nwhere = \"made_at = 5\"\n");
    hup(rowsync.pid());
    rowsync.wait_log("copying the table online", WAIT).await;
    exec(&mut src, &["UPDATE product SET version = 3 WHERE id < 10"]).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !status_text(&c.cfg).contains("table product.batch NEEDS RE-COPY") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            status_text(&c.cfg)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    exec(&mut src, &["UPDATE product SET version = 4 WHERE id < 10"]).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_name_tables_in_any_case_under_lower_case_table_names() {
    let source = Server::start_with(Role::Source, &["--lower-case-table-names=1"]);
    let mappings = "[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\"]\n";
    let c = Cluster::start_with(source, PRODUCT_SCHEMA, &["order"], mappings, 6641).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &["INSERT INTO category VALUES (1, 'a', NULL), (2, 'b', 1)"],
    )
    .await;
    let _rowsync = c.run().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    exec(
        &mut src,
        &[
            "TRUNCATE Product.Category",
            "ALTER TABLE CATEGORY ADD COLUMN note VARCHAR(10) NULL",
            "INSERT INTO Category VALUES (3, 'c', NULL, 'n')",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_alter_fills_existing_rows_as_the_source_did() {
    let c = Cluster::order_only(6651).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &["INSERT INTO category VALUES (1, 'a', NULL), (2, 'b', 1)"],
    )
    .await;
    let mut rowsync = c.run().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    assert_eq!(rowsync.terminate(), Some(0));
    // A session in another time zone adds columns that existing rows fill with "now".
    exec(
        &mut src,
        &[
            "SET time_zone = '+05:00'",
            "ALTER TABLE category ADD COLUMN seen DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, ADD COLUMN at_ts TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP",
            "SET time_zone = '+00:00'",
        ],
    )
    .await;
    // Applied later than it ran.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let _rowsync = c.run().await;
    exec(
        &mut src,
        &["INSERT INTO category (id, name) VALUES (3, 'c')"],
    )
    .await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrower_replica_made_by_hand_is_refused_not_truncated_into() {
    let c = Cluster::order_only(6661).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'a name longer than ten', NULL)",
            "INSERT INTO batch VALUES (1, 1, 5, '2024-01-01 00:00:00')",
        ],
    )
    .await;
    // Made by hand before rowsync's first start: one too narrow, one that fits (with an extra
    // column of its own).
    exec(
        &mut c.targets[0].conn("order_db").await,
        &[
            "CREATE TABLE category (id INT PRIMARY KEY, name VARCHAR(10) NOT NULL, parent_id INT NULL) ENGINE=InnoDB",
            "CREATE TABLE batch (product_id BIGINT(20) UNSIGNED NOT NULL, batch_no INT(11) NOT NULL, qty INT NOT NULL, made_at DATETIME(6) NOT NULL, note TEXT, PRIMARY KEY (product_id, batch_no)) ENGINE=InnoDB",
        ],
    )
    .await;
    let rowsync = c.run().await;
    let mut rep = c.replica_conn(0).await;
    exec(
        &mut src,
        &["INSERT INTO batch VALUES (1, 2, 6, '2024-01-02 00:00:00')"],
    )
    .await;
    let batch = "SELECT product_id, batch_no, qty, made_at FROM batch ORDER BY 1, 2";
    wait_same_rows(&mut src, batch, &mut rep, batch, WAIT).await;
    c.assert_needs_recopy(
        "product.category",
        "is varchar(10) but the source's is varchar(100)",
    );
    let names: Vec<String> =
        mysql_async::prelude::Queryable::query(&mut rep, "SELECT name FROM category")
            .await
            .unwrap();
    assert!(names.is_empty(), "rows were truncated into it: {names:?}");

    // Narrowed by hand after it was adopted: a value it cannot hold is an error, never a
    // silently clamped one.
    exec(&mut rep, &["ALTER TABLE batch MODIFY qty TINYINT NOT NULL"]).await;
    exec(
        &mut src,
        &["INSERT INTO batch VALUES (1, 3, 1000, '2024-01-03 00:00:00')"],
    )
    .await;
    let log = rowsync.wait_log("target pipeline stopped", WAIT).await;
    assert!(log.contains("Out of range value for column 'qty'"), "{log}");
    let clamped: Option<i64> = mysql_async::prelude::Queryable::query_first(
        &mut rep,
        "SELECT qty FROM batch WHERE batch_no = 3",
    )
    .await
    .unwrap();
    assert_eq!(clamped, None);
}

/// A replica made by hand whose primary key covers only a prefix of its column would make two
/// source rows one: refused, like a narrower column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_keyed_on_a_column_prefix_is_refused() {
    adoption_refused(
        6681,
        "CREATE TABLE product.tag (code VARBINARY(40) PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB",
        "INSERT INTO product.tag VALUES ('abcd-1', 1), ('abcd-2', 2)",
        "CREATE TABLE tag (code VARBINARY(40) NOT NULL, v INT NOT NULL, PRIMARY KEY (code(4))) ENGINE=InnoDB",
        "covers only a prefix of `code`",
    )
    .await;
}

/// A replica made by hand with a unique key of its own: an upsert meeting another row through
/// it would overwrite that row, so it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_unique_key_of_its_own_is_refused() {
    adoption_refused(
        6691,
        "CREATE TABLE product.tag (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL) ENGINE=InnoDB",
        "INSERT INTO product.tag VALUES (1, 'same'), (2, 'same')",
        "CREATE TABLE tag (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, UNIQUE KEY by_name (name)) ENGINE=InnoDB",
        "its unique key `by_name`",
    )
    .await;
}

/// Source table `product.tag` (made by `create`, filled by `insert`) with a replica made by
/// hand (`replica`) before rowsync's first start: the table must stop for `reason`.
async fn adoption_refused(server_id: u32, create: &str, insert: &str, replica: &str, reason: &str) {
    let c = Cluster::start(
        &["CREATE DATABASE product", create, insert],
        &["order"],
        "[[mappings]]\nsource = \"product.*\"\ntargets = [\"order\"]\n",
        server_id,
    )
    .await;
    exec(&mut c.targets[0].conn("order_db").await, &[replica]).await;
    let rowsync = c.run().await;
    rowsync.wait_log(reason, WAIT).await;
    c.assert_needs_recopy("product.tag", reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_rowsync_did_not_fill_are_never_dropped_and_dropped_replicas_are_copied() {
    let mappings = "[[mappings]]\nsource = \"product.*\"\ntargets = [\"order\"]\n";
    let c = Cluster::start(PRODUCT_SCHEMA, &["order"], mappings, 6671).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &["INSERT INTO category VALUES (1, 'a', NULL), (2, 'b', 1)"],
    )
    .await;
    let mut rep = c.replica_conn(0).await;
    // A table of the target's own, which a source table created later will be named like.
    exec(
        &mut rep,
        &[
            "CREATE TABLE audit (id INT PRIMARY KEY, note VARCHAR(20) NOT NULL)",
            "INSERT INTO audit VALUES (7, 'kept')",
        ],
    )
    .await;
    let mut rowsync = c.run().await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    exec(
        &mut src,
        &[
            "CREATE TABLE audit (id INT PRIMARY KEY, note TEXT)",
            "INSERT INTO audit VALUES (1, 'from the source')",
            "INSERT INTO category VALUES (3, 'c', 1)",
        ],
    )
    .await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
    let kept: Vec<(i64, String)> =
        mysql_async::prelude::Queryable::query(&mut rep, "SELECT id, note FROM audit")
            .await
            .unwrap();
    assert_eq!(kept, vec![(7, "kept".to_string())]);
    c.assert_needs_recopy("product.audit", "its column `note` is varchar(20)");

    // A replica dropped by hand while rowsync was down is copied, not made empty.
    assert_eq!(rowsync.terminate(), Some(0));
    exec(&mut rep, &["DROP TABLE category"]).await;
    exec(&mut src, &["INSERT INTO category VALUES (4, 'd', 2)"]).await;
    let _rowsync = c.run().await;
    wait_equal(&mut src, &mut rep, "category", "id", WAIT).await;
}

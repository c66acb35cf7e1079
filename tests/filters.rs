//! Row filters on the stream: one source table mapped twice into one target (whole, and a
//! filtered column subset under another name) and once filtered into another; updates that
//! move rows into and out of the filter insert and delete them; strings compare
//! case-sensitively ('abc' is not 'ABC'); columns in cp1251, latin2, gbk and utf16 filter
//! alike in the copy and the stream.
//!
//! Run: `cargo nextest run --test filters`

mod common;

use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;

const MAPPINGS: &str = r#"
[[mappings]]
source = "product.product"
targets = ["order"]

[[mappings]]
source = "product.product"
targets = ["order"]
table = "product_active"
columns = ["id", "code", "category_id"]
where = "deleted = 0 AND category_id IN (1, 2)"

[[mappings]]
source = "product.product"
targets = ["purchase"]
where = "code = 'abc' OR code LIKE 'keep%'"
"#;

/// Waits until `replica_sql` on the replica returns what `source_sql` returns on the source.
async fn wait_same(
    src: &mut mysql_async::Conn,
    source_sql: &str,
    rep: &mut mysql_async::Conn,
    replica_sql: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a: Vec<(u64, String)> = src.query(source_sql).await.unwrap();
        let b: Vec<(u64, String)> = rep.query(replica_sql).await.unwrap_or_default();
        if a == b && !a.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not equal:\nsource  {a:?}\nreplica {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_move_rows_in_and_out() {
    let c = Cluster::start(
        &[
            "CREATE DATABASE product",
            "CREATE TABLE product.product (id BIGINT UNSIGNED PRIMARY KEY, code VARCHAR(32) NOT NULL, category_id INT NOT NULL, deleted TINYINT NOT NULL DEFAULT 0, price DECIMAL(10,2)) ENGINE=InnoDB",
        ],
        &["order", "purchase"],
        MAPPINGS,
        5801,
    )
    .await;
    let _rowsync = c.run().await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &[
            "INSERT INTO product VALUES (1, 'abc', 1, 0, 1.00), (2, 'ABC', 2, 0, 2.00), (3, 'keep-3', 3, 0, 3.00), (4, 'x4', 1, 1, 4.00)",
            // Out of the filter by update, into it by update, and a key change inside it.
            "UPDATE product SET deleted = 1 WHERE id = 1",
            "UPDATE product SET deleted = 0, category_id = 2 WHERE id = 4",
            "UPDATE product SET id = 20 WHERE id = 2",
            "UPDATE product SET code = 'keep-now' WHERE id = 20",
            "DELETE FROM product WHERE id = 3",
            "INSERT INTO product VALUES (5, 'abc ', 1, 0, NULL)",
        ],
    )
    .await;
    let mut order = c.replica_conn(0).await;
    let mut purchase = c.replica_conn(1).await;
    wait_equal(
        &mut src,
        &mut order,
        "product",
        "id",
        Duration::from_secs(60),
    )
    .await;
    wait_same(
        &mut src,
        "SELECT id, CONCAT(code, '/', category_id) FROM product WHERE deleted = 0 AND category_id IN (1, 2) ORDER BY id",
        &mut order,
        "SELECT id, CONCAT(code, '/', category_id) FROM product_active ORDER BY id",
    )
    .await;
    // Binary comparison: 'ABC' and 'abc ' (trailing space) are not 'abc'.
    wait_same(
        &mut src,
        "SELECT id, code FROM product WHERE BINARY code = 'abc' OR BINARY code LIKE 'keep%' ORDER BY id",
        &mut purchase,
        "SELECT id, code FROM product ORDER BY id",
    )
    .await;
    let codes: Vec<String> = purchase
        .query("SELECT code FROM product ORDER BY id")
        .await
        .unwrap();
    assert_eq!(codes, vec!["abc".to_string(), "keep-now".into()]);
}

/// Columns in other character sets are text in the copy and in the stream alike, so a filter
/// on them keeps the same rows in both, and the replica holds the same characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_on_columns_in_other_charsets_agree_in_copy_and_stream() {
    const WAIT: Duration = Duration::from_secs(60);
    let schema = &[
        "CREATE DATABASE product",
        "CREATE TABLE product.label (id INT PRIMARY KEY, ru VARCHAR(20) CHARACTER SET cp1251, pl VARCHAR(20) CHARACTER SET latin2, cn VARCHAR(20) CHARACTER SET gbk, wide VARCHAR(20) CHARACTER SET utf16) ENGINE=InnoDB",
        "INSERT INTO product.label VALUES (1, 'Привет', 'ząb', '你好', 'Ω😀'), (2, 'Пока', 'łąka', '再见', 'x')",
    ];
    let mappings = "[[mappings]]\nsource = \"product.label\"\ntargets = [\"order\"]\n\n[[mappings]]\nsource = \"product.label\"\ntargets = [\"order\"]\ntable = \"greeting\"\nwhere = \"ru = 'Привет' OR pl = 'łąka' OR cn = '好' OR wide = 'Ω'\"\n";
    let c = Cluster::start(schema, &["order"], mappings, 6821).await;
    let _rowsync = c.run().await;
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    let filtered = "SELECT * FROM label WHERE ru = 'Привет' OR pl = 'łąka' OR cn = '好' OR wide = 'Ω' ORDER BY id";
    let greeting = "SELECT * FROM greeting ORDER BY id";
    wait_same_rows(&mut src, filtered, &mut rep, greeting, WAIT).await;
    // Streamed: updates of copied rows, rows moving into and out of the filter.
    exec(
        &mut src,
        &[
            "UPDATE label SET pl = 'żaba' WHERE id = 1",
            "UPDATE label SET ru = 'Привет' WHERE id = 2",
            "INSERT INTO label VALUES (3, 'Нет', 'łąka', '好', NULL), (4, 'Да', 'a', 'b', 'Ω')",
            "UPDATE label SET pl = 'nie' WHERE id = 3",
        ],
    )
    .await;
    wait_same_rows(&mut src, filtered, &mut rep, greeting, WAIT).await;
    wait_equal(&mut src, &mut rep, "label", "id", WAIT).await;
    let bytes = "SELECT id, HEX(ru), HEX(pl), HEX(cn), HEX(wide) FROM label ORDER BY id";
    wait_same_rows(&mut src, bytes, &mut rep, bytes, WAIT).await;
}

//! `rowsync check` reports bad configs, a source that does not log ROW events, a CASCADE
//! foreign key on a selected table and an unreachable target — each with exit status ≠ 0 —
//! and exits 0 on a healthy setup.
//!
//! Run: `cargo nextest run --test check_command`

mod common;

use common::*;

fn check(cfg: &std::path::Path) -> (i32, String) {
    rowsync_cmd(&["check", "--config", cfg.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_problems_with_their_fix() {
    let c = Cluster::start(PRODUCT_SCHEMA, &["order"], "", 4501).await;
    let (source, dir) = (c.source, c.dir);
    let target = c.targets.into_iter().next().unwrap();
    let mapping = "[[mappings]]\nsource = \"product.product\"\ntargets = [\"order\"]\n";
    let good = config_text(
        &source,
        4501,
        &[("order", target.url("order_db"))],
        mapping,
        "",
    );
    let cfg = write_config(dir.path(), &good);
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("target `order` is reachable"), "{out}");

    // A config error names the file and the key.
    let bad = good.replace("server_id = 4501", "server_id = 4501\nservr = 1");
    let cfg_bad = dir.path().join("bad.toml");
    std::fs::write(&cfg_bad, bad).unwrap();
    let (code, out) = check(&cfg_bad);
    assert_ne!(code, 0);
    assert!(out.contains("bad.toml") && out.contains("servr"), "{out}");

    // A column list without the primary key.
    let no_pk = good.replace(
        "targets = [\"order\"]",
        "targets = [\"order\"]\ncolumns = [\"code\", \"model\"]",
    );
    std::fs::write(&cfg_bad, no_pk).unwrap();
    let (code, out) = check(&cfg_bad);
    assert_ne!(code, 0);
    assert!(
        out.contains("must include the primary key column `id`"),
        "{out}"
    );

    // An unreachable target.
    let unreachable = good.replace(&target.url("order_db"), "mysql://root@127.0.0.1:1/order_db");
    std::fs::write(&cfg_bad, unreachable).unwrap();
    let (code, out) = check(&cfg_bad);
    assert_ne!(code, 0);
    assert!(out.contains("target `order` is unreachable"), "{out}");

    // A CASCADE foreign key touching a selected table.
    exec(
        &mut source.conn("product").await,
        &["CREATE TABLE child (id INT PRIMARY KEY, product_id BIGINT UNSIGNED, FOREIGN KEY (product_id) REFERENCES product (id) ON DELETE CASCADE) ENGINE=InnoDB"],
    )
    .await;
    let (code, out) = check(&cfg);
    assert_ne!(code, 0);
    assert!(out.contains("ON DELETE CASCADE"), "{out}");

    // A table without primary key.
    let cfg_nopk = dir.path().join("nopk.toml");
    exec(
        &mut source.conn("product").await,
        &["CREATE TABLE heap (a INT) ENGINE=InnoDB"],
    )
    .await;
    std::fs::write(&cfg_nopk, good.replace("product.product", "product.heap")).unwrap();
    let (code, out) = check(&cfg_nopk);
    assert_ne!(code, 0);
    assert!(out.contains("has no primary key"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_statement_format_source() {
    let source = Server::start_with(
        Role::Source,
        &[
            "--binlog-format=STATEMENT",
            "--binlog-row-metadata=MINIMAL",
            "--binlog-row-image=MINIMAL",
        ],
    );
    let c = Cluster::start_with(
        source,
        PRODUCT_SCHEMA,
        &["order"],
        "[[mappings]]\nsource = \"product.*\"\ntargets = [\"order\"]\n",
        4601,
    )
    .await;
    let cfg = c.cfg.clone();
    let (code, out) = check(&cfg);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("binlog_format is STATEMENT"), "{out}");
    assert!(out.contains("binlog_row_metadata is MINIMAL"), "{out}");
    assert!(out.contains("sync_binlog is 0"), "{out}");
    assert!(out.contains("binlog_row_image is MINIMAL"), "{out}");

    // A server without binary logging (a target) as the source.
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        &c.source.url(""),
        &c.targets[0].url(""),
        1,
    );
    let no_binlog = c.dir.path().join("no-binlog.toml");
    std::fs::write(&no_binlog, text).unwrap();
    let (code, out) = check(&no_binlog);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("log_bin OFF"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_missing_grants_and_a_server_id_in_use() {
    let c = Cluster::start(
        PRODUCT_SCHEMA,
        &["order"],
        "[[mappings]]\nsource = \"product.product\"\ntargets = [\"order\"]\n",
        4551,
    )
    .await;
    // A running rowsync holds replica id 4551.
    let rowsync = Rowsync::start(&c.cfg);
    wait_started(&c.targets[0], "order_db", &rowsync).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (code, out) = check(&c.cfg);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("server id(s) [4551] are used by a live replica"),
        "{out}"
    );
    drop(rowsync);

    // A user without replication privileges.
    exec(
        &mut c.source.conn("").await,
        &[
            "CREATE USER 'weak'@'%' IDENTIFIED BY 'pw'",
            "GRANT SELECT ON *.* TO 'weak'@'%'",
        ],
    )
    .await;
    // Only the source connects as the weak user; the target keeps root.
    let text = std::fs::read_to_string(&c.cfg).unwrap();
    let (head, tail) = text.split_once("[[targets]]").unwrap();
    let weak = c.dir.path().join("weak.toml");
    std::fs::write(
        &weak,
        format!(
            "{}[[targets]]{tail}",
            head.replace("mysql://root@", "mysql://weak:pw@")
        ),
    )
    .unwrap();
    let (code, out) = check(&weak);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("source user lacks REPLICATION SLAVE, BINLOG MONITOR"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_accounts_that_may_write_replica_tables() {
    let c = Cluster::order_only(4531).await;
    exec(
        &mut c.targets[0].conn("").await,
        &[
            "CREATE USER app@'%' IDENTIFIED BY 'pw'",
            "GRANT SELECT, INSERT, UPDATE ON order_db.* TO app@'%'",
            "CREATE USER reports@'%' IDENTIFIED BY 'pw'",
            "GRANT SELECT ON order_db.* TO reports@'%'",
            "CREATE USER fixer@'%' IDENTIFIED BY 'pw'",
            "CREATE TABLE order_db.product (id INT PRIMARY KEY)",
            "GRANT DELETE ON order_db.product TO fixer@'%'",
        ],
    )
    .await;
    let (code, out) = check(&c.cfg);
    assert_eq!(code, 0, "warnings only: {out}");
    assert!(
        out.contains("account 'app'@'%' may INSERT, UPDATE replica tables")
            && out.contains("REVOKE INSERT, UPDATE ON `order_db`.* FROM 'app'@'%';"),
        "{out}"
    );
    assert!(
        out.contains("REVOKE DELETE ON `order_db`.`product` FROM 'fixer'@'%';"),
        "{out}"
    );
    assert!(
        !out.contains("'reports'"),
        "a read-only account was listed:\n{out}"
    );
}

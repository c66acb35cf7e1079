//! A small run of `rowsync bench`, so the harness cannot rot: it must finish, check that every
//! replica equals the source, and print its tables (catch-up and lag for W1 and W2). Timings
//! are printed, never asserted.
//!
//! Run: `cargo nextest run --test bench_smoke`

use std::process::Command;

#[test]
fn bench_runs_small_and_checks_the_replicas() {
    let out = Command::new(env!("CARGO_BIN_EXE_rowsync"))
        .args([
            "bench",
            "--products",
            "3000",
            "--updates",
            "3000",
            "--big-rows",
            "20000",
            "--copy-rows",
            "30000",
            "--lag-rate",
            "1000",
            "--lag-secs",
            "2",
        ])
        .output()
        .expect("run rowsync bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "rowsync reader (decoded, checksums checked)",
        "mariadb-binlog --raw (transfer only)",
        "mariadb-binlog -v (decoded, printed)",
        "rowsync, 1 durable target",
        "rowsync, 2 durable targets (total)",
        "MariaDB replication, serial",
        "MariaDB replication, optimistic parallel x4",
        "apply floor",
        "catch-up on W1 (narrow rows",
        "catch-up on W2 (wide rows",
        "every replica equals the source (3000 rows",
        "one 20000-row source transaction: rowsync's peak RSS",
        "readers saw none or all of it",
        "steady load on W1, ",
        "steady load on W2, ",
        "into 2 durable targets: commit-to-visible lag p50",
        "both replicas equal the source",
        "initial copy of a 30000-row table: rowsync",
        "both equal the source",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

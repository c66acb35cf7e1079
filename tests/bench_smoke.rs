//! A small run of `rowsync bench`, so the harness cannot rot: it must finish, check that every
//! replica equals the source, and print its table. Timings are printed, never asserted.
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
        "rowsync, 1 durable target",
        "MariaDB replication, serial",
        "MariaDB replication, optimistic parallel x4",
        "apply floor",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(
        text.contains("every replica equals the source (3000 rows"),
        "{text}"
    );
}

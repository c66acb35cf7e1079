//! The admin API fuzzed from its own OpenAPI document with `schemathesis` (pip; `.ci/run`
//! installs it), logged in with an admin token against a real daemon: no request may get a
//! 5xx, and the daemon must not panic.
//!
//! Run: `cargo nextest run --test fuzz_api`

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_every_generated_request_without_a_server_error() {
    let c = Cluster::order_only(7041).await;
    let (token, token_hash) = rowsync::admin::auth::new_token();
    let port = c.enable_admin(&[Login::Token {
        name: "fuzz",
        role: "admin",
        token_hash: &token_hash,
    }]);
    let rowsync = c.run().await;
    rowsync
        .wait_log("admin API listening", Duration::from_secs(60))
        .await;
    let base = format!("http://127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .args([
                "run",
                &format!("{base}/api/v1/openapi.json"),
                "--url",
                &base,
            ])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "not_a_server_error", "--max-examples", "25"])
            .args(["--generation-deterministic", "--request-timeout", "20"])
            .output()
            .expect("run schemathesis (pip install schemathesis; .ci/run does)")
    })
    .await
    .unwrap();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(
        report.contains("Tested:"),
        "schemathesis tested nothing:\n{report}"
    );
    println!("{report}");
    let log = rowsync.log_text();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

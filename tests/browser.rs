//! The admin UI in real browsers (Debian's Chromium, and Debian's Firefox ESR over WebDriver
//! BiDi, driven by `playwright-core` from `tests/browser/`; `.ci/run` installs them): log in, see both targets with their positions,
//! add a mapping through the form (an invalid filter shows its error first), watch its rows
//! arrive in the target, pause and resume a target, read the audit log, on a laptop and a
//! phone-sized screen. Screenshots land in `target/browser-artifacts/`.
//!
//! Run: `cargo nextest run --test browser`

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_admin_ui_adds_a_mapping_and_pauses_a_target() {
    drive("chromium", "/usr/bin/chromium", 7031).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_firefox_the_admin_ui_adds_a_mapping_and_pauses_a_target() {
    drive("firefox", "/usr/bin/firefox-esr", 7061).await;
}

async fn drive(browser: &'static str, executable: &str, server_id: u32) {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        scripts.join("node_modules/playwright-core").is_dir() && Path::new(executable).exists(),
        "the browser test needs {executable} and `npm ci` in tests/browser (.ci/run does both)"
    );
    let mappings =
        "[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\", \"purchase\"]\n";
    let c = Cluster::start(PRODUCT_SCHEMA, &["order", "purchase"], mappings, server_id).await;
    let port = c.enable_admin(&[Login::User {
        name: "alice",
        role: "admin",
        password: "ui-pw",
    }]);
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &[
            "INSERT INTO category VALUES (1, 'a', NULL)",
            "INSERT INTO batch VALUES (1, 1, 5, '2024-01-01 00:00:00'), (2, 1, 7, '2024-01-02 00:00:00')",
        ],
    )
    .await;
    let rowsync = c.run().await;
    rowsync.wait_log("admin API listening", WAIT).await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("ui.mjs")
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("alice")
            .arg("ui-pw")
            .arg(&shots)
            .arg(browser)
            .current_dir(&scripts)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the UI script failed:\n{}\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        rowsync.log_text()
    );
    // The mapping added through the form brought the batch rows to purchase.
    let mut purchase = c.replica_conn(1).await;
    wait_equal(
        &mut src,
        &mut purchase,
        "batch",
        "product_id, batch_no",
        WAIT,
    )
    .await;
    exec(
        &mut src,
        &["INSERT INTO batch VALUES (3, 1, 9, '2024-01-03 00:00:00')"],
    )
    .await;
    wait_equal(
        &mut src,
        &mut purchase,
        "batch",
        "product_id, batch_no",
        WAIT,
    )
    .await;
}

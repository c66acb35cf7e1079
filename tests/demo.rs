//! `rowsync demo` as a new user runs it: it starts, replicates (rows appear in both targets,
//! the filtered one holding only its rows), and on SIGINT stops cleanly, leaving no process and
//! no temp dir behind.
//!
//! Run: `cargo nextest run --test demo`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;

fn field(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `{prefix}` line in {lines:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_replicates_and_cleans_up_on_ctrl_c() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rowsync"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rowsync demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lines.iter().any(|l: &String| l.starts_with("Ctrl-C")) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("demo did not start: {lines:?}"));
        lines.push(line);
    }
    let dir = field(&lines, "rowsync demo: local MariaDB servers in ");
    let source = field(&lines, "  source   ");
    let order = field(&lines, "  order    ");
    let purchase = field(&lines, "  purchase ");
    assert!(std::path::Path::new(&dir).is_dir());

    // Rows replicate into both targets; the purchase replica only holds recent models.
    let conn = |url: &str| mysql_async::Conn::new(mysql_async::Opts::from_url(url).unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = async {
            let mut o = conn(&order).await.ok()?;
            let mut p = conn(&purchase).await.ok()?;
            let n_order: u64 = o.query_first("SELECT COUNT(*) FROM product").await.ok()??;
            let n_batch: u64 = o.query_first("SELECT COUNT(*) FROM batch").await.ok()??;
            let n_purchase: u64 = p.query_first("SELECT COUNT(*) FROM product").await.ok()??;
            let old: u64 = p
                .query_first("SELECT COUNT(*) FROM product WHERE production_year < 2020")
                .await
                .ok()??;
            Some((n_order, n_batch, n_purchase, old))
        }
        .await;
        if let Some((n_order, n_batch, n_purchase, old)) = counts {
            if n_order >= 4000 && n_batch >= 8000 && n_purchase > 0 {
                assert_eq!(old, 0, "the purchase filter let old models through");
                assert!(n_purchase < n_order);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no rows replicated; output: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The admin UI answers at the printed address, with the printed password.
    let admin_line = lines
        .iter()
        .find_map(|l| l.strip_prefix("  admin UI "))
        .unwrap_or_else(|| panic!("no admin UI line in {lines:?}"));
    let url = admin_line
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/');
    let password = admin_line
        .split("password ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')');
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login = http
        .post(format!("{url}/api/v1/login"))
        .json(&serde_json::json!({"user": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), reqwest::StatusCode::OK);
    let status: serde_json::Value = http
        .get(format!("{url}/api/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["targets"].as_array().unwrap().len(), 2, "{status}");
    assert!(
        !std::fs::read_to_string(std::path::Path::new(&dir).join("demo.toml"))
            .unwrap()
            .contains(password),
        "the demo wrote its password to a file"
    );

    // The workload keeps changing the source, and the changes keep arriving.
    let mut src = conn(&source).await.unwrap();
    let newest: u64 = src
        .query_first("SELECT MAX(id) FROM product")
        .await
        .unwrap()
        .unwrap();
    drop(src);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut o = conn(&order).await.unwrap();
        let got: Option<u64> = o
            .query_first(format!("SELECT id FROM product WHERE id = {newest}"))
            .await
            .unwrap();
        if got.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not deliver product {newest}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let ok = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "demo exited with {status}");
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    assert!(
        lines.iter().any(|l| l.starts_with("stopped after")),
        "{lines:?}"
    );
    assert!(
        !std::path::Path::new(&dir).exists(),
        "temp dir {dir} left behind"
    );
    let leftover = Command::new("pgrep").arg("-f").arg(&dir).output().unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}

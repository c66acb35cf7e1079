//! Active/standby: two `rowsync run` processes on one pipeline (each with its own state
//! store, as on two hosts). The second stands by, says so in its log and in `status` with the
//! lock's holder, and takes over when the active one is killed with SIGKILL, or frozen with
//! SIGSTOP for longer than `[standby] takeover_secs` — after which the frozen one, resumed,
//! writes nothing. Trigger logs on source and replica prove every change was applied exactly
//! once across the handover.
//!
//! Run: `cargo nextest run --test standby`

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;

const WAIT: Duration = Duration::from_secs(90);
const TAKEOVER_SECS: u64 = 5;

/// A pair of configurations for one pipeline, differing only in their state stores.
struct Pair {
    cluster: Cluster,
    a: PathBuf,
    b: PathBuf,
}

async fn pair(server_id: u32) -> Pair {
    let cluster = Cluster::start(
        &[
            "CREATE DATABASE product",
            "CREATE TABLE product.product (id BIGINT PRIMARY KEY, code VARCHAR(40) NOT NULL, version BIGINT NOT NULL) ENGINE=InnoDB",
        ],
        &["order"],
        &format!("[[mappings]]\nsource = \"product.product\"\ntargets = [\"order\"]\n\n[standby]\ntakeover_secs = {TAKEOVER_SECS}\n"),
        server_id,
    )
    .await;
    let text = std::fs::read_to_string(&cluster.cfg).unwrap();
    let dir = cluster.dir.path();
    let a = dir.join("a.toml");
    let b = dir.join("b.toml");
    for (path, state) in [(&a, "a.db"), (&b, "b.db")] {
        let state = dir.join(state);
        std::fs::write(
            path,
            format!("{text}\n[state]\npath = \"{}\"\n", state.display()),
        )
        .unwrap();
    }
    let mut src = cluster.source_conn().await;
    for s in version_triggers("product", "changes") {
        src.query_drop(s).await.unwrap();
    }
    Pair { cluster, a, b }
}

impl Pair {
    /// Starts the active process (`a`), waits until it streams and logs the replica's
    /// changes, then starts the standby (`b`) and waits until it stands by.
    async fn start(&self) -> (Rowsync, Rowsync) {
        let c = &self.cluster;
        let active = Rowsync::start(&self.a);
        wait_started(&c.targets[0], "order_db", &active).await;
        let mut rep = c.replica_conn(0).await;
        for s in version_triggers("product", "applied") {
            rep.query_drop(s).await.unwrap();
        }
        let standby = Rowsync::start(&self.b);
        standby
            .wait_log(
                "standing by: another rowsync process holds the target's lock",
                WAIT,
            )
            .await;
        (active, standby)
    }
}

/// Inserts and updates with fresh versions, `n` transactions, a few ms apart.
fn workload(url: String, first_id: i64, n: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut src = mysql_async::Conn::from_url(url).await.unwrap();
        for i in 0..n {
            let id = first_id + i;
            let version = id * 10;
            src.query_drop(format!(
                "START TRANSACTION; INSERT INTO product VALUES ({id}, 'c{id}', {version}); UPDATE product SET version = {} WHERE id = {}; COMMIT",
                version + 1,
                first_id + i / 2
            ))
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
    })
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
}

/// Waits until the replica's trigger log equals the source's, then checks the tables too.
async fn assert_exactly_once(c: &Cluster) {
    let mut src = c.source_conn().await;
    let mut rep = c.replica_conn(0).await;
    wait_equal(&mut src, &mut rep, "product", "id", WAIT).await;
    let changes = version_log(&mut src, "changes").await;
    let applied = version_log(&mut rep, "applied").await;
    assert_eq!(
        applied.len(),
        changes.len(),
        "every change applied exactly once"
    );
    assert_eq!(applied, changes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_shows_the_holder_and_takes_over_from_a_killed_active() {
    let p = pair(5201).await;
    let c = &p.cluster;
    // The standby's admin API, to see it standing by there too.
    let (token, token_hash) = rowsync::admin::auth::new_token();
    let port = free_port();
    let mut text = std::fs::read_to_string(&p.b).unwrap();
    text.push_str(&format!(
        "\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n[[admin.tokens]]\nname = \"viewer\"\nrole = \"viewer\"\ntoken_hash = \"{token_hash}\"\n"
    ));
    std::fs::write(&p.b, text).unwrap();
    let (mut active, standby) = p.start().await;
    let holder = format!("rowsync pid {}", active.pid());
    let log = standby.log_text();
    assert!(log.contains(&holder), "{log}");
    let api = api_status(port, &token).await;
    let target = &api["targets"][0];
    assert_eq!(target["state"], "standby", "{api:#}");
    assert!(
        target["lock_holder"]
            .as_str()
            .unwrap_or_default()
            .contains(&holder),
        "{api:#}"
    );
    // `status` of the standby's configuration shows it standing by, and who holds the lock.
    let deadline = Instant::now() + WAIT;
    loop {
        let status = status_text(&p.b);
        if status.contains("daemon: target order STANDBY")
            && status.contains(&format!("the target's lock is held by {holder}"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let load = workload(c.source.url("product"), 1, 600);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    active.kill9();
    let killed = Instant::now();
    standby
        .wait_log(
            "took over the target's lock; this process is now active",
            WAIT,
        )
        .await;
    // The killed process's sessions close with it: the lock is free at once.
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "takeover took {:?}",
        killed.elapsed()
    );
    load.await.unwrap();
    assert_exactly_once(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_active_loses_the_lock_and_writes_nothing_after_it_resumes() {
    let p = pair(5211).await;
    let c = &p.cluster;
    let (active, standby) = p.start().await;
    // An idle stream keeps its sessions (and so its lock) alive past the takeover time.
    tokio::time::sleep(Duration::from_secs(TAKEOVER_SECS + 3)).await;
    assert!(
        !standby.log_text().contains("took over"),
        "a healthy, idle active lost its lock:\n{}",
        active.log_text()
    );
    let load = workload(c.source.url("product"), 1, 1500);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Frozen mid-stream, for longer than the takeover bound.
    signal(active.pid(), "-STOP");
    let frozen = Instant::now();
    standby
        .wait_log(
            "took over the target's lock; this process is now active",
            WAIT,
        )
        .await;
    assert!(
        frozen.elapsed() < Duration::from_secs(TAKEOVER_SECS * 3),
        "takeover took {:?}",
        frozen.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(active.pid(), "-CONT");
    // The old active finds its sessions closed and its lock gone, and stands by; it
    // commits nothing on the way (the trigger logs below).
    active
        .wait_log(
            "standing by: another rowsync process holds the target's lock",
            WAIT,
        )
        .await;
    load.await.unwrap();
    assert_exactly_once(c).await;
    let status = status_text(&p.a);
    assert!(status.contains("daemon: target order STANDBY"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_between_the_active_and_the_target_hands_over_within_the_bound() {
    let p = pair(5221).await;
    let c = &p.cluster;
    // The active reaches the target through a proxy that can drop every packet.
    let proxy = proxy::Proxy::start(c.targets[0].port);
    let text = std::fs::read_to_string(&p.a).unwrap();
    std::fs::write(&p.a, proxy.route(&text)).unwrap();
    let (active, standby) = p.start().await;
    let load = workload(c.source.url("product"), 1, 1500);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set_admit(proxy::Admit::Blackhole);
    let cut = Instant::now();
    standby
        .wait_log(
            "took over the target's lock; this process is now active",
            WAIT,
        )
        .await;
    assert!(
        cut.elapsed() < Duration::from_secs(TAKEOVER_SECS * 3),
        "takeover took {:?}",
        cut.elapsed()
    );
    // The cut-off active notices within the bound too, and stops writing.
    active
        .wait_log(
            "lost the target's lock",
            Duration::from_secs(TAKEOVER_SECS * 3),
        )
        .await;
    // While the cut lasts, its new connections time out rather than hang, and it says so.
    active
        .wait_log("did not answer within 10s", Duration::from_secs(30))
        .await;
    proxy.heal();
    active
        .wait_log(
            "standing by: another rowsync process holds the target's lock",
            WAIT,
        )
        .await;
    load.await.unwrap();
    assert_exactly_once(c).await;
}

//! rowsync keeps read-only copies of one service's tables inside other services' databases,
//! by tailing the source's binlog as a replica does and applying every change exactly once.
//!
//! # Layout
//! Data flows one way: source → pipeline → sinks; the admin side only observes and commands.
//! - `config`: the TOML configuration, environment overrides and validation.
//! - `local`: throwaway local MariaDB servers (the demo and the tests run on them).
//! - `demo`: `rowsync demo`, the whole product on local servers.
//! - `source`: binlog reader, source positions and GTIDs, table schemas, value decoding.
//! - `pipeline`: mappings (routing, renames, column subsets), row filters, what each replica
//!   table holds and when it must be copied (`replicas`), per-target runners, live status.
//! - `sink`: target writers, replica tables, checkpoints committed with the rows.
//! - `bench`: `rowsync bench`, catch-up speed beside MariaDB's own replication.
//! - `check`: `rowsync check`, the pre-flight report on source and targets.
//! - `report`: `rowsync status`, each target's checkpoint and lag.
//! - `resync`: `rowsync resync`, the re-copy of one table into one target.
//! - `progress`: copy progress bars when `run` is in a terminal.
//! - `state`: the local SQLite store of what `run` saw, read by `status`.
//!
//! The admin API and UI (a later issue) will observe `pipeline::status` and send commands.

pub mod bench;
pub mod check;
pub mod config;
pub mod demo;
pub mod local;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod resync;
pub mod sink;
pub mod source;
pub mod state;

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

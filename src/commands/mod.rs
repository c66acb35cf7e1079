//! The command-line commands beside `run`'s engine: each drives the engine or reads the stores,
//! and prints for people. `main.rs` only parses arguments and calls these.

pub mod bench;
pub mod check;
pub mod demo;
pub mod progress;
pub mod resync;
pub mod run;
pub mod status;
pub mod verify;

/// A token cancelled on SIGTERM or SIGINT, for commands that stop cleanly where they are.
pub fn cancelled_on_signal() -> tokio_util::sync::CancellationToken {
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    cancel
}

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

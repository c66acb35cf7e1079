//! `rowsync run`: the daemon. Starts the engine, reloads the configuration on SIGHUP (as a
//! diff: only what changed restarts), records each target's state in the state store every
//! second, logs progress every ten, draws copy progress bars in a terminal, and shuts down at
//! transaction boundaries on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, OptionFuture};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::{progress, shutdown_signal};
use crate::config::Config;
use crate::engine::status::{Snapshot, TargetStatus};
use crate::engine::{Engine, Handle, ReloadError};
use crate::state::StateStore;

/// A server beside the engine (the admin API): given the configuration, the engine's handle
/// and a token cancelled at shutdown, it serves until then.
pub type Beside =
    Box<dyn FnOnce(Arc<Config>, Arc<Handle>, CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// Runs until SIGTERM or SIGINT, with `beside` served next to the engine.
pub async fn run(path: PathBuf, config: Config, beside: Beside) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    // One listener for the whole run: a signal that arrives during a reload is not lost.
    let terminate = shutdown_signal();
    tokio::pin!(terminate);
    let store = match StateStore::open(&config.state_path()).await {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::error!(error = %e, "cannot open the state store; `rowsync status` will not show what this daemon sees");
            None
        }
    };
    let config = Arc::new(config);
    let handle = Arc::new(Engine::start(config.clone()));
    let stop = CancellationToken::new();
    let served = beside(config.clone(), handle.clone(), stop.clone());
    let pipeline = std::sync::Mutex::new(config.pipeline.clone());
    let control = async {
        loop {
            tokio::select! {
                _ = &mut terminate => break,
                _ = hangup.recv() => {
                    let reloading = reload(&path, &handle, &pipeline);
                    tokio::select! {
                        _ = reloading => {}
                        _ = &mut terminate => break,
                    }
                }
            }
        }
        tracing::info!("shutting down: finishing or rolling back open target transactions");
        handle.shutdown().await;
        stop.cancel();
    };
    tokio::join!(
        control,
        report(&handle, store.as_ref(), &pipeline, &stop),
        progress::show(&handle, &stop),
        served,
    );
    Ok(())
}

/// Reads the file again and hands it to the engine; an invalid file changes nothing.
async fn reload(path: &Path, handle: &Handle, pipeline: &std::sync::Mutex<String>) {
    match handle.reload_file(path).await {
        Ok(config) => {
            tracing::info!("SIGHUP: reloading {}: applied", path.display());
            if let Ok(mut p) = pipeline.lock() {
                p.clone_from(&config.pipeline);
            }
        }
        Err(ReloadError::Invalid(e)) => {
            tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the running one")
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: the reload failed"),
    }
}

/// Records each target's state every second and logs progress every ten, until `stop` (and
/// once more then). A target a reload removed is recorded once more, as it ended.
async fn report(
    handle: &Handle,
    store: Option<&StateStore>,
    pipeline: &std::sync::Mutex<String>,
    stop: &CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    let mut known: Vec<Arc<TargetStatus>> = Vec::new();
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        n += 1;
        let pipeline = pipeline.lock().map(|p| p.clone()).unwrap_or_default();
        let current = handle.statuses();
        let mut recorded: Vec<Snapshot> = known
            .iter()
            .map(|k| k.snapshot())
            .filter(|k| !current.iter().any(|c| c.snapshot().target == k.target))
            .collect();
        recorded.extend(current.iter().map(|s| s.snapshot()));
        known = current;
        for snap in recorded {
            if let Some(Err(e)) = OptionFuture::from(store.map(|s| s.save(&pipeline, &snap))).await
            {
                tracing::warn!(error = %e, "cannot record target state");
            }
            if last || !n.is_multiple_of(10) {
                continue;
            }
            let copied: u64 = snap.copy.iter().map(|p| p.rows_copied).sum();
            let estimated: u64 = snap.copy.iter().map(|p| p.rows_estimated).sum();
            tracing::info!(
                target = %snap.target,
                state = snap.state.name(),
                copied,
                estimated,
                position = %snap.checkpoint.as_ref().map(|c| c.position.to_string()).unwrap_or_default(),
                lag_secs = ?snap.lag_secs(),
                rows = snap.rows_applied,
                transactions = snap.transactions_applied,
                "progress"
            );
        }
        if last {
            return;
        }
    }
}

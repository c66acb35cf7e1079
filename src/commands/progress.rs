//! Copy progress bars for `rowsync run` in a terminal: one bar per target while its initial
//! copy runs (rows copied of the estimate), drawn from the same status the log reports.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::engine::status::State;
use crate::engine::Handle;

/// Draws bars until `cancel` when stderr is a terminal; does nothing otherwise.
pub async fn show(handle: &Handle, cancel: &CancellationToken) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} rows {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        for snap in handle.snapshots() {
            let copying = snap.state == State::Copying;
            match (copying, bars.get(&snap.target)) {
                (true, existing) => {
                    let bar = match existing {
                        Some(bar) => bar.clone(),
                        None => {
                            let bar = multi.add(ProgressBar::new(0));
                            bar.set_style(style.clone());
                            bar.set_prefix(snap.target.clone());
                            bars.insert(snap.target.clone(), bar.clone());
                            bar
                        }
                    };
                    let copied: u64 = snap.copy.iter().map(|p| p.rows_copied).sum();
                    let estimated: u64 = snap.copy.iter().map(|p| p.rows_estimated).sum();
                    bar.set_length(estimated.max(copied));
                    bar.set_position(copied);
                    let current = snap.copy.iter().rev().find(|p| !p.done);
                    bar.set_message(current.map(|p| p.table.to_string()).unwrap_or_default());
                }
                (false, Some(bar)) => {
                    bar.finish_with_message("copied");
                    bars.remove(&snap.target);
                }
                (false, None) => {}
            }
        }
    }
    for bar in bars.values() {
        bar.finish_and_clear();
    }
}

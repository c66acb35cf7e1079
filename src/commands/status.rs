//! `rowsync status`: prints what `engine::inspect` reads from the source and the targets, and
//! what the daemon last recorded in the state store.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::inspect::TargetReport;
use crate::model::position::Checkpoint;
use crate::model::table::{TableState, VerifyRecord};
use crate::state::StoredState;

/// The report as text.
pub fn render(head: &Checkpoint, targets: &[TargetReport]) -> String {
    let mut s = String::new();
    let gtid = |c: &Checkpoint| {
        c.gtid
            .as_ref()
            .map(|g| g.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(s, "source head: {} gtid {}", head.position, gtid(head));
    for t in targets {
        match (&t.error, &t.checkpoint) {
            (Some(e), _) => {
                let _ = writeln!(s, "target {}: UNREACHABLE: {e}", t.target);
            }
            (None, None) => {
                let _ = writeln!(
                    s,
                    "target {}: no checkpoint yet (starts at `source.start` on first run)",
                    t.target
                );
            }
            (None, Some(c)) if t.copying.is_some() => {
                let _ = writeln!(
                    s,
                    "target {}: INITIAL COPY in progress; streams from {} gtid {} when done",
                    t.target,
                    c.position,
                    gtid(c)
                );
                for p in t.copying.iter().flatten() {
                    let _ = writeln!(
                        s,
                        "  copy {}: {} / ~{} rows{}",
                        p.table,
                        p.rows_copied,
                        p.rows_estimated,
                        if p.done { " (done)" } else { "" }
                    );
                }
            }
            (None, Some(c)) => {
                let lag = match (t.caught_up, t.lag_secs) {
                    (true, _) => "caught up".to_string(),
                    (false, Some(l)) => format!("behind, lag {l}s"),
                    (false, None) => "behind".to_string(),
                };
                let _ = writeln!(
                    s,
                    "target {}: checkpoint {} gtid {} — {lag}",
                    t.target,
                    c.position,
                    gtid(c)
                );
            }
        }
        for f in &t.floors {
            let at = f
                .position
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let _ = match (f.state, at.is_empty()) {
                (TableState::Copying, true) => {
                    writeln!(s, "  table {} RE-COPYING (taking its snapshot)", f.table)
                }
                (TableState::Copying, false) => {
                    writeln!(s, "  table {} RE-COPYING (snapshot at {at})", f.table)
                }
                _ => writeln!(s, "  table {} re-copied, catching up from {at}", f.table),
            };
        }
        for st in &t.stopped {
            let statement = st
                .statement
                .as_ref()
                .map(|q| format!(" (statement: {q})"))
                .unwrap_or_default();
            let _ = match st.state {
                TableState::RecopyRequested => writeln!(
                    s,
                    "  table {} COPY REQUESTED: {}",
                    st.table,
                    if st.reason.is_empty() {
                        "a re-copy was asked for"
                    } else {
                        &st.reason
                    }
                ),
                _ => writeln!(
                    s,
                    "  table {} NEEDS RE-COPY since {}: {}{statement}",
                    st.table,
                    if st.since.is_empty() {
                        "the start of the stream"
                    } else {
                        &st.since
                    },
                    st.reason,
                ),
            };
        }
        for v in &t.verified {
            let _ = writeln!(s, "  {}", verified_line(v));
        }
    }
    s
}

/// One replica table's last `verify` result, as `status` prints it.
pub fn verified_line(v: &VerifyRecord) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ago = now.saturating_sub(v.finished_at);
    let verdict = match (v.differing, v.repaired) {
        (0, _) if v.last_pass > 0 => format!(
            "none yet in this pass; {} DIFFERED at the end of the last one",
            v.last_pass
        ),
        (0, _) => "equal".to_owned(),
        (d, r) if r >= d => format!("{d} differed, all repaired"),
        (d, 0) => format!("{d} DIFFER: {}", v.detail),
        (d, r) => format!("{d} DIFFER, {r} repaired: {}", v.detail),
    };
    let share = if v.complete {
        ""
    } else {
        " (not the whole table yet)"
    };
    format!(
        "verified {} (from {}) {ago}s ago: {} rows checked{share}, {verdict}",
        v.replica, v.source, v.rows
    )
}

/// What the daemon last recorded for each target (from the state store).
pub fn render_daemon(stored: &[StoredState]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut s = String::new();
    for t in stored {
        let _ = writeln!(
            s,
            "daemon: target {} {}{} (recorded {}s ago)",
            t.target,
            t.state.to_uppercase(),
            match (&t.error, &t.error_class) {
                (Some(e), Some(class)) => format!(" ({class} error): {e}"),
                (Some(e), None) => format!(": {e}"),
                _ => String::new(),
            },
            (now - t.updated_at).max(0)
        );
    }
    s
}

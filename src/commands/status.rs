//! `rowsync status`: each target's checkpoint, how far behind the source head it is, and its
//! stopped tables — read from the targets and the source without opening a binlog dump. It
//! only reads (SELECT): a target where rowsync never ran simply has no checkpoint yet.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::model::position::Checkpoint;
use crate::model::table::{CopyProgress, Phase, StoppedTable, TableFloor, TableState};
use crate::sink::{checkpoint, target, SinkError};
use crate::source::conn::{connect, source_opts};
use crate::source::info::SourceInfo;
use crate::state::StoredState;

/// One target's line(s) of the status report.
#[derive(Debug, Clone)]
pub struct TargetReport {
    pub target: String,
    pub checkpoint: Option<Checkpoint>,
    pub lag_secs: Option<u64>,
    pub caught_up: bool,
    pub stopped: Vec<StoppedTable>,
    /// Tables being re-copied or catching up after a re-copy.
    pub floors: Vec<TableFloor>,
    /// Set while the initial copy runs.
    pub copying: Option<Vec<CopyProgress>>,
    pub error: Option<String>,
}

/// Builds the report; `Err` only when the source itself cannot be read.
pub async fn collect(config: &Config) -> anyhow::Result<(Checkpoint, Vec<TargetReport>)> {
    let opts = source_opts(&config.source.url, config.source.tls.as_ref())?;
    let mut src = connect(&opts).await?;
    let info = SourceInfo::read(&mut src).await?;
    let head = info.head(&mut src).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = Vec::new();
    for t in &config.targets {
        let mut r = TargetReport {
            target: t.name.clone(),
            checkpoint: None,
            lag_secs: None,
            caught_up: false,
            stopped: Vec::new(),
            floors: Vec::new(),
            copying: None,
            error: None,
        };
        match target::connect(t).await {
            Err(e) => r.error = Some(e.to_string()),
            Ok(mut conn) => {
                let pipeline = &config.pipeline;
                let loaded = async {
                    let c = absent(checkpoint::load_with_phase(&mut conn, pipeline).await)?;
                    let s = absent(checkpoint::stopped_tables(&mut conn, pipeline).await)?;
                    let p = absent(checkpoint::copy_progress(&mut conn, pipeline).await)?;
                    let f = absent(checkpoint::table_floors(&mut conn, pipeline).await)?;
                    Ok::<_, SinkError>((c, s, p, f))
                }
                .await;
                match loaded {
                    Err(e) => r.error = Some(e.to_string()),
                    Ok((c, s, progress, floors)) => {
                        r.stopped = s;
                        r.floors = floors;
                        if let Some((_, Phase::Copying)) = &c {
                            r.copying = Some(progress);
                        }
                        let c = c.map(|(c, _)| c);
                        if let Some(c) = &c {
                            r.caught_up = match (&c.gtid, &head.gtid) {
                                (Some(a), Some(b)) => a == b,
                                _ => c.position == head.position,
                            };
                            r.lag_secs = c.lag_secs(r.caught_up, now);
                        }
                        r.checkpoint = c;
                    }
                }
            }
        }
        out.push(r);
    }
    Ok((head, out))
}

/// What a read of one of rowsync's tables gives, or nothing where the table does not exist
/// (rowsync never ran on that target, or an older one made fewer tables).
fn absent<T: Default>(read: Result<T, SinkError>) -> Result<T, SinkError> {
    match read {
        Err(e) if e.code() == Some(1146) => Ok(T::default()),
        other => other,
    }
}

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
    }
    s
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

//! Reads what `rowsync status` shows, from the source and the targets, without opening a
//! binlog dump: each target's checkpoint, how far behind the source head it is, its stopped
//! tables, re-copies and copy progress. It only reads (SELECT): a target where rowsync never
//! ran simply has no checkpoint yet.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, TargetConfig};
use crate::model::position::Checkpoint;
use crate::model::table::{CopyProgress, Phase, StoppedTable, TableFloor, VerifyRecord};
use crate::sink::{checkpoint, target, verified, SinkError};
use crate::source::catalog;
use crate::source::conn::{configured_opts, connect};
use crate::source::info::SourceInfo;
use crate::source::SourceError;

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
    /// The last `verify` result per replica table.
    pub verified: Vec<VerifyRecord>,
}

/// The source's current position (binlog file/offset and GTID state).
pub async fn source_head(config: &Config) -> Result<Checkpoint, SourceError> {
    let mut src = open_source(config).await?;
    let info = SourceInfo::read(&mut src).await?;
    info.head(&mut src).await
}

/// The source's tables with their columns and keys, for the mapping editor.
pub async fn source_tables(config: &Config) -> Result<Vec<catalog::TableOutline>, SourceError> {
    catalog::outline(&mut open_source(config).await?).await
}

async fn open_source(config: &Config) -> Result<mysql_async::Conn, SourceError> {
    connect(&configured_opts(&config.source)?).await
}

/// How long the report waits for one server. A server behind a network partition (packets
/// vanish, nothing is refused) would otherwise hang the report for as long as it lasts.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the report; `Err` only when the source itself cannot be read. Targets are read at
/// the same time, each within `ANSWER_TIMEOUT` (one that does not answer is reported so).
pub async fn collect(config: &Config) -> anyhow::Result<(Checkpoint, Vec<TargetReport>)> {
    let head = match tokio::time::timeout(ANSWER_TIMEOUT, source_head(config)).await {
        Ok(head) => head?,
        Err(_) => return Err(SourceError::ConnectTimeout(ANSWER_TIMEOUT).into()),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let reports = config.targets.iter().map(|t| async {
        match tokio::time::timeout(ANSWER_TIMEOUT, report(config, t, &head, now)).await {
            Ok(r) => r,
            Err(_) => TargetReport {
                error: Some(format!(
                    "the target did not answer within {ANSWER_TIMEOUT:?}"
                )),
                ..TargetReport::new(&t.name)
            },
        }
    });
    let out = futures_util::future::join_all(reports).await;
    Ok((head, out))
}

impl TargetReport {
    fn new(target: &str) -> TargetReport {
        TargetReport {
            target: target.to_owned(),
            checkpoint: None,
            lag_secs: None,
            caught_up: false,
            stopped: Vec::new(),
            floors: Vec::new(),
            copying: None,
            error: None,
            verified: Vec::new(),
        }
    }
}

/// One target's report, against the source's `head`.
async fn report(config: &Config, t: &TargetConfig, head: &Checkpoint, now: u64) -> TargetReport {
    let mut r = TargetReport::new(&t.name);
    let mut conn = match target::connect(t).await {
        Ok(conn) => conn,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    let pipeline = &config.pipeline;
    let loaded = async {
        let c = absent(checkpoint::load_with_phase(&mut conn, pipeline).await)?;
        let s = absent(checkpoint::stopped_tables(&mut conn, pipeline).await)?;
        let p = absent(checkpoint::copy_progress(&mut conn, pipeline).await)?;
        let f = absent(checkpoint::table_floors(&mut conn, pipeline).await)?;
        r.verified = absent(verified::records(&mut conn, pipeline).await)?;
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
    r
}

/// What a read of one of rowsync's tables gives, or nothing where the table does not exist
/// (rowsync never ran on that target, or an older one made fewer tables).
fn absent<T: Default>(read: Result<T, SinkError>) -> Result<T, SinkError> {
    match read {
        Err(e) if e.code() == Some(1146) => Ok(T::default()),
        other => other,
    }
}

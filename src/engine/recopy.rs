//! Re-copying one table into one target, e.g. after a DDL the replica could not follow
//! ("needs re-copy") or when a replica has drifted.
//!
//! The table is marked `copying`, copied from a consistent snapshot (chunks committed with
//! their progress, so an interrupted re-copy resumes), then marked `catching_up` from the
//! snapshot's position: the target's stream applies the table's changes after that position,
//! exactly once, while every other table goes on from the target's checkpoint.
//!
//! While a pipeline runs on the target (this process's engine or another `rowsync run`), the
//! request is recorded in the target (`request`): the pipeline stops applying the table at a
//! transaction boundary, copies it while the other tables keep streaming, and restarts its
//! stream from the floors. Without one, `run` copies the table itself (holding the target's
//! lock) and the next run catches it up.

use std::time::Duration;

use sqlx::mysql::MySqlConnection;
use tokio_util::sync::CancellationToken;

use super::copy::{self, CopyJob};
use super::status::TargetStatus;
use super::target::{PipelineError, TargetSpec};
use crate::model::name::TableName;
use crate::model::table::TableState;
use crate::sink::{checkpoint, lock, target, SinkError};
use crate::source::conn::connect;
use crate::source::info::SourceInfo;
use crate::source::SourceError;

/// Why a re-copy was refused or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RecopyError {
    #[error("no mapping sends {table} to target `{target}`")]
    NotSelected { table: TableName, target: String },
    #[error("target `{0}` has not started yet; its first `rowsync run` copies every table")]
    NotStarted(String),
    #[error("{table} cannot be copied: {reason}")]
    Stopped { table: TableName, reason: String },
    #[error("the re-copy of {table} ended in state `{state}`; see `rowsync status`")]
    Ended { table: TableName, state: TableState },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<SinkError> for RecopyError {
    fn from(e: SinkError) -> Self {
        RecopyError::Pipeline(e.into())
    }
}

impl From<SourceError> for RecopyError {
    fn from(e: SourceError) -> Self {
        RecopyError::Pipeline(e.into())
    }
}

/// What a finished re-copy did.
#[derive(Debug)]
pub struct Recopied {
    pub rows: u64,
    pub floor: String,
}

async fn open(spec: &TargetSpec, table: &TableName) -> Result<MySqlConnection, RecopyError> {
    if !spec.router.selects(table) {
        return Err(RecopyError::NotSelected {
            table: table.clone(),
            target: spec.name().to_owned(),
        });
    }
    let mut conn = target::connect(&spec.target).await?;
    checkpoint::ensure_tables(&mut conn).await?;
    Ok(conn)
}

/// Records a re-copy request for `table`, which the target's running pipeline carries out.
pub async fn request(
    spec: &TargetSpec,
    table: &TableName,
    reason: &str,
) -> Result<(), RecopyError> {
    let mut conn = open(spec, table).await?;
    if checkpoint::load(&mut conn, &spec.pipeline).await?.is_none() {
        return Err(RecopyError::NotStarted(spec.name().to_owned()));
    }
    checkpoint::mark_table(
        &mut conn,
        &spec.pipeline,
        table,
        TableState::RecopyRequested,
        None,
        reason,
    )
    .await?;
    Ok(())
}

/// Re-copies `table`: asks the running pipeline if there is one and waits for it, else copies
/// the table here. `None` when cancelled.
pub async fn run(
    spec: &TargetSpec,
    table: &TableName,
    cancel: &CancellationToken,
) -> Result<Option<Recopied>, RecopyError> {
    let mut conn = open(spec, table).await?;
    let Ok(fence) = lock::lock_target(&mut conn, &spec.pipeline, spec.name(), 0).await else {
        // A pipeline works on the target: it carries the re-copy out, streaming on.
        request(spec, table, "asked for by `rowsync resync`").await?;
        return wait_for_daemon(&mut conn, &spec.pipeline, table, cancel).await;
    };
    if checkpoint::load(&mut conn, &spec.pipeline).await?.is_none() {
        return Err(RecopyError::NotStarted(spec.name().to_owned()));
    }
    let opts = spec.source_opts()?;
    let mut src = connect(&opts).await?;
    let info = SourceInfo::read(&mut src).await?;
    drop(src);
    // The copy makes the table's replicas that are missing or no longer fit.
    let status = TargetStatus::new(spec.name());
    let skip = Default::default();
    let job = CopyJob {
        pipeline: &spec.pipeline,
        source: &opts,
        info: &info,
        router: &spec.router,
        skip: &skip,
        target: &spec.target,
        copy: &spec.copy,
        batch_rows: spec.apply.batch_rows,
        status: &status,
        cancel,
        fence: Some(&fence),
        session_timeout: None,
    };
    let floor = match copy::recopy(&mut conn, &job, table).await? {
        copy::Recopy::Done(floor) => floor,
        copy::Recopy::Cancelled => return Ok(None),
        copy::Recopy::Stopped(reason) => {
            return Err(RecopyError::Stopped {
                table: table.clone(),
                reason,
            })
        }
    };
    let rows = status.snapshot().copy.iter().map(|p| p.rows_copied).sum();
    Ok(Some(Recopied {
        rows,
        floor: floor.position.to_string(),
    }))
}

/// Waits until the running pipeline has re-copied `table`.
async fn wait_for_daemon(
    conn: &mut MySqlConnection,
    pipeline: &str,
    table: &TableName,
    cancel: &CancellationToken,
) -> Result<Option<Recopied>, RecopyError> {
    let mut last = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        let state = checkpoint::table_state(conn, pipeline, table).await?;
        if state != last {
            last = state;
            let shown = state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "streaming".into());
            tracing::info!(table = %table, state = %shown, "re-copy by the running daemon");
        }
        match state {
            Some(TableState::RecopyRequested) | Some(TableState::Copying) => continue,
            // Copied; the daemon's stream catches the table up (or already has).
            Some(TableState::CatchingUp) | None => {
                let rows = checkpoint::copy_progress(conn, pipeline)
                    .await?
                    .into_iter()
                    .find(|p| &p.table == table)
                    .map(|p| p.rows_copied)
                    .unwrap_or(0);
                let floor = checkpoint::table_floors(conn, pipeline)
                    .await?
                    .into_iter()
                    .find(|f| &f.table == table)
                    .and_then(|f| f.position)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "its snapshot (already caught up)".into());
                return Ok(Some(Recopied { rows, floor }));
            }
            Some(state @ TableState::NeedsRecopy) => {
                return Err(RecopyError::Ended {
                    table: table.clone(),
                    state,
                })
            }
        }
    }
}

/// The replica tables `mapping` fills in `spec`'s target that rowsync filled itself (as its
/// records say): what deleting the mapping may drop.
pub async fn owned_replicas(
    spec: &TargetSpec,
    mapping: &crate::routing::mapping::Mapping,
) -> Result<Vec<String>, RecopyError> {
    let mut conn = target::connect(&spec.target).await?;
    checkpoint::ensure_tables(&mut conn).await?;
    Ok(checkpoint::replicas(&mut conn, &spec.pipeline)
        .await?
        .into_iter()
        .filter(|r| {
            mapping.source.matches(&r.source) && mapping.replica_name(&r.source) == r.replica
        })
        .map(|r| r.replica)
        .collect())
}

/// Drops `replicas` in `spec`'s target, each only if no mapping of `spec` fills it now.
pub async fn drop_replicas(
    spec: &TargetSpec,
    replicas: &[String],
) -> Result<Vec<String>, RecopyError> {
    let mut conn = target::connect(&spec.target).await?;
    let mut dropped = Vec::new();
    for replica in replicas {
        if spec.router.may_fill(replica) {
            tracing::warn!(replica = %replica, "not dropped: a mapping still fills it");
            continue;
        }
        crate::sink::replica::drop_unused(&mut conn, &spec.pipeline, replica).await?;
        tracing::info!(target = %spec.name(), replica = %replica, "replica table dropped with its mapping");
        dropped.push(replica.clone());
    }
    Ok(dropped)
}

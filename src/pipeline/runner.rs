//! Runs one pipeline per target: its own binlog reader (own server id, own position) feeding
//! its own writer through a bounded channel, so a slow or dead target never holds back the
//! others, and each catches up from its own checkpoint. A target without a checkpoint first
//! gets its initial copy (`sink::copy`), which hands the stream its start position.
//!
//! # Restart discipline
//! Any error ends both halves. The writer rolls back what is not whole, and the next attempt
//! starts again from the checkpoint committed in the target. Retryable errors (network,
//! deadlocks, a target or source that is down) back off and retry; definite ones (a purged
//! binlog position, a constraint the replica rejects) stop the target with the reason in the
//! log and the status, without a crash loop.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::mapping::Router;
use super::replicas;
use super::status::{State, TargetStatus};
use crate::config::{Config, TargetConfig};
use crate::sink::apply::{Applier, ApplyExit, Command};
use crate::sink::checkpoint::{Phase, ReplicaRecord, TableState};
use crate::sink::copy::{self, CopyJob};
use crate::sink::{checkpoint, replica, target, SinkError};
use crate::source::conn::source_opts;
use crate::source::info::SourceInfo;
use crate::source::position::{Checkpoint, GtidSet, StartAt};
use crate::source::reader::{BinlogReader, Floors, ReaderOptions};
use crate::source::schema::TableName;
use crate::source::{event_channel, SourceError};

/// An error of one attempt, from either side.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("target: {0}")]
    Sink(#[from] SinkError),
}

impl PipelineError {
    pub fn is_retryable(&self) -> bool {
        match self {
            PipelineError::Source(e) => e.is_retryable(),
            PipelineError::Sink(e) => e.is_retryable(),
        }
    }
}

/// Runs every target until `cancel`; returns when all have shut down.
pub async fn run_all(
    config: Arc<Config>,
    statuses: Vec<Arc<TargetStatus>>,
    cancel: CancellationToken,
) {
    let tasks = statuses.into_iter().enumerate().map(|(index, status)| {
        let config = config.clone();
        let cancel = cancel.clone();
        let watched = status.clone();
        watch(
            tokio::spawn(run_target(config, index, status, cancel)),
            watched,
        )
    });
    futures_util::future::join_all(tasks).await;
}

/// Waits for a target's task. A panic is a bug, but it stops only its target, and says so in
/// the target's status, where operators look.
async fn watch(task: tokio::task::JoinHandle<()>, status: Arc<TargetStatus>) {
    if let Err(e) = task.await {
        let error = match e.try_into_panic() {
            Ok(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into()),
            Err(e) => e.to_string(),
        };
        tracing::error!(target = %status.snapshot().target, %error, "target pipeline crashed (a rowsync bug); restart rowsync");
        status.set_state(State::Stopped {
            error: format!("internal error: {error}"),
        });
    }
}

/// Runs target `index` with retries until cancelled or stopped by a definite error.
pub async fn run_target(
    config: Arc<Config>,
    index: usize,
    status: Arc<TargetStatus>,
    cancel: CancellationToken,
) {
    let target = &config.targets[index];
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let result = run_once(&config, index, &status, &cancel).await;
        match result {
            Ok(Outcome::Restart) => {
                tracing::info!(target = %target.name, "restarting the target's stream from its floors");
                backoff = Duration::from_millis(500);
                continue;
            }
            Ok(Outcome::Shutdown) => {
                status.set_state(State::ShutDown);
                tracing::info!(target = %target.name, "target pipeline shut down");
                return;
            }
            Err(e) if e.is_retryable() => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(target = %target.name, error = %e, retry_in = ?backoff, "target pipeline failed; retrying");
                status.set_state(State::Retrying {
                    error: e.to_string(),
                });
                tokio::select! {
                    _ = cancel.cancelled() => {
                        status.set_state(State::ShutDown);
                        return;
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(target = %target.name, error = %e, "target pipeline stopped; fix the cause and restart rowsync");
                status.set_state(State::Stopped {
                    error: e.to_string(),
                });
                cancel.cancelled().await;
                return;
            }
        }
    }
}

async fn run_once(
    config: &Config,
    index: usize,
    status: &Arc<TargetStatus>,
    cancel: &CancellationToken,
) -> Result<Outcome, PipelineError> {
    let target: &TargetConfig = &config.targets[index];
    let router = Arc::new(Router::for_target(config, &target.name));
    let opts = source_opts(&config.source.url, config.source.tls.as_ref()).map_err(|e| {
        SourceError::Config {
            reason: format!("source.url: {e}"),
        }
    })?;

    let mut conn = target::connect(target).await?;
    checkpoint::ensure_tables(&mut conn).await?;
    // One process at a time works on a target: this session holds the lock until it ends.
    checkpoint::lock_target(&mut conn, &config.pipeline, &target.name, 10).await?;
    let mut skip: HashSet<_> = checkpoint::stopped_tables(&mut conn, &config.pipeline)
        .await?
        .into_iter()
        .map(|s| s.table)
        .collect();

    let mut src = crate::source::conn::connect(&opts).await?;
    let info = SourceInfo::read(&mut src).await?;
    let selected = replica::selected_tables(&mut src, &router).await?;
    let loaded = checkpoint::load_with_phase(&mut conn, &config.pipeline).await?;
    if !checkpoint::tracks_replicas(&mut conn, &config.pipeline).await? {
        // First start of this pipeline, or the first since an upgrade: in one transaction,
        // what an older rowsync held is adopted, and the target records replicas from here on.
        let adopted = match loaded {
            Some(_) => held_replicas(&mut conn, &config.pipeline, &router, &selected).await?,
            None => Vec::new(),
        };
        checkpoint::start_tracking_replicas(&mut conn, &config.pipeline, &adopted).await?;
    }
    let records = checkpoint::replicas(&mut conn, &config.pipeline).await?;
    let busy: HashSet<TableName> = checkpoint::table_floors(&mut conn, &config.pipeline)
        .await?
        .into_iter()
        .filter(|f| f.state == TableState::Copying)
        .map(|f| f.table)
        .chain(skip.iter().cloned())
        .collect();
    // A table being re-copied is planned too: a shape changed since its copy began starts
    // that copy over.
    let mut plan = replicas::plan(&router, &selected, &|t| skip.contains(t), &records);
    for replica in &plan.forget {
        tracing::info!(target = %target.name, replica = %replica, "no mapping fills this replica table any more; it is kept as it is");
        checkpoint::forget_replica(&mut conn, &config.pipeline, replica).await?;
    }
    let since = loaded.as_ref().map(|(c, _)| c);
    for (table, reason) in plan.conflicts {
        let stop =
            checkpoint::stop_outside_stream(&mut conn, &config.pipeline, table, since, reason)
                .await?;
        skip.insert(stop.table);
    }
    let copying = match &loaded {
        None => config.source.start_at() == StartAt::Snapshot,
        Some((_, phase)) => *phase == Phase::Copying,
    };
    // Tables waiting for a copy (or in one, the initial copy included) get their replicas
    // made by it, as the table is when it is copied.
    for table in &selected {
        if copying || busy.contains(table) || skip.contains(table) {
            continue;
        }
        let def = match replica::source_definition(&mut src, table).await {
            Ok(def) => def,
            // Dropped since it was listed: the stream says what became of it.
            Err(SinkError::Source { source, .. }) if source.is_missing_table() => continue,
            Err(e) => return Err(e.into()),
        };
        for mapping in router.mappings_for(table) {
            let replica_name = mapping.replica_name(table);
            let ours = records
                .iter()
                .any(|r| r.replica == replica_name && &r.source == table);
            if ours && replica::columns(&mut conn, &replica_name).await?.is_empty() {
                // Dropped by hand: made empty it would lack every older row; copied, it won't.
                if !plan.copy.iter().any(|(t, _)| t == table) {
                    plan.copy.push((
                        table.clone(),
                        format!("its replica table `{replica_name}` is missing (dropped by hand?)"),
                    ));
                }
                continue;
            }
            let made = match replica::ensure_replica(&mut conn, &def, mapping, None).await {
                Ok(()) if !ours => replica::check_adopted(&mut conn, &def, mapping).await,
                other => other,
            };
            match made {
                Ok(()) => {}
                Err(e) if e.is_retryable() => return Err(e.into()),
                // A replica that cannot be used stops its table, not the target.
                Err(e) => {
                    let stop = checkpoint::stop_outside_stream(
                        &mut conn,
                        &config.pipeline,
                        table.clone(),
                        since,
                        e.to_string(),
                    )
                    .await?;
                    skip.insert(stop.table);
                    break;
                }
            }
        }
    }
    drop(src);
    // A replica that is new or changed shape is copied before it streams: within the initial
    // copy when that is still under way, else online like a re-copy (skipped until then).
    for (table, reason) in &plan.copy {
        match &loaded {
            Some((_, Phase::Streaming)) => {
                tracing::info!(target = %target.name, table = %table, %reason, "copying the table online");
                checkpoint::mark_table(
                    &mut conn,
                    &config.pipeline,
                    table,
                    TableState::RecopyRequested,
                    None,
                    reason,
                )
                .await?;
                skip.insert(table.clone());
            }
            Some((_, Phase::Copying)) => {
                checkpoint::reset_copy_progress(&mut conn, &config.pipeline, table).await?;
            }
            // A fresh target: its initial copy records every replica it fills, and a target
            // that starts streaming without a copy starts with them as they are.
            None if copying => {}
            None => {
                for record in replicas::records_for(&router, table) {
                    checkpoint::record_replica(&mut conn, &config.pipeline, &record).await?;
                }
            }
        }
    }
    let job = CopyJob {
        pipeline: &config.pipeline,
        source: &opts,
        info: &info,
        router: &router,
        skip: &skip,
        target,
        copy: &config.copy,
        batch_rows: config.apply.batch_rows,
        status,
        cancel,
    };
    let start = match loaded {
        Some((c, Phase::Streaming)) => c,
        Some((c, Phase::Copying)) => match copy::run(&mut conn, &job, Some(c)).await? {
            Some(c) => c,
            None => return Ok(Outcome::Shutdown),
        },
        None if copying => match copy::run(&mut conn, &job, None).await? {
            Some(c) => c,
            None => return Ok(Outcome::Shutdown),
        },
        None => {
            let mut src = crate::source::conn::connect(&opts).await?;
            let c = info
                .resolve_start(&mut src, &config.source.start_at())
                .await?;
            // After the position is fixed, so a branch prepared before it shows.
            crate::source::snapshot::check_no_prepared_xa(&mut src).await?;
            // Stored before streaming: a crash before the first commit must resume here,
            // not at a later "current".
            checkpoint::store(&mut conn, &config.pipeline, &c).await?;
            tracing::info!(target = %target.name, position = %c.position, gtid = ?c.gtid.as_ref().map(|g| g.to_string()), "new target starts here");
            c
        }
    };
    // Tables whose re-copy was under way finish it first; tables re-copied earlier catch up
    // from their own floor while the others go on from the checkpoint.
    let mut waiting = Vec::new();
    for f in checkpoint::table_floors(&mut conn, &config.pipeline).await? {
        if f.state != TableState::Copying {
            continue;
        }
        match copy::recopy(&mut conn, &job, &f.table).await {
            Ok(copy::Recopy::Cancelled) => return Ok(Outcome::Shutdown),
            Ok(_) => {}
            // Not a reason to hold back the other tables: the copy is done online later.
            Err(PipelineError::Source(e @ SourceError::PreparedXa { .. })) => {
                checkpoint::mark_table(
                    &mut conn,
                    &config.pipeline,
                    &f.table,
                    TableState::RecopyRequested,
                    None,
                    &format!("waiting to copy: {e}"),
                )
                .await?;
                waiting.push(f.table);
            }
            Err(e) => return Err(e),
        }
    }
    skip.extend(waiting);
    // Tables whose copy (initial or re-copy) stopped are skipped like every stopped table.
    let stopped = checkpoint::stopped_tables(&mut conn, &config.pipeline).await?;
    skip.extend(stopped.iter().map(|s| s.table.clone()));
    let mut floors = Floors::new(start.clone());
    for f in checkpoint::table_floors(&mut conn, &config.pipeline).await? {
        let Some(position) = f.position else { continue };
        let gtid = f
            .gtid
            .map(|g| GtidSet::parse_for(info.flavor(), &g))
            .transpose()
            .map_err(SourceError::from)?;
        floors.tables.insert(
            f.table,
            Checkpoint {
                position,
                gtid,
                source: start.source.clone(),
                source_time: 0,
            },
        );
    }
    for (position, gtid) in checkpoint::xa_floors(&mut conn, &config.pipeline).await? {
        let gtid = gtid
            .map(|g| GtidSet::parse_for(info.flavor(), &g))
            .transpose()
            .map_err(SourceError::from)?;
        floors.xa.push(Checkpoint {
            position,
            gtid,
            source: start.source.clone(),
            source_time: 0,
        });
    }
    let stream_start = floors.start();
    status.started(&start, stopped);

    let source_for_writer = opts.clone();
    let reader = BinlogReader::new(
        ReaderOptions {
            opts,
            server_id: config.source.server_id + index as u32,
            heartbeat: config.source.heartbeat(),
            read_timeout: config.source.read_timeout(),
        },
        router.clone(),
        skip.clone(),
    )
    .with_floors(floors.clone());
    let (tx, mut rx) = event_channel(config.apply.queue_events);
    let reader_cancel = cancel.child_token();
    let reader_task = tokio::spawn(reader.run(stream_start, tx, reader_cancel.clone()));

    let (commands, command_rx) = mpsc::channel(4);
    let mut applier = Applier::new(
        conn,
        source_for_writer.clone(),
        config.pipeline.clone(),
        router.clone(),
        config.apply.clone(),
        status.clone(),
        skip,
        floors,
    )
    .await?
    .with_commands(command_rx)
    .with_source_time_zone(info.time_zone.clone());
    // The writer stops at a boundary when cancelled, or when a re-copy asks for a restart.
    let restart = cancel.child_token();
    let apply = async {
        let result = applier.run(&mut rx, &restart).await;
        restart.cancel();
        result
    };
    let no_skip = HashSet::new();
    let job = CopyJob {
        pipeline: &config.pipeline,
        source: &source_for_writer,
        info: &info,
        router: &router,
        skip: &no_skip,
        target,
        copy: &config.copy,
        batch_rows: config.apply.batch_rows,
        status,
        cancel: &restart,
    };
    let recopies = async {
        let result = serve_recopies(&job, &commands, &restart).await;
        restart.cancel();
        result
    };
    let (applied, recopied) = tokio::join!(apply, recopies);
    reader_cancel.cancel();
    drop(rx);
    let read = match reader_task.await {
        Ok(r) => r,
        Err(e) => Err(SourceError::Protocol {
            reason: format!("reader task failed: {e}"),
        }),
    };
    let recopied = recopied?;
    match (applied, read) {
        (Err(e), _) => Err(e.into()),
        (Ok(ApplyExit::Shutdown), _) if cancel.is_cancelled() => Ok(Outcome::Shutdown),
        (Ok(ApplyExit::Shutdown), _) if recopied => Ok(Outcome::Restart),
        (Ok(_), _) if cancel.is_cancelled() => Ok(Outcome::Shutdown),
        (Ok(_), Err(e)) => Err(e.into()),
        (Ok(_), Ok(())) => Err(SourceError::Closed.into()),
    }
}

/// The replicas a target written by a rowsync that did not record them yet holds: the
/// tables it copied (or registered as streamed from the start), or is re-copying, keep their
/// replicas as they are; tables it did not hold are copied as new.
async fn held_replicas(
    conn: &mut sqlx::mysql::MySqlConnection,
    pipeline: &str,
    router: &Router,
    selected: &[TableName],
) -> Result<Vec<ReplicaRecord>, PipelineError> {
    let held: HashSet<TableName> = checkpoint::copy_progress(conn, pipeline)
        .await?
        .into_iter()
        .map(|p| p.table)
        .chain(
            checkpoint::table_floors(conn, pipeline)
                .await?
                .into_iter()
                .map(|f| f.table),
        )
        .collect();
    Ok(selected
        .iter()
        .filter(|t| held.contains(*t))
        .flat_map(|t| replicas::records_for(router, t))
        .collect())
}

/// How one run of a target's pipeline ended without error.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Shutdown,
    /// A table was re-copied: start again, so the stream catches it up from its floor.
    Restart,
}

/// Carries out re-copies requested while the stream runs (`rowsync resync` writes the request
/// into the target): the writer stops applying the table at a boundary, the table is copied
/// while the others keep streaming, and then the pipeline restarts from its floors. Returns
/// whether a table was re-copied.
async fn serve_recopies(
    job: &CopyJob<'_>,
    commands: &mpsc::Sender<Command>,
    stop: &CancellationToken,
) -> Result<bool, PipelineError> {
    let mut conn = target::connect(job.target).await?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(false),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Some(table) = checkpoint::recopy_requests(&mut conn, job.pipeline)
            .await?
            .into_iter()
            .next()
        else {
            continue;
        };
        tracing::info!(table = %table, "re-copy requested");
        let (ack, acked) = tokio::sync::oneshot::channel();
        if commands
            .send(Command::Recopy {
                table: table.clone(),
                ack,
            })
            .await
            .is_err()
        {
            return Ok(false);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(false),
            done = acked => if done.is_err() { return Ok(false) },
        }
        // The copy makes the replicas that are missing or no longer fit. While XA branches
        // are prepared on the source it waits, the other tables streaming on.
        loop {
            match copy::recopy(&mut conn, job, &table).await {
                // A table whose copy stopped is skipped after the restart, like every stopped
                // table.
                Ok(end) => return Ok(!matches!(end, copy::Recopy::Cancelled)),
                Err(PipelineError::Source(e @ SourceError::PreparedXa { .. })) => {
                    tracing::warn!(table = %table, error = %e, "re-copy waits");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_target_shows_as_stopped_with_the_message() {
        let status = Arc::new(TargetStatus::new("order"));
        let index = 7;
        let task = tokio::spawn(async move {
            let stored: Vec<u8> = Vec::new();
            // Indexing past the end, as a bad stored key once did.
            let _ = stored[index];
        });
        watch(task, status.clone()).await;
        match status.snapshot().state {
            State::Stopped { error } => {
                assert!(
                    error.starts_with("internal error: index out of bounds"),
                    "{error}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}

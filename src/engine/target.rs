//! Runs one target: its own binlog reader (own server id, own position) feeding its own writer
//! through a bounded channel, so a slow or dead target never holds back the others, and each
//! catches up from its own checkpoint. One attempt has three phases: `prepare` (lock the
//! target, plan its replicas against the mappings), `resolve_start` (the checkpoint, or the
//! initial copy that gives one, or the configured start) and `stream` (reader and writer,
//! with re-copies served beside them).
//!
//! # Restart discipline
//! Any error ends both halves. The writer rolls back what is not whole, and the next attempt
//! starts again from the checkpoint committed in the target. Transient errors (network,
//! deadlocks, a target or source that is down) back off and retry; definite ones (a purged
//! binlog position, a constraint the replica rejects) stop the target with the reason and its
//! class in the status, without a crash loop.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use mysql_async::{Conn, Opts};
use sqlx::mysql::MySqlConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::copy::{self, CopyJob};
use super::status::{Failure, State, TargetStatus};
use crate::config::{
    ApplyConfig, Config, CopyConfig, SourceConfig, StandbyConfig, TargetConfig, VerifyConfig,
};
use crate::model::definition::SourceDefinition;
use crate::model::event::{event_channel, EventReceiver};
use crate::model::name::TableName;
use crate::model::position::{Checkpoint, Floors, GtidSet, StartAt};
use crate::model::table::{Phase, ReplicaRecord, TableState};
use crate::model::ErrorClass;
use crate::routing::mapping::Router;
use crate::routing::replicas::{self, ReplicaPlan};
use crate::sink::apply::{Applier, ApplyExit, Command};
use crate::sink::lock::{self, Acquired, Fence, TargetLock};
use crate::sink::{checkpoint, lanes, replica, target, SinkError, SourceCatalog};
use crate::source::conn::{configured_opts, connect};
use crate::source::info::SourceInfo;
use crate::source::reader::{BinlogReader, ReaderOptions};
use crate::source::{catalog, snapshot, SourceError};

/// An error of one attempt, from either side.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("target: {0}")]
    Sink(#[from] SinkError),
}

impl PipelineError {
    /// A lock wait timeout or deadlock on the target.
    fn is_lock_conflict(&self) -> bool {
        matches!(self, PipelineError::Sink(e) if matches!(e.code(), Some(1205 | 1213)))
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            PipelineError::Source(e) => e.is_retryable(),
            PipelineError::Sink(e) => e.is_retryable(),
        }
    }

    /// The error as the status shows it: its class, message and failed statement.
    pub fn failure(&self) -> Failure {
        let statement = match self {
            PipelineError::Sink(SinkError::Db { statement, .. }) => Some(statement.clone()),
            _ => None,
        };
        Failure {
            class: ErrorClass::of(self.is_retryable()),
            message: self.to_string(),
            statement,
        }
    }
}

/// What one target runs with: its slice of the configuration. Two equal specs run the same
/// pipeline, so a reload restarts a target only when its spec changed.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    /// The target's place in the configuration; its binlog connection uses
    /// `source.server_id + index`.
    pub index: usize,
    pub pipeline: String,
    pub source: SourceConfig,
    pub target: TargetConfig,
    pub router: Router,
    pub apply: ApplyConfig,
    pub copy: CopyConfig,
    pub verify: VerifyConfig,
    pub standby: StandbyConfig,
}

impl TargetSpec {
    /// One spec per target of `config`, in its order.
    pub fn all(config: &Config) -> Vec<TargetSpec> {
        config
            .targets
            .iter()
            .enumerate()
            .map(|(index, t)| TargetSpec {
                index,
                pipeline: config.pipeline.clone(),
                source: config.source.clone(),
                target: t.clone(),
                router: Router::for_target(config, &t.name),
                apply: config.apply.clone(),
                copy: config.copy.clone(),
                verify: config.verify.clone(),
                standby: config.standby.clone(),
            })
            .collect()
    }

    pub fn name(&self) -> &str {
        &self.target.name
    }

    pub fn source_opts(&self) -> Result<Opts, SourceError> {
        configured_opts(&self.source)
    }
}

/// Waits for a target's task. A panic is a bug, but it stops only its target, and says so in
/// the target's status, where operators look.
pub(super) async fn watch(task: tokio::task::JoinHandle<()>, status: Arc<TargetStatus>) {
    if let Err(e) = task.await {
        let error = match e.try_into_panic() {
            Ok(panic) => crate::model::panic_message(panic.as_ref()),
            Err(e) => e.to_string(),
        };
        tracing::error!(target = %status.snapshot().target, %error, "target pipeline crashed (a rowsync bug); restart rowsync");
        status.set_state(State::Stopped(Failure {
            class: ErrorClass::Definite,
            message: format!("internal error: {error}"),
            statement: None,
        }));
    }
}

/// Runs one target with retries until cancelled or stopped by a definite error.
pub(super) async fn run_target(
    spec: Arc<TargetSpec>,
    status: Arc<TargetStatus>,
    cancel: CancellationToken,
) {
    let name = spec.name();
    let mut backoff = Duration::from_millis(500);
    // Lanes for the next attempt: one after lanes met on a lock (see `sink::lanes`).
    let mut lanes = spec.apply.lanes;
    loop {
        let started = Instant::now();
        status.attempt();
        let result = run_once(&spec, &status, &cancel, lanes).await;
        lanes = match &result {
            Err(e) if e.is_lock_conflict() && lanes > 1 => {
                tracing::warn!(target = %name, error = %e, "the apply lanes met on a lock the write sets did not foresee (a replica with unique keys or triggers of its own?); the next attempt applies on one lane");
                1
            }
            _ => spec.apply.lanes,
        };
        match result {
            Ok(Outcome::Restart) => {
                tracing::info!(target = %name, "restarting the target's stream from its floors");
                backoff = Duration::from_millis(500);
            }
            Ok(Outcome::Shutdown) => {
                status.set_state(State::ShutDown);
                tracing::info!(target = %name, "target pipeline shut down");
                return;
            }
            Err(e) if e.is_retryable() => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(target = %name, error = %e, retry_in = ?backoff, "target pipeline failed; retrying");
                status.failed(e.failure());
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
                tracing::error!(target = %name, error = %e, "target pipeline stopped; fix the cause, then reload (SIGHUP) or restart rowsync");
                status.failed(e.failure());
                cancel.cancelled().await;
                return;
            }
        }
    }
}

/// How one run of a target's pipeline ended without error.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Shutdown,
    /// A table was re-copied: start again, so the stream catches it up from its floor.
    Restart,
}

async fn run_once(
    spec: &TargetSpec,
    status: &Arc<TargetStatus>,
    cancel: &CancellationToken,
    lanes: usize,
) -> Result<Outcome, PipelineError> {
    let Some(lock) = stand_by(spec, status, cancel).await? else {
        return Ok(Outcome::Shutdown);
    };
    let fence = lock.fence();
    let release = CancellationToken::new();
    let mut keeper = tokio::spawn(lock.keep(release.clone()));
    let attempt = cancel.child_token();
    let pipeline = locked_run(spec, fence, status, &attempt, lanes);
    tokio::pin!(pipeline);
    tokio::select! {
        result = &mut pipeline => {
            release.cancel();
            let _ = (&mut keeper).await;
            result
        }
        kept = &mut keeper => {
            // Lost: drop the attempt at once (its sessions close, rolling back what is open);
            // the fence kept it from committing anything since.
            attempt.cancel();
            let reason = match kept {
                Ok(Err(reason)) => reason,
                Ok(Ok(())) => "released".into(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(target = %spec.name(), %reason, "lost the target's lock; standing by again");
            Err(SinkError::Fenced(format!("lost the target's lock: {reason}")).into())
        }
    }
}

/// Waits until this process holds the target's lock (`None`: cancelled meanwhile), showing
/// who holds it in the status and the log while it stands by.
async fn stand_by(
    spec: &TargetSpec,
    status: &TargetStatus,
    cancel: &CancellationToken,
) -> Result<Option<TargetLock>, PipelineError> {
    let mut announced: Option<String> = None;
    loop {
        let attempt = lock::acquire(
            &spec.target,
            &spec.pipeline,
            spec.standby.takeover,
            Duration::from_secs(5),
        );
        let acquired = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            acquired = attempt => acquired?,
        };
        match acquired {
            Acquired::Held(lock) => {
                if announced.is_some() {
                    tracing::info!(target = %spec.name(), "took over the target's lock; this process is now active");
                    status.set_state(State::Starting);
                }
                return Ok(Some(lock));
            }
            Acquired::Busy { holder } => {
                if announced.as_ref() != Some(&holder) {
                    tracing::info!(target = %spec.name(), %holder, "standing by: another rowsync process holds the target's lock; taking over when it stops");
                }
                status.standing_by(holder.clone());
                announced = Some(holder);
            }
        }
    }
}

/// One attempt with the target's lock held.
async fn locked_run(
    spec: &TargetSpec,
    fence: Fence,
    status: &Arc<TargetStatus>,
    cancel: &CancellationToken,
    lanes: usize,
) -> Result<Outcome, PipelineError> {
    let mut p = prepare(spec, fence).await?;
    make_replicas(&mut p).await?;
    request_copies(&mut p).await?;
    let Some(start) = resolve_start(&mut p, status, cancel).await? else {
        return Ok(Outcome::Shutdown);
    };
    if !finish_recopies(&mut p, status, cancel).await? {
        return Ok(Outcome::Shutdown);
    }
    stream(p, start, status, cancel, lanes).await
}

/// A target locked for this attempt, with its replicas planned.
struct Prepared<'a> {
    spec: &'a TargetSpec,
    /// Checked before every commit (see `sink::lock`).
    fence: Fence,
    opts: Opts,
    conn: MySqlConnection,
    src: Option<Conn>,
    info: SourceInfo,
    /// Source tables the target's mappings select, as they exist now.
    selected: Vec<TableName>,
    /// The stored checkpoint and its phase.
    loaded: Option<(Checkpoint, Phase)>,
    records: Vec<ReplicaRecord>,
    /// Tables being re-copied, or stopped: their copy makes their replicas.
    busy: HashSet<TableName>,
    /// Tables the stream does not apply.
    skip: HashSet<TableName>,
    plan: ReplicaPlan,
}

impl Prepared<'_> {
    /// Whether this attempt copies every table first (the initial copy, begun or not).
    fn initial_copy(&self) -> bool {
        match &self.loaded {
            None => self.spec.source.start == StartAt::Snapshot,
            Some((_, phase)) => *phase == Phase::Copying,
        }
    }
}

/// What a copy into `spec`'s target needs.
fn copy_job<'b>(
    spec: &'b TargetSpec,
    opts: &'b Opts,
    info: &'b SourceInfo,
    skip: &'b HashSet<TableName>,
    fence: &'b Fence,
    status: &'b TargetStatus,
    cancel: &'b CancellationToken,
) -> CopyJob<'b> {
    CopyJob {
        pipeline: &spec.pipeline,
        source: opts,
        info,
        router: &spec.router,
        skip,
        target: &spec.target,
        copy: &spec.copy,
        batch_rows: spec.apply.batch_rows,
        status,
        cancel,
        fence: Some(fence),
        session_timeout: Some(spec.standby.takeover),
    }
}

/// Locks the target for this process, reads the source, and plans the replicas: which are
/// copied, which conflict, which no mapping fills any more.
async fn prepare(spec: &TargetSpec, fence: Fence) -> Result<Prepared<'_>, PipelineError> {
    let opts = spec.source_opts()?;
    let pipeline = &spec.pipeline;
    let mut conn = target::connect(&spec.target).await?;
    checkpoint::ensure_tables(&mut conn).await?;
    // The lock is ours (`run_once`); a transaction of the process that held it before may
    // still be ending: read the checkpoint it leaves.
    checkpoint::settle(&mut conn, pipeline).await?;
    let mut skip: HashSet<_> = checkpoint::stopped_tables(&mut conn, pipeline)
        .await?
        .into_iter()
        .map(|s| s.table)
        .collect();
    let mut src = connect(&opts).await?;
    let info = SourceInfo::read(&mut src).await?;
    let selected = catalog::tables(&mut src, |t| spec.router.selects(t)).await?;
    let loaded = checkpoint::load_with_phase(&mut conn, pipeline).await?;
    if !checkpoint::tracks_replicas(&mut conn, pipeline).await? {
        // First start of this pipeline, or the first since an upgrade: in one transaction,
        // what an older rowsync held is adopted, and the target records replicas from here on.
        let adopted = match loaded {
            Some(_) => held_replicas(&mut conn, pipeline, &spec.router, &selected).await?,
            None => Vec::new(),
        };
        checkpoint::start_tracking_replicas(&mut conn, pipeline, &adopted).await?;
    }
    let records = checkpoint::replicas(&mut conn, pipeline).await?;
    let busy: HashSet<TableName> = checkpoint::table_floors(&mut conn, pipeline)
        .await?
        .into_iter()
        .filter(|f| f.state == TableState::Copying)
        .map(|f| f.table)
        .chain(skip.iter().cloned())
        .collect();
    // A table being re-copied is planned too: a shape changed since its copy began starts
    // that copy over.
    let mut plan = replicas::plan(&spec.router, &selected, &|t| skip.contains(t), &records);
    for replica in &plan.forget {
        tracing::info!(target = %spec.name(), replica = %replica, "no mapping fills this replica table any more; it is kept as it is");
        checkpoint::forget_replica(&mut conn, pipeline, replica).await?;
    }
    let since = loaded.as_ref().map(|(c, _)| c);
    for (table, reason) in std::mem::take(&mut plan.conflicts) {
        let stop =
            checkpoint::stop_outside_stream(&mut conn, pipeline, table, since, reason).await?;
        skip.insert(stop.table);
    }
    Ok(Prepared {
        spec,
        fence,
        opts,
        conn,
        src: Some(src),
        info,
        selected,
        loaded,
        records,
        busy,
        skip,
        plan,
    })
}

/// Makes the replicas of the tables that stream as they are now. Tables waiting for a copy
/// (or in one, the initial copy included) get their replicas made by it, as the table is when
/// it is copied.
async fn make_replicas(p: &mut Prepared<'_>) -> Result<(), PipelineError> {
    let Some(mut src) = p.src.take() else {
        return Ok(());
    };
    let copying = p.initial_copy();
    for table in p.selected.clone() {
        if copying || p.busy.contains(&table) || p.skip.contains(&table) {
            continue;
        }
        let def = match catalog::definition(&mut src, &table).await {
            Ok(def) => def,
            // Dropped since it was listed: the stream says what became of it.
            Err(e) if e.is_missing_table() => continue,
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = make_table_replicas(p, &table, &def).await? {
            if e.is_retryable() {
                return Err(e.into());
            }
            // A replica that cannot be used stops its table, not the target.
            let since = p.loaded.as_ref().map(|(c, _)| c);
            let stop = checkpoint::stop_outside_stream(
                &mut p.conn,
                &p.spec.pipeline,
                table,
                since,
                e.to_string(),
            )
            .await?;
            p.skip.insert(stop.table);
        }
    }
    Ok(())
}

/// Makes or checks the replicas of one streaming table; a replica dropped by hand is planned
/// for a copy instead (made empty, it would lack every older row). The inner error is a
/// replica that cannot be made or used (which stops the table); the outer one, any other.
async fn make_table_replicas(
    p: &mut Prepared<'_>,
    table: &TableName,
    def: &SourceDefinition,
) -> Result<Result<(), SinkError>, SinkError> {
    for mapping in p.spec.router.mappings_for(table) {
        let replica_name = mapping.replica_name(table);
        let ours = p
            .records
            .iter()
            .any(|r| r.replica == replica_name && &r.source == table);
        if ours
            && replica::columns(&mut p.conn, &replica_name)
                .await?
                .is_empty()
        {
            if !p.plan.copy.iter().any(|(t, _)| t == table) {
                p.plan.copy.push((
                    table.clone(),
                    format!("its replica table `{replica_name}` is missing (dropped by hand?)"),
                ));
            }
            continue;
        }
        let made = match replica::ensure_replica(&mut p.conn, def, mapping, None).await {
            Ok(()) if !ours => replica::check_adopted(&mut p.conn, def, mapping).await,
            other => other,
        };
        if made.is_err() {
            return Ok(made);
        }
    }
    Ok(Ok(()))
}

/// A replica that is new or changed shape is copied before it streams: within the initial
/// copy when that is still under way, else online like a re-copy (skipped until then).
async fn request_copies(p: &mut Prepared<'_>) -> Result<(), PipelineError> {
    let copying = p.initial_copy();
    for (table, reason) in &p.plan.copy {
        match &p.loaded {
            Some((_, Phase::Streaming)) => {
                tracing::info!(target = %p.spec.name(), table = %table, %reason, "copying the table online");
                checkpoint::mark_table(
                    &mut p.conn,
                    &p.spec.pipeline,
                    table,
                    TableState::RecopyRequested,
                    None,
                    reason,
                )
                .await?;
                p.skip.insert(table.clone());
            }
            Some((_, Phase::Copying)) => {
                checkpoint::reset_copy_progress(&mut p.conn, &p.spec.pipeline, table).await?;
            }
            // A fresh target: its initial copy records every replica it fills, and a target
            // that starts streaming without a copy starts with them as they are.
            None if copying => {}
            None => {
                for record in replicas::records_for(&p.spec.router, table) {
                    checkpoint::record_replica(&mut p.conn, &p.spec.pipeline, &record).await?;
                }
            }
        }
    }
    Ok(())
}

/// Where the stream starts: the stored checkpoint, the end of the initial copy (run or
/// resumed here), or the configured start of a new target. `None` when cancelled.
async fn resolve_start(
    p: &mut Prepared<'_>,
    status: &TargetStatus,
    cancel: &CancellationToken,
) -> Result<Option<Checkpoint>, PipelineError> {
    let copying = p.initial_copy();
    let resume = match p.loaded.take() {
        Some((c, Phase::Streaming)) => return Ok(Some(c)),
        Some((c, Phase::Copying)) => Some(c),
        None if copying => None,
        None => return new_target_start(p).await.map(Some),
    };
    let job = copy_job(p.spec, &p.opts, &p.info, &p.skip, &p.fence, status, cancel);
    copy::run(&mut p.conn, &job, resume).await
}

/// A target without a checkpoint that does not copy: it starts at the configured position,
/// stored before streaming, so a crash before the first commit resumes there, not at a later
/// "current".
async fn new_target_start(p: &mut Prepared<'_>) -> Result<Checkpoint, PipelineError> {
    let mut src = connect(&p.opts).await?;
    let c = p.info.resolve_start(&mut src, &p.spec.source.start).await?;
    // After the position is fixed, so a branch prepared before it shows.
    snapshot::check_no_prepared_xa(&mut src).await?;
    p.fence.begin(&mut p.conn).await?;
    checkpoint::store(&mut p.conn, &p.spec.pipeline, &c).await?;
    target::exec(&mut p.conn, "COMMIT").await?;
    tracing::info!(target = %p.spec.name(), position = %c.position, gtid = ?c.gtid.as_ref().map(|g| g.to_string()), "new target starts here");
    Ok(c)
}

/// Tables whose re-copy was under way finish it first; a copy that has to wait for prepared XA
/// branches is done online later. `false` when cancelled.
async fn finish_recopies(
    p: &mut Prepared<'_>,
    status: &TargetStatus,
    cancel: &CancellationToken,
) -> Result<bool, PipelineError> {
    let pipeline = &p.spec.pipeline;
    let no_skip = HashSet::new();
    let job = copy_job(p.spec, &p.opts, &p.info, &no_skip, &p.fence, status, cancel);
    let mut waiting = Vec::new();
    for f in checkpoint::table_floors(&mut p.conn, pipeline).await? {
        if f.state != TableState::Copying {
            continue;
        }
        match copy::recopy(&mut p.conn, &job, &f.table).await {
            Ok(copy::Recopy::Cancelled) => return Ok(false),
            Ok(_) => {}
            // Not a reason to hold back the other tables.
            Err(PipelineError::Source(e @ SourceError::PreparedXa { .. })) => {
                checkpoint::mark_table(
                    &mut p.conn,
                    pipeline,
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
    p.skip.extend(waiting);
    Ok(true)
}

/// Where each table's applied history ends: the checkpoint, the floors of tables catching up
/// after a re-copy, and those of unresolved XA branches.
async fn floors(p: &mut Prepared<'_>, start: &Checkpoint) -> Result<Floors, PipelineError> {
    let flavor = p.info.flavor();
    let at = |position, gtid: Option<String>| -> Result<Checkpoint, PipelineError> {
        Ok(Checkpoint {
            position,
            gtid: gtid
                .map(|g| GtidSet::parse_for(flavor, &g))
                .transpose()
                .map_err(SourceError::from)?,
            source: start.source.clone(),
            source_time: 0,
        })
    };
    let mut floors = Floors::new(start.clone());
    for f in checkpoint::table_floors(&mut p.conn, &p.spec.pipeline).await? {
        if let Some(position) = f.position {
            floors.tables.insert(f.table, at(position, f.gtid)?);
        }
    }
    for (position, gtid) in checkpoint::xa_floors(&mut p.conn, &p.spec.pipeline).await? {
        floors.xa.push(at(position, gtid)?);
    }
    Ok(floors)
}

/// Streams from `start` until cancelled, an error, or a re-copy that needs a restart.
async fn stream(
    mut p: Prepared<'_>,
    start: Checkpoint,
    status: &Arc<TargetStatus>,
    cancel: &CancellationToken,
    lanes: usize,
) -> Result<Outcome, PipelineError> {
    let spec = p.spec;
    // Tables whose copy (initial or re-copy) stopped are skipped like every stopped table.
    let stopped = checkpoint::stopped_tables(&mut p.conn, &p.spec.pipeline).await?;
    p.skip.extend(stopped.iter().map(|s| s.table.clone()));
    let floors = floors(&mut p, &start).await?;
    status.started(&start, stopped);
    let Prepared {
        opts,
        conn,
        info,
        skip,
        fence,
        ..
    } = p;
    // The writer's own session holds no transaction (lanes do), and may wait long for them.
    let lanes = open_lanes(spec, lanes).await?;

    let router = Arc::new(spec.router.clone());
    let reader_cancel = cancel.child_token();
    let (mut rx, reader_task) =
        start_reader(spec, &opts, &router, &skip, &floors, &reader_cancel, status);

    let (commands, command_rx) = mpsc::channel(4);
    let catalog = Arc::new(Catalog { opts: opts.clone() });
    let mut applier = Applier::new(
        conn,
        catalog,
        spec.pipeline.clone(),
        router,
        spec.apply.clone(),
        status.clone(),
        skip,
        floors,
    )
    .await?
    .with_commands(command_rx)
    .with_source_time_zone(info.time_zone.clone())
    .with_fence(fence.clone(), spec.standby.takeover / 3)
    .with_lanes(lanes);
    // The writer stops at a boundary when cancelled, or when a re-copy asks for a restart.
    let restart = cancel.child_token();
    let apply = async {
        let result = applier.run(&mut rx, &restart).await;
        restart.cancel();
        result
    };
    let no_skip = HashSet::new();
    let job = copy_job(spec, &opts, &info, &no_skip, &fence, status, &restart);
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

/// The writer's `lanes` sessions (see `sink::lanes`), whose open groups must not outlive the
/// lock of a frozen process (see `sink::lock`): `wait_timeout` is the takeover time, and lanes
/// ping while idle.
async fn open_lanes(spec: &TargetSpec, lanes: usize) -> Result<Vec<MySqlConnection>, SinkError> {
    let mut conns = Vec::new();
    for _ in 0..lanes {
        let mut conn = target::connect(&spec.target).await?;
        target::set_wait_timeout(&mut conn, spec.standby.takeover).await?;
        if !lanes::prepare_session(&mut conn).await? {
            tracing::warn!(target = %spec.target.name, "the target logs its binlog in STATEMENT format, which refuses row writes at READ COMMITTED: applying on one lane");
            return Ok(vec![conn]);
        }
        conns.push(conn);
    }
    Ok(conns)
}

/// Starts the target's binlog reader from where every table has what it lacks.
fn start_reader(
    spec: &TargetSpec,
    opts: &Opts,
    router: &Arc<Router>,
    skip: &HashSet<TableName>,
    floors: &Floors,
    cancel: &CancellationToken,
    status: &TargetStatus,
) -> (EventReceiver, JoinHandle<Result<(), SourceError>>) {
    let selects = {
        let router = router.clone();
        Arc::new(move |t: &TableName| router.selects(t))
    };
    let reader = BinlogReader::new(
        ReaderOptions {
            opts: opts.clone(),
            server_id: spec.source.server_id + spec.index as u32,
            heartbeat: spec.source.heartbeat(),
            read_timeout: spec.source.read_timeout(),
        },
        selects,
        skip.clone(),
    )
    .with_floors(floors.clone())
    .with_bytes_counter(status.bytes_counter());
    let (tx, rx) = event_channel(spec.apply.queue_events);
    status.streaming_through(rx.backlog());
    let task = tokio::spawn(reader.run(floors.start(), tx, cancel.clone()));
    (rx, task)
}

/// The source's catalog as the writer reads it: one connection per question, which is rare
/// (a `CREATE TABLE … LIKE` or `… SELECT` of a selected table).
struct Catalog {
    opts: Opts,
}

impl SourceCatalog for Catalog {
    fn definition<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<SourceDefinition, SinkError>> {
        Box::pin(async move {
            let read = async {
                let mut src = connect(&self.opts).await?;
                catalog::definition(&mut src, table).await
            };
            read.await.map_err(|e: SourceError| SinkError::Catalog {
                table: table.clone(),
                class: ErrorClass::of(e.is_retryable()),
                message: e.to_string(),
            })
        })
    }
}

/// The replicas a target written by a rowsync that did not record them yet holds: the
/// tables it copied (or registered as streamed from the start), or is re-copying, keep their
/// replicas as they are; tables it did not hold are copied as new.
async fn held_replicas(
    conn: &mut MySqlConnection,
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

/// Carries out re-copies requested while the stream runs (`rowsync resync` or the engine's
/// `Recopy` command write the request into the target): the writer stops applying the table
/// at a boundary, the table is copied while the others keep streaming, and then the pipeline
/// restarts from its floors. Returns whether a table was re-copied.
async fn serve_recopies(
    job: &CopyJob<'_>,
    commands: &mpsc::Sender<Command>,
    stop: &CancellationToken,
) -> Result<bool, PipelineError> {
    let mut conn = job.connect().await?;
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
            State::Stopped(failure) => {
                assert_eq!(failure.class, ErrorClass::Definite);
                assert!(
                    failure
                        .message
                        .starts_with("internal error: index out of bounds"),
                    "{failure}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}

//! The initial copy of a new target: every selected table, read from one consistent snapshot
//! of the source, written in key-ordered chunks, then the stream from the snapshot's position.
//!
//! # Why the result is consistent
//! The snapshot reads the source as of one binlog position P (see `source::snapshot`). The
//! stream of this target starts at P only after the copy has finished, so no copied chunk can
//! overwrite a newer streamed change. The replica equals the source as of P once the copy
//! ends, and follows it from there.
//!
//! # Resuming after a crash
//! Each chunk commits in one target transaction with the table's progress (`rowsync_copy`:
//! last key, rows copied), and the position the stream will start from is stored first, with
//! phase `copying`. After a crash the snapshot is gone; the copy opens a new one at P2 ≥ P and
//! continues after the last committed key, so rows before it were read at P and rows after at
//! P2. The stream then starts from the stored, earlier P: replaying P..P2 with full row
//! images converges every key to its state at P2 (an upsert or delete of a key is idempotent,
//! and the changes replay in order), so the replica is consistent again once the stream has
//! passed P2. Nothing is lost and no chunk is copied twice.
//!
//! A table copied from scratch is emptied first (inside the transaction that records its
//! start), so rows left by an earlier attempt or by hand cannot survive a copy.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::Opts;
use sqlx::mysql::MySqlConnection;
use tokio_util::sync::CancellationToken;

use super::status::TargetStatus;
use super::target::PipelineError;
use crate::config::{CopyConfig, TargetConfig};
use crate::model::name::TableName;
use crate::model::position::{Checkpoint, GtidSet};
use crate::model::table::{CopyProgress, Phase, TableState};
use crate::model::value::{decode_key, encode_key, Value};
use crate::routing::mapping::{Projection, Router};
use crate::routing::replicas;
use crate::sink::lock::Fence;
use crate::sink::writer::{Op, RowWriter};
use crate::sink::{self, checkpoint, replica, target, Observer, SinkError};
use crate::source::catalog;
use crate::source::conn::connect;
use crate::source::info::SourceInfo;
use crate::source::snapshot::{CopyTable, Snapshot};
use crate::source::SourceError;

/// What the copy needs from its caller.
pub struct CopyJob<'a> {
    pub pipeline: &'a str,
    pub source: &'a Opts,
    pub info: &'a SourceInfo,
    pub router: &'a Router,
    pub skip: &'a HashSet<TableName>,
    pub target: &'a TargetConfig,
    /// Chunk sizes, table and writer parallelism.
    pub copy: &'a CopyConfig,
    pub batch_rows: usize,
    pub status: &'a TargetStatus,
    pub cancel: &'a CancellationToken,
    /// Checked before each commit: the target's lock is still this process's.
    pub fence: Option<&'a Fence>,
    /// `wait_timeout` of the copy's target sessions, so a frozen process's open chunk
    /// does not outlive its lock (see `sink::lock`).
    pub session_timeout: Option<Duration>,
}

/// Copies what is left to copy and returns the position the stream starts from, or `None`
/// when cancelled (the committed chunks stay; a restart resumes after them).
pub async fn run(
    conn: &mut MySqlConnection,
    job: &CopyJob<'_>,
    resume: Option<Checkpoint>,
) -> Result<Option<Checkpoint>, PipelineError> {
    // The first snapshot fixes where the stream starts (unless an earlier attempt did).
    let first = Snapshot::open(job.source, job.info).await?;
    let start = match resume {
        Some(earlier) => {
            tracing::info!(from = %earlier.position, snapshot = %first.checkpoint.position, "resuming the initial copy");
            earlier
        }
        None => {
            let start = first.checkpoint.clone();
            job.fenced(conn).await?;
            checkpoint::store_phase(conn, job.pipeline, &start, Phase::Copying).await?;
            target::exec(conn, "COMMIT").await?;
            tracing::info!(position = %start.position, gtid = ?start.gtid.as_ref().map(|g| g.to_string()), "initial copy starts at a consistent snapshot");
            start
        }
    };
    let progress = checkpoint::copy_progress(conn, job.pipeline).await?;
    let mut listing = connect(job.source).await?;
    let tables = catalog::tables(&mut listing, |t| job.router.selects(t)).await?;
    drop(listing);
    let queue: Mutex<VecDeque<TableName>> = Mutex::new(
        tables
            .into_iter()
            .filter(|t| !job.skip.contains(t))
            .filter(|t| !progress.iter().any(|p| &p.table == t && p.done))
            .collect(),
    );
    // Tables copy in parallel, each worker in its own snapshot on its own connections.
    // Every snapshot is at or after `start`, so the stream from `start` brings all of them to
    // one boundary (see the module doc).
    let workers = job
        .copy
        .parallel_tables
        .max(1)
        .min(queue.lock().map(|q| q.len()).unwrap_or(1).max(1));
    let mut snapshots = vec![first];
    for _ in 1..workers {
        snapshots.push(Snapshot::open(job.source, job.info).await?);
    }
    let results = futures_util::future::join_all(
        snapshots
            .into_iter()
            .map(|snapshot| worker(snapshot, job, &queue, &progress, &start)),
    )
    .await;
    let mut finished = true;
    for r in results {
        finished &= r?;
    }
    if !finished {
        return Ok(None);
    }
    job.check_fence(conn).await?;
    replica::add_deferred_keys(conn, job.pipeline).await?;
    job.fenced(conn).await?;
    checkpoint::store_phase(conn, job.pipeline, &start, Phase::Streaming).await?;
    target::exec(conn, "COMMIT").await?;
    tracing::info!("initial copy done; streaming from {}", start.position);
    Ok(Some(start))
}

impl CopyJob<'_> {
    /// Fails when the target's lock is no longer this process's (before DDL, which commits
    /// by itself).
    async fn check_fence(&self, conn: &mut MySqlConnection) -> Result<(), SinkError> {
        sink::lock::check(self.fence, conn).await
    }

    /// Opens a transaction that writes only while the lock is this process's.
    async fn fenced(&self, conn: &mut MySqlConnection) -> Result<(), SinkError> {
        match self.fence {
            Some(fence) => fence.begin(conn).await,
            None => target::exec(conn, "BEGIN").await,
        }
    }

    /// A target session for the copy's writes.
    pub(super) async fn connect(&self) -> Result<MySqlConnection, SinkError> {
        let mut conn = target::connect(self.target).await?;
        if let Some(timeout) = self.session_timeout {
            target::set_wait_timeout(&mut conn, timeout).await?;
        }
        Ok(conn)
    }
}

/// Copies tables from `queue` until it is empty; `false` when cancelled.
async fn worker(
    mut snapshot: Snapshot,
    job: &CopyJob<'_>,
    queue: &Mutex<VecDeque<TableName>>,
    progress: &[CopyProgress],
    start: &Checkpoint,
) -> Result<bool, PipelineError> {
    let mut conn = job.connect().await?;
    let mut writer = RowWriter::new(&mut conn, job.batch_rows).await?;
    loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(name) = next else { break };
        let table = snapshot.table(&name).await?;
        let previous = progress.iter().find(|p| p.table == name);
        let end = copy_table(
            &mut conn,
            &mut snapshot,
            &mut writer,
            job,
            &table,
            previous,
            start,
        )
        .await?;
        if end == CopyEnd::Cancelled {
            return Ok(false);
        }
    }
    snapshot.close().await?;
    Ok(true)
}

/// Re-copies one table into this target: from a new snapshot (or, after a crash, continuing
/// the one begun), marked `copying` so the stream skips it meanwhile, then `catching_up` from
/// the snapshot's position, which the stream takes from there (see `model::position::Floors`).
/// Returns that floor, or why there is none.
pub async fn recopy(
    conn: &mut MySqlConnection,
    job: &CopyJob<'_>,
    table: &TableName,
) -> Result<Recopy, PipelineError> {
    let mut snapshot = Snapshot::open(job.source, job.info).await?;
    let begun = checkpoint::table_floors(conn, job.pipeline)
        .await?
        .into_iter()
        .find(|f| &f.table == table && f.state == TableState::Copying);
    let floor = match begun.and_then(|f| f.position.map(|p| (p, f.gtid))) {
        // Resuming: the earlier snapshot's position stays the floor (see the module doc).
        Some((position, gtid)) => {
            tracing::info!(table = %table, floor = %position, "resuming the re-copy");
            Checkpoint {
                position,
                gtid: gtid
                    .map(|g| GtidSet::parse_for(job.info.flavor(), &g))
                    .transpose()
                    .map_err(SourceError::from)?,
                source: snapshot.checkpoint.source.clone(),
                source_time: 0,
            }
        }
        None => {
            let floor = snapshot.checkpoint.clone();
            checkpoint::reset_copy_progress(conn, job.pipeline, table).await?;
            checkpoint::mark_table(
                conn,
                job.pipeline,
                table,
                TableState::Copying,
                Some(&floor),
                "",
            )
            .await?;
            floor
        }
    };
    let previous = checkpoint::copy_progress(conn, job.pipeline)
        .await?
        .into_iter()
        .find(|p| &p.table == table);
    let copy = snapshot.table(table).await?;
    let mut writer = RowWriter::new(conn, job.batch_rows).await?;
    match copy_table(
        conn,
        &mut snapshot,
        &mut writer,
        job,
        &copy,
        previous.as_ref(),
        &floor,
    )
    .await?
    {
        CopyEnd::Done => {}
        CopyEnd::Cancelled => return Ok(Recopy::Cancelled),
        CopyEnd::Stopped(reason) => return Ok(Recopy::Stopped(reason)),
    }
    snapshot.close().await?;
    job.check_fence(conn).await?;
    replica::add_deferred_keys(conn, job.pipeline).await?;
    checkpoint::mark_table(
        conn,
        job.pipeline,
        table,
        TableState::CatchingUp,
        Some(&floor),
        "",
    )
    .await?;
    tracing::info!(table = %table, floor = %floor.position, "table re-copied; the stream catches it up from its snapshot");
    Ok(Recopy::Done(floor))
}

/// How a re-copy ended.
#[derive(Debug)]
pub enum Recopy {
    /// Copied; the stream catches the table up from this floor.
    Done(Checkpoint),
    /// The table cannot be copied and stopped, for this reason.
    Stopped(String),
    /// Cancelled; the committed chunks stay and a restart resumes after them.
    Cancelled,
}

/// How the copy of one table ended.
#[derive(Debug, PartialEq, Eq)]
enum CopyEnd {
    Done,
    /// A definite error stopped the table (recorded, with its reason); the others go on.
    Stopped(String),
    Cancelled,
}

/// Copies one table chunk by chunk. A definite error (a filter that cannot be evaluated, a
/// value the replica rejects, the table gone) stops only this table, as in the stream.
async fn copy_table(
    conn: &mut MySqlConnection,
    snapshot: &mut Snapshot,
    writer: &mut RowWriter,
    job: &CopyJob<'_>,
    table: &CopyTable,
    previous: Option<&CopyProgress>,
    start: &Checkpoint,
) -> Result<CopyEnd, PipelineError> {
    match copy_chunks(conn, snapshot, writer, job, table, previous, start).await {
        Ok(end) => Ok(end),
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => {
            // The failed chunk's transaction may still be open on this connection.
            let _ = sink::copy::abandon(conn).await;
            let reason = format!("the copy failed: {e}");
            stop_copied_table(conn, job, &table.name, start, reason.clone()).await?;
            Ok(CopyEnd::Stopped(reason))
        }
    }
}

/// Records that `table` stopped during its copy, at the copy's start position.
async fn stop_copied_table(
    conn: &mut MySqlConnection,
    job: &CopyJob<'_>,
    table: &TableName,
    start: &Checkpoint,
    reason: String,
) -> Result<(), PipelineError> {
    let stop =
        checkpoint::stop_outside_stream(conn, job.pipeline, table.clone(), Some(start), reason)
            .await?;
    job.status.table_stopped(stop);
    Ok(())
}

async fn copy_chunks(
    conn: &mut MySqlConnection,
    snapshot: &mut Snapshot,
    writer: &mut RowWriter,
    job: &CopyJob<'_>,
    table: &CopyTable,
    previous: Option<&CopyProgress>,
    start: &Checkpoint,
) -> Result<CopyEnd, PipelineError> {
    let projections: Result<Vec<Arc<Projection>>, _> = job
        .router
        .mappings_for(&table.name)
        .map(|m| {
            Projection::from_columns(
                m,
                &table.name,
                table.column_names(),
                &table.catalog.primary_key,
            )
            .map(Arc::new)
        })
        .collect();
    let projections = match projections {
        Ok(p) => p,
        Err(e) => {
            let reason = e.to_string();
            stop_copied_table(conn, job, &table.name, start, reason.clone()).await?;
            return Ok(CopyEnd::Stopped(reason));
        }
    };
    let (estimate, row_bytes) = snapshot.estimate(&table.name).await?;
    // Chunks of about `chunk_bytes`, so wide rows do not multiply the memory held in flight.
    let chunk_rows = match job.copy.chunk_bytes.checked_div(row_bytes as usize) {
        Some(rows) => rows.clamp(100, job.copy.chunk_rows.max(100)),
        None => job.copy.chunk_rows,
    }
    .max(1);
    let previous = fit_replicas(conn, snapshot, job, table, &projections, previous).await?;
    let progress = match previous {
        Some(p) => p,
        None => {
            let fresh = CopyProgress {
                table: table.name.clone(),
                done: false,
                last_key: None,
                rows_copied: 0,
                rows_estimated: estimate,
            };
            let records = replicas::records_for(job.router, &table.name);
            sink::copy::start_table(conn, job.pipeline, &records, &fresh, job.fence).await?;
            fresh
        }
    };
    tracing::info!(table = %table.name, estimate, already = progress.rows_copied, writers = job.copy.writers, chunk_rows, "copying table");
    let lane = Lane {
        turn: tokio::sync::watch::channel(0u64).0,
        abort: job.cancel.child_token(),
        job,
        table,
        projections: &projections,
    };
    transfer(conn, writer, snapshot, &lane, progress, chunk_rows).await
}

/// Makes the table's replicas fit the table as it is now, and says where its copy resumes:
/// after the stored progress, or (`None`) from the start.
///
/// A replica that cannot take the table as it is now (a column, type or key changed in a way
/// the stream could not follow) is made again from the current definition, and a copy under
/// way then starts over, as it does when the stored key no longer has the key's shape. A
/// replica rowsync did not fill itself is adopted only if it can hold the source's values;
/// it is never dropped.
async fn fit_replicas(
    conn: &mut MySqlConnection,
    snapshot: &mut Snapshot,
    job: &CopyJob<'_>,
    table: &CopyTable,
    projections: &[Arc<Projection>],
    previous: Option<&CopyProgress>,
) -> Result<Option<CopyProgress>, PipelineError> {
    let def = snapshot.definition(&table.name).await?;
    let records = checkpoint::replicas(conn, job.pipeline).await?;
    let mut unfit = Vec::new();
    for (p, m) in projections.iter().zip(job.router.mappings_for(&table.name)) {
        let exists = replica::transactional(conn, &p.replica).await?.is_some();
        let ours = records
            .iter()
            .any(|r| r.replica == p.replica && r.source == table.name);
        if exists && !ours {
            if !replica::fits(conn, p).await? {
                return Err(SinkError::Incompatible {
                    table: p.replica.clone(),
                    reason: format!(
                        "it lacks mapped columns or its primary key is not the source's ({})",
                        def.primary_key.join(", ")
                    ),
                }
                .into());
            }
            replica::check_adopted(conn, &def, m).await?;
        } else if !exists
            || !replica::fits(conn, p).await?
            || replica::check_adopted(conn, &def, m).await.is_err()
        {
            unfit.push(m);
        }
    }
    let key_len = table.catalog.primary_key.len();
    let previous = match previous {
        Some(_) if !unfit.is_empty() => {
            tracing::warn!(table = %table.name, "the replica no longer fits the table; its copy starts over");
            None
        }
        Some(p) if stored_key(p)?.is_some_and(|k| k.len() != key_len) => {
            tracing::warn!(table = %table.name, "the table's primary key changed since its copy began; the copy starts over");
            None
        }
        other => other.cloned(),
    };
    if !unfit.is_empty() {
        // Forgotten first: a crash after the rebuild must not resume into the empty table.
        checkpoint::reset_copy_progress(conn, job.pipeline, &table.name).await?;
        for m in unfit {
            job.check_fence(conn).await?;
            replica::rebuild(conn, &def, m, Some(job.pipeline)).await?;
        }
    }
    Ok(previous)
}

/// The last copied key of `progress`, if any.
fn stored_key(progress: &CopyProgress) -> Result<Option<Vec<Value>>, SinkError> {
    Ok(progress.last_key.as_deref().map(decode_key).transpose()?)
}

/// Copies the rest of the table after `progress`. One reader fetches chunks in key order;
/// `copy.writers` target connections write them at once, each chunk in its own transaction
/// with its progress. The transactions commit in chunk order, so the stored progress always
/// ends a gap-free prefix of the table.
async fn transfer(
    conn: &mut MySqlConnection,
    writer: &mut RowWriter,
    snapshot: &mut Snapshot,
    lane: &Lane<'_>,
    mut progress: CopyProgress,
    chunk_rows: usize,
) -> Result<CopyEnd, PipelineError> {
    let (job, table, abort) = (lane.job, lane.table, &lane.abort);
    let mut extra = Vec::new();
    for _ in 1..job.copy.writers.max(1) {
        let mut c = job.connect().await?;
        let w = RowWriter::new(&mut c, job.batch_rows).await?;
        extra.push((c, w));
    }
    let writers = 1 + extra.len();
    let mut senders = Vec::new();
    let mut lanes = Vec::new();
    for (c, w) in std::iter::once((conn, writer)).chain(extra.iter_mut().map(|(c, w)| (c, w))) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(1);
        senders.push(tx);
        lanes.push(write_chunks(c, w, rx, lane));
    }
    let mut last = stored_key(&progress)?;
    let read = async {
        // Owning the senders: the writers see their channels close when reading stops.
        let senders = senders;
        let mut seq = 0u64;
        while !job.cancel.is_cancelled() && !abort.is_cancelled() {
            let rows = match snapshot.chunk(table, last.as_deref(), chunk_rows).await {
                Ok(rows) => rows,
                Err(e) => {
                    abort.cancel();
                    return Err(PipelineError::from(e));
                }
            };
            if let Some(row) = rows.last() {
                let k: Vec<Value> = table
                    .catalog
                    .primary_key
                    .iter()
                    .map(|&i| row[i].clone())
                    .collect();
                progress.last_key = Some(encode_key(&k));
                last = Some(k);
            }
            progress.rows_copied += rows.len() as u64;
            progress.rows_estimated = progress.rows_estimated.max(progress.rows_copied);
            progress.done = rows.len() < chunk_rows;
            let chunk = Chunk {
                seq,
                rows,
                progress: progress.clone(),
            };
            // A closed channel means that writer stopped; the writers' results say why.
            if senders[seq as usize % writers].send(chunk).await.is_err() || progress.done {
                break;
            }
            seq += 1;
        }
        Ok(())
    };
    let (read, results) = tokio::join!(read, futures_util::future::join_all(lanes));
    read?;
    let mut finished = false;
    for r in results {
        finished |= r?;
    }
    Ok(if finished {
        CopyEnd::Done
    } else {
        CopyEnd::Cancelled
    })
}

/// Rows read for one copy transaction, and the table's progress once they are in.
struct Chunk {
    seq: u64,
    rows: Vec<Vec<Value>>,
    progress: CopyProgress,
}

/// What the writers of one table share.
struct Lane<'a> {
    /// The next chunk to commit.
    turn: tokio::sync::watch::Sender<u64>,
    /// Cancelled when any writer or the reader fails, so the others stop.
    abort: CancellationToken,
    job: &'a CopyJob<'a>,
    table: &'a CopyTable,
    projections: &'a [Arc<Projection>],
}

/// Writes the chunks arriving on `rx`, committing each one only once every earlier chunk has
/// committed. `true` when it committed the last chunk of the table.
async fn write_chunks(
    conn: &mut MySqlConnection,
    writer: &mut RowWriter,
    mut rx: tokio::sync::mpsc::Receiver<Chunk>,
    lane: &Lane<'_>,
) -> Result<bool, PipelineError> {
    let Lane {
        turn,
        abort,
        job,
        table,
        projections,
    } = lane;
    let result = async {
        while let Some(chunk) = rx.recv().await {
            let mut ops = Vec::with_capacity(chunk.rows.len() * projections.len());
            for row in &chunk.rows {
                for p in projections.iter() {
                    match p.keeps(row) {
                        Ok(true) => ops.push(Op::Upsert(p.clone(), p.row(row))),
                        Ok(false) => {}
                        Err(e) => {
                            return Err(SinkError::Incompatible {
                                table: table.name.to_string(),
                                reason: e.to_string(),
                            }
                            .into())
                        }
                    }
                }
            }
            drop(chunk.rows);
            sink::copy::write_chunk(conn, writer, &ops).await?;
            drop(ops);
            let mut waiting = turn.subscribe();
            tokio::select! {
                _ = abort.cancelled() => {
                    sink::copy::abandon(conn).await?;
                    return Ok(false);
                }
                ready = async { waiting.wait_for(|&next| next == chunk.seq).await.is_ok() } => {
                    if !ready {
                        return Ok(false);
                    }
                }
            }
            sink::copy::commit_chunk(conn, job.pipeline, &chunk.progress, job.fence).await?;
            turn.send_replace(chunk.seq + 1);
            job.status.copy_progress(&chunk.progress);
            if chunk.seq % 20 == 19 {
                tracing::info!(table = %table.name, rows = chunk.progress.rows_copied, estimate = chunk.progress.rows_estimated, "copy progress");
            }
            if chunk.progress.done {
                tracing::info!(table = %table.name, rows = chunk.progress.rows_copied, "table copied");
                return Ok(true);
            }
        }
        Ok::<_, PipelineError>(false)
    }
    .await;
    if result.is_err() {
        abort.cancel();
    }
    result
}

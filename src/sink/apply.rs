//! The writer of one target: turns the source transaction stream into groups of target
//! writes — multi-row statements, then the checkpoint and bookkeeping — that its lanes
//! (`sink::lanes`) run and commit in source order; DDL and commands run on its own session
//! once every lane has committed.
//!
//! A group (one target transaction) commits when the queue from the reader is drained, when it
//! holds `max_group_transactions` source transactions, or after `max_group_ms` — always at a
//! source transaction boundary. Row changes are buffered up to `batch_rows` and then written
//! into the open transaction, so a source transaction of any size passes in bounded memory.
//!
//! # XA
//! The rows of a prepared XA branch are held (`HeldBranch`: memory, then a temporary file)
//! instead of written, and applied in the group of its XA COMMIT, to the tables whose floor
//! does not include that group yet, or dropped at its XA ROLLBACK. The group that passes a
//! prepared part records the branch in `rowsync_xa` with the state before it, so a restart
//! reads the branch again (collecting applies nothing) and the group that resolves it deletes
//! the record: a branch is applied once, at its commit, whatever crashes in between.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Executor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::checkpoint;
use super::ddl;
use super::lanes::{GroupEnd, LaneSettings, Lanes, WriteSet, XaChange};
use super::lock::Fence;
use super::replica;
use super::writer::{changes_to_ops, Op, RowWriter};
use super::{Observer, SinkError, SourceCatalog};
use crate::config::ApplyConfig;
use crate::model::definition::SourceDefinition;
use crate::model::event::{
    ChangeCounts, CreateMode, DdlKind, EventReceiver, RowBatch, RowChange, SourceEvent,
    StatementClock,
};
use crate::model::name::{quote_ident, TableName};
use crate::model::position::{Checkpoint, Floors, GroupId};
use crate::model::schema::TableSchema;
use crate::model::sql::SESSION_SQL_MODE;
use crate::model::table::{StoppedTable, TableState};
use crate::model::value::Value;
use crate::routing::mapping::{Mapping, MappingError, Projection, Router};
use crate::routing::replicas;

/// How long a checkpoint of transactions without selected rows may wait before it is stored.
const IDLE_CHECKPOINT_DELAY: Duration = Duration::from_secs(1);

/// Commands from the pipeline to its writer, carried out at a transaction boundary.
#[derive(Debug)]
pub enum Command {
    /// Stop applying `table` (its re-copy starts); `ack` once it is marked `copying`.
    Recopy {
        table: TableName,
        ack: tokio::sync::oneshot::Sender<()>,
    },
}

/// Why the writer returned without error.
#[derive(Debug, PartialEq, Eq)]
pub enum ApplyExit {
    /// Cancelled: the open group was committed (at a boundary) or rolled back.
    Shutdown,
    /// The reader's channel closed; the reader's own result tells why.
    SourceEnded,
}

/// Batches of `apply.batch_rows` changes a prepared XA branch holds in memory; the rest of a
/// larger branch goes to a temporary file.
const XA_HELD_BATCHES: usize = 10;

/// Bytes of row values a prepared XA branch holds in memory, whatever the row count.
const XA_HELD_BYTES: usize = 32 * 1024 * 1024;

/// The rows of a prepared XA branch, held until it is resolved: the first ones in memory, the
/// rest (in order, after them) in a temporary file, so a branch of any size is held in
/// bounded memory.
struct HeldBranch {
    /// The source state before the branch's prepared part.
    floor: Checkpoint,
    batches: Vec<RowBatch>,
    changes: usize,
    bytes: usize,
    spill: Option<Spill>,
}

/// Batches of a held branch written to an unlinked temporary file, one JSON line each.
struct Spill {
    file: std::io::BufWriter<std::fs::File>,
    /// The schemas the lines refer to by index.
    schemas: Vec<Arc<TableSchema>>,
}

/// One spilled batch.
#[derive(serde::Serialize, serde::Deserialize)]
struct SpilledBatch {
    schema: usize,
    changes: Vec<RowChange>,
}

impl HeldBranch {
    fn new(floor: Checkpoint) -> HeldBranch {
        HeldBranch {
            floor,
            batches: Vec::new(),
            changes: 0,
            bytes: 0,
            spill: None,
        }
    }

    /// Holds `batch`, in memory while fewer than `in_memory` changes are.
    fn hold(&mut self, batch: RowBatch, in_memory: usize) -> std::io::Result<()> {
        use std::io::Write;
        self.changes += batch.changes.len();
        self.bytes += batch.changes.iter().map(change_bytes).sum::<usize>();
        if self.changes <= in_memory && self.bytes <= XA_HELD_BYTES && self.spill.is_none() {
            self.batches.push(batch);
            return Ok(());
        }
        if self.spill.is_none() {
            self.spill = Some(Spill {
                file: std::io::BufWriter::new(tempfile::tempfile()?),
                schemas: Vec::new(),
            });
        }
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        let schema = match spill
            .schemas
            .iter()
            .position(|s| Arc::ptr_eq(s, &batch.table))
        {
            Some(i) => i,
            None => {
                spill.schemas.push(batch.table.clone());
                spill.schemas.len() - 1
            }
        };
        let line = SpilledBatch {
            schema,
            changes: batch.changes,
        };
        serde_json::to_writer(&mut spill.file, &line)?;
        spill.file.write_all(b"\n")
    }

    /// The batches held in memory, and a reader of the spilled ones that follow them.
    fn into_parts(self) -> std::io::Result<(Vec<RowBatch>, Option<SpillReader>)> {
        use std::io::Seek;
        let Some(spill) = self.spill else {
            return Ok((self.batches, None));
        };
        let mut file = spill.file.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        let reader = SpillReader {
            lines: std::io::BufRead::lines(std::io::BufReader::new(file)),
            schemas: spill.schemas,
        };
        Ok((self.batches, Some(reader)))
    }
}

/// Reads spilled batches back one at a time, so applying a branch holds one batch in memory.
struct SpillReader {
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    schemas: Vec<Arc<TableSchema>>,
}

impl SpillReader {
    fn next_batch(&mut self) -> std::io::Result<Option<RowBatch>> {
        let Some(line) = self.lines.next() else {
            return Ok(None);
        };
        let batch: SpilledBatch = serde_json::from_str(&line?)?;
        let table =
            self.schemas.get(batch.schema).cloned().ok_or_else(|| {
                std::io::Error::other("a spilled XA batch names an unknown schema")
            })?;
        Ok(Some(RowBatch {
            table,
            changes: batch.changes,
        }))
    }
}

/// About the bytes a change holds.
fn change_bytes(change: &RowChange) -> usize {
    let row = |r: &[Value]| r.iter().map(|v| v.size_hint()).sum::<usize>();
    match change {
        RowChange::Insert(r) | RowChange::Delete(r) => row(r),
        RowChange::Update { before, after } => row(before) + row(after),
    }
}

/// Cached projections of one source table, valid for one schema.
struct TableRoutes {
    schema: Arc<TableSchema>,
    projections: Vec<Arc<Projection>>,
}

pub struct Applier {
    /// The writer's own session: DDL, reads of the target's catalog, commands. Rows and
    /// checkpoints go through the lanes.
    conn: MySqlConnection,
    /// Sessions for the lanes, until `run` starts them.
    lane_conns: Vec<MySqlConnection>,
    lanes: Option<Lanes>,
    /// For reading source definitions when a selected table is created mid-stream.
    catalog: Arc<dyn SourceCatalog>,
    pipeline: String,
    router: Arc<Router>,
    limits: ApplyConfig,
    observer: Arc<dyn Observer>,
    writer: RowWriter,
    routes: HashMap<TableName, TableRoutes>,
    /// A table's projections were rebuilt for a changed schema since the last rows were sent.
    rerouted: bool,
    stopped: HashSet<TableName>,
    ops: Vec<Op>,
    ops_bytes: usize,
    /// Row changes in the group being formed.
    group_rows: usize,
    /// Between a source transaction's Begin and Commit.
    in_source_txn: bool,
    group_txns: usize,
    group_started: Instant,
    /// Checkpoint of the last source transaction seen, not yet committed.
    pending: Option<Checkpoint>,
    pending_stops: Vec<StoppedTable>,
    last_store: Instant,
    /// The floors the stream started with (see `model::position::Floors`).
    floors: Floors,
    /// Tables still catching up after a re-copy.
    catching: HashSet<TableName>,
    /// Floor changes to store with the next commit: a new floor, or `None` when caught up.
    pending_floors: HashMap<TableName, Option<Checkpoint>>,
    commands: Option<mpsc::Receiver<Command>>,
    /// Tables whose re-copy (asked for by a command) runs beside this writer.
    recopying: HashSet<TableName>,
    /// Prepared XA branches by XID, held until their XA COMMIT or ROLLBACK.
    held: HashMap<String, HeldBranch>,
    /// The branch whose prepared part is being read.
    collecting: Option<String>,
    /// Changes to `rowsync_xa` to store with the next commit.
    pending_xa: Vec<XaChange>,
    /// The end of the last group replayed from before the checkpoint (see `advance_floors`).
    replayed: Option<Checkpoint>,
    /// The source server's time zone (see `with_source_time_zone`).
    source_time_zone: String,
    /// Commands received inside a source transaction, for its end.
    deferred: Vec<Command>,
    /// Checked before each commit and followed DDL (see `sink::lock`).
    fence: Option<Fence>,
    /// A ping after this long idle keeps the session within its `wait_timeout`.
    keepalive: Option<Duration>,
    /// The last statement on the writer's own session, which lanes keep idle for long.
    last_ping: Instant,
    /// The reader caught up; not reported until what came before it has committed.
    caught_up: bool,
}

impl Applier {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        mut conn: MySqlConnection,
        catalog: Arc<dyn SourceCatalog>,
        pipeline: String,
        router: Arc<Router>,
        limits: ApplyConfig,
        observer: Arc<dyn Observer>,
        stopped: HashSet<TableName>,
        floors: Floors,
    ) -> Result<Applier, SinkError> {
        let writer = RowWriter::new(&mut conn, limits.batch_rows).await?;
        Ok(Applier {
            conn,
            lane_conns: Vec::new(),
            lanes: None,
            catalog,
            pipeline,
            router,
            limits,
            observer,
            writer,
            routes: HashMap::new(),
            rerouted: false,
            stopped,
            ops: Vec::new(),
            ops_bytes: 0,
            group_rows: 0,
            in_source_txn: false,
            group_txns: 0,
            group_started: Instant::now(),
            pending: None,
            pending_stops: Vec::new(),
            last_store: Instant::now(),
            catching: floors.tables.keys().cloned().collect(),
            floors,
            pending_floors: HashMap::new(),
            commands: None,
            recopying: HashSet::new(),
            held: HashMap::new(),
            collecting: None,
            pending_xa: Vec::new(),
            replayed: None,
            source_time_zone: "+00:00".into(),
            deferred: Vec::new(),
            fence: None,
            keepalive: None,
            last_ping: Instant::now(),
            caught_up: false,
        })
    }

    /// The source server's own time zone, for statements that logged none.
    pub fn with_source_time_zone(mut self, zone: String) -> Self {
        self.source_time_zone = zone;
        self
    }

    /// Commits only while `fence` holds, and pings after `keepalive` idle.
    pub fn with_fence(mut self, fence: Fence, keepalive: Duration) -> Self {
        self.fence = Some(fence);
        self.keepalive = Some(keepalive.max(Duration::from_millis(500)));
        self
    }

    /// Applies rows on these sessions (see `sink::lanes`; `lanes::prepare_session` set them up).
    pub fn with_lanes(mut self, conns: Vec<MySqlConnection>) -> Self {
        self.lane_conns = conns;
        self
    }

    /// The lanes, once `run` started them.
    fn lanes(&mut self) -> Result<&mut Lanes, SinkError> {
        self.lanes
            .as_mut()
            .ok_or_else(|| SinkError::LaneEnded("the writer has no lanes".into()))
    }

    /// Waits until every group sent whole has committed: what follows on the writer's own
    /// session (DDL, table states, reads of rowsync's tables) comes after them.
    async fn barrier(&mut self) -> Result<(), SinkError> {
        self.lanes()?.drain().await
    }

    /// Fails when the target's lock is no longer this process's (see `sink::lock`).
    async fn check_fence(&mut self) -> Result<(), SinkError> {
        super::lock::check(self.fence.as_ref(), &mut self.conn).await
    }

    /// Lets the pipeline send commands.
    pub fn with_commands(mut self, commands: mpsc::Receiver<Command>) -> Self {
        self.commands = Some(commands);
        self
    }

    /// Carries out the commands received so far; only at a source transaction boundary.
    async fn run_commands(&mut self) -> Result<(), SinkError> {
        while let Some(cmd) = self.commands.as_mut().and_then(|c| c.try_recv().ok()) {
            self.deferred.push(cmd);
        }
        for cmd in std::mem::take(&mut self.deferred) {
            match cmd {
                Command::Recopy { table, ack } => {
                    // What is whole commits first; from here on the table is not applied.
                    self.commit_group().await?;
                    self.barrier().await?;
                    self.stopped.insert(table.clone());
                    self.recopying.insert(table.clone());
                    self.forget_routes(&table);
                    // Its floor no longer moves: the re-copy sets a new one.
                    self.catching.remove(&table);
                    self.pending_floors.remove(&table);
                    self.check_fence().await?;
                    checkpoint::mark_table(
                        &mut self.conn,
                        &self.pipeline,
                        &table,
                        TableState::Copying,
                        None,
                        "",
                    )
                    .await?;
                    let _ = ack.send(());
                }
            }
        }
        Ok(())
    }

    /// Applies events until cancelled, the reader ends, or an error.
    pub async fn run(
        &mut self,
        rx: &mut EventReceiver,
        cancel: &CancellationToken,
    ) -> Result<ApplyExit, SinkError> {
        if self.lanes.is_none() {
            if self.lane_conns.is_empty() {
                return Err(SinkError::LaneEnded("the writer was given no lanes".into()));
            }
            let settings = LaneSettings {
                pipeline: self.pipeline.clone(),
                fence: self.fence.clone(),
                keepalive: self.keepalive.unwrap_or(Duration::from_secs(3600)),
                observer: self.observer.clone(),
            };
            self.lanes = Some(Lanes::start(std::mem::take(&mut self.lane_conns), settings));
        }
        let result = self.run_inner(rx, cancel).await;
        // Groups sent whole commit (unless something failed); an open one rolls back. Only
        // once every lane has ended may the checkpoint be read again.
        let closed = match self.lanes.as_mut() {
            Some(lanes) => lanes.close(result.is_ok()).await,
            None => Ok(()),
        };
        let exit = result?;
        closed?;
        Ok(exit)
    }

    async fn run_inner(
        &mut self,
        rx: &mut EventReceiver,
        cancel: &CancellationToken,
    ) -> Result<ApplyExit, SinkError> {
        loop {
            if !self.in_source_txn {
                self.run_commands().await?;
            }
            if self
                .keepalive
                .is_some_and(|k| self.last_ping.elapsed() >= k)
            {
                self.exec_plain("DO 0").await?;
            }
            if self.caught_up && !self.has_writes() && self.lanes()?.all_committed() {
                self.caught_up = false;
                self.observer.caught_up();
            }
            let event = match rx.try_recv() {
                Ok(event) => event,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.finish().await?;
                    return Ok(ApplyExit::SourceEnded);
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Drained: a finished group commits now rather than wait for more, once
                    // a lane can take it (see `Lanes::can_take`). (Writes with no position to
                    // commit them at wait for the next group.)
                    if !self.in_source_txn
                        && self.has_writes()
                        && self.lanes()?.can_take()
                        && self.commit_group().await?
                    {
                        continue;
                    }
                    let lanes_stopped = self.lanes()?.stopped();
                    let mut commits = self.lanes()?.commits();
                    let waiting = (self.pending.is_some() || !self.pending_floors.is_empty())
                        && !self.in_source_txn;
                    let delay = IDLE_CHECKPOINT_DELAY.saturating_sub(self.last_store.elapsed());
                    let idle_store = async {
                        if waiting {
                            tokio::time::sleep(delay).await
                        } else {
                            std::future::pending().await
                        }
                    };
                    let command = async {
                        match self.commands.as_mut() {
                            Some(c) => c.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    let ping_at = self.keepalive.map(|after| self.last_ping + after);
                    let idle = async {
                        match ping_at {
                            Some(at) => tokio::time::sleep_until(at.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => {
                            self.finish().await?;
                            return Ok(ApplyExit::Shutdown);
                        }
                        // A lane's error ends the writer even while no event comes.
                        _ = lanes_stopped.cancelled() => {
                            self.lanes()?.check()?;
                            continue;
                        }
                        // A lane is free again: a group held back may end now.
                        Ok(()) = commits.changed() => continue,
                        Some(cmd) = command => {
                            self.deferred.push(cmd);
                            continue;
                        }
                        _ = idle_store => {
                            self.commit_group().await?;
                            continue;
                        }
                        _ = idle => {
                            self.exec_plain("DO 0").await?;
                            continue;
                        }
                        event = rx.recv() => match event {
                            Some(event) => event,
                            None => {
                                self.finish().await?;
                                return Ok(ApplyExit::SourceEnded);
                            }
                        },
                    }
                }
            };
            self.handle(event).await?;
            if cancel.is_cancelled() {
                self.finish().await?;
                return Ok(ApplyExit::Shutdown);
            }
        }
    }

    /// Commits what is whole, rolls back a half-received source transaction.
    async fn finish(&mut self) -> Result<(), SinkError> {
        if self.in_source_txn {
            // The open group's lane rolls it back when the lanes close.
            self.ops.clear();
            self.ops_bytes = 0;
            self.pending_stops.clear();
            self.in_source_txn = false;
            return Ok(());
        }
        if self.has_writes() || self.pending.is_some() {
            self.commit_group().await?;
        }
        Ok(())
    }

    async fn handle(&mut self, event: SourceEvent) -> Result<(), SinkError> {
        match event {
            SourceEvent::Begin => self.in_source_txn = true,
            SourceEvent::Rows(batch) => {
                if let Some(batch) = self.hold(batch)? {
                    self.apply_rows(batch).await?;
                }
            }
            SourceEvent::Truncate(table) => {
                if !self.stopped.contains(&table) {
                    let replicas: Vec<String> = self
                        .router
                        .mappings_for(&table)
                        .map(|m| m.replica_name(&table))
                        .collect();
                    for replica in replicas {
                        self.push(Op::Truncate(replica));
                    }
                }
            }
            SourceEvent::Ddl {
                table,
                kind,
                statement,
                clock,
            } => {
                // A CREATE starts a table anew, even one that stopped.
                if self.stopped.contains(&table) && !matches!(kind, DdlKind::Create(_)) {
                    return Ok(());
                }
                self.forget_routes(&table);
                match kind {
                    DdlKind::Alter => self.follow_alter(table, statement, clock).await?,
                    DdlKind::Create(mode) => self.create_replicas(table, statement, mode).await?,
                    DdlKind::Drop => self.stop_table(
                        table,
                        Some(statement),
                        "the source table was dropped; the replica is kept as it was".into(),
                    ),
                    DdlKind::Rename => self.stop_table(
                        table,
                        Some(statement),
                        "the source table was renamed (or swapped in by an online schema change tool); re-copy it".into(),
                    ),
                }
            }
            SourceEvent::TableStopped { table, reason } => self.stop_table(table, None, reason),
            SourceEvent::Commit { checkpoint, group } => {
                if let Some(xid) = self.collecting.take() {
                    // The prepared part ends: held until resolved, and a restart must read
                    // it again, from its floor. A branch that changed no selected table pins
                    // no floor: it is only remembered, so its commit is known after a restart.
                    if let Some(branch) = self.held.get(&xid) {
                        let floor = (branch.changes > 0).then(|| branch.floor.clone());
                        self.pending_xa.push(XaChange::Prepared(xid, floor));
                    }
                }
                self.in_source_txn = false;
                self.group_txns += 1;
                self.advance_floors(&checkpoint, group.as_ref());
                // With several lanes, groups end after about a batch of rows, so that the
                // next group runs on another lane while this one commits.
                let lanes = self.limits.lanes > 1;
                if self.has_writes()
                    && (self.group_txns >= self.limits.max_group_transactions
                        || (lanes && self.group_rows >= self.limits.batch_rows)
                        || self.group_started.elapsed()
                            >= Duration::from_millis(self.limits.max_group_ms))
                {
                    self.commit_group().await?;
                }
            }
            SourceEvent::XaStart { xid, floor } => {
                // Collected again after a restart: the new copy replaces nothing applied.
                self.held.insert(xid.clone(), HeldBranch::new(floor));
                self.collecting = Some(xid);
            }
            SourceEvent::XaEnd { xid, commit, group } => {
                self.end_branch(xid, commit, group).await?
            }
            // Reported once the lanes have committed everything before it.
            SourceEvent::CaughtUp => self.caught_up = true,
        }
        Ok(())
    }

    /// Holds a batch of the prepared branch being collected; gives it back when none is.
    fn hold(&mut self, batch: RowBatch) -> Result<Option<RowBatch>, SinkError> {
        let Some(xid) = &self.collecting else {
            return Ok(Some(batch));
        };
        let in_memory = self.limits.batch_rows.saturating_mul(XA_HELD_BATCHES);
        if let Some(branch) = self.held.get_mut(xid) {
            let spilled = branch.spill.is_some();
            branch
                .hold(batch, in_memory)
                .map_err(|source| SinkError::Spill { source })?;
            if !spilled && branch.spill.is_some() {
                tracing::info!(xid = %xid, in_memory, "prepared XA branch is larger than memory holds; the rest goes to a temporary file");
            }
        }
        Ok(None)
    }

    /// Ends the XA branch `xid`: applies its held rows in this group (`commit`), for tables
    /// not stopped whose floor does not include `group` yet, or drops them.
    async fn end_branch(
        &mut self,
        xid: String,
        commit: bool,
        group: Option<GroupId>,
    ) -> Result<(), SinkError> {
        if self.collecting.as_ref() == Some(&xid) {
            // One phase: the branch ends in the group that began it.
            self.collecting = None;
        } else {
            self.pending_xa.push(XaChange::Resolved(xid.clone()));
        }
        let applied = group
            .as_ref()
            .is_some_and(|g| g.applied_at(&self.floors.main));
        let Some(branch) = self.held.remove(&xid) else {
            // Not held: prepared without selected rows (recorded without a floor), or applied
            // before a restart — else its rows were never read.
            if commit {
                // The record may be in a group not committed yet.
                self.barrier().await?;
            }
            if !commit || checkpoint::xa_recorded(&mut self.conn, &self.pipeline, &xid).await? {
                return Ok(());
            }
            if !applied {
                return Err(SinkError::UnknownXa { xid });
            }
            // A table re-copied from a snapshot taken while the branch was prepared has its
            // rows neither from the copy nor from the stream.
            let behind: Vec<TableName> = self
                .catching
                .iter()
                .filter(|t| group.as_ref().is_none_or(|g| self.floors.wants(g, t)))
                .cloned()
                .collect();
            for table in behind {
                self.stop_table(
                    table,
                    None,
                    format!("XA branch {xid} was prepared before this table's re-copy snapshot and committed after it, so its rows are in neither; re-copy the table"),
                );
            }
            return Ok(());
        };
        if !commit {
            return Ok(());
        }
        let spill_err = |source| SinkError::Spill { source };
        let (batches, mut spilled) = branch.into_parts().map_err(spill_err)?;
        for batch in batches {
            self.apply_held(batch, group.as_ref()).await?;
        }
        while let Some(batch) = match spilled.as_mut() {
            Some(reader) => reader.next_batch().map_err(spill_err)?,
            None => None,
        } {
            self.apply_held(batch, group.as_ref()).await?;
        }
        Ok(())
    }

    /// Applies a held batch to its table unless the table's floor includes `group`.
    async fn apply_held(
        &mut self,
        batch: RowBatch,
        group: Option<&GroupId>,
    ) -> Result<(), SinkError> {
        if group.is_none_or(|g| self.floors.wants(g, &batch.table.name)) {
            self.apply_rows(batch).await?;
        }
        Ok(())
    }

    /// Changes received but not committed yet.
    fn has_writes(&self) -> bool {
        self.lanes.as_ref().is_some_and(Lanes::is_open)
            || !self.ops.is_empty()
            || !self.pending_stops.is_empty()
            || !self.pending_floors.is_empty()
            || !self.pending_xa.is_empty()
    }

    /// Records that group `group` ended at `checkpoint`: the main checkpoint moves if the main
    /// floor did not include the group yet; a catching-up table's floor moves while history
    /// before the main floor replays, and the table is caught up once a group is new to both.
    fn advance_floors(&mut self, checkpoint: &Checkpoint, group: Option<&GroupId>) {
        let main_had = group.is_some_and(|g| g.applied_at(&self.floors.main));
        let catching: Vec<TableName> = self.catching.iter().cloned().collect();
        for table in catching {
            let had = match (group, self.floors.tables.get(&table)) {
                (Some(g), Some(floor)) => g.applied_at(floor),
                _ => false,
            };
            if had {
                continue;
            }
            if main_had {
                self.pending_floors.insert(table, Some(checkpoint.clone()));
            } else {
                self.pending_floors.insert(table.clone(), None);
                self.catching.remove(&table);
            }
        }
        if main_had {
            // Replaying history the checkpoint already covers: stops and XA records found
            // here still need a position to be written at.
            self.replayed = Some(checkpoint.clone());
        } else {
            self.replayed = None;
            self.pending = Some(checkpoint.clone());
        }
    }

    fn stop_table(&mut self, table: TableName, statement: Option<String>, reason: String) {
        if self.stopped.insert(table.clone()) {
            tracing::error!(table = %table, statement = statement.as_deref().unwrap_or(""), %reason, "table stopped on this target");
            // A stopped table catches up no further; its stop must not be overwritten by a floor.
            self.catching.remove(&table);
            self.pending_floors.remove(&table);
            self.pending_stops.push(StoppedTable {
                table,
                state: TableState::NeedsRecopy,
                since: String::new(),
                statement,
                reason,
            });
        }
    }

    fn push(&mut self, op: Op) {
        self.ops_bytes += op.size();
        self.group_rows += 1;
        self.ops.push(op);
    }

    /// Drops `table`'s projections. Not every path that does so drains the lanes first (a
    /// CREATE … IF NOT EXISTS of an existing replica does not), so the table's next rows
    /// conflict with every group in flight.
    fn forget_routes(&mut self, table: &TableName) {
        self.rerouted |= self.routes.remove(table).is_some();
    }

    /// The projections of `schema` under this target's mappings, built once per schema and
    /// checked against the replica's columns.
    async fn projections(
        &mut self,
        schema: &Arc<TableSchema>,
    ) -> Result<Vec<Arc<Projection>>, SinkError> {
        if let Some(r) = self.routes.get(&schema.name) {
            if Arc::ptr_eq(&r.schema, schema) || *r.schema == **schema {
                return Ok(r.projections.clone());
            }
        }
        // Groups in flight may have hashed this table's keys under the old schema (a value
        // type or binary key that changed): the next rows conflict with everything.
        self.rerouted |= self.routes.contains_key(&schema.name);
        let mut projections = Vec::new();
        for m in self.router.mappings_for(&schema.name) {
            let mut p = Projection::new(m, schema)?;
            let have = replica::columns(&mut self.conn, &p.replica).await?;
            if have.is_empty() {
                return Err(MappingError::MissingReplica {
                    replica: p.replica.clone(),
                }
                .into());
            }
            if let Some(missing) = p
                .names
                .iter()
                .find(|n| !have.iter().any(|h| h.eq_ignore_ascii_case(n)))
            {
                return Err(MappingError::ReplicaLacksColumn {
                    replica: p.replica.clone(),
                    column: missing.clone(),
                }
                .into());
            }
            // The replica's collation decides which keys are one row.
            let binary = replica::binary_key_columns(&mut self.conn, &p.replica).await?;
            p.binary_key = p
                .key
                .iter()
                .map(|&k| binary.iter().any(|b| b.eq_ignore_ascii_case(&p.names[k])))
                .collect();
            projections.push(Arc::new(p));
        }
        self.routes.insert(
            schema.name.clone(),
            TableRoutes {
                schema: schema.clone(),
                projections: projections.clone(),
            },
        );
        Ok(projections)
    }

    /// Applies an ALTER of a selected table to its replicas, or stops the table. The target
    /// session runs it at the source statement's time and time zone, so a column added with
    /// `DEFAULT CURRENT_TIMESTAMP` gets the values the source's existing rows got.
    async fn follow_alter(
        &mut self,
        table: TableName,
        statement: String,
        clock: StatementClock,
    ) -> Result<(), SinkError> {
        // DDL commits implicitly on the target: commit the finished transactions first.
        if self.has_writes() {
            self.commit_group().await?;
        }
        self.barrier().await?;
        self.check_fence().await?;
        // SYSTEM, logged or not, is the source server's own zone, not the target's.
        let zone = match clock.time_zone {
            Some(zone) if !zone.eq_ignore_ascii_case("SYSTEM") => zone,
            _ => self.source_time_zone.clone(),
        };
        // The ALTER also runs in the source sessions' non-strict mode: what the source did to
        // existing rows (a narrowing MODIFY truncates) is not in the stream, so the replica
        // must do the same.
        const CLOCK: &str = "SET SESSION timestamp = ?, time_zone = ?, sql_mode = ?";
        let set = sqlx::query(CLOCK)
            .bind(clock.timestamp)
            .bind(&zone)
            .bind(SESSION_SQL_MODE)
            .execute(&mut self.conn)
            .await;
        if let Err(e) = set {
            let e = SinkError::db(CLOCK, e);
            if e.is_retryable() {
                return Err(e);
            }
            // A named zone the target has no tables for: only this table cannot follow.
            self.stop_table(
                table,
                Some(statement),
                format!("the target cannot run the ALTER in the source's time zone `{zone}` ({e}); load the target's time zone tables (mariadb-tzinfo-to-sql), then re-copy the table"),
            );
            return Ok(());
        }
        let followed = self.follow_alter_now(table, statement).await;
        self.exec_plain("SET SESSION timestamp = DEFAULT, time_zone = '+00:00'")
            .await?;
        super::target::set_sql_mode(&mut self.conn, super::target::TARGET_SQL_MODE).await?;
        followed
    }

    async fn follow_alter_now(
        &mut self,
        table: TableName,
        statement: String,
    ) -> Result<(), SinkError> {
        let mappings: Vec<Mapping> = self.router.mappings_for(&table).cloned().collect();
        for m in mappings {
            let replica = m.replica_name(&table);
            let key = replica::primary_key(&mut self.conn, &replica).await?;
            let changes = match ddl::plan_alter(&statement, &m, &key) {
                Ok(c) => c,
                Err(reason) => {
                    self.stop_table(table, Some(statement), reason);
                    return Ok(());
                }
            };
            for change in changes {
                let columns = replica::columns(&mut self.conn, &replica).await?;
                let Some(sql) = change.statement(&replica, &columns) else {
                    continue;
                };
                tracing::info!(replica = %replica, statement = %sql, "following source ALTER");
                if let Err(e) = self.conn.execute(AssertSqlSafe(sql.clone())).await {
                    let e = SinkError::db(sql, e);
                    if e.is_retryable() {
                        return Err(e);
                    }
                    self.stop_table(
                        table,
                        Some(statement),
                        format!("the replica could not follow: {e}"),
                    );
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Creates the replicas of a selected table created on the source mid-stream, from the
    /// CREATE statement itself: the table may have changed or gone since (a staging table,
    /// an online schema change's ghost table). Only a CREATE that does not spell out its
    /// columns (`LIKE`, `SELECT`) falls back to the source's definition now; when that is gone
    /// too, only this table stops.
    ///
    /// A logged CREATE makes a new, empty table (unless `IF NOT EXISTS` kept an old one), and
    /// every row it gets later is in the stream: replicas that exist are made again empty,
    /// and a table that had stopped (dropped, say, then created again) streams again.
    async fn create_replicas(
        &mut self,
        table: TableName,
        statement: String,
        mode: CreateMode,
    ) -> Result<(), SinkError> {
        // A table being re-copied is made by its copy, as it is then.
        if self.recopying.contains(&table) {
            return Ok(());
        }
        // It runs DDL, which commits by itself.
        self.check_fence().await?;
        let mappings: Vec<Mapping> = self.router.mappings_for(&table).cloned().collect();
        let held = checkpoint::replicas(&mut self.conn, &self.pipeline).await?;
        // Per mapping: does its replica exist, and did rowsync fill it from this table?
        let mut replicas = Vec::new();
        for m in &mappings {
            let name = m.replica_name(&table);
            let exists = !replica::columns(&mut self.conn, &name).await?.is_empty();
            let ours = held.iter().any(|h| h.replica == name && h.source == table);
            replicas.push((exists, ours));
        }
        let stopped = self.stopped.contains(&table);
        if mode == CreateMode::IfNotExists {
            if stopped || replicas.iter().any(|(exists, _)| *exists) {
                // The source may have kept the table as it was: nothing is known to change.
                return Ok(());
            }
            if replicas.iter().any(|(_, ours)| *ours) {
                // Its replica was dropped by hand; made empty, it would lack every older row.
                self.stop_table(
                    table,
                    Some(statement),
                    "its replica table is missing (dropped by hand?) and the source may have kept the table as it was; re-copy it".into(),
                );
                return Ok(());
            }
        }
        if self.has_writes() {
            self.commit_group().await?;
        }
        self.barrier().await?;
        let def = match SourceDefinition::from_create_statement(table.clone(), &statement) {
            Ok(def) => def,
            Err(why) => match self.catalog.definition(&table).await {
                Ok(def) => def,
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    self.stop_table(
                        table,
                        Some(statement),
                        format!("created mid-stream, and its definition is not known: {why}, and the source's catalog has nothing better ({e})"),
                    );
                    return Ok(());
                }
            },
        };
        let records = replicas::records_for(&self.router, &table);
        for record in &records {
            let owner = held
                .iter()
                .find(|h| h.replica == record.replica && h.source != table);
            if let Some(owner) = owner {
                let reason = format!(
                    "replica table `{}` already holds the rows of {}; two source tables cannot share one replica table (give one mapping its own `table`)",
                    record.replica, owner.source
                );
                self.stop_table(table, Some(statement), reason);
                return Ok(());
            }
        }
        for (m, (exists, ours)) in mappings.iter().zip(replicas) {
            // A replica rowsync filled from this table starts over empty, as the table does;
            // a table it did not fill (made by hand, or another tool's) is adopted only if it
            // fits, and never dropped.
            let made = match (exists, ours) {
                (true, true) => replica::rebuild(&mut self.conn, &def, m, None).await,
                (true, false) => match replica::ensure_replica(&mut self.conn, &def, m, None).await
                {
                    Ok(()) => match replica::check_adopted(&mut self.conn, &def, m).await {
                        // Adopted: emptied, as the new table is.
                        Ok(()) => {
                            let empty =
                                format!("DELETE FROM {}", quote_ident(&m.replica_name(&table)));
                            self.conn
                                .execute(AssertSqlSafe(empty.clone()))
                                .await
                                .map(|_| ())
                                .map_err(|e| SinkError::db(empty, e))
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                (false, _) => replica::ensure_replica(&mut self.conn, &def, m, None).await,
            };
            match made {
                Ok(()) => {}
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    self.stop_table(table, Some(statement), e.to_string());
                    return Ok(());
                }
            }
        }
        // The table starts empty here: its replicas hold its rows from this point on.
        for record in &records {
            checkpoint::record_replica(&mut self.conn, &self.pipeline, record).await?;
        }
        if stopped {
            checkpoint::clear_table_state(&mut self.conn, &self.pipeline, &table).await?;
            self.stopped.remove(&table);
            self.observer.table_resumed(&table);
            tracing::info!(table = %table, "table created anew on the source; it streams again");
        }
        Ok(())
    }

    /// Buffers a batch's changes, writing them into the open transaction when enough are.
    async fn apply_rows(&mut self, batch: RowBatch) -> Result<(), SinkError> {
        self.rows(batch).await?;
        if self.ops.len() >= self.limits.batch_rows
            || self.ops_bytes >= self.writer.max_statement_bytes()
        {
            self.flush_ops().await?;
        }
        Ok(())
    }

    async fn rows(&mut self, batch: RowBatch) -> Result<(), SinkError> {
        if self.stopped.contains(&batch.table.name) {
            return Ok(());
        }
        let projections = match self.projections(&batch.table).await {
            Ok(p) => p,
            Err(SinkError::Mapping(e)) => {
                self.stop_table(batch.table.name.clone(), None, e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.observer
            .rows_applied(&batch.table.name, ChangeCounts::of(&batch.changes));
        match changes_to_ops(&batch.changes, &projections) {
            Ok(ops) => ops.into_iter().for_each(|op| self.push(op)),
            Err(e) => self.stop_table(batch.table.name.clone(), None, e.to_string()),
        }
        Ok(())
    }

    async fn exec_plain(&mut self, sql: &'static str) -> Result<(), SinkError> {
        self.conn
            .execute(sql)
            .await
            .map_err(|e| SinkError::db(sql, e))?;
        self.last_ping = Instant::now();
        Ok(())
    }

    /// Encodes the buffered changes and sends them to the open group's lane, in order.
    async fn flush_ops(&mut self) -> Result<(), SinkError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.ops);
        self.ops_bytes = 0;
        let statements = self.writer.encode(&ops)?;
        let keys = if std::mem::take(&mut self.rerouted) {
            WriteSet::everything()
        } else {
            WriteSet::of(&ops)
        };
        drop(ops);
        let lanes = self.lanes()?;
        let opening = !lanes.is_open();
        lanes.write(statements, keys).await?;
        if opening {
            self.group_started = Instant::now();
        }
        Ok(())
    }

    /// Sends everything buffered and the group's end to its lane, which commits it after the
    /// group before it; `false` when there was no position to commit at (nothing whole yet).
    async fn commit_group(&mut self) -> Result<bool, SinkError> {
        // The position this group ends at: the main checkpoint, or (while replaying history
        // only catching-up tables need) their new floor.
        let Some(at) = self
            .pending
            .clone()
            .or_else(|| self.pending_floors.values().flatten().next().cloned())
            .or_else(|| self.replayed.take())
        else {
            return Ok(false);
        };
        self.flush_ops().await?;
        let end = GroupEnd {
            at,
            store: self.pending.is_some(),
            floors: std::mem::take(&mut self.pending_floors)
                .into_iter()
                .collect(),
            stops: std::mem::take(&mut self.pending_stops),
            xa: std::mem::take(&mut self.pending_xa),
            transactions: self.group_txns as u64,
        };
        self.lanes()?.end(end).await?;
        self.group_txns = 0;
        self.group_rows = 0;
        self.pending = None;
        self.last_store = Instant::now();
        Ok(true)
    }
}

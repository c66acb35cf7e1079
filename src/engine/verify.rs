//! Verify and repair: proves that each replica table equals its source (the mapped columns
//! of the rows its filter keeps), names the keys that differ, and rewrites only those.
//!
//! # Comparing while replication runs
//! A table is compared in chunks of `chunk_rows` keys. Each chunk is read on the source
//! inside a consistent read that says where the source stands (`begin_read`: position P),
//! checksummed by the server (`source::checksum`: one canonical text form, only hashes leave
//! the database). The replica is read in a consistent read of the target that also reads its
//! checkpoint, once that checkpoint includes P: the replica then holds at least every change
//! the chunk's read saw. A chunk whose checksums differ is compared row by row, and re-checked
//! a few times with fresh reads, so a row that changed between the two reads (in flight) is
//! not reported; only a key that differs every time is. Since the replica may be newer than
//! the source read, each row comparison reads the source again after the replica and keeps
//! only keys the source did not change in between (a hot row is not a drift). Memory is one
//! chunk's keys and hashes.
//!
//! # Repairing consistently with the stream
//! The hazard (DESIGN-NOTES §4) is writing a row read at one moment over a newer change the
//! stream already applied. A repair therefore first locks the target's checkpoint row
//! (`SELECT … FOR UPDATE`): the applier commits every group with that row, so the replica is
//! frozen at its checkpoint C while the lock is held. Then it reads the differing keys' rows
//! from the source in a consistent read whose position S includes C (checked: a binlog event
//! may reach the stream before its transaction is visible to readers) and writes them
//! (or deletes keys the source lacks) in that same target transaction. When it commits, the
//! applier goes on from C and replays C..S: full row images make each replayed change an
//! upsert or delete by key, so every repaired key converges to its source state, exactly as a
//! resumed copy does (`engine::copy`). A kill -9 mid-repair rolls the transaction back: the
//! replica is as before, and a rerun finds and repairs the same keys.
//!
//! Tables that are not streaming (being copied, caught up, stopped) are reported as skipped:
//! their replica is not meant to equal the source yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mysql_async::prelude::*;
use mysql_async::Conn;
use serde::Serialize;
use sqlx::mysql::MySqlConnection;
use tokio_util::sync::CancellationToken;

use super::status::{State, TargetStatus};
use super::target::{PipelineError, TargetSpec};
use crate::config::VerifyConfig;
use crate::model::name::TableName;
use crate::model::position::{Checkpoint, Flavor, GtidSet, Position, SourceIdentity};
use crate::model::table::VerifyRecord;
use crate::model::value::{decode_key, encode_key, Value};
use crate::routing::mapping::{Mapping, Projection};
use crate::sink::writer::{Op, RowWriter};
use crate::sink::{checkpoint, target, verified, SinkError};
use crate::source::checksum::{self, HashSpec, RowHash, Summary};
use crate::source::conn::{connect, source_opts};
use crate::source::info::SourceInfo;
use crate::source::snapshot::{begin_read, begin_read_including, read_rows, CopyTable, KeyRange};
use crate::source::{catalog, SourceError};

/// Row-by-row comparisons of a differing chunk before its differences are reported.
const RECHECKS: u32 = 4;
/// Longest wait for the target to reach a chunk's source position.
const TARGET_WAIT: Duration = Duration::from_secs(60);
/// Most keys and ranges kept per table in a report.
const MAX_LISTED: usize = 100;

/// What to verify, and how.
pub struct VerifyRequest<'a> {
    /// Only this source table (all the target's tables when `None`).
    pub table: Option<&'a TableName>,
    pub repair: bool,
    pub settings: &'a VerifyConfig,
    /// A scheduled run: a share of each table, from where the last scheduled run stopped.
    pub scheduled: bool,
    pub cancel: &'a CancellationToken,
}

/// How a replica row differs from its source row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Difference {
    /// In the source (and kept by the filter), not in the replica.
    Missing,
    /// In the replica, not in the source (or not kept by the filter).
    Extra,
    /// In both, with different values.
    Different,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Difference::Missing => "missing",
            Difference::Extra => "extra",
            Difference::Different => "different",
        })
    }
}

/// One differing key, its values as SQL literals: `(5, 'B-45')`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyDiff {
    pub key: String,
    pub difference: Difference,
}

/// A chunk that held differences: keys after `after` up to `upto` (open where absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RangeDiff {
    pub after: Option<String>,
    pub upto: Option<String>,
    pub rows: u64,
}

/// The result for one replica table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub target: String,
    pub source: TableName,
    pub replica: String,
    pub chunks: u64,
    pub rows: u64,
    /// Rows that differed on every re-check.
    pub differing: u64,
    /// Of those, rows `--repair` rewrote and found equal afterwards.
    pub repaired: u64,
    pub ranges: Vec<RangeDiff>,
    /// The first differing keys.
    pub keys: Vec<KeyDiff>,
    /// Whether the whole table was compared.
    pub complete: bool,
    /// Why the table was not compared.
    pub skipped: Option<String>,
}

impl TableReport {
    /// Rows that still differ.
    pub fn remaining(&self) -> u64 {
        self.differing - self.repaired
    }
}

/// Progress of one table, for a progress bar.
pub struct Progress<'a> {
    pub target: &'a str,
    pub table: &'a TableName,
    pub rows: u64,
    pub estimate: u64,
}

/// Why verify could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("target `{0}` has no checkpoint yet: start `rowsync run` first")]
    NotStarted(String),
    #[error("target `{target}` did not reach the source's position {position} within {waited:?}: is `rowsync run` running and keeping up?")]
    Behind {
        target: String,
        position: String,
        waited: Duration,
    },
    #[error("no mapping sends {table} to target `{target}`")]
    NotSelected { table: TableName, target: String },
    #[error("verify was stopped")]
    Cancelled,
}

impl From<SourceError> for VerifyError {
    fn from(e: SourceError) -> Self {
        VerifyError::Pipeline(e.into())
    }
}

impl From<SinkError> for VerifyError {
    fn from(e: SinkError) -> Self {
        VerifyError::Pipeline(e.into())
    }
}

impl From<mysql_async::Error> for VerifyError {
    fn from(e: mysql_async::Error) -> Self {
        SourceError::from(e).into()
    }
}

/// One table on one target as verify compares it.
struct Pair {
    source: HashSpec,
    replica: HashSpec,
    projection: Arc<Projection>,
    /// Filter column names (the source side's extra columns).
    filter_names: Vec<String>,
}

/// The differences of one chunk, by encoded key.
type Diffs = Vec<(Vec<Value>, Difference)>;

/// How often the daemon reads the recorded results again (a `rowsync verify` run beside it
/// shows in its status within this time).
const REFRESH: Duration = Duration::from_secs(30);

/// The daemon's side of verify for one target, until `cancel`: every `[verify] every` a run
/// over a share of each table (no repair: that is the operator's call), and the recorded
/// results kept in the target's status.
pub async fn schedule(spec: Arc<TargetSpec>, status: Arc<TargetStatus>, cancel: CancellationToken) {
    let every = spec.verify.every;
    let mut next_run: Option<Instant> = None;
    loop {
        if let Ok(mut conn) = target::connect(&spec.target).await {
            match verified::records(&mut conn, &spec.pipeline).await {
                Ok(records) => {
                    // The first run is due `every` after the last recorded one, so restarts
                    // more frequent than `every` do not postpone it for ever.
                    if next_run.is_none() {
                        let now = SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0);
                        let last = records.iter().map(|r| r.finished_at).min().unwrap_or(now);
                        next_run = every.map(|e| {
                            let since = Duration::from_secs(now.saturating_sub(last));
                            Instant::now() + e.saturating_sub(since)
                        });
                    }
                    status.set_verified(records)
                }
                Err(e) if e.code() == Some(1146) => {}
                Err(e) => {
                    tracing::debug!(target = %spec.name(), error = %e, "reading verify results")
                }
            }
        }
        if next_run.is_none() {
            next_run = every.map(|e| Instant::now() + e);
        }
        let due = next_run.filter(|at| *at <= Instant::now());
        if due.is_some() && status.snapshot().state == State::Streaming {
            let request = VerifyRequest {
                table: None,
                repair: false,
                settings: &spec.verify,
                scheduled: true,
                cancel: &cancel,
            };
            match verify_target(&spec, &request, &|_| {}).await {
                Ok(reports) => {
                    for r in reports.iter().filter(|r| r.differing > 0) {
                        tracing::warn!(target = %spec.name(), replica = %r.replica, rows = r.differing, keys = %detail(r), "verify: replica rows differ from the source; `rowsync verify --repair` rewrites them");
                    }
                    tracing::info!(target = %spec.name(), tables = reports.len(), "scheduled verify done");
                }
                Err(e) => {
                    tracing::warn!(target = %spec.name(), error = %e, "scheduled verify failed")
                }
            }
            next_run = every.map(|e| Instant::now() + e);
            continue;
        }
        let wait = next_run
            .map(|at| at.saturating_duration_since(Instant::now()).min(REFRESH))
            .unwrap_or(REFRESH)
            .max(Duration::from_secs(1));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Verifies every selected table of `spec`'s target (or `request.table`).
pub async fn verify_target(
    spec: &TargetSpec,
    request: &VerifyRequest<'_>,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<TableReport>, VerifyError> {
    let mut v = Verifier::open(spec, request).await?;
    let tables = catalog::tables(&mut v.src, |t| spec.router.selects(t)).await?;
    if let Some(only) = request.table {
        if !tables.contains(only) {
            return Err(VerifyError::NotSelected {
                table: only.clone(),
                target: spec.name().to_owned(),
            });
        }
    }
    let mut reports = Vec::new();
    for table in tables
        .iter()
        .filter(|t| request.table.is_none_or(|only| only == *t))
    {
        for mapping in spec.router.mappings_for(table) {
            if request.cancel.is_cancelled() {
                return Ok(reports);
            }
            reports.push(v.table(table, mapping, progress).await?);
        }
    }
    Ok(reports)
}

struct Verifier<'a> {
    spec: &'a TargetSpec,
    request: &'a VerifyRequest<'a>,
    info: SourceInfo,
    src: Conn,
    /// Reads of the target, through the same client as the source's so both decode alike.
    tgt: Conn,
    tgt_db: String,
    /// rowsync's own tables, and repairs.
    sink: MySqlConnection,
    writer: Option<RowWriter>,
    limiter: Limiter,
}

impl<'a> Verifier<'a> {
    async fn open(
        spec: &'a TargetSpec,
        request: &'a VerifyRequest<'a>,
    ) -> Result<Verifier<'a>, VerifyError> {
        let mut src = connect(&spec.source_opts()?).await?;
        let info = SourceInfo::read(&mut src).await?;
        let mut sink = target::connect(&spec.target).await?;
        checkpoint::ensure_tables(&mut sink).await?;
        if checkpoint::load(&mut sink, &spec.pipeline).await?.is_none() {
            return Err(VerifyError::NotStarted(spec.name().to_owned()));
        }
        let url = spec.target.url.replacen("mariadb://", "mysql://", 1);
        let opts =
            source_opts(&url, spec.target.tls.as_ref()).map_err(|e| SourceError::Config {
                reason: format!("targets.{}.url: {e}", spec.name()),
            })?;
        let tgt_db = opts.db_name().unwrap_or_default().to_owned();
        let tgt = connect(&opts).await?;
        Ok(Verifier {
            spec,
            request,
            info,
            src,
            tgt,
            tgt_db,
            sink,
            writer: None,
            limiter: Limiter::new(request.settings.rows_per_second),
        })
    }

    fn report(&self, table: &TableName, replica: &str) -> TableReport {
        TableReport {
            target: self.spec.name().to_owned(),
            source: table.clone(),
            replica: replica.to_owned(),
            chunks: 0,
            rows: 0,
            differing: 0,
            repaired: 0,
            ranges: Vec::new(),
            keys: Vec::new(),
            complete: false,
            skipped: None,
        }
    }

    /// Resolves `mapping` of `table` against both sides; `Err` is why it cannot be compared.
    async fn pair(&mut self, table: &TableName, mapping: &Mapping) -> Result<Pair, String> {
        let pipeline = &self.spec.pipeline;
        match checkpoint::table_state(&mut self.sink, pipeline, table).await {
            Ok(None) => {}
            Ok(Some(state)) => return Err(format!("the table is {state}, not streaming")),
            Err(e) => return Err(e.to_string()),
        }
        let catalog = catalog::load(&mut self.src, table)
            .await
            .map_err(|e| e.to_string())?;
        let names: Vec<String> = catalog.columns.iter().map(|c| c.name.clone()).collect();
        let projection = Projection::from_columns(mapping, table, names, &catalog.primary_key)
            .map_err(|e| e.to_string())?;
        let key: Vec<String> = catalog
            .primary_key
            .iter()
            .map(|&i| catalog.columns[i].name.clone())
            .collect();
        let filter_names = projection
            .filter
            .as_ref()
            .map(|f| f.columns())
            .unwrap_or_default();
        let replica = TableName::new(&self.tgt_db, &projection.replica);
        let replica_catalog = catalog::load(&mut self.tgt, &replica)
            .await
            .map_err(|e| e.to_string())?;
        if replica_catalog.columns.is_empty() {
            return Err(format!("replica table `{}` is missing", projection.replica));
        }
        let source = HashSpec::new(
            table.clone(),
            catalog,
            &projection.names,
            &key,
            &filter_names,
        )
        .map_err(|e| e.to_string())?;
        let replica = HashSpec::new(replica, replica_catalog, &projection.names, &key, &[])
            .map_err(|e| format!("{e}: its shape differs from the mapping's; re-copy it"))?;
        Ok(Pair {
            source,
            replica,
            projection: Arc::new(projection),
            filter_names,
        })
    }

    async fn table(
        &mut self,
        table: &TableName,
        mapping: &Mapping,
        progress: &(dyn Fn(Progress<'_>) + Sync),
    ) -> Result<TableReport, VerifyError> {
        let replica_name = mapping.replica_name(table);
        let mut report = self.report(table, &replica_name);
        let pair = match self.pair(table, mapping).await {
            Ok(pair) => pair,
            Err(reason) => {
                report.skipped = Some(reason);
                return Ok(report);
            }
        };
        let pipeline = self.spec.pipeline.clone();
        let estimate = self.estimate(table).await?;
        let settings = self.request.settings;
        // A scheduled run goes on with the pass the last one left (`next_key`), and its
        // record adds up the pass so far; a pass that starts over keeps what the last whole
        // pass found until it gets there again.
        let (mut after, budget, earlier) = if self.request.scheduled {
            let next = verified::next_key(&mut self.sink, &pipeline, &replica_name).await?;
            let earlier = verified::records(&mut self.sink, &pipeline)
                .await?
                .into_iter()
                .find(|r| r.replica == replica_name);
            let budget = (estimate as f64 * settings.share).ceil() as u64;
            (
                next.and_then(|k| decode_key(&k).ok()),
                budget.max(settings.chunk_rows as u64),
                earlier,
            )
        } else {
            (None, u64::MAX, None)
        };
        let continuing = after.is_some();
        loop {
            let (range, rows, diffs) = match self.chunk(&pair, after.take()).await {
                Ok(chunk) => chunk,
                Err(ChunkError::Table(reason)) => {
                    report.skipped = Some(reason);
                    return Ok(report);
                }
                Err(ChunkError::Fatal(e)) => return Err(e),
            };
            report.chunks += 1;
            report.rows += rows;
            if !diffs.is_empty() {
                self.note(&mut report, &range, &diffs);
                if self.request.repair {
                    report.repaired += self.repair(&pair, &range, &diffs).await?;
                }
            }
            progress(Progress {
                target: self.spec.name(),
                table,
                rows: report.rows,
                estimate,
            });
            self.limiter.take(rows.max(1)).await;
            match range.upto {
                None => {
                    report.complete = true;
                    break;
                }
                Some(upto) => after = Some(upto),
            }
            if report.rows >= budget || self.request.cancel.is_cancelled() {
                break;
            }
        }
        let mut record = VerifyRecord {
            replica: replica_name.clone(),
            source: table.clone(),
            finished_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            chunks: report.chunks,
            rows: report.rows,
            differing: report.differing,
            repaired: report.repaired,
            complete: report.complete,
            detail: detail(&report),
            last_pass: 0,
        };
        match earlier {
            Some(e) if continuing => {
                record.chunks += e.chunks;
                record.rows += e.rows;
                record.differing += e.differing;
                record.repaired += e.repaired;
                record.last_pass = e.last_pass;
                if record.detail.is_empty() {
                    record.detail = e.detail;
                }
            }
            Some(e) => record.last_pass = e.differing.saturating_sub(e.repaired),
            None => {}
        }
        let next = after.as_deref().map(encode_key);
        verified::record(&mut self.sink, &pipeline, &record, next.as_deref()).await?;
        Ok(report)
    }

    /// The source's estimate of `table`'s rows.
    async fn estimate(&mut self, table: &TableName) -> Result<u64, VerifyError> {
        let n: Option<Option<u64>> = self
            .src
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&table.db, &table.table),
            )
            .await?;
        Ok(n.flatten().unwrap_or(0))
    }

    fn note(&self, report: &mut TableReport, range: &KeyRange, diffs: &Diffs) {
        report.differing += diffs.len() as u64;
        if report.ranges.len() < MAX_LISTED {
            report.ranges.push(RangeDiff {
                after: range.after.as_deref().map(show_key),
                upto: range.upto.as_deref().map(show_key),
                rows: diffs.len() as u64,
            });
        }
        for (key, difference) in diffs {
            if report.keys.len() >= MAX_LISTED {
                break;
            }
            report.keys.push(KeyDiff {
                key: show_key(key),
                difference: *difference,
            });
        }
    }

    /// Compares the chunk after `after`: its range, source rows, and what differs.
    async fn chunk(
        &mut self,
        pair: &Pair,
        after: Option<Vec<Value>>,
    ) -> Result<(KeyRange, u64, Diffs), ChunkError> {
        let at = begin_read(&mut self.src, &self.info).await?;
        let upto = checksum::boundary(
            &mut self.src,
            &pair.source,
            after.as_deref(),
            self.request.settings.chunk_rows,
        )
        .await?;
        let range = KeyRange { after, upto };
        let source = match pair.filter_names.is_empty() {
            true => checksum::summary(&mut self.src, &pair.source, &range).await?,
            false => {
                let rows = self.kept_rows(pair, &range).await?;
                let mut s = Summary::default();
                rows.iter().for_each(|r| s.add(r.hash));
                s
            }
        };
        self.src.query_drop("COMMIT").await?;
        self.target_reached(&at).await?;
        let replica = checksum::summary(&mut self.tgt, &pair.replica, &range).await?;
        self.tgt.query_drop("COMMIT").await?;
        if source == replica {
            return Ok((range, source.rows, Vec::new()));
        }
        let diffs = self.settled_differences(pair, &range).await?;
        Ok((range, source.rows, diffs))
    }

    /// The keys of `range` that differ on every one of `RECHECKS` row-by-row comparisons,
    /// spaced out so that changes in flight have landed.
    async fn settled_differences(
        &mut self,
        pair: &Pair,
        range: &KeyRange,
    ) -> Result<Diffs, ChunkError> {
        let mut diffs = self.compare_rows(pair, range).await?;
        for attempt in 1..RECHECKS {
            if diffs.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            let again = self.compare_rows(pair, range).await?;
            diffs.retain(|(key, _)| again.iter().any(|(k, _)| k == key));
        }
        Ok(diffs)
    }

    /// The source rows of `range` the mapping keeps, in the open consistent read.
    async fn kept_rows(
        &mut self,
        pair: &Pair,
        range: &KeyRange,
    ) -> Result<Vec<RowHash>, ChunkError> {
        let rows = checksum::rows(&mut self.src, &pair.source, range).await?;
        let mut kept = Vec::with_capacity(rows.len());
        for r in rows {
            let keep = match &pair.projection.filter {
                None => true,
                Some(f) => f.matches(&pair.filter_names, &r.extra).map_err(|e| {
                    ChunkError::Table(format!("its filter cannot be evaluated: {e}"))
                })?,
            };
            if keep {
                kept.push(r);
            }
        }
        Ok(kept)
    }

    /// Row-by-row comparison of `range`, the replica read once it has reached the source read.
    async fn compare_rows(&mut self, pair: &Pair, range: &KeyRange) -> Result<Diffs, ChunkError> {
        let before = self.source_rows(pair, range).await?;
        self.target_reached(&before.0).await?;
        let replica = checksum::rows(&mut self.tgt, &pair.replica, range).await;
        self.tgt.query_drop("COMMIT").await?;
        let diffs = differences(&before.1, replica?);
        if diffs.is_empty() {
            return Ok(diffs);
        }
        // The replica may be newer than the first source read: a key is only compared where
        // the source did not change it around the replica's read (a hot row is not a drift).
        let (_, after) = self.source_rows(pair, range).await?;
        let state =
            |rows: &[RowHash], key: &[Value]| rows.iter().find(|r| r.key == key).map(|r| r.hash);
        Ok(diffs
            .into_iter()
            .filter(|(key, _)| state(&before.1, key) == state(&after, key))
            .collect())
    }

    /// The source's kept rows of `range` in a consistent read, and where that read stands.
    async fn source_rows(
        &mut self,
        pair: &Pair,
        range: &KeyRange,
    ) -> Result<(Checkpoint, Vec<RowHash>), ChunkError> {
        let at = begin_read(&mut self.src, &self.info).await?;
        let rows = self.kept_rows(pair, range).await;
        self.src.query_drop("COMMIT").await?;
        Ok((at, rows?))
    }

    /// Opens a consistent read of the target once its checkpoint includes `at`; the caller
    /// reads the replica in it and commits.
    async fn target_reached(&mut self, at: &Checkpoint) -> Result<(), VerifyError> {
        let started = Instant::now();
        loop {
            self.tgt
                .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await?;
            let row: Option<(String, u64, Option<String>, String, u32)> = self
                .tgt
                .exec_first(
                    "SELECT `binlog_file`, `binlog_pos`, `gtid`, `flavor`, `server_id` FROM `rowsync_checkpoint` WHERE `pipeline` = ?",
                    (&self.spec.pipeline,),
                )
                .await?;
            let reached = match row {
                Some(row) => stored_checkpoint(row)?.includes(at),
                None => false,
            };
            if reached {
                return Ok(());
            }
            self.tgt.query_drop("COMMIT").await?;
            if self.request.cancel.is_cancelled() {
                return Err(VerifyError::Cancelled);
            }
            if started.elapsed() > TARGET_WAIT {
                return Err(VerifyError::Behind {
                    target: self.spec.name().to_owned(),
                    position: at.position.to_string(),
                    waited: TARGET_WAIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rewrites the differing keys of `range` from the source, the target frozen at its
    /// checkpoint meanwhile (see the module doc); returns how many are equal afterwards.
    async fn repair(
        &mut self,
        pair: &Pair,
        range: &KeyRange,
        diffs: &Diffs,
    ) -> Result<u64, VerifyError> {
        let mut last = None;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            match self.repair_once(pair, range, diffs).await {
                Ok(()) => {
                    last = None;
                    break;
                }
                // Waited on, or deadlocked with, the applier's open group: try again.
                Err(VerifyError::Pipeline(PipelineError::Sink(e)))
                    if matches!(e.code(), Some(1205 | 1213)) =>
                {
                    let _ = target::exec(&mut self.sink, "ROLLBACK").await;
                    last = Some(e);
                }
                Err(e) => {
                    let _ = target::exec(&mut self.sink, "ROLLBACK").await;
                    return Err(e);
                }
            }
        }
        if let Some(e) = last {
            return Err(e.into());
        }
        let still = self
            .settled_differences(pair, range)
            .await
            .map_err(ChunkError::fatal)?;
        Ok(diffs
            .iter()
            .filter(|(k, _)| !still.iter().any(|(s, _)| s == k))
            .count() as u64)
    }

    async fn repair_once(
        &mut self,
        pair: &Pair,
        range: &KeyRange,
        diffs: &Diffs,
    ) -> Result<(), VerifyError> {
        if self.writer.is_none() {
            self.writer = Some(RowWriter::new(&mut self.sink, 1000).await?);
        }
        let pipeline = &self.spec.pipeline;
        target::exec(&mut self.sink, "SET SESSION innodb_lock_wait_timeout = 5").await?;
        // A verify that stops answering must not keep the stream frozen for long.
        target::set_wait_timeout(&mut self.sink, self.spec.standby.takeover).await?;
        target::exec(&mut self.sink, "BEGIN").await?;
        const FREEZE: &str = "SELECT `binlog_file`, `binlog_pos`, `gtid`, `flavor`, `server_id` FROM `rowsync_checkpoint` WHERE `pipeline` = ? FOR UPDATE";
        let frozen: Option<(String, u64, Option<String>, String, u32)> = sqlx::query_as(FREEZE)
            .bind(pipeline)
            .fetch_optional(&mut self.sink)
            .await
            .map_err(|e| SinkError::db(FREEZE, e))?;
        let Some(frozen) = frozen else {
            target::exec(&mut self.sink, "ROLLBACK").await?;
            return Err(VerifyError::NotStarted(self.spec.name().to_owned()));
        };
        let frozen = stored_checkpoint(frozen)?;
        let table = pair.source.table.clone();
        if let Some(state) = checkpoint::table_state(&mut self.sink, pipeline, &table).await? {
            tracing::info!(table = %table, %state, "not repairing: the table stopped streaming meanwhile");
            target::exec(&mut self.sink, "ROLLBACK").await?;
            return Ok(());
        }
        let copy = CopyTable {
            name: table,
            catalog: pair.source.catalog.clone(),
        };
        // The rows as of a source read at or after the frozen checkpoint (a binlog event can
        // reach the stream before its transaction is visible to readers): the stream's replay
        // from the checkpoint then converges them.
        let started = Instant::now();
        let rows = loop {
            let at = begin_read_including(&mut self.src, &self.info).await?;
            if at.includes(&frozen) {
                let rows = read_rows(&mut self.src, &copy, range, None).await;
                self.src.query_drop("COMMIT").await?;
                break rows?;
            }
            self.src.query_drop("COMMIT").await?;
            if started.elapsed() > Duration::from_secs(5) {
                target::exec(&mut self.sink, "ROLLBACK").await?;
                return Err(VerifyError::Behind {
                    target: self.spec.name().to_owned(),
                    position: frozen.position.to_string(),
                    waited: Duration::from_secs(5),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let wanted: HashMap<String, ()> = diffs.iter().map(|(k, _)| (encode_key(k), ())).collect();
        let p = &pair.projection;
        let mut ops = Vec::new();
        let mut seen = HashMap::new();
        for row in &rows {
            let key = p.key_of(row);
            let encoded = encode_key(&key);
            if !wanted.contains_key(&encoded) {
                continue;
            }
            seen.insert(encoded, ());
            let keep = p
                .keeps(row)
                .map_err(|e| SinkError::Checkpoint(e.to_string()))?;
            ops.push(match keep {
                true => Op::Upsert(p.clone(), p.row(row)),
                false => Op::Delete(p.clone(), key),
            });
        }
        for (key, _) in diffs {
            if !seen.contains_key(&encode_key(key)) {
                ops.push(Op::Delete(p.clone(), key.clone()));
            }
        }
        // Deletes first: under a case-insensitive key, 'A' (extra) and 'a' (missing) are one
        // row, which the upsert of 'a' must write after 'A' is gone, not before.
        ops.sort_by_key(|op| !matches!(op, Op::Delete(..)));
        if let Some(writer) = self.writer.as_mut() {
            writer.write(&mut self.sink, &ops).await?;
        }
        target::exec(&mut self.sink, "COMMIT").await?;
        tracing::info!(target = %self.spec.name(), replica = %p.replica, rows = ops.len(), "repaired differing rows");
        Ok(())
    }
}

/// A chunk that could not be compared: the table's problem, or everyone's.
enum ChunkError {
    Table(String),
    Fatal(VerifyError),
}

impl ChunkError {
    fn fatal(self) -> VerifyError {
        match self {
            ChunkError::Fatal(e) => e,
            ChunkError::Table(reason) => SinkError::Checkpoint(reason).into(),
        }
    }
}

impl<E: Into<VerifyError>> From<E> for ChunkError {
    fn from(e: E) -> Self {
        ChunkError::Fatal(e.into())
    }
}

/// A checkpoint row as `includes` needs it.
fn stored_checkpoint(
    (file, offset, gtid, flavor, server_id): (String, u64, Option<String>, String, u32),
) -> Result<Checkpoint, VerifyError> {
    let bad = |e: crate::model::position::ParsePositionError| SinkError::Checkpoint(e.to_string());
    let flavor: Flavor = flavor.parse().map_err(bad)?;
    Ok(Checkpoint {
        position: Position::new(file.parse().map_err(bad)?, offset),
        gtid: gtid
            .map(|g| GtidSet::parse_for(flavor, &g))
            .transpose()
            .map_err(bad)?,
        source: SourceIdentity {
            flavor,
            server_id,
            server_uuid: None,
            binlog_base: String::new(),
        },
        source_time: 0,
    })
}

/// The keys whose rows differ between `source` and `replica`.
fn differences(source: &[RowHash], replica: Vec<RowHash>) -> Diffs {
    let mut wanted: HashMap<String, (Vec<Value>, u64)> = source
        .iter()
        .map(|r| (encode_key(&r.key), (r.key.clone(), r.hash)))
        .collect();
    let mut out = Vec::new();
    for r in replica {
        match wanted.remove(&encode_key(&r.key)) {
            None => out.push((r.key, Difference::Extra)),
            Some((_, hash)) if hash != r.hash => out.push((r.key, Difference::Different)),
            Some(_) => {}
        }
    }
    out.extend(wanted.into_values().map(|(k, _)| (k, Difference::Missing)));
    out
}

/// A key as people read it: its values as SQL literals, in key order.
fn show_key(key: &[Value]) -> String {
    let values: Vec<String> = key
        .iter()
        .map(|v| match v {
            Value::Null => "NULL".to_owned(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) | Value::Bit(u) | Value::Set(u) => u.to_string(),
            Value::Year(y) | Value::Enum(y) => y.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Double(d) => d.to_string(),
            Value::Decimal(t) => t.to_string(),
            Value::Temporal(t) | Value::Text(t) | Value::Json(t) => {
                format!("'{}'", t.replace('\\', "\\\\").replace('\'', "\\'"))
            }
            Value::Bytes(b) => format!(
                "0x{}",
                b.iter().map(|x| format!("{x:02X}")).collect::<String>()
            ),
        })
        .collect();
    format!("({})", values.join(", "))
}

/// The first differing keys, as stored with the result.
fn detail(report: &TableReport) -> String {
    if let Some(reason) = &report.skipped {
        return format!("skipped: {reason}");
    }
    report
        .keys
        .iter()
        .take(20)
        .map(|k| format!("{} {}", k.difference, k.key))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Holds reads to `rate` rows per second on average.
struct Limiter {
    rate: u64,
    started: Instant,
    rows: u64,
}

impl Limiter {
    fn new(rate: u64) -> Self {
        Limiter {
            rate: rate.max(1),
            started: Instant::now(),
            rows: 0,
        }
    }

    async fn take(&mut self, rows: u64) {
        self.rows += rows;
        let due = self.started + Duration::from_secs_f64(self.rows as f64 / self.rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, hash: u64) -> RowHash {
        RowHash {
            key: vec![Value::Int(id)],
            hash,
            extra: Vec::new(),
        }
    }

    #[test]
    fn differences_name_missing_extra_and_changed_keys() {
        let source = vec![row(1, 10), row(2, 20), row(3, 30)];
        let replica = vec![row(1, 10), row(3, 31), row(4, 40)];
        let mut d = differences(&source, replica);
        d.sort_by_key(|(k, _)| encode_key(k));
        assert_eq!(
            d,
            vec![
                (vec![Value::Int(2)], Difference::Missing),
                (vec![Value::Int(3)], Difference::Different),
                (vec![Value::Int(4)], Difference::Extra),
            ]
        );
    }
}

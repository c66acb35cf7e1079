//! Live state of each target's pipeline, written by the engine and the sink (through
//! `sink::Observer`) and read by observers: log lines, the state store, progress bars, later
//! the admin API and metrics. Observers take snapshots; they never change it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::event::{Backlog, ChangeCounts};
use crate::model::name::TableName;
use crate::model::position::Checkpoint;
use crate::model::table::{CopyProgress, StoppedTable, VerifyRecord};
use crate::model::ErrorClass;
use crate::sink::Observer;

/// An error that ended a pipeline attempt, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
    /// The target statement that failed, when one did.
    pub statement: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where a target's pipeline is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    /// The initial copy is running.
    Copying,
    Streaming,
    /// Paused by a command; resumes from its checkpoint on `Resume`.
    Paused,
    /// Another process holds the target's lock (who, as it named itself); this one takes
    /// over when that one stops.
    Standby(String),
    /// A transient error; the pipeline reconnects after a backoff.
    Retrying(Failure),
    /// A definite error; the target stays stopped until restarted (or reloaded).
    Stopped(Failure),
    ShutDown,
}

impl State {
    /// The state's name, as the store and the logs show it.
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Copying => "copying",
            State::Streaming => "streaming",
            State::Paused => "paused",
            State::Standby(_) => "standby",
            State::Retrying(_) => "retrying",
            State::Stopped(_) => "stopped",
            State::ShutDown => "shut down",
        }
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            State::Retrying(f) | State::Stopped(f) => Some(f),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub target: String,
    pub state: State,
    pub checkpoint: Option<Checkpoint>,
    /// The writer has applied everything the source sent (a heartbeat arrived since).
    pub caught_up: bool,
    pub rows_applied: u64,
    pub transactions_applied: u64,
    pub stopped_tables: Vec<StoppedTable>,
    /// Initial copy progress per table.
    pub copy: Vec<CopyProgress>,
    /// Attempts of the pipeline begun since this status was made (restarts and retries).
    pub runs: u64,
    /// Row changes written per source table since this status was made.
    pub tables_applied: BTreeMap<TableName, ChangeCounts>,
    /// Attempts that ended in an error, by class.
    pub errors_transient: u64,
    pub errors_definite: u64,
    /// Events the reader has handed over and the writer not yet taken.
    pub pending_events: u64,
    /// Bytes of binlog events read since this status was made.
    pub binlog_bytes: u64,
    /// How long target COMMITs took.
    pub commits: CommitTimes,
    /// Seconds each apply lane spent running statements and commits.
    pub lane_busy: Vec<f64>,
    /// The last `verify` result per replica table, as recorded in the target.
    pub verified: Vec<VerifyRecord>,
}

/// A histogram of COMMIT durations, in Prometheus' cumulative form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitTimes {
    /// Commits that took at most `COMMIT_BUCKETS[i]` seconds.
    pub buckets: [u64; COMMIT_BUCKETS.len()],
    pub sum_secs: f64,
    pub count: u64,
}

/// Upper bounds (seconds) of the commit-time histogram's buckets.
pub const COMMIT_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

impl CommitTimes {
    fn observe(&mut self, secs: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(COMMIT_BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        self.sum_secs += secs;
        self.count += 1;
    }
}

impl Snapshot {
    /// Lag as `Checkpoint::lag_secs` defines it, now.
    pub fn lag_secs(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        self.checkpoint.as_ref()?.lag_secs(self.caught_up, now)
    }
}

/// Shared, lock-protected status of one target.
#[derive(Debug)]
pub struct TargetStatus {
    inner: Mutex<Snapshot>,
    /// The running stream's queue, read when a snapshot is taken.
    backlog: Mutex<Option<Backlog>>,
    /// Shared with the running reader.
    bytes_read: Arc<AtomicU64>,
}

impl TargetStatus {
    pub fn new(target: &str) -> Self {
        TargetStatus {
            inner: Mutex::new(Snapshot {
                target: target.to_owned(),
                state: State::Starting,
                checkpoint: None,
                caught_up: false,
                rows_applied: 0,
                transactions_applied: 0,
                stopped_tables: Vec::new(),
                copy: Vec::new(),
                runs: 0,
                tables_applied: BTreeMap::new(),
                errors_transient: 0,
                errors_definite: 0,
                pending_events: 0,
                binlog_bytes: 0,
                commits: CommitTimes::default(),
                lane_busy: Vec::new(),
                verified: Vec::new(),
            }),
            backlog: Mutex::new(None),
            bytes_read: Arc::default(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut snap = self.with(|s| s.clone());
        if let Some(backlog) = self
            .backlog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            snap.pending_events = backlog.get() as u64;
        }
        snap.binlog_bytes = self.bytes_read.load(Ordering::Relaxed);
        snap
    }

    /// A stream starts with this queue between its reader and writer.
    pub fn streaming_through(&self, backlog: Backlog) {
        *self.backlog.lock().unwrap_or_else(|p| p.into_inner()) = Some(backlog);
    }

    /// The counter the reader adds the bytes it reads to.
    pub fn bytes_counter(&self) -> Arc<AtomicU64> {
        self.bytes_read.clone()
    }

    /// The target's recorded `verify` results, read again.
    pub fn set_verified(&self, records: Vec<VerifyRecord>) {
        self.with(|s| s.verified = records);
    }

    pub fn set_state(&self, state: State) {
        self.with(|s| s.state = state);
    }

    /// An attempt ended in `failure`: the target retries (transient) or stops (definite).
    pub fn failed(&self, failure: Failure) {
        self.with(|s| {
            match failure.class {
                ErrorClass::Transient => s.errors_transient += 1,
                ErrorClass::Definite => s.errors_definite += 1,
            }
            s.state = match failure.class {
                ErrorClass::Transient => State::Retrying(failure),
                ErrorClass::Definite => State::Stopped(failure),
            };
        });
    }

    /// A pipeline attempt begins.
    pub fn attempt(&self) {
        self.with(|s| s.runs += 1);
    }

    /// Another process holds the target's lock: what this one knew of the target (position,
    /// lag) is no longer its to report.
    pub fn standing_by(&self, holder: String) {
        self.with(|s| {
            s.state = State::Standby(holder);
            s.checkpoint = None;
            s.caught_up = false;
            s.stopped_tables.clear();
            s.copy.clear();
        });
    }

    pub fn started(&self, checkpoint: &Checkpoint, stopped: Vec<StoppedTable>) {
        self.with(|s| {
            s.state = State::Streaming;
            s.checkpoint = Some(checkpoint.clone());
            s.stopped_tables = stopped;
            s.caught_up = false;
        });
    }
}

impl Observer for TargetStatus {
    fn committed(&self, checkpoint: &Checkpoint, transactions: u64, took: Duration) {
        self.with(|s| {
            s.checkpoint = Some(checkpoint.clone());
            s.transactions_applied += transactions;
            s.commits.observe(took.as_secs_f64());
        });
    }

    fn caught_up(&self) {
        self.with(|s| s.caught_up = true);
    }

    fn rows_applied(&self, table: &TableName, changes: ChangeCounts) {
        self.with(|s| {
            s.rows_applied += changes.total();
            s.caught_up = false;
            match s.tables_applied.get_mut(table) {
                Some(c) => c.add(changes),
                None => {
                    s.tables_applied.insert(table.clone(), changes);
                }
            }
        });
    }

    fn copy_progress(&self, progress: &CopyProgress) {
        self.with(|s| {
            s.state = State::Copying;
            match s.copy.iter_mut().find(|p| p.table == progress.table) {
                Some(p) => *p = progress.clone(),
                None => s.copy.push(progress.clone()),
            }
        });
    }

    fn table_stopped(&self, table: StoppedTable) {
        self.with(|s| s.stopped_tables.push(table));
    }

    fn table_resumed(&self, table: &TableName) {
        self.with(|s| s.stopped_tables.retain(|t| &t.table != table));
    }

    fn lane_busy(&self, lane: usize, busy: Duration) {
        self.with(|s| {
            if s.lane_busy.len() <= lane {
                s.lane_busy.resize(lane + 1, 0.0);
            }
            s.lane_busy[lane] += busy.as_secs_f64();
        });
    }
}

//! Live state of each target's pipeline, written by the engine and the sink (through
//! `sink::Observer`) and read by observers: log lines, the state store, progress bars, later
//! the admin API and metrics. Observers take snapshots; they never change it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::event::ChangeCounts;
use crate::model::name::TableName;
use crate::model::position::Checkpoint;
use crate::model::table::{CopyProgress, StoppedTable};
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
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.with(|s| s.clone())
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
    fn committed(&self, checkpoint: &Checkpoint, transactions: u64) {
        self.with(|s| {
            s.checkpoint = Some(checkpoint.clone());
            s.transactions_applied += transactions;
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
}

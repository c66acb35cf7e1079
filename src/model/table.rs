//! The lifecycle of a source table on one target, and what rowsync records about it.
//!
//! # Table states
//! A source table with no state streams normally. Each transition is one statement, written in
//! the target transaction whose rows or copy step it describes (`sink::checkpoint`):
//! - (none) → `NeedsRecopy`: the stream cannot apply the table any more (a DDL it cannot
//!   follow, XA, a dropped table); any state → `NeedsRecopy` too, a stop always wins.
//! - (none) | `NeedsRecopy` | `CatchingUp` → `RecopyRequested`: `rowsync resync`, the engine's
//!   `Recopy` command, or a mapping that is new or changed shape.
//! - `RecopyRequested` → `Copying` (the writer stops applying the table) → `CatchingUp`
//!   (copied; the stream applies it from its snapshot) → (none) once caught up.
//!
//! A floor update only moves a table that is still `CatchingUp`, so it can never overwrite a
//! stop or a re-copy recorded meanwhile.

use super::name::TableName;
use super::position::Position;

/// A stored state or phase name that this rowsync does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown table state `{0}`")]
pub struct UnknownState(pub String);

/// The lifecycle state of one source table on a target (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableState {
    /// Stopped at a stream position with a reason; only a re-copy restarts it.
    NeedsRecopy,
    /// A re-copy was asked for; the running daemon starts it at a transaction boundary.
    RecopyRequested,
    /// Being re-copied; the stream skips the table.
    Copying,
    /// Re-copied; the stream applies the table from its own floor until it reaches the rest.
    CatchingUp,
}

impl TableState {
    pub fn as_str(self) -> &'static str {
        match self {
            TableState::NeedsRecopy => "needs_recopy",
            TableState::RecopyRequested => "recopy_requested",
            TableState::Copying => "copying",
            TableState::CatchingUp => "catching_up",
        }
    }

    pub fn parse(text: &str) -> Result<TableState, UnknownState> {
        Ok(match text {
            "needs_recopy" => TableState::NeedsRecopy,
            "recopy_requested" => TableState::RecopyRequested,
            "copying" => TableState::Copying,
            "catching_up" => TableState::CatchingUp,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

impl std::fmt::Display for TableState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a stored checkpoint means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The initial copy is under way; streaming starts from the checkpoint once it is done.
    Copying,
    /// Streaming; the checkpoint is the end of the last applied source transaction.
    Streaming,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::Streaming => "streaming",
        }
    }
}

/// A table that stopped on this target, or waits for a re-copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedTable {
    pub table: TableName,
    /// `NeedsRecopy` or `RecopyRequested`.
    pub state: TableState,
    /// The stream position it stopped at (empty for a requested re-copy).
    pub since: String,
    pub statement: Option<String>,
    pub reason: String,
}

/// Copy progress of one source table on this target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyProgress {
    pub table: TableName,
    pub done: bool,
    /// JSON array of the last copied row's key (see `model::value::encode_key`).
    pub last_key: Option<String>,
    pub rows_copied: u64,
    pub rows_estimated: u64,
}

/// A table's floor while it catches up after a re-copy: where its own applied history ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFloor {
    pub table: TableName,
    /// `Copying` (the re-copy runs; the stream skips the table) or `CatchingUp`.
    pub state: TableState,
    pub position: Option<Position>,
    pub gtid: Option<String>,
}

/// What one replica table holds: the rows of `source` under a mapping of `shape`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub replica: String,
    pub source: TableName,
    /// `Mapping::shape` of the mapping that filled it.
    pub shape: String,
}

/// A secondary key of a replica: its name and its definition (`KEY `k` (`a`,`b`)`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyDefinition {
    pub name: String,
    pub definition: String,
}

/// The last `verify` result of one replica table, as recorded in its target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyRecord {
    pub replica: String,
    pub source: TableName,
    /// When the run ended, seconds since the epoch.
    pub finished_at: u64,
    pub chunks: u64,
    pub rows: u64,
    /// Rows that differed after every re-check.
    pub differing: u64,
    /// Rows `--repair` rewrote.
    pub repaired: u64,
    /// Whether the run (for the daemon's schedule: the pass so far, run by run) covered the
    /// whole table.
    pub complete: bool,
    /// The first differing keys and key ranges, as text.
    pub detail: String,
    /// Rows still differing at the end of the previous whole pass of the schedule, so a
    /// difference stays visible while the next pass has not reached it yet.
    pub last_pass: u64,
}

impl VerifyRecord {
    /// Rows known to differ from the source (after repairs).
    pub fn mismatched(&self) -> u64 {
        self.differing
            .saturating_sub(self.repaired)
            .max(self.last_pass)
    }
}

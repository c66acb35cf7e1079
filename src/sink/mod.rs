//! The target side: replica tables, checkpoints and the writer that applies source
//! transactions to one target database.
//!
//! # Exactly-once
//! Each target keeps, in its own `rowsync_checkpoint` table, the source position after the
//! last whole source transaction it applied, written by the same target transaction as that
//! transaction's rows. A restart reads it and resumes the binlog exactly there: what was
//! committed is never applied again, what was not is applied once. Nothing else (a local file,
//! a timer) ever claims a position.
//!
//! # Grouping and batching
//! Consecutive source transactions may share one target transaction (the main speed lever);
//! one is never split, and the group's checkpoint is the end of its last transaction. Inside a
//! transaction, consecutive changes of the same replica table and kind become one multi-row
//! statement, so source order between conflicting rows is kept. Full row images make every
//! write idempotent per key: upserts for inserts and updates, deletes by key, and an update
//! that changes the key deletes the old key first. Groups run on several target connections
//! at once when their keys are disjoint, and commit in source order (`lanes`).

pub mod apply;
pub mod checkpoint;
pub mod copy;
pub mod ddl;
pub mod lanes;
pub mod lock;
pub mod replica;
pub mod target;
pub mod verified;
pub mod writer;

use futures_util::future::BoxFuture;
use sqlx::mysql::MySqlDatabaseError;

use crate::model::definition::SourceDefinition;
use crate::model::event::ChangeCounts;
use crate::model::name::TableName;
use crate::model::position::Checkpoint;
use crate::model::table::{CopyProgress, StoppedTable, UnknownState};
use crate::model::value::BadKey;
use crate::model::ErrorClass;
use crate::routing::mapping::MappingError;

/// What a target's writer reports as it goes, to whoever runs it (the engine's live status).
/// Calls are cheap and never fail: the sink does not wait on its observers.
pub trait Observer: Send + Sync {
    /// A group committed, ending at `checkpoint`, with `transactions` source transactions; its
    /// COMMIT took `took`.
    fn committed(&self, checkpoint: &Checkpoint, transactions: u64, took: std::time::Duration);
    /// The writer has applied everything the source sent so far.
    fn caught_up(&self);
    /// Row changes of `table` were written (not committed yet).
    fn rows_applied(&self, table: &TableName, changes: ChangeCounts);
    /// A table's copy advanced.
    fn copy_progress(&self, progress: &CopyProgress);
    fn table_stopped(&self, table: StoppedTable);
    /// A stopped table streams again (it was created anew on the source).
    fn table_resumed(&self, table: &TableName);
    /// Apply lane `lane` spent `busy` running statements and commits (see `sink::lanes`).
    fn lane_busy(&self, lane: usize, busy: std::time::Duration);
}

/// What the sink needs to read of the source, given by its caller: the sink never opens a
/// source connection itself.
pub trait SourceCatalog: Send + Sync {
    /// The source's definition of `table` as it is now (for a `CREATE TABLE … LIKE` or
    /// `… SELECT` of the stream, whose statement does not spell the columns out).
    fn definition<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<SourceDefinition, SinkError>>;
}

/// Errors of the target side, each classed as retryable or definite.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("target statement failed: {source}; statement: {statement}")]
    Db {
        statement: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("replica table {table} cannot be used: {reason}")]
    Incompatible { table: String, reason: String },
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("reading the source definition of {table}: {message}")]
    Catalog {
        table: TableName,
        class: ErrorClass,
        message: String,
    },
    #[error("stored checkpoint is unreadable: {0}")]
    Checkpoint(String),
    #[error("{0}")]
    Busy(String),
    #[error("target `{target}` did not answer within {after:?}")]
    ConnectTimeout {
        target: String,
        after: std::time::Duration,
    },
    /// The target's lock moved to another process: this one must not commit.
    #[error("{0}")]
    Fenced(String),
    #[error("holding a prepared XA branch in a temporary file: {source}")]
    Spill {
        #[source]
        source: std::io::Error,
    },
    /// An apply lane ended without an error of its own: a bug, which no retry heals.
    #[error("an apply lane failed: {0}")]
    LaneEnded(String),
    #[error("XA COMMIT of branch {xid}, whose prepared part came before this target's start position, so its rows were never read; re-copy the target's tables")]
    UnknownXa { xid: String },
}

impl From<UnknownState> for SinkError {
    fn from(e: UnknownState) -> Self {
        SinkError::Checkpoint(e.to_string())
    }
}

impl From<BadKey> for SinkError {
    fn from(e: BadKey) -> Self {
        SinkError::Checkpoint(e.to_string())
    }
}

/// MySQL error numbers a retry can fix: deadlock, lock wait timeout, connection lost or
/// killed, server shutting down or read-only for a while, too many connections; and a
/// privilege missing on the target (command, column or database access denied, a needed
/// privilege), which a GRANT fixes: the target retries, showing the error, and resumes by
/// itself once the grant is back.
const RETRYABLE_CODES: &[u16] = &[
    1213, 1205, 2006, 2013, 1053, 1927, 1290, 1040, 1317, 1159, 1161, 1142, 1143, 1044, 1227,
];

impl SinkError {
    pub fn db(statement: impl Into<String>, source: sqlx::Error) -> SinkError {
        let mut statement = statement.into();
        if statement.len() > 300 {
            let mut cut = 300;
            while !statement.is_char_boundary(cut) {
                cut -= 1;
            }
            statement.truncate(cut);
            statement.push_str(" …");
        }
        SinkError::Db { statement, source }
    }

    /// The server's error number, if the database returned one.
    pub fn code(&self) -> Option<u16> {
        match self {
            SinkError::Db { source, .. } => source
                .as_database_error()
                .and_then(|d| d.try_downcast_ref::<MySqlDatabaseError>())
                .map(|m| m.number()),
            _ => None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Db { source, .. } => match source {
                sqlx::Error::Database(_) => {
                    self.code().is_some_and(|c| RETRYABLE_CODES.contains(&c))
                }
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => true,
                _ => false,
            },
            SinkError::Catalog { class, .. } => *class == ErrorClass::Transient,
            // The branch is read again from its floor after a restart.
            SinkError::Busy(_)
            | SinkError::Fenced(_)
            | SinkError::ConnectTimeout { .. }
            | SinkError::Spill { .. } => true,
            _ => false,
        }
    }
}

//! The source side: reading the binlog of a MySQL/MariaDB server as a replica does, and
//! turning it into a stream of source transactions with typed row changes.
//!
//! # Transactions as a stream
//! The reader emits `Begin`, `Rows` batches (one per binlog rows event) and `Commit` carrying
//! the `Checkpoint` after that transaction, so a transaction of any size flows through a
//! bounded channel and still commits atomically downstream. Transactions that touch no
//! selected table emit only their `Commit` (positions must advance past them too). DDL groups
//! have no XID: they end after their single QUERY event.
//!
//! # Positions
//! The reader tracks the current binlog file (ROTATE events) and each event's end offset, and
//! the GTID state (one GTID per MariaDB domain, or MySQL's uuid interval sets). The checkpoint
//! of a commit is the file/offset after its XID/COMMIT event plus the GTID state including
//! its GTID, so a restart from it neither repeats nor skips a transaction.
//!
//! # Resumption
//! A reader starts from a checkpoint: from its GTID state when the source has GTIDs
//! (MariaDB `@slave_connect_state`, MySQL `COM_BINLOG_DUMP_GTID`), else from its file/offset,
//! which is only accepted on the same server (identity check). On any error the reader stops;
//! the pipeline restarts it from the target's committed checkpoint, which makes a torn
//! transaction impossible by construction.

pub mod catalog;
pub mod charset;
pub mod conn;
pub mod info;
pub mod mariadb;
pub mod position;
pub mod reader;
pub mod rows_event;
pub mod schema;
pub mod snapshot;
pub mod statement;
pub mod value;

use std::sync::Arc;

use tokio::sync::mpsc;

use position::{Checkpoint, GroupId, ParsePositionError};
use schema::{SchemaError, TableName, TableSchema};
use value::{DecodeError, Value};

/// One row change of a source table, with full row images in source column order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum RowChange {
    Insert(Vec<Value>),
    Update {
        before: Vec<Value>,
        after: Vec<Value>,
    },
    Delete(Vec<Value>),
}

/// The changes of one binlog rows event.
#[derive(Debug, Clone)]
pub struct RowBatch {
    pub table: Arc<TableSchema>,
    pub changes: Vec<RowChange>,
}

/// What the reader hands downstream, in source order.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// A transaction with selected rows begins.
    Begin,
    Rows(RowBatch),
    /// TRUNCATE of a selected table, at its place in the stream.
    Truncate(TableName),
    /// A DDL statement on a selected table, at its place in the stream (a group of its own).
    Ddl {
        table: TableName,
        kind: DdlKind,
        statement: String,
        clock: StatementClock,
    },
    /// A selected table stops: its rows cannot be replicated from here on.
    TableStopped {
        table: TableName,
        reason: String,
    },
    /// The end of a source transaction (or of a group that touched no selected table): the
    /// state after it, and which transaction it was.
    Commit {
        checkpoint: Checkpoint,
        group: Option<GroupId>,
    },
    /// An XA branch's prepared part begins: the rows up to its group's `Commit` are held
    /// downstream, not applied. `floor` is the state before the group, where a restart must
    /// read from while the branch is unresolved.
    XaStart {
        xid: String,
        floor: Checkpoint,
    },
    /// An XA branch ends: its held rows apply (`commit`) in this group, for the tables whose
    /// floor does not include `group` yet, or are dropped.
    XaEnd {
        xid: String,
        commit: bool,
        group: Option<GroupId>,
    },
    /// The source sent a heartbeat: nothing more to read right now.
    CaughtUp,
}

/// Most events the reader hands over at once.
pub const EVENT_BATCH: usize = 64;

/// The reader's end of the channel to the writer: events travel in batches, so a busy stream
/// costs one hand-over (and one wake-up of the other thread) per batch, not per event.
pub type EventSender = mpsc::Sender<Vec<SourceEvent>>;

/// The writer's end: yields the events one by one, in order.
pub struct EventReceiver {
    rx: mpsc::Receiver<Vec<SourceEvent>>,
    batch: std::vec::IntoIter<SourceEvent>,
}

/// A channel holding about `events` events in flight (in batches of up to `EVENT_BATCH`).
pub fn event_channel(events: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(events.div_ceil(EVENT_BATCH).max(2));
    (
        tx,
        EventReceiver {
            rx,
            batch: Vec::new().into_iter(),
        },
    )
}

impl EventReceiver {
    /// The next event if one has arrived; `Err(Empty)` or `Err(Disconnected)` as `mpsc`.
    pub fn try_recv(&mut self) -> Result<SourceEvent, mpsc::error::TryRecvError> {
        loop {
            if let Some(event) = self.batch.next() {
                return Ok(event);
            }
            self.batch = self.rx.try_recv()?.into_iter();
        }
    }

    /// The next event; `None` once the reader has ended and everything was taken.
    pub async fn recv(&mut self) -> Option<SourceEvent> {
        loop {
            if let Some(event) = self.batch.next() {
                return Some(event);
            }
            self.batch = self.rx.recv().await?.into_iter();
        }
    }
}

/// The time a statement ran at on the source, which values like `DEFAULT CURRENT_TIMESTAMP`
/// that it fills into existing rows depend on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatementClock {
    /// Unix seconds of the event.
    pub timestamp: u32,
    /// The session's `time_zone`, when it logged one (else the server's own applies).
    pub time_zone: Option<String>,
}

/// How a `CREATE TABLE` treats a table of that name that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    /// Plain `CREATE TABLE`: it fails if the table exists, so a logged one made a new table.
    New,
    /// `CREATE OR REPLACE TABLE`: a new table either way.
    Replace,
    /// `CREATE TABLE IF NOT EXISTS`: logged even when it kept an existing table as it was.
    IfNotExists,
}

/// What a DDL statement does to a selected table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlKind {
    Alter,
    Create(CreateMode),
    Drop,
    Rename,
}

/// Errors of the source side, each classed as retryable or definite.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source connection failed: {0}")]
    Connection(#[from] mysql_async::Error),
    #[error("no binlog event for {0:?}: the connection looks dead, reconnecting")]
    ReadTimeout(std::time::Duration),
    #[error("the source did not answer within {0:?}")]
    ConnectTimeout(std::time::Duration),
    #[error("binlog event at {position} failed its checksum")]
    Checksum { position: String },
    #[error(
        "the source has binary logging off (log_bin=OFF); enable it and set binlog_format=ROW"
    )]
    BinlogOff,
    #[error("start position {position} is not available on the source: {reason}. Re-copy the target's tables, or start from `current`")]
    PositionUnavailable { position: String, reason: String },
    #[error("checkpoint belongs to another source ({expected}), not this one ({found}); file/offset positions only make sense on the server that wrote them (after RESET MASTER or a failover without GTIDs, re-copy)")]
    IdentityMismatch { expected: String, found: String },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("cannot decode a row of {table} at {position}: {source}")]
    Decode {
        table: TableName,
        position: String,
        source: DecodeError,
    },
    #[error("unsupported binlog content at {position}: {what}")]
    Unsupported { position: String, what: String },
    #[error("binlog protocol: {reason}")]
    Protocol { reason: String },
    #[error("{reason}")]
    Config { reason: String },
    #[error(transparent)]
    Position(#[from] ParsePositionError),
    #[error("the source has {count} prepared XA transaction(s); a copy waits until they are committed or rolled back (XA RECOVER lists them), since their rows would be in neither the copy nor the stream")]
    PreparedXa { count: usize },
    #[error("the pipeline stopped reading")]
    Closed,
}

impl SourceError {
    /// Whether reconnecting and trying again can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Connection(e) => match e {
                mysql_async::Error::Server(s) => !matches!(
                    s.code,
                    // binlog purged / position invalid, access denied, unknown variable, no
                    // such table or database (it will not come back by waiting)
                    1236 | 1045 | 1227 | 1193 | 1044 | 1146 | 1049
                ),
                mysql_async::Error::Url(_) => false,
                _ => true,
            },
            SourceError::ReadTimeout(_)
            | SourceError::PreparedXa { .. }
            | SourceError::ConnectTimeout(_)
            | SourceError::Checksum { .. }
            | SourceError::Closed => true,
            _ => false,
        }
    }

    /// Whether the server said the table (or its database) does not exist.
    pub fn is_missing_table(&self) -> bool {
        matches!(self, SourceError::Connection(mysql_async::Error::Server(s)) if s.code == 1146 || s.code == 1049)
    }

    /// The server's error 1236 (cannot read the requested binlog position) as a clear error.
    pub fn explain_start(self, position: &str) -> SourceError {
        match self {
            SourceError::Connection(mysql_async::Error::Server(s)) if s.code == 1236 => {
                SourceError::PositionUnavailable {
                    position: position.to_owned(),
                    reason: s.message,
                }
            }
            other => other,
        }
    }
}

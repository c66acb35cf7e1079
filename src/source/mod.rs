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
pub mod checksum;
pub mod conn;
pub mod info;
pub mod mariadb;
pub mod payload;
pub mod reader;
pub mod rows_event;
pub mod schema;
pub mod snapshot;
pub mod statement;
pub mod value;

use crate::model::name::TableName;
use crate::model::position::ParsePositionError;
use schema::SchemaError;
use value::DecodeError;

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
    #[error("the compressed transaction (TRANSACTION_PAYLOAD event) at {position} cannot be read in full: {source}. rowsync stops here rather than skip its rows; inspect the event with `mysqlbinlog --start-position`")]
    Payload {
        position: String,
        source: payload::PayloadError,
    },
    #[error("the binlog client library failed reading the event at {position} (a malformed or truncated event): {message}")]
    ClientPanic { position: String, message: String },
    #[error("{reason}")]
    Config { reason: String },
    #[error(transparent)]
    Position(#[from] ParsePositionError),
    #[error("the source has {count} prepared XA transaction(s); a copy waits until they are committed or rolled back (XA RECOVER lists them), since their rows would be in neither the copy nor the stream")]
    PreparedXa { count: usize },
    #[error("cannot read the definition of {table}: {reason}")]
    Definition { table: TableName, reason: String },
    #[error("the pipeline stopped reading")]
    Closed,
    #[error("a row of {table} has no checksum: one of its values is larger than the server's max_allowed_packet; raise it to verify this table")]
    Unhashable { table: TableName },
    /// The server ended the dump (it is shutting down, or the dump thread was killed):
    /// reconnecting resumes from the checkpoint.
    #[error("the source ended the binlog stream (a restart, or its dump thread was killed); reconnecting")]
    StreamEnded,
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
            | SourceError::Closed
            | SourceError::StreamEnded => true,
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

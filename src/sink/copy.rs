//! The target half of a copy: each table's copy starts with its replicas emptied and recorded
//! in one transaction, and each chunk is written in a transaction of its own that commits
//! with the table's progress, so the stored progress always ends at a committed chunk. Which
//! chunks come when, and from where, is the caller's (`engine::copy`).

use std::collections::HashSet;

use sqlx::mysql::MySqlConnection;

use super::lock::Fence;
use super::target::exec;
use super::writer::{Op, RowWriter};
use super::{checkpoint, SinkError};
use crate::model::name::quote_ident;
use crate::model::table::{CopyProgress, ReplicaRecord};

/// Starts a table's copy from scratch: empties its replicas (rows left by an earlier attempt
/// or by hand cannot survive a copy), records what each replica holds from this commit on,
/// and stores the fresh progress, in one transaction.
pub async fn start_table(
    conn: &mut MySqlConnection,
    pipeline: &str,
    records: &[ReplicaRecord],
    progress: &CopyProgress,
    fence: Option<&Fence>,
) -> Result<(), SinkError> {
    exec(conn, "BEGIN").await?;
    let mut emptied = HashSet::new();
    for record in records {
        if emptied.insert(record.replica.as_str()) {
            exec(
                conn,
                &format!("DELETE FROM {}", quote_ident(&record.replica)),
            )
            .await?;
        }
    }
    for record in records {
        checkpoint::record_replica(conn, pipeline, record).await?;
    }
    checkpoint::store_copy_progress(conn, pipeline, progress).await?;
    fenced_commit(conn, fence).await
}

/// COMMIT, once `fence` says this process still holds the target's lock.
async fn fenced_commit(conn: &mut MySqlConnection, fence: Option<&Fence>) -> Result<(), SinkError> {
    super::lock::check(fence, conn).await?;
    exec(conn, "COMMIT").await
}

/// Opens a chunk's transaction and writes its rows; `commit_chunk` or `abandon` ends it.
pub async fn write_chunk(
    conn: &mut MySqlConnection,
    writer: &mut RowWriter,
    ops: &[Op],
) -> Result<(), SinkError> {
    exec(conn, "BEGIN").await?;
    writer.write(conn, ops).await
}

/// Commits the open chunk with the table's progress after it.
pub async fn commit_chunk(
    conn: &mut MySqlConnection,
    pipeline: &str,
    progress: &CopyProgress,
    fence: Option<&Fence>,
) -> Result<(), SinkError> {
    checkpoint::store_copy_progress(conn, pipeline, progress).await?;
    fenced_commit(conn, fence).await
}

/// Rolls back whatever chunk is open on `conn`.
pub async fn abandon(conn: &mut MySqlConnection) -> Result<(), SinkError> {
    exec(conn, "ROLLBACK").await
}

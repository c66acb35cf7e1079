//! The tables rowsync keeps in each target: `rowsync_checkpoint` (the position after the last
//! applied source transaction, per pipeline) and `rowsync_table_state` (tables that stopped,
//! e.g. "needs re-copy since P"). Both are InnoDB and written inside the apply transaction.
//! Beside them: `rowsync_copy` (per-table copy progress), `rowsync_replica` (which source
//! table and mapping shape each replica table holds) and `rowsync_deferred_keys` (secondary
//! keys of replicas created for an initial copy, added once the copy is done).
//!
//! A table's row in `rowsync_table_state` is one `model::TableState` (see its transitions);
//! no row means the table streams normally. `set_floor` only moves a table still catching up.

use sqlx::mysql::MySqlConnection;
use sqlx::{Executor, Row};

use super::SinkError;
use crate::model::name::TableName;
use crate::model::position::{
    Checkpoint, Flavor, GtidSet, ParsePositionError, Position, SourceIdentity,
};
use crate::model::table::{
    CopyProgress, KeyDefinition, Phase, ReplicaRecord, StoppedTable, TableFloor, TableState,
};

const CREATE_CHECKPOINT: &str = "CREATE TABLE IF NOT EXISTS `rowsync_checkpoint` (
  `pipeline` VARCHAR(128) NOT NULL,
  `binlog_file` VARCHAR(255) NOT NULL,
  `binlog_pos` BIGINT UNSIGNED NOT NULL,
  `gtid` TEXT NULL,
  `flavor` VARCHAR(16) NOT NULL,
  `server_id` INT UNSIGNED NOT NULL,
  `server_uuid` VARCHAR(64) NULL,
  `binlog_base` VARCHAR(255) NOT NULL,
  `source_time` INT UNSIGNED NOT NULL,
  `phase` VARCHAR(16) NOT NULL DEFAULT 'streaming',
  `updated_at` TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (`pipeline`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

const CREATE_COPY: &str = "CREATE TABLE IF NOT EXISTS `rowsync_copy` (
  `pipeline` VARCHAR(128) NOT NULL,
  `source_table` VARCHAR(200) NOT NULL,
  `state` VARCHAR(16) NOT NULL,
  `last_key` TEXT NULL,
  `rows_copied` BIGINT UNSIGNED NOT NULL DEFAULT 0,
  `rows_estimated` BIGINT UNSIGNED NOT NULL DEFAULT 0,
  `updated_at` TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (`pipeline`, `source_table`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

const CREATE_TABLE_STATE: &str = "CREATE TABLE IF NOT EXISTS `rowsync_table_state` (
  `pipeline` VARCHAR(128) NOT NULL,
  `source_table` VARCHAR(200) NOT NULL,
  `state` VARCHAR(32) NOT NULL,
  `since_position` VARCHAR(300) NOT NULL,
  `since_gtid` TEXT NULL,
  `statement` MEDIUMTEXT NULL,
  `reason` TEXT NOT NULL,
  `updated_at` TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (`pipeline`, `source_table`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

const CREATE_REPLICA: &str = "CREATE TABLE IF NOT EXISTS `rowsync_replica` (
  `pipeline` VARCHAR(128) NOT NULL,
  `replica_table` VARCHAR(64) NOT NULL,
  `source_table` VARCHAR(200) NOT NULL,
  `shape` TEXT NOT NULL,
  `updated_at` TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (`pipeline`, `replica_table`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

const CREATE_XA: &str = "CREATE TABLE IF NOT EXISTS `rowsync_xa` (
  `pipeline` VARCHAR(128) NOT NULL,
  `xid` VARBINARY(400) NOT NULL,
  `floor_position` VARCHAR(300) NOT NULL,
  `floor_gtid` TEXT NULL,
  PRIMARY KEY (`pipeline`, `xid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

const CREATE_DEFERRED_KEYS: &str = "CREATE TABLE IF NOT EXISTS `rowsync_deferred_keys` (
  `pipeline` VARCHAR(128) NOT NULL,
  `replica_table` VARCHAR(64) NOT NULL,
  `key_definitions` MEDIUMTEXT NOT NULL,
  PRIMARY KEY (`pipeline`, `replica_table`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// A `db.table` name as stored in rowsync's tables.
fn stored_table(name: &str) -> Result<TableName, SinkError> {
    name.split_once('.')
        .map(|(db, table)| TableName::new(db, table))
        .ok_or_else(|| SinkError::Checkpoint(format!("bad table name `{name}`")))
}

/// Runs `sql` with the pipeline and table bound.
async fn exec_for_table(
    conn: &mut MySqlConnection,
    sql: &'static str,
    pipeline: &str,
    table: &TableName,
) -> Result<(), SinkError> {
    sqlx::query(sql)
        .bind(pipeline)
        .bind(table.to_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(sql, e))?;
    Ok(())
}

/// Creates rowsync's own tables in the target if missing.
pub async fn ensure_tables(conn: &mut MySqlConnection) -> Result<(), SinkError> {
    for stmt in [
        CREATE_CHECKPOINT,
        CREATE_TABLE_STATE,
        CREATE_COPY,
        CREATE_REPLICA,
        CREATE_XA,
        CREATE_DEFERRED_KEYS,
    ] {
        conn.execute(stmt)
            .await
            .map_err(|e| SinkError::db(stmt, e))?;
    }
    super::verified::ensure_table(conn).await?;
    Ok(())
}

/// The stored checkpoint of `pipeline`, if any.
pub async fn load(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<Option<Checkpoint>, SinkError> {
    Ok(load_with_phase(conn, pipeline).await?.map(|(c, _)| c))
}

/// The stored checkpoint of `pipeline` and its phase, if any.
pub async fn load_with_phase(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<Option<(Checkpoint, Phase)>, SinkError> {
    const SQL: &str = "SELECT `binlog_file`, `binlog_pos`, `gtid`, `flavor`, `server_id`, `server_uuid`, `binlog_base`, `source_time`, `phase` FROM `rowsync_checkpoint` WHERE `pipeline` = ?";
    let row = sqlx::query(SQL)
        .bind(pipeline)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    let Some(row) = row else { return Ok(None) };
    let get = |e: sqlx::Error| SinkError::Checkpoint(e.to_string());
    let file: String = row.try_get(0).map_err(get)?;
    let offset: u64 = row.try_get(1).map_err(get)?;
    let gtid: Option<String> = row.try_get(2).map_err(get)?;
    let bad = |e: ParsePositionError| SinkError::Checkpoint(e.to_string());
    let flavor: Flavor = row
        .try_get::<String, _>(3)
        .map_err(get)?
        .parse()
        .map_err(bad)?;
    let gtid = gtid
        .map(|text| GtidSet::parse_for(flavor, &text))
        .transpose()
        .map_err(bad)?;
    let phase: String = row.try_get(8).map_err(get)?;
    let phase = if phase == "copying" {
        Phase::Copying
    } else {
        Phase::Streaming
    };
    Ok(Some((
        Checkpoint {
            position: Position::new(file.parse().map_err(bad)?, offset),
            gtid,
            source: SourceIdentity {
                flavor,
                server_id: row.try_get(4).map_err(get)?,
                server_uuid: row.try_get(5).map_err(get)?,
                binlog_base: row.try_get(6).map_err(get)?,
            },
            source_time: row.try_get(7).map_err(get)?,
        },
        phase,
    )))
}

/// Writes `checkpoint` for `pipeline`; call inside the transaction that applied its rows.
pub async fn store(
    conn: &mut MySqlConnection,
    pipeline: &str,
    checkpoint: &Checkpoint,
) -> Result<(), SinkError> {
    store_phase(conn, pipeline, checkpoint, Phase::Streaming).await
}

/// Writes `checkpoint` for `pipeline` with its phase.
pub async fn store_phase(
    conn: &mut MySqlConnection,
    pipeline: &str,
    checkpoint: &Checkpoint,
    phase: Phase,
) -> Result<(), SinkError> {
    const SQL: &str = "INSERT INTO `rowsync_checkpoint` (`pipeline`, `binlog_file`, `binlog_pos`, `gtid`, `flavor`, `server_id`, `server_uuid`, `binlog_base`, `source_time`, `phase`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE `binlog_file` = VALUES(`binlog_file`), `binlog_pos` = VALUES(`binlog_pos`), `gtid` = VALUES(`gtid`), `flavor` = VALUES(`flavor`), `server_id` = VALUES(`server_id`), `server_uuid` = VALUES(`server_uuid`), `binlog_base` = VALUES(`binlog_base`), `source_time` = VALUES(`source_time`), `phase` = VALUES(`phase`)";
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(checkpoint.position.file.to_string())
        .bind(checkpoint.position.offset)
        .bind(checkpoint.gtid.as_ref().map(|g| g.to_string()))
        .bind(checkpoint.source.flavor.to_string())
        .bind(checkpoint.source.server_id)
        .bind(checkpoint.source.server_uuid.clone())
        .bind(checkpoint.source.binlog_base.clone())
        .bind(checkpoint.source_time)
        .bind(phase.as_str())
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Records that `table` stopped; call inside the transaction at that stream position.
pub async fn stop_table(
    conn: &mut MySqlConnection,
    pipeline: &str,
    stopped: &StoppedTable,
    since_gtid: Option<&GtidSet>,
) -> Result<(), SinkError> {
    const SQL: &str = "INSERT INTO `rowsync_table_state` (`pipeline`, `source_table`, `state`, `since_position`, `since_gtid`, `statement`, `reason`) VALUES (?, ?, 'needs_recopy', ?, ?, ?, ?) ON DUPLICATE KEY UPDATE `state` = VALUES(`state`), `since_position` = VALUES(`since_position`), `since_gtid` = VALUES(`since_gtid`), `statement` = VALUES(`statement`), `reason` = VALUES(`reason`)";
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(stopped.table.to_string())
        .bind(&stopped.since)
        .bind(since_gtid.map(|g| g.to_string()))
        .bind(&stopped.statement)
        .bind(&stopped.reason)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Stops `table` outside the stream (at a start, or in a copy) at position `since` (none yet
/// on a fresh target: the start of its stream), and returns the stop as recorded.
pub async fn stop_outside_stream(
    conn: &mut MySqlConnection,
    pipeline: &str,
    table: TableName,
    since: Option<&Checkpoint>,
    reason: String,
) -> Result<StoppedTable, SinkError> {
    tracing::error!(table = %table, %reason, "table stopped on this target; the others go on");
    let stop = StoppedTable {
        table,
        state: TableState::NeedsRecopy,
        since: since.map(|c| c.position.to_string()).unwrap_or_default(),
        statement: None,
        reason,
    };
    stop_table(conn, pipeline, &stop, since.and_then(|c| c.gtid.as_ref())).await?;
    Ok(stop)
}

/// Tables of `pipeline` that stopped and wait for a re-copy.
pub async fn stopped_tables(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<Vec<StoppedTable>, SinkError> {
    const SQL: &str = "SELECT `source_table`, `since_position`, `statement`, `reason`, `state` FROM `rowsync_table_state` WHERE `pipeline` = ? AND `state` IN ('needs_recopy', 'recopy_requested') ORDER BY `source_table`";
    let rows = sqlx::query(SQL)
        .bind(pipeline)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    rows.into_iter()
        .map(|row| {
            let get = |e: sqlx::Error| SinkError::Checkpoint(e.to_string());
            let name: String = row.try_get(0).map_err(get)?;
            let parsed = stored_table(&name)?;
            let state: String = row.try_get(4).map_err(get)?;
            Ok(StoppedTable {
                table: parsed,
                state: TableState::parse(&state)?,
                since: row.try_get(1).map_err(get)?,
                statement: row.try_get(2).map_err(get)?,
                reason: row.try_get(3).map_err(get)?,
            })
        })
        .collect()
}

/// Every table's copy progress for `pipeline`.
pub async fn copy_progress(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<Vec<CopyProgress>, SinkError> {
    const SQL: &str = "SELECT `source_table`, `state`, `last_key`, `rows_copied`, `rows_estimated` FROM `rowsync_copy` WHERE `pipeline` = ? ORDER BY `source_table`";
    let rows: Vec<(String, String, Option<String>, u64, u64)> = sqlx::query_as(SQL)
        .bind(pipeline)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    rows.into_iter()
        .map(|(name, state, last_key, rows_copied, rows_estimated)| {
            let parsed = stored_table(&name)?;
            Ok(CopyProgress {
                table: parsed,
                done: state == "done",
                last_key,
                rows_copied,
                rows_estimated,
            })
        })
        .collect()
}

/// Records a table's copy progress; call inside the transaction that wrote its chunk.
pub async fn store_copy_progress(
    conn: &mut MySqlConnection,
    pipeline: &str,
    p: &CopyProgress,
) -> Result<(), SinkError> {
    const SQL: &str = "INSERT INTO `rowsync_copy` (`pipeline`, `source_table`, `state`, `last_key`, `rows_copied`, `rows_estimated`) VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE `state` = VALUES(`state`), `last_key` = VALUES(`last_key`), `rows_copied` = VALUES(`rows_copied`), `rows_estimated` = VALUES(`rows_estimated`)";
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(p.table.to_string())
        .bind(if p.done { "done" } else { "copying" })
        .bind(&p.last_key)
        .bind(p.rows_copied)
        .bind(p.rows_estimated)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Tables being re-copied or catching up after a re-copy.
pub async fn table_floors(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<Vec<TableFloor>, SinkError> {
    const SQL: &str = "SELECT `source_table`, `state`, `since_position`, `since_gtid` FROM `rowsync_table_state` WHERE `pipeline` = ? AND `state` IN ('copying', 'catching_up') ORDER BY `source_table`";
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(SQL)
        .bind(pipeline)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    rows.into_iter()
        .map(|(name, state, since, gtid)| {
            let parsed = stored_table(&name)?;
            let position = if since.is_empty() {
                None
            } else {
                Some(
                    since
                        .parse()
                        .map_err(|e: ParsePositionError| SinkError::Checkpoint(e.to_string()))?,
                )
            };
            Ok(TableFloor {
                table: parsed,
                state: TableState::parse(&state)?,
                position,
                gtid,
            })
        })
        .collect()
}

/// Sets `table`'s re-copy state, its floor (`None`: not known yet) and why.
pub async fn mark_table(
    conn: &mut MySqlConnection,
    pipeline: &str,
    table: &TableName,
    state: TableState,
    floor: Option<&Checkpoint>,
    reason: &str,
) -> Result<(), SinkError> {
    const SQL: &str = "INSERT INTO `rowsync_table_state` (`pipeline`, `source_table`, `state`, `since_position`, `since_gtid`, `statement`, `reason`) VALUES (?, ?, ?, ?, ?, NULL, ?) ON DUPLICATE KEY UPDATE `state` = VALUES(`state`), `since_position` = VALUES(`since_position`), `since_gtid` = VALUES(`since_gtid`), `statement` = NULL, `reason` = VALUES(`reason`)";
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(table.to_string())
        .bind(state.as_str())
        .bind(floor.map(|f| f.position.to_string()).unwrap_or_default())
        .bind(floor.and_then(|f| f.gtid.as_ref()).map(|g| g.to_string()))
        .bind(reason)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Moves a catching-up table's floor, or (`None`) ends its catching up. A table no longer
/// `catching_up` (stopped or re-copied meanwhile) is left as it is.
pub async fn set_floor(
    conn: &mut MySqlConnection,
    pipeline: &str,
    table: &TableName,
    floor: Option<&Checkpoint>,
) -> Result<(), SinkError> {
    match floor {
        Some(f) => {
            const SQL: &str = "UPDATE `rowsync_table_state` SET `since_position` = ?, `since_gtid` = ? WHERE `pipeline` = ? AND `source_table` = ? AND `state` = 'catching_up'";
            sqlx::query(SQL)
                .bind(f.position.to_string())
                .bind(f.gtid.as_ref().map(|g| g.to_string()))
                .bind(pipeline)
                .bind(table.to_string())
                .execute(&mut *conn)
                .await
                .map_err(|e| SinkError::db(SQL, e))?;
            Ok(())
        }
        None => {
            const SQL: &str = "DELETE FROM `rowsync_table_state` WHERE `pipeline` = ? AND `source_table` = ? AND `state` = 'catching_up'";
            exec_for_table(conn, SQL, pipeline, table).await
        }
    }
}

/// Forgets `table`'s state: it streams normally from here on.
pub async fn clear_table_state(
    conn: &mut MySqlConnection,
    pipeline: &str,
    table: &TableName,
) -> Result<(), SinkError> {
    const SQL: &str =
        "DELETE FROM `rowsync_table_state` WHERE `pipeline` = ? AND `source_table` = ?";
    exec_for_table(conn, SQL, pipeline, table).await
}

/// Forgets a table's copy progress, so its next copy starts from scratch.
pub async fn reset_copy_progress(
    conn: &mut MySqlConnection,
    pipeline: &str,
    table: &TableName,
) -> Result<(), SinkError> {
    const SQL: &str = "DELETE FROM `rowsync_copy` WHERE `pipeline` = ? AND `source_table` = ?";
    exec_for_table(conn, SQL, pipeline, table).await
}

/// Waits until no transaction holds `pipeline`'s checkpoint row (a locking read): a process
/// that just took the target's lock then reads the checkpoint an old holder's last
/// transaction committed, or the one before it if that rolled back, never one in between.
pub async fn settle(conn: &mut MySqlConnection, pipeline: &str) -> Result<(), SinkError> {
    const SQL: &str = "SELECT 1 FROM `rowsync_checkpoint` WHERE `pipeline` = ? LOCK IN SHARE MODE";
    sqlx::query(SQL)
        .bind(pipeline)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Tables whose re-copy was requested (by `rowsync resync` while `run` works on the target).
pub async fn recopy_requests(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<Vec<TableName>, SinkError> {
    const SQL: &str = "SELECT `source_table` FROM `rowsync_table_state` WHERE `pipeline` = ? AND `state` = 'recopy_requested' ORDER BY `updated_at`";
    let rows: Vec<(String,)> = sqlx::query_as(SQL)
        .bind(pipeline)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    rows.into_iter().map(|(n,)| stored_table(&n)).collect()
}

/// The re-copy state of `table` (`None` when it has none).
pub async fn table_state(
    conn: &mut MySqlConnection,
    pipeline: &str,
    table: &TableName,
) -> Result<Option<TableState>, SinkError> {
    const SQL: &str =
        "SELECT `state` FROM `rowsync_table_state` WHERE `pipeline` = ? AND `source_table` = ?";
    let row: Option<(String,)> = sqlx::query_as(SQL)
        .bind(pipeline)
        .bind(table.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(row.map(|(s,)| TableState::parse(&s)).transpose()?)
}

/// Records that XA branch `xid` is prepared and unresolved, to be read again from `floor` on
/// (none: it holds no selected rows); call in the transaction whose checkpoint passes its
/// prepared part.
pub async fn hold_xa(
    conn: &mut MySqlConnection,
    pipeline: &str,
    xid: &str,
    floor: Option<&Checkpoint>,
) -> Result<(), SinkError> {
    const SQL: &str = "REPLACE INTO `rowsync_xa` (`pipeline`, `xid`, `floor_position`, `floor_gtid`) VALUES (?, ?, ?, ?)";
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(xid.as_bytes())
        .bind(floor.map(|f| f.position.to_string()).unwrap_or_default())
        .bind(floor.and_then(|f| f.gtid.as_ref()).map(|g| g.to_string()))
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Forgets XA branch `xid` (committed or rolled back); call in that group's transaction.
pub async fn resolve_xa(
    conn: &mut MySqlConnection,
    pipeline: &str,
    xid: &str,
) -> Result<(), SinkError> {
    const SQL: &str = "DELETE FROM `rowsync_xa` WHERE `pipeline` = ? AND `xid` = ?";
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(xid.as_bytes())
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Whether XA branch `xid` is recorded as prepared and unresolved.
pub async fn xa_recorded(
    conn: &mut MySqlConnection,
    pipeline: &str,
    xid: &str,
) -> Result<bool, SinkError> {
    const SQL: &str = "SELECT COUNT(*) FROM `rowsync_xa` WHERE `pipeline` = ? AND `xid` = ?";
    let (n,): (i64,) = sqlx::query_as(SQL)
        .bind(pipeline)
        .bind(xid.as_bytes())
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(n > 0)
}

/// Where the unresolved XA branches that hold rows begin (position and GTID text).
pub async fn xa_floors(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<Vec<(Position, Option<String>)>, SinkError> {
    const SQL: &str =
        "SELECT `floor_position`, `floor_gtid` FROM `rowsync_xa` WHERE `pipeline` = ? AND `floor_position` <> ''";
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(SQL)
        .bind(pipeline)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    rows.into_iter()
        .map(|(position, gtid)| {
            let position = position
                .parse()
                .map_err(|e: ParsePositionError| SinkError::Checkpoint(e.to_string()))?;
            Ok((position, gtid))
        })
        .collect()
}

/// Every replica table `pipeline` fills on this target.
pub async fn replicas(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<Vec<ReplicaRecord>, SinkError> {
    const SQL: &str = "SELECT `replica_table`, `source_table`, `shape` FROM `rowsync_replica` WHERE `pipeline` = ? AND `replica_table` <> '' ORDER BY `replica_table`";
    let rows: Vec<(String, String, String)> = sqlx::query_as(SQL)
        .bind(pipeline)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    rows.into_iter()
        .map(|(replica, source, shape)| {
            Ok(ReplicaRecord {
                replica,
                source: stored_table(&source)?,
                shape,
            })
        })
        .collect()
}

/// Whether `pipeline` records its replicas on this target: a row with an empty replica name
/// says so, written once, when the pipeline first starts (or adopts what an older rowsync
/// left, see `engine::target`).
pub async fn tracks_replicas(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<bool, SinkError> {
    const SQL: &str =
        "SELECT COUNT(*) FROM `rowsync_replica` WHERE `pipeline` = ? AND `replica_table` = ''";
    let (n,): (i64,) = sqlx::query_as(SQL)
        .bind(pipeline)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(n > 0)
}

/// Marks `pipeline` as recording its replicas (see `tracks_replicas`), with the replicas it
/// already holds (`adopted`), in one transaction.
pub async fn start_tracking_replicas(
    conn: &mut MySqlConnection,
    pipeline: &str,
    adopted: &[ReplicaRecord],
) -> Result<(), SinkError> {
    const SQL: &str = "INSERT IGNORE INTO `rowsync_replica` (`pipeline`, `replica_table`, `source_table`, `shape`) VALUES (?, '', '', '')";
    conn.execute("BEGIN")
        .await
        .map_err(|e| SinkError::db("BEGIN", e))?;
    for record in adopted {
        record_replica(conn, pipeline, record).await?;
    }
    sqlx::query(SQL)
        .bind(pipeline)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    conn.execute("COMMIT")
        .await
        .map_err(|e| SinkError::db("COMMIT", e))?;
    Ok(())
}

/// Records what `record.replica` holds; call in the transaction that starts filling it.
pub async fn record_replica(
    conn: &mut MySqlConnection,
    pipeline: &str,
    record: &ReplicaRecord,
) -> Result<(), SinkError> {
    const SQL: &str = "REPLACE INTO `rowsync_replica` (`pipeline`, `replica_table`, `source_table`, `shape`) VALUES (?, ?, ?, ?)";
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(&record.replica)
        .bind(record.source.to_string())
        .bind(&record.shape)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Forgets what `replica` holds (no mapping fills it any more): a mapping that fills it again
/// later copies it first.
pub async fn forget_replica(
    conn: &mut MySqlConnection,
    pipeline: &str,
    replica: &str,
) -> Result<(), SinkError> {
    const SQL: &str = "DELETE FROM `rowsync_replica` WHERE `pipeline` = ? AND `replica_table` = ?";
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(replica)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Records that `replica` is created without its secondary `keys`, to add after the copy.
pub async fn defer_keys(
    conn: &mut MySqlConnection,
    pipeline: &str,
    replica: &str,
    keys: &[KeyDefinition],
) -> Result<(), SinkError> {
    const SQL: &str = "REPLACE INTO `rowsync_deferred_keys` (`pipeline`, `replica_table`, `key_definitions`) VALUES (?, ?, ?)";
    let text = serde_json::to_string(keys).map_err(|e| SinkError::Checkpoint(e.to_string()))?;
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(replica)
        .bind(text)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Replicas whose secondary keys are still to be added, with those keys.
pub async fn deferred_keys(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<Vec<(String, Vec<KeyDefinition>)>, SinkError> {
    const SQL: &str = "SELECT `replica_table`, `key_definitions` FROM `rowsync_deferred_keys` WHERE `pipeline` = ? ORDER BY `replica_table`";
    let rows: Vec<(String, String)> = sqlx::query_as(SQL)
        .bind(pipeline)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    rows.into_iter()
        .map(|(replica, text)| {
            let keys = serde_json::from_str(&text).map_err(|e| {
                SinkError::Checkpoint(format!("unreadable deferred keys of `{replica}`: {e}"))
            })?;
            Ok((replica, keys))
        })
        .collect()
}

/// Forgets the deferred keys of `replica` (added, or the replica is gone).
pub async fn clear_deferred_keys(
    conn: &mut MySqlConnection,
    pipeline: &str,
    replica: &str,
) -> Result<(), SinkError> {
    const SQL: &str =
        "DELETE FROM `rowsync_deferred_keys` WHERE `pipeline` = ? AND `replica_table` = ?";
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(replica)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

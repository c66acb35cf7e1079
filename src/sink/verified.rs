//! `rowsync_verify`: the last `verify` result per replica table, kept in the target beside
//! the checkpoint, so `rowsync status`, the admin API and a scheduled run that goes on where
//! the last one stopped all read the same record, whoever ran it.

use sqlx::mysql::MySqlConnection;
use sqlx::Executor;

use super::SinkError;
use crate::model::name::TableName;
use crate::model::table::VerifyRecord;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS `rowsync_verify` (
  `pipeline` VARCHAR(128) NOT NULL,
  `replica_table` VARCHAR(64) NOT NULL,
  `source_table` VARCHAR(200) NOT NULL,
  `finished_at` BIGINT UNSIGNED NOT NULL,
  `chunks` BIGINT UNSIGNED NOT NULL,
  `rows_checked` BIGINT UNSIGNED NOT NULL,
  `rows_differing` BIGINT UNSIGNED NOT NULL,
  `rows_repaired` BIGINT UNSIGNED NOT NULL,
  `complete` TINYINT NOT NULL,
  `detail` MEDIUMTEXT NOT NULL,
  `next_key` TEXT NULL,
  `last_pass_differing` BIGINT UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (`pipeline`, `replica_table`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// Creates the table if missing.
pub async fn ensure_table(conn: &mut MySqlConnection) -> Result<(), SinkError> {
    conn.execute(CREATE)
        .await
        .map_err(|e| SinkError::db(CREATE, e))?;
    Ok(())
}

/// Records `record`, and where the next scheduled run starts (`None`: from the beginning).
pub async fn record(
    conn: &mut MySqlConnection,
    pipeline: &str,
    record: &VerifyRecord,
    next_key: Option<&str>,
) -> Result<(), SinkError> {
    const SQL: &str = "REPLACE INTO `rowsync_verify` (`pipeline`, `replica_table`, `source_table`, `finished_at`, `chunks`, `rows_checked`, `rows_differing`, `rows_repaired`, `complete`, `detail`, `next_key`, `last_pass_differing`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    sqlx::query(SQL)
        .bind(pipeline)
        .bind(&record.replica)
        .bind(record.source.to_string())
        .bind(record.finished_at)
        .bind(record.chunks)
        .bind(record.rows)
        .bind(record.differing)
        .bind(record.repaired)
        .bind(record.complete)
        .bind(&record.detail)
        .bind(next_key)
        .bind(record.last_pass)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(())
}

/// Every recorded result of `pipeline`, by replica table.
pub async fn records(
    conn: &mut MySqlConnection,
    pipeline: &str,
) -> Result<Vec<VerifyRecord>, SinkError> {
    const SQL: &str = "SELECT `replica_table`, `source_table`, `finished_at`, `chunks`, `rows_checked`, `rows_differing`, `rows_repaired`, `complete`, `detail`, `last_pass_differing` FROM `rowsync_verify` WHERE `pipeline` = ? ORDER BY `replica_table`";
    type Row = (String, String, u64, u64, u64, u64, u64, bool, String, u64);
    let rows: Vec<Row> = sqlx::query_as(SQL)
        .bind(pipeline)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    rows.into_iter()
        .map(|row| {
            let (replica, source, finished_at, chunks, rows, differing, repaired) =
                (row.0, row.1, row.2, row.3, row.4, row.5, row.6);
            let source: TableName = source
                .parse()
                .map_err(|e| SinkError::Checkpoint(format!("{e} in rowsync_verify")))?;
            Ok(VerifyRecord {
                replica,
                source,
                finished_at,
                chunks,
                rows,
                differing,
                repaired,
                complete: row.7,
                detail: row.8,
                last_pass: row.9,
            })
        })
        .collect()
}

/// Where the next scheduled run of `replica` starts: the encoded key it stopped after.
pub async fn next_key(
    conn: &mut MySqlConnection,
    pipeline: &str,
    replica: &str,
) -> Result<Option<String>, SinkError> {
    const SQL: &str =
        "SELECT `next_key` FROM `rowsync_verify` WHERE `pipeline` = ? AND `replica_table` = ?";
    let row: Option<(Option<String>,)> = sqlx::query_as(SQL)
        .bind(pipeline)
        .bind(replica)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(row.and_then(|(k,)| k))
}

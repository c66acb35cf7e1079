//! The local state store (SQLite, schema in `migrations/`): the last known state of each
//! target's pipeline as `rowsync run` saw it — running, retrying or stopped with the error —
//! so `rowsync status` can show it while or after the daemon runs.
//!
//! Positions are not kept here: a target's checkpoint lives in the target, committed with its
//! rows. This store only reports.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::engine::status::{Snapshot, State};

/// One change made through the admin API.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    pub user: String,
    /// `mapping.create`, `mapping.update`, `mapping.delete`, `target.pause`, …
    pub action: String,
    /// The mapping id, target, or `target/db.table` it concerns.
    pub subject: String,
    /// The mapping before and after (JSON), for mapping changes.
    pub before: Option<String>,
    pub after: Option<String>,
}

/// A target's row in the store.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredState {
    pub target: String,
    pub state: String,
    pub error: Option<String>,
    /// `transient` or `definite`, with the error.
    pub error_class: Option<String>,
    pub updated_at: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("state store {path}: {source}")]
pub struct StateError {
    path: String,
    source: sqlx::Error,
}

pub struct StateStore {
    pool: SqlitePool,
    path: String,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl StateStore {
    /// Opens (creating if needed) and migrates the store at `path`, for the daemon.
    pub async fn open(path: &Path) -> Result<StateStore, StateError> {
        let store = Self::connect(path, false).await?;
        sqlx::migrate!()
            .run(&store.pool)
            .await
            .map_err(|e| store.error(e.into()))?;
        Ok(store)
    }

    /// Opens the store at `path` to read it only (`rowsync status`): no migration, so a
    /// daemon of another version keeps the store as it made it.
    pub async fn open_read_only(path: &Path) -> Result<StateStore, StateError> {
        Self::connect(path, true).await
    }

    async fn connect(path: &Path, read_only: bool) -> Result<StateStore, StateError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(read_only)
            .create_if_missing(!read_only)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let path = path.display().to_string();
        match SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
        {
            Ok(pool) => Ok(StateStore { pool, path }),
            Err(source) => Err(StateError { path, source }),
        }
    }

    fn error(&self, source: sqlx::Error) -> StateError {
        StateError {
            path: self.path.clone(),
            source,
        }
    }

    /// Records `snapshot` for `pipeline`.
    pub async fn save(&self, pipeline: &str, snapshot: &Snapshot) -> Result<(), StateError> {
        let failure = snapshot.state.failure();
        // A standby's "error" is who holds the lock.
        let error = match &snapshot.state {
            State::Standby(holder) => Some(format!("the target's lock is held by {holder}")),
            state => state.failure().map(|f| f.message.clone()),
        };
        let class = failure.map(|f| f.class.as_str());
        sqlx::query(
            "INSERT INTO target_state (pipeline, target, state, error, error_class, binlog_position, gtid, lag_secs, rows_applied, transactions_applied, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (pipeline, target) DO UPDATE SET state = excluded.state, error = excluded.error, error_class = excluded.error_class,
               binlog_position = excluded.binlog_position, gtid = excluded.gtid, lag_secs = excluded.lag_secs,
               rows_applied = excluded.rows_applied, transactions_applied = excluded.transactions_applied,
               updated_at = excluded.updated_at",
        )
        .bind(pipeline)
        .bind(&snapshot.target)
        .bind(snapshot.state.name())
        .bind(error)
        .bind(class)
        .bind(snapshot.checkpoint.as_ref().map(|c| c.position.to_string()))
        .bind(snapshot.checkpoint.as_ref().and_then(|c| c.gtid.as_ref()).map(|g| g.to_string()))
        .bind(snapshot.lag_secs().map(|l| l as i64))
        .bind(snapshot.rows_applied as i64)
        .bind(snapshot.transactions_applied as i64)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Records a change made through the admin API.
    pub async fn audit(
        &self,
        user: &str,
        action: &str,
        subject: &str,
        before: Option<&str>,
        after: Option<&str>,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO audit_log (at, user, action, subject, before, after) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(now())
        .bind(user)
        .bind(action)
        .bind(subject)
        .bind(before)
        .bind(after)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, StateError> {
        sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at, user, action, subject, before, after FROM audit_log ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error(e))
    }

    /// Every target's stored state for `pipeline`.
    pub async fn load(&self, pipeline: &str) -> Result<Vec<StoredState>, StateError> {
        // A store an older daemon made has no error class.
        let (classes,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pragma_table_info('target_state') WHERE name = 'error_class'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        let sql = if classes > 0 {
            "SELECT target, state, error, error_class, updated_at FROM target_state WHERE pipeline = ? ORDER BY target"
        } else {
            "SELECT target, state, error, NULL AS error_class, updated_at FROM target_state WHERE pipeline = ? ORDER BY target"
        };
        sqlx::query_as::<_, StoredState>(sql)
            .bind(pipeline)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::status::{Failure, State, TargetStatus};
    use crate::model::ErrorClass;

    #[tokio::test]
    async fn saves_and_loads_target_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("s.db")).await.unwrap();
        let status = TargetStatus::new("order");
        status.set_state(State::Stopped(Failure {
            class: ErrorClass::Definite,
            message: "constraint failed".into(),
            statement: None,
        }));
        store.save("p", &status.snapshot()).await.unwrap();
        let stopped = store.load("p").await.unwrap();
        assert_eq!(stopped[0].state, "stopped");
        assert_eq!(stopped[0].error.as_deref(), Some("constraint failed"));
        assert_eq!(stopped[0].error_class.as_deref(), Some("definite"));
        status.set_state(State::Streaming);
        store.save("p", &status.snapshot()).await.unwrap();
        let other = TargetStatus::new("purchase");
        store.save("p", &other.snapshot()).await.unwrap();
        let rows = store.load("p").await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].target, "order");
        assert_eq!(rows[0].state, "streaming");
        assert_eq!(rows[0].error, None);
        assert_eq!(rows[1].state, "starting");
        // Reopening keeps the data and does not re-run migrations.
        drop(store);
        let again = StateStore::open(&dir.path().join("s.db")).await.unwrap();
        assert_eq!(again.load("p").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn status_reads_without_migrating_also_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        // The store as the first version of the daemon made it.
        let old = StateStore::connect(&path, false).await.unwrap();
        sqlx::raw_sql(include_str!(
            "../migrations/20261123000001_target_state.sql"
        ))
        .execute(&old.pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO target_state (pipeline, target, state, error, updated_at) VALUES ('p', 'order', 'stopped', 'boom', 1)")
            .execute(&old.pool)
            .await
            .unwrap();
        let reader = StateStore::open_read_only(&path).await.unwrap();
        let rows = reader.load("p").await.unwrap();
        assert_eq!(rows[0].error.as_deref(), Some("boom"));
        assert_eq!(rows[0].error_class, None);
        let (columns,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pragma_table_info('target_state') WHERE name = 'error_class'",
        )
        .fetch_one(&old.pool)
        .await
        .unwrap();
        assert_eq!(columns, 0, "reading migrated the store");
        assert!(reader
            .save("p", &TargetStatus::new("order").snapshot())
            .await
            .is_err());
    }
}

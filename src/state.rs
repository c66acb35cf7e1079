//! The local state store (SQLite, schema in `migrations/`): the last known state of each
//! target's pipeline as `rowsync run` saw it — running, retrying or stopped with the error —
//! so `rowsync status` can show it while or after the daemon runs.
//!
//! Positions are not kept here: a target's checkpoint lives in the target, committed with its
//! rows. This store only reports.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::engine::status::Snapshot;

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
    /// Opens (creating if needed) and migrates the store at `path`.
    pub async fn open(path: &Path) -> Result<StateStore, StateError> {
        let shown = path.display().to_string();
        let err = |source| StateError {
            path: shown.clone(),
            source,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(err)?;
        sqlx::migrate!()
            .run(&pool)
            .await
            .map_err(|e| err(e.into()))?;
        Ok(StateStore { pool, path: shown })
    }

    /// Records `snapshot` for `pipeline`.
    pub async fn save(&self, pipeline: &str, snapshot: &Snapshot) -> Result<(), StateError> {
        let failure = snapshot.state.failure();
        let error = failure.map(|f| f.message.clone());
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
        .map_err(|source| StateError {
            path: self.path.clone(),
            source,
        })?;
        Ok(())
    }

    /// Every target's stored state for `pipeline`.
    pub async fn load(&self, pipeline: &str) -> Result<Vec<StoredState>, StateError> {
        sqlx::query_as::<_, StoredState>(
            "SELECT target, state, error, error_class, updated_at FROM target_state WHERE pipeline = ? ORDER BY target",
        )
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await
        .map_err(|source| StateError {
            path: self.path.clone(),
            source,
        })
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
}

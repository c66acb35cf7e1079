//! One writer per target: the target's named lock (`GET_LOCK`), and the fence every write
//! transaction checks before it commits.
//!
//! # Why a paused or cut-off process cannot write after a takeover
//! A named lock belongs to a session and is released when that session ends. The lock is
//! held by a session of its own whose `wait_timeout` is `[standby] takeover_secs`: a process
//! that stops answering (killed, frozen by SIGSTOP, cut off by the network) loses that
//! session, and so the lock, within that time, and a standby waiting in `GET_LOCK` takes it
//! at once. The holder keeps its session alive with a ping well within the timeout.
//!
//! The lock alone does not stop the old holder's *other* sessions (the stream's writer, copy
//! writers) from committing once it wakes up. So every target transaction that writes
//! replicas or rowsync's own tables asks, just before COMMIT, whether the lock is still held
//! by the holder's session (`IS_USED_LOCK(name)` = the holder's connection id) — the fence.
//! When it is not, the transaction rolls back and the process goes back to standing by. The
//! check and the COMMIT are two statements, but the check runs inside the transaction after
//! all its writes: if the lock moved in between, the new holder's first transactions queue
//! behind this one's row locks on the checkpoint row, and it resumes from whatever this one
//! committed — exactly once either way.

use std::time::Duration;

use sqlx::mysql::MySqlConnection;
use sqlx::Executor;
use tokio_util::sync::CancellationToken;

use sha2::{Digest, Sha256};

use super::target::{connect, exec, set_wait_timeout};
use super::SinkError;
use crate::config::TargetConfig;

const CREATE_HOLDER: &str = "CREATE TABLE IF NOT EXISTS `rowsync_lock_holder` (
  `lock_name` VARCHAR(64) NOT NULL,
  `holder` VARCHAR(255) NOT NULL,
  `connection_id` BIGINT UNSIGNED NOT NULL,
  `since` TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  PRIMARY KEY (`lock_name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// The lock's name: named after the target too, since targets may share a server. Names
/// are at most 64 characters: a longer one is shortened to a digest, never cut (two targets
/// would share a lock).
pub fn lock_name(pipeline: &str, target: &str) -> String {
    let name = format!("rowsync:{pipeline}:{target}");
    if name.chars().count() <= 64 {
        return name;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("rowsync:{}", &hex[..48])
}

/// What a write transaction checks before it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    name: String,
    /// Connection id of the session that holds the lock.
    holder: u64,
}

impl Fence {
    /// Fails with `SinkError::Fenced` when the lock is no longer held by this process.
    ///
    /// Inside a transaction it also takes a shared lock on the lock's row in
    /// `rowsync_lock_holder`, held until that transaction ends: a new holder's first
    /// statement rewrites that row (`acquire`), so it waits until every transaction that
    /// passed this check under the old holder has committed or rolled back, and reads the
    /// target only after them.
    pub async fn check(&self, conn: &mut MySqlConnection) -> Result<(), SinkError> {
        const SQL: &str = "SELECT IS_USED_LOCK(?), `connection_id` FROM `rowsync_lock_holder` WHERE `lock_name` = ? LOCK IN SHARE MODE";
        // The server says a signed INT.
        let row: Option<(Option<i64>, u64)> = sqlx::query_as(SQL)
            .bind(&self.name)
            .bind(&self.name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| SinkError::db(SQL, e))?;
        let (owner, recorded) = row.unwrap_or((None, 0));
        let owner = owner.and_then(|o| u64::try_from(o).ok());
        if owner == Some(self.holder) && recorded == self.holder {
            Ok(())
        } else {
            Err(SinkError::Fenced(format!(
                "lock `{}` is no longer held by this process (held by connection {}); not committing",
                self.name,
                owner.map_or("none".into(), |o| o.to_string())
            )))
        }
    }

    /// Opens a transaction on `conn` that may write only while the lock is this process's;
    /// the caller writes and commits.
    pub async fn begin(&self, conn: &mut MySqlConnection) -> Result<(), SinkError> {
        exec(conn, "BEGIN").await?;
        if let Err(e) = self.check(conn).await {
            let _ = exec(conn, "ROLLBACK").await;
            return Err(e);
        }
        Ok(())
    }
}

/// `fence.check`, when there is a fence: writers that run without one (`resync` with no
/// daemon holds the lock itself, tests) commit unchecked.
pub async fn check(fence: Option<&Fence>, conn: &mut MySqlConnection) -> Result<(), SinkError> {
    match fence {
        Some(fence) => fence.check(conn).await,
        None => Ok(()),
    }
}

/// Takes the target's lock in `conn`'s session, waiting up to `wait_secs`, and records this
/// process as its holder; the fence of writes made while it holds it. `SinkError::Busy` when
/// another process holds it.
pub async fn lock_target(
    conn: &mut MySqlConnection,
    pipeline: &str,
    target: &str,
    wait_secs: u32,
) -> Result<Fence, SinkError> {
    conn.execute(CREATE_HOLDER)
        .await
        .map_err(|e| SinkError::db(CREATE_HOLDER, e))?;
    let name = lock_name(pipeline, target);
    const SQL: &str = "SELECT GET_LOCK(?, ?), CONNECTION_ID()";
    let (got, holder): (Option<i64>, u64) = sqlx::query_as(SQL)
        .bind(&name)
        .bind(wait_secs)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    if got != Some(1) {
        return Err(SinkError::Busy(format!(
            "another rowsync process (run or resync) is working on target `{target}` (lock `{name}` is held)"
        )));
    }
    // Waits for every transaction still fenced under the previous holder (see `Fence::check`).
    const RECORD: &str = "REPLACE INTO `rowsync_lock_holder` (`lock_name`, `holder`, `connection_id`) VALUES (?, ?, ?)";
    sqlx::query(RECORD)
        .bind(&name)
        .bind(whoami())
        .bind(holder)
        .execute(&mut *conn)
        .await
        .map_err(|e| SinkError::db(RECORD, e))?;
    Ok(Fence { name, holder })
}

/// The lock of one target held for a `rowsync run` attempt, in its own session.
pub struct TargetLock {
    conn: MySqlConnection,
    fence: Fence,
    takeover: Duration,
}

/// What `acquire` found.
pub enum Acquired {
    Held(TargetLock),
    /// Another process holds the lock: who, as it recorded itself.
    Busy {
        holder: String,
    },
}

/// Tries for `wait` to take the lock of `target` for `pipeline`; the session closes after
/// `takeover` without a word from this process.
pub async fn acquire(
    target: &TargetConfig,
    pipeline: &str,
    takeover: Duration,
    wait: Duration,
) -> Result<Acquired, SinkError> {
    let mut conn = connect(target).await?;
    set_wait_timeout(&mut conn, takeover).await?;
    let wait_secs = wait.as_secs().clamp(0, u64::from(u32::MAX)) as u32;
    match lock_target(&mut conn, pipeline, &target.name, wait_secs).await {
        Ok(fence) => Ok(Acquired::Held(TargetLock {
            conn,
            fence,
            takeover,
        })),
        Err(SinkError::Busy(_)) => {
            let holder = describe_holder(&mut conn, &lock_name(pipeline, &target.name)).await?;
            Ok(Acquired::Busy { holder })
        }
        Err(e) => Err(e),
    }
}

/// Who holds lock `name`: the process it recorded, when that record is the current holder's.
async fn describe_holder(conn: &mut MySqlConnection, name: &str) -> Result<String, SinkError> {
    const SQL: &str = "SELECT h.`holder`, h.`connection_id`, CAST(h.`since` AS CHAR), IS_USED_LOCK(?) FROM (SELECT 1) AS one LEFT JOIN `rowsync_lock_holder` h ON h.`lock_name` = ?";
    let row: (Option<String>, Option<u64>, Option<String>, Option<i64>) = sqlx::query_as(SQL)
        .bind(name)
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| SinkError::db(SQL, e))?;
    Ok(match row {
        (Some(holder), Some(id), Some(since), Some(owner)) if i64::try_from(id) == Ok(owner) => {
            format!("{holder} (connection {owner}, since {since} UTC)")
        }
        (_, _, _, Some(owner)) => format!("connection {owner}"),
        _ => "nobody (it was just released)".into(),
    })
}

/// This process, as a lock holder names itself: host and pid.
fn whoami() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown host".into());
    format!("rowsync pid {} on {host}", std::process::id())
}

impl TargetLock {
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Keeps the lock's session alive until `release`; `Err` (the reason) as soon as the lock
    /// is lost: the session closed or the server stopped answering within a third of the
    /// takeover time.
    pub async fn keep(mut self, release: CancellationToken) -> Result<(), String> {
        let every = (self.takeover / 3).max(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = release.cancelled() => {
                    // Released at once rather than when the server notices the closed socket.
                    let release = sqlx::query("DO RELEASE_LOCK(?)").bind(&self.fence.name);
                    let _ = tokio::time::timeout(every, release.execute(&mut self.conn)).await;
                    return Ok(());
                }
                _ = tokio::time::sleep(every) => {}
            }
            match tokio::time::timeout(every, self.fence.check(&mut self.conn)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("the target did not answer within {every:?}")),
            }
        }
    }
}

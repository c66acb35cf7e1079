//! Live state of each target's pipeline, shared read-only with observers (log lines, the
//! `status` command, later the admin API and metrics).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sink::checkpoint::{CopyProgress, StoppedTable};
use crate::source::position::Checkpoint;

/// Where a target's pipeline is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    /// The initial copy is running.
    Copying,
    Streaming,
    /// A retryable error; the pipeline reconnects after a backoff.
    Retrying {
        error: String,
    },
    /// A definite error; the target stays stopped until restarted.
    Stopped {
        error: String,
    },
    ShutDown,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub target: String,
    pub state: State,
    pub checkpoint: Option<Checkpoint>,
    /// The writer has applied everything the source sent (a heartbeat arrived since).
    pub caught_up: bool,
    pub rows_applied: u64,
    pub transactions_applied: u64,
    pub stopped_tables: Vec<StoppedTable>,
    /// Initial copy progress per table.
    pub copy: Vec<CopyProgress>,
}

impl Snapshot {
    /// Seconds between the source commit of the newest applied transaction and now; 0 when
    /// caught up (an idle source is not lag).
    pub fn lag_secs(&self) -> Option<u64> {
        if self.caught_up {
            return Some(0);
        }
        let t = self.checkpoint.as_ref()?.source_time;
        if t == 0 {
            return None;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        Some(now.saturating_sub(u64::from(t)))
    }
}

/// Shared, lock-protected status of one target.
#[derive(Debug)]
pub struct TargetStatus {
    inner: Mutex<Snapshot>,
}

impl TargetStatus {
    /// One status per target of `config`, in its order.
    pub fn for_targets(config: &crate::config::Config) -> Vec<std::sync::Arc<TargetStatus>> {
        config
            .targets
            .iter()
            .map(|t| std::sync::Arc::new(TargetStatus::new(&t.name)))
            .collect()
    }

    pub fn new(target: &str) -> Self {
        TargetStatus {
            inner: Mutex::new(Snapshot {
                target: target.to_owned(),
                state: State::Starting,
                checkpoint: None,
                caught_up: false,
                rows_applied: 0,
                transactions_applied: 0,
                stopped_tables: Vec::new(),
                copy: Vec::new(),
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.with(|s| s.clone())
    }

    pub fn set_state(&self, state: State) {
        self.with(|s| s.state = state);
    }

    pub fn started(&self, checkpoint: &Checkpoint, stopped: Vec<StoppedTable>) {
        self.with(|s| {
            s.state = State::Streaming;
            s.checkpoint = Some(checkpoint.clone());
            s.stopped_tables = stopped;
            s.caught_up = false;
        });
    }

    pub fn committed(&self, checkpoint: &Checkpoint, transactions: u64) {
        self.with(|s| {
            s.checkpoint = Some(checkpoint.clone());
            s.transactions_applied += transactions;
        });
    }

    pub fn caught_up(&self) {
        self.with(|s| s.caught_up = true);
    }

    pub fn add_rows(&self, n: u64) {
        self.with(|s| {
            s.rows_applied += n;
            s.caught_up = false;
        });
    }

    /// Records a table's copy progress (and logs it now and then).
    pub fn copy_progress(&self, progress: &CopyProgress) {
        self.with(|s| {
            s.state = State::Copying;
            match s.copy.iter_mut().find(|p| p.table == progress.table) {
                Some(p) => *p = progress.clone(),
                None => s.copy.push(progress.clone()),
            }
        });
    }

    pub fn table_stopped(&self, table: StoppedTable) {
        self.with(|s| s.stopped_tables.push(table));
    }

    /// A stopped table streams again (it was created anew on the source).
    pub fn table_resumed(&self, table: &crate::source::schema::TableName) {
        self.with(|s| s.stopped_tables.retain(|t| &t.table != table));
    }
}

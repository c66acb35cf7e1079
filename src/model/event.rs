//! What the binlog reader hands downstream, in source order: transaction boundaries with the
//! checkpoint after each, row changes with full images, DDL and XA markers. The channel
//! carries events in batches but yields them one by one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::name::TableName;
use super::position::{Checkpoint, GroupId};
use super::schema::TableSchema;
use super::value::Value;

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

/// How many changes of each kind, e.g. applied to one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
}

impl ChangeCounts {
    pub fn of(changes: &[RowChange]) -> ChangeCounts {
        let mut c = ChangeCounts::default();
        for change in changes {
            match change {
                RowChange::Insert(_) => c.inserts += 1,
                RowChange::Update { .. } => c.updates += 1,
                RowChange::Delete(_) => c.deletes += 1,
            }
        }
        c
    }

    pub fn total(&self) -> u64 {
        self.inserts + self.updates + self.deletes
    }

    pub fn add(&mut self, other: ChangeCounts) {
        self.inserts += other.inserts;
        self.updates += other.updates;
        self.deletes += other.deletes;
    }
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
pub struct EventSender {
    tx: mpsc::Sender<Vec<SourceEvent>>,
    backlog: Backlog,
}

/// The writer's end: yields the events one by one, in order.
pub struct EventReceiver {
    rx: mpsc::Receiver<Vec<SourceEvent>>,
    batch: std::vec::IntoIter<SourceEvent>,
    backlog: Backlog,
}

/// Events sent and not yet taken by the writer (counted per batch, so it is cheap).
#[derive(Debug, Clone, Default)]
pub struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The channel is closed: the writer has gone.
#[derive(Debug)]
pub struct Closed;

/// A channel holding about `events` events in flight (in batches of up to `EVENT_BATCH`).
pub fn event_channel(events: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(events.div_ceil(EVENT_BATCH).max(2));
    let backlog = Backlog::default();
    (
        EventSender {
            tx,
            backlog: backlog.clone(),
        },
        EventReceiver {
            rx,
            batch: Vec::new().into_iter(),
            backlog,
        },
    )
}

impl EventSender {
    pub async fn send(&self, batch: Vec<SourceEvent>) -> Result<(), Closed> {
        let n = batch.len();
        self.backlog.0.fetch_add(n, Ordering::Relaxed);
        self.tx.send(batch).await.map_err(|_| Closed)
    }
}

impl EventReceiver {
    /// The number of events waiting for the writer.
    pub fn backlog(&self) -> Backlog {
        self.backlog.clone()
    }

    fn took(&self, batch: &[SourceEvent]) {
        self.backlog.0.fetch_sub(batch.len(), Ordering::Relaxed);
    }

    /// The next event if one has arrived; `Err(Empty)` or `Err(Disconnected)` as `mpsc`.
    pub fn try_recv(&mut self) -> Result<SourceEvent, mpsc::error::TryRecvError> {
        loop {
            if let Some(event) = self.batch.next() {
                return Ok(event);
            }
            let batch = self.rx.try_recv()?;
            self.took(&batch);
            self.batch = batch.into_iter();
        }
    }

    /// The next event; `None` once the reader has ended and everything was taken.
    pub async fn recv(&mut self) -> Option<SourceEvent> {
        loop {
            if let Some(event) = self.batch.next() {
                return Some(event);
            }
            let batch = self.rx.recv().await?;
            self.took(&batch);
            self.batch = batch.into_iter();
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

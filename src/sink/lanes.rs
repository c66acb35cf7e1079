//! Parallel apply: the groups the writer (`sink::apply`) forms are written on `apply.lanes`
//! target connections at once and committed in source order.
//!
//! The writer numbers its groups 1, 2, 3, … and sends group `n` to lane `n mod lanes`: first
//! its encoded statements (while the lane runs them, the writer decodes and encodes what
//! follows, so a connection never waits for rowsync), then its end — the checkpoint and the
//! bookkeeping of table states and XA branches. A lane runs a group in one transaction: its
//! rows, then the fence check (`sink::lock`), then it waits until group `n - 1` has
//! committed, writes the checkpoint row and the bookkeeping, and commits.
//!
//! # Why this is exactly-once and order-preserving
//! - **Commits are in source order.** Group `n` commits only after group `n - 1` did, so the
//!   committed groups are always a prefix 1..k of the stream, and the checkpoint row, written
//!   by each group after its predecessor committed, holds the end of group k: a restart
//!   resumes exactly after the last committed group, whichever lane it ran on. A group is
//!   whole source transactions, so no source transaction is split, and a reader on the
//!   target never sees a later source transaction without every earlier one.
//!   There is one checkpoint row, not one per lane: a group writes it only after its
//!   predecessor committed, so no lane ever waits for it, and it stays the one row that
//!   verify's freeze, a standby's settle and `status` read. It costs one statement per group
//!   inside the commit order.
//! - **Conflicting groups never overlap.** Before statements of group `n` are sent, their
//!   write set — the replica keys they touch — is compared with the write sets of the groups
//!   still in flight; on overlap the writer waits until the last overlapping group has
//!   committed. Two groups in flight therefore write disjoint rows, and since each row's final
//!   value depends only on the changes to its own key (full row images, upserts and deletes by
//!   key), running them in either order or at once gives the same rows as running them one
//!   after the other. The write set is exact: replicas have the source's primary key and no
//!   unique secondary keys, foreign keys or triggers of rowsync's making, and keys are folded
//!   coarser than any collation compares them (see `WriteSet`), so a false overlap only costs
//!   a wait. Key columns the replica itself compares as bytes (whole BINARY, VARBINARY or
//!   BLOB columns, read from its catalog: `Projection::binary_key`) are hashed as bytes. When
//!   a table's schema changes under groups in flight, the next rows conflict with every group
//!   (their keys may have been hashed another way). A TRUNCATE conflicts with every key of its replica; DDL and re-copy boundaries
//!   drain every lane first (`Lanes::drain`).
//! - **Nothing waits in a circle.** The only lock two lanes can both want is the checkpoint
//!   row (and the table-state and XA rows of the bookkeeping), and a group takes those, and the
//!   fence's shared lock, only after its predecessor committed, when no earlier group holds
//!   them. Row writes touch only their own keys: upserts by primary key, and deletes through a
//!   join on the keys, which runs as primary key lookups (`WHERE k IN (…)` may become a full
//!   scan that waits for every row's lock). Target sessions use READ COMMITTED, so disjoint
//!   keys cannot meet on gap locks. A later group may wait for an earlier one's lock, never the
//!   reverse. Should a replica still make them meet (one adopted with triggers or foreign keys
//!   of its own; unique keys are refused at adoption), lanes give up after a 15 s lock wait and the engine's next attempt applies on
//!   one lane.
//! - **A failure commits nothing after it.** A lane that fails records its error and cancels
//!   every lane; a lane waiting for its predecessor then rolls back instead of committing, and
//!   the writer returns the error. The engine restarts from the checkpoint, which the last
//!   committed group wrote.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlConnection;
use sqlx::Executor;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checkpoint;
use super::lock::{self, Fence};
use super::writer::{Op, Statement};
use super::{Observer, SinkError};
use crate::model::name::TableName;
use crate::model::position::Checkpoint;
use crate::model::table::StoppedTable;
use crate::model::value::Value;

/// Keys a group's write set holds before it counts as touching everything: bounds the
/// memory of a huge source transaction, whose successors then wait for it to commit.
const MAX_WRITE_SET: usize = 100_000;

/// Messages a lane's queue holds: enough to keep it busy, few enough to bound memory.
const LANE_QUEUE: usize = 2;

/// The replica rows a group writes, by key, folded so that keys a replica's collation could
/// compare equal always fold equal.
#[derive(Debug, Default)]
pub struct WriteSet {
    rows: HashSet<u64>,
    /// Replicas with a row in `rows`.
    replicas: HashSet<String>,
    /// Replicas written as a whole (TRUNCATE, or a key that cannot be folded).
    whole: HashSet<String>,
    /// Conflicts with everything (too large to track).
    all: bool,
}

impl WriteSet {
    /// The write set of `ops`.
    pub fn of(ops: &[Op]) -> WriteSet {
        let mut set = WriteSet::default();
        for op in ops {
            match op {
                Op::Truncate(replica) => {
                    set.whole.insert(replica.clone());
                }
                Op::Upsert(p, row) => set.add(
                    &p.replica,
                    p.key.iter().map(|&k| &row[k]).zip(&p.binary_key),
                ),
                Op::Delete(p, key) => set.add(&p.replica, key.iter().zip(&p.binary_key)),
            }
        }
        set
    }

    /// A write set that conflicts with every other.
    pub fn everything() -> WriteSet {
        WriteSet {
            all: true,
            ..WriteSet::default()
        }
    }

    /// Adds one key: its values, each with whether its column compares as bytes.
    fn add<'a>(&mut self, replica: &str, key: impl Iterator<Item = (&'a Value, &'a bool)>) {
        let mut h = DefaultHasher::new();
        replica.hash(&mut h);
        for (v, &binary) in key {
            if fold(v, binary, &mut h).is_none() {
                self.whole.insert(replica.to_string());
                return;
            }
        }
        self.rows.insert(h.finish());
        if !self.replicas.contains(replica) {
            self.replicas.insert(replica.to_string());
        }
    }

    fn len(&self) -> usize {
        self.rows.len() + self.whole.len()
    }

    /// Conflicts with nothing.
    fn is_empty(&self) -> bool {
        !self.all && self.len() == 0
    }

    fn conflicts(&self, other: &WriteSet) -> bool {
        self.all
            || other.all
            || self
                .whole
                .iter()
                .any(|r| other.replicas.contains(r) || other.whole.contains(r))
            || other.whole.iter().any(|r| self.replicas.contains(r))
            || {
                let (small, large) = if self.rows.len() <= other.rows.len() {
                    (&self.rows, &other.rows)
                } else {
                    (&other.rows, &self.rows)
                };
                small.iter().any(|k| large.contains(k))
            }
    }

    fn extend(&mut self, other: WriteSet) {
        if self.all {
            return;
        }
        if other.all || self.len() + other.len() > MAX_WRITE_SET {
            *self = WriteSet::everything();
            return;
        }
        self.rows.extend(other.rows);
        self.replicas.extend(other.replicas);
        self.whole.extend(other.whole);
    }
}

/// Feeds a key value to `h` in a form no coarser collation can tell apart: text is compared
/// case-insensitively and without trailing spaces, and text beyond printable ASCII (where
/// accents, ignorable characters and expansions make equality a collation's business) cannot
/// be folded at all (`None`: the whole replica counts as written). A value of a `binary`
/// column (BINARY(16) UUIDs, say) compares as bytes and is fed as bytes, bar the zero bytes
/// BINARY(n) pads with.
fn fold(v: &Value, binary: bool, h: &mut DefaultHasher) -> Option<()> {
    std::mem::discriminant(v).hash(h);
    match v {
        Value::Null => {}
        Value::Int(i) => i.hash(h),
        Value::UInt(u) | Value::Bit(u) | Value::Set(u) => u.hash(h),
        // -0 and 0 are one key.
        Value::Float(f) => (f + 0.0).to_bits().hash(h),
        Value::Double(d) => (d + 0.0).to_bits().hash(h),
        Value::Year(y) | Value::Enum(y) => y.hash(h),
        Value::Decimal(s) | Value::Temporal(s) | Value::Json(s) => s.hash(h),
        Value::Text(s) => fold_bytes(s.as_bytes(), h, false)?,
        Value::Bytes(b) if binary => {
            let end = b.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            b[..end].hash(h);
        }
        // BINARY(n) pads with zero bytes; character data carried raw may be case-insensitive.
        Value::Bytes(b) => fold_bytes(b, h, true)?,
    }
    Some(())
}

fn fold_bytes(bytes: &[u8], h: &mut DefaultHasher, raw: bool) -> Option<()> {
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && !(raw && b == 0))
        .map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    // Raw bytes may be text in a charset rowsync does not decode, where even some ASCII
    // punctuation is a letter (swe7's `[` is Ä, equal to `{`, ä): only letters, digits and a
    // few signs every such charset keeps are folded.
    let folds = |b: &u8| {
        if raw {
            b.is_ascii_alphanumeric() || b" -_.:/+".contains(b)
        } else {
            (0x20..0x7f).contains(b)
        }
    };
    if !bytes.iter().all(folds) {
        return None;
    }
    for b in bytes {
        h.write_u8(b.to_ascii_lowercase());
    }
    bytes.len().hash(h);
    Some(())
}

/// A change to the target's record of unresolved XA branches (see `sink::apply`).
#[derive(Debug)]
pub enum XaChange {
    /// Prepared, with the floor to read it again from (`None`: it holds no rows).
    Prepared(String, Option<Checkpoint>),
    Resolved(String),
}

/// What a group writes besides its rows, after its predecessor committed.
#[derive(Debug)]
pub struct GroupEnd {
    /// The position the group ends at.
    pub at: Checkpoint,
    /// Whether `at` is stored as the checkpoint (not while replaying history only tables
    /// catching up need).
    pub store: bool,
    /// New floors of tables catching up after a re-copy (`None`: caught up).
    pub floors: Vec<(TableName, Option<Checkpoint>)>,
    pub stops: Vec<StoppedTable>,
    pub xa: Vec<XaChange>,
    /// Source transactions in the group.
    pub transactions: u64,
}

impl GroupEnd {
    async fn write(&mut self, conn: &mut MySqlConnection, pipeline: &str) -> Result<(), SinkError> {
        for (table, floor) in &self.floors {
            checkpoint::set_floor(conn, pipeline, table, floor.as_ref()).await?;
            if floor.is_none() {
                tracing::info!(table = %table, "table caught up after its re-copy");
            }
        }
        for stop in &mut self.stops {
            stop.since = self.at.position.to_string();
            checkpoint::stop_table(conn, pipeline, stop, self.at.gtid.as_ref()).await?;
        }
        for change in &self.xa {
            match change {
                XaChange::Prepared(xid, floor) => {
                    checkpoint::hold_xa(conn, pipeline, xid, floor.as_ref()).await?
                }
                XaChange::Resolved(xid) => checkpoint::resolve_xa(conn, pipeline, xid).await?,
            }
        }
        if self.store {
            checkpoint::store(conn, pipeline, &self.at).await?;
        }
        Ok(())
    }
}

enum Msg {
    Write(Vec<Statement>),
    End(u64, Box<GroupEnd>),
}

/// What every lane and the writer share.
struct Shared {
    /// The number of the last committed group.
    committed: watch::Sender<u64>,
    /// The first error a lane met.
    failure: Mutex<Option<SinkError>>,
    /// Cancelled when a lane failed or the writer gave up: nothing commits any more.
    stop: CancellationToken,
}

impl Shared {
    fn fail(&self, e: SinkError) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(e);
        }
        self.stop.cancel();
    }
}

/// What a lane needs besides its connection.
pub struct LaneSettings {
    pub pipeline: String,
    pub fence: Option<Fence>,
    /// A lane pings after this long without a statement, so its session outlives no lock.
    pub keepalive: Duration,
    pub observer: Arc<dyn Observer>,
}

/// The writer's side of the lanes.
pub struct Lanes {
    senders: Vec<mpsc::Sender<Msg>>,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// The number of the last group whose end was sent.
    dispatched: u64,
    /// The write set of the group being sent (number `dispatched + 1`), once it has rows.
    open: Option<WriteSet>,
    /// Groups sent whole, not known to be committed, oldest first.
    in_flight: VecDeque<(u64, WriteSet)>,
}

impl Lanes {
    /// Starts one lane on each of `conns`, whose sessions `prepare_session` set up.
    pub fn start(conns: Vec<MySqlConnection>, settings: LaneSettings) -> Lanes {
        let (committed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            committed,
            failure: Mutex::new(None),
            stop: CancellationToken::new(),
        });
        let settings = Arc::new(settings);
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for (index, conn) in conns.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(LANE_QUEUE);
            senders.push(tx);
            let shared = shared.clone();
            let settings = settings.clone();
            tasks.push(tokio::spawn(async move {
                let mut lane = Lane {
                    index,
                    conn,
                    in_txn: false,
                    last: Instant::now(),
                    shared: shared.clone(),
                    settings,
                };
                let guard = PanicGuard(shared.clone());
                let mut rx = rx;
                let result = lane.run(&mut rx).await;
                if let Err(e) = result {
                    // Recorded before the queue closes, so a writer whose send fails finds it.
                    shared.fail(e);
                } else if lane.in_txn {
                    // An unfinished group (a half-received source transaction) is dropped.
                    let _ = lane.conn.execute("ROLLBACK").await;
                }
                drop(rx);
                std::mem::forget(guard);
            }));
        }
        Lanes {
            senders,
            tasks,
            shared,
            dispatched: 0,
            open: None,
            in_flight: VecDeque::new(),
        }
    }

    /// A group has statements sent but not its end.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The error a lane failed with, if one did.
    fn failure(&self) -> SinkError {
        self.shared
            .failure
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .unwrap_or_else(|| SinkError::LaneEnded("an apply lane stopped".into()))
    }

    /// Whether a group ended now would start at once: fewer groups are in flight than can
    /// overlap usefully (one committing, one running). While lanes are busy, a writer that
    /// has drained its queue keeps adding to its open group instead, so under a steady load
    /// groups grow with the commit time, as one connection's would, rather than each source
    /// transaction paying a commit of its own.
    pub fn can_take(&self) -> bool {
        let committed = *self.shared.committed.borrow();
        self.dispatched - committed < self.senders.len().min(2) as u64
    }

    /// A receiver that sees each commit.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// Cancelled once a lane has failed (or the lanes were stopped).
    pub fn stopped(&self) -> CancellationToken {
        self.shared.stop.clone()
    }

    /// The lanes' error, once one failed.
    pub fn check(&self) -> Result<(), SinkError> {
        if self.shared.stop.is_cancelled() {
            return Err(self.failure());
        }
        Ok(())
    }

    /// Waits until group `seq` has committed.
    async fn wait(&mut self, seq: u64) -> Result<(), SinkError> {
        let mut committed = self.shared.committed.subscribe();
        tokio::select! {
            r = async { committed.wait_for(|&c| c >= seq).await.map(|_| ()) } => {
                r.map_err(|_| SinkError::LaneEnded("the lanes' commit order ended".into()))?;
            }
            _ = self.shared.stop.cancelled() => return Err(self.failure()),
        }
        self.prune();
        Ok(())
    }

    /// Forgets the write sets of committed groups.
    fn prune(&mut self) {
        let done = *self.shared.committed.borrow();
        while self.in_flight.front().is_some_and(|(s, _)| *s <= done) {
            self.in_flight.pop_front();
        }
    }

    /// Every group ended so far has committed.
    pub fn all_committed(&self) -> bool {
        self.open.is_none() && *self.shared.committed.borrow() >= self.dispatched
    }

    /// Sends statements of the open group (opening one), once no group in flight writes a
    /// key they write.
    pub async fn write(
        &mut self,
        statements: Vec<Statement>,
        keys: WriteSet,
    ) -> Result<(), SinkError> {
        self.check()?;
        self.prune();
        let last_conflict = self
            .in_flight
            .iter()
            .rev()
            .find(|(_, set)| set.conflicts(&keys))
            .map(|(seq, _)| *seq);
        if let Some(seq) = last_conflict {
            self.wait(seq).await?;
        }
        self.open.get_or_insert_with(WriteSet::default).extend(keys);
        self.send(self.dispatched + 1, Msg::Write(statements)).await
    }

    /// Ends the open group (opening an empty one for bookkeeping alone) with `end`.
    pub async fn end(&mut self, end: GroupEnd) -> Result<(), SinkError> {
        self.check()?;
        let seq = self.dispatched + 1;
        let keys = self.open.take().unwrap_or_default();
        self.prune();
        // A group without rows conflicts with none.
        if !keys.is_empty() {
            self.in_flight.push_back((seq, keys));
        }
        self.dispatched = seq;
        self.send(seq, Msg::End(seq, Box::new(end))).await
    }

    async fn send(&mut self, seq: u64, msg: Msg) -> Result<(), SinkError> {
        let lane = (seq % self.senders.len() as u64) as usize;
        if self.senders[lane].send(msg).await.is_err() {
            // The lane ended; its error is recorded as it ends (or it panicked).
            let _ =
                tokio::time::timeout(Duration::from_secs(5), self.shared.stop.cancelled()).await;
            return Err(self.failure());
        }
        Ok(())
    }

    /// Waits until every group sent whole has committed.
    pub async fn drain(&mut self) -> Result<(), SinkError> {
        self.check()?;
        self.wait(self.dispatched).await
    }

    /// Lets the lanes commit every group sent whole (`commit`) or cancels them, rolls back an
    /// open group, and waits until every lane has ended: only then may anyone read the
    /// checkpoint again.
    pub async fn close(&mut self, commit: bool) -> Result<(), SinkError> {
        if !commit {
            self.shared.stop.cancel();
        }
        self.senders.clear();
        let tasks: Vec<JoinHandle<()>> = self.tasks.drain(..).collect();
        for joined in futures_util::future::join_all(tasks).await {
            if let Err(e) = joined {
                if e.is_panic() {
                    let message = crate::model::panic_message(&*e.into_panic());
                    self.shared.fail(SinkError::LaneEnded(message));
                }
            }
        }
        if commit {
            self.check()?;
        }
        Ok(())
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Dropped without `close` (the writer's future was dropped): nothing commits any more.
        self.shared.stop.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Stops every lane when a lane task panics (dropped while unwinding): the lanes after it
/// would otherwise wait for its commit forever.
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        self.0
            .fail(SinkError::LaneEnded("an apply lane panicked".into()));
    }
}

struct Lane {
    index: usize,
    conn: MySqlConnection,
    in_txn: bool,
    /// The last statement on `conn`.
    last: Instant,
    shared: Arc<Shared>,
    settings: Arc<LaneSettings>,
}

impl Lane {
    async fn run(&mut self, rx: &mut mpsc::Receiver<Msg>) -> Result<(), SinkError> {
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.shared.stop.cancelled() => return Ok(()),
                msg = rx.recv() => msg,
                _ = tokio::time::sleep_until((self.last + self.settings.keepalive).into()) => {
                    self.exec("DO 0").await?;
                    continue;
                }
            };
            let Some(msg) = msg else { return Ok(()) };
            match msg {
                Msg::Write(statements) => {
                    let began = Instant::now();
                    self.begin().await?;
                    for statement in statements {
                        statement.run(&mut self.conn).await?;
                    }
                    self.count(began);
                }
                Msg::End(seq, end) => {
                    if !self.commit(seq, *end).await? {
                        return Ok(());
                    }
                }
            }
            self.last = Instant::now();
        }
    }

    fn count(&self, since: Instant) {
        self.settings
            .observer
            .lane_busy(self.index, since.elapsed());
    }

    async fn exec(&mut self, sql: &'static str) -> Result<(), SinkError> {
        self.conn
            .execute(sql)
            .await
            .map_err(|e| SinkError::db(sql, e))?;
        self.last = Instant::now();
        Ok(())
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        if !self.in_txn {
            self.exec("BEGIN").await?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Commits group `seq` after its predecessor; `false` when the lanes stopped first.
    async fn commit(&mut self, seq: u64, mut end: GroupEnd) -> Result<bool, SinkError> {
        self.begin().await?;
        let mut committed = self.shared.committed.subscribe();
        loop {
            tokio::select! {
                biased;
                _ = self.shared.stop.cancelled() => return Ok(false),
                r = async { committed.wait_for(|&c| c + 1 >= seq).await.map(|_| ()) } => {
                    if r.is_err() {
                        return Ok(false);
                    }
                    break;
                }
                // A long wait must not let the session time out.
                _ = tokio::time::sleep_until((self.last + self.settings.keepalive).into()) => {
                    self.exec("DO 0").await?;
                }
            }
        }
        let began = Instant::now();
        // Checked only now: a group waiting for its predecessor holds no lock a new holder
        // of the target's lock would wait for.
        lock::check(self.settings.fence.as_ref(), &mut self.conn).await?;
        end.write(&mut self.conn, &self.settings.pipeline).await?;
        let commit = Instant::now();
        self.exec("COMMIT").await?;
        self.in_txn = false;
        self.shared.committed.send_replace(seq);
        self.count(began);
        let observer = &self.settings.observer;
        if end.store {
            observer.committed(&end.at, end.transactions, commit.elapsed());
        }
        for stop in end.stops {
            observer.table_stopped(stop);
        }
        Ok(true)
    }
}

/// Sets up a lane's session: READ COMMITTED, so that groups with disjoint keys take no gap
/// locks that could make an earlier group wait for a later one. A target that logs its binlog
/// in STATEMENT format refuses writes at that level; `false` then, and it gets one lane.
pub async fn prepare_session(conn: &mut MySqlConnection) -> Result<bool, SinkError> {
    const FORMAT: &str = "SELECT @@log_bin, @@binlog_format";
    let (log_bin, format): (i64, String) = sqlx::query_as(FORMAT)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| SinkError::db(FORMAT, e))?;
    if log_bin != 0 && format.eq_ignore_ascii_case("STATEMENT") {
        return Ok(false);
    }
    // A wait the write sets did not foresee (a replica with unique keys or triggers of its
    // own) may be a later group waiting for an earlier one that waits for its commit: it ends
    // soon, and the engine's next attempt applies on one lane.
    const WAIT: &str = "SET SESSION innodb_lock_wait_timeout = 15";
    conn.execute(WAIT)
        .await
        .map_err(|e| SinkError::db(WAIT, e))?;
    const LEVEL: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";
    conn.execute(LEVEL)
        .await
        .map_err(|e| SinkError::db(LEVEL, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::name::TableName;
    use crate::routing::mapping::{Mapping, Projection};

    fn projection(replica: &str) -> Arc<Projection> {
        let mapping = Mapping {
            source: format!("db.{replica}").parse().expect("pattern"),
            table: None,
            columns: None,
            filter: None,
        };
        Arc::new(
            Projection::from_columns(
                &mapping,
                &TableName::new("db", replica),
                vec!["id".into(), "v".into()],
                &[0],
            )
            .expect("projection"),
        )
    }

    fn upsert(p: &Arc<Projection>, key: Value) -> Op {
        Op::Upsert(p.clone(), vec![key, Value::Int(0)])
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn keys_fold_coarser_than_collations() {
        let p = projection("t");
        let a = WriteSet::of(&[upsert(&p, text("Abc  "))]);
        let b = WriteSet::of(&[Op::Delete(p.clone(), vec![text("aBC")])]);
        assert!(a.conflicts(&b), "case and trailing spaces");
        let c = WriteSet::of(&[upsert(&p, text("abd"))]);
        assert!(!a.conflicts(&c));
        // Beyond printable ASCII the whole replica counts as written.
        let accented = WriteSet::of(&[upsert(&p, text("é"))]);
        assert!(accented.conflicts(&c) && c.conflicts(&accented));
        // swe7: `[` and `{` are Ä and ä.
        let swe7 = WriteSet::of(&[upsert(&p, Value::Bytes(b"[".to_vec()))]);
        assert!(swe7.conflicts(&WriteSet::of(&[upsert(&p, Value::Bytes(b"{".to_vec()))])));
        let binary = WriteSet::of(&[upsert(&p, Value::Bytes(b"k\0\0".to_vec()))]);
        let same = WriteSet::of(&[upsert(&p, Value::Bytes(b"k".to_vec()))]);
        assert!(binary.conflicts(&same), "BINARY(n) padding");
        let zero = WriteSet::of(&[upsert(&p, Value::Double(-0.0))]);
        assert!(zero.conflicts(&WriteSet::of(&[upsert(&p, Value::Double(0.0))])));
    }

    #[test]
    fn binary_keys_are_exact() {
        let mut p = (*projection("t")).clone();
        p.binary_key = vec![true];
        let p = Arc::new(p);
        let uuid = |last: u8| Value::Bytes([0x9f, 0x00, 0xff, 0x5b, 0x7b, 0x41, last].to_vec());
        let a = WriteSet::of(&[upsert(&p, uuid(0x01))]);
        assert!(!a.conflicts(&WriteSet::of(&[upsert(&p, uuid(0x02))])));
        assert!(a.conflicts(&WriteSet::of(&[Op::Delete(p.clone(), vec![uuid(0x01)])])));
        // Bytes are not letters: no case folding.
        let upper = WriteSet::of(&[upsert(&p, Value::Bytes(b"A".to_vec()))]);
        assert!(!upper.conflicts(&WriteSet::of(&[upsert(&p, Value::Bytes(b"a".to_vec()))])));
        // BINARY(n) pads with zero bytes.
        let padded = WriteSet::of(&[upsert(&p, Value::Bytes(b"A\0\0".to_vec()))]);
        assert!(upper.conflicts(&padded));
    }

    #[test]
    fn replicas_truncates_and_size_limit() {
        let (p, q) = (projection("t"), projection("u"));
        let one = WriteSet::of(&[upsert(&p, Value::Int(1))]);
        assert!(!one.conflicts(&WriteSet::of(&[upsert(&q, Value::Int(1))])));
        assert!(one.conflicts(&WriteSet::of(&[Op::Truncate("t".into())])));
        assert!(!one.conflicts(&WriteSet::of(&[Op::Truncate("u".into())])));
        let mut big = WriteSet::default();
        for i in 0..=MAX_WRITE_SET as i64 {
            big.extend(WriteSet::of(&[upsert(&q, Value::Int(i))]));
        }
        assert!(big.all && big.rows.is_empty());
        assert!(big.conflicts(&one));
    }
}

//! The binlog reader: one replica connection, from a checkpoint to the source's head and on.
//!
//! `BinlogReader::run` opens a dump connection with its own server id, then turns events into
//! `SourceEvent`s. It keeps the event-group state machine: a group starts at a GTID event (or a
//! `BEGIN` query without GTIDs), and ends at XID, `COMMIT`, or after the single statement of a
//! standalone (DDL) group. Rows events of tables the selector does not select are skipped before
//! decoding. The reader returns on the first error; the pipeline restarts it from the target's
//! committed checkpoint, so nothing it sent of an unfinished transaction is ever committed.
//!
//! # Events the client library mishandles
//! mysql_async reads, parses and decompresses each event inside its stream's `poll_next`.
//! mysql_common panics there on some malformed events (an event shorter than its header says,
//! one too short for its checksum, a TRANSACTION_PAYLOAD header with an unknown compression
//! type), and it silently drops the events of a payload it cannot decompress. `next_event`
//! turns such a panic into a definite `ClientPanic` error at the reader's position, and the
//! state machine counts the events of every payload (`payload`), so a dropped one is a definite
//! `Payload` error instead of a transaction skipped. The property tests in
//! `reader_fuzz_tests.rs` replay mutated events of every kind through this path: the reader
//! answers with events or an error, never a panic or an allocation the event does not justify.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use mysql_async::binlog::events::{Event, GtidEvent, RotateEvent};
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Conn, Opts};
use mysql_common::binlog::consts::{EventType, StatusVarKey};
use mysql_common::binlog::events::{QueryEvent, StatusVarVal, TableMapEvent};
use mysql_common::packets::{GnoInterval, Sid as DumpSid};
use tokio_util::sync::CancellationToken;

use super::catalog::{self, CatalogTable};
use super::info::SourceInfo;
use super::mariadb;
use super::payload;
use super::rows_event::{self, compressed_query, rows_event_type, RowsKind};
use super::schema::{self, SchemaError};
use super::statement::{classify, Statement};
use super::value::{decode_row, Reader};
use super::SourceError;
use crate::model::event::{
    DdlKind, EventSender, RowBatch, RowChange, SourceEvent, StatementClock, EVENT_BATCH,
};
use crate::model::name::TableName;
use crate::model::position::{
    BinlogFile, Checkpoint, Flavor, Floors, GroupId, GtidSet, Position, Sid, MAX_GNO,
};
use crate::model::schema::{ColumnFormat, TableSchema};

/// Which tables the reader decodes and passes on: the caller's routing decides, the reader
/// only asks.
pub type Selector = Arc<dyn Fn(&TableName) -> bool + Send + Sync>;

/// MySQL 8's heartbeat with a 64-bit position (mysql_common has no constant for it).
const HEARTBEAT_EVENT_V2: u8 = 0x29;

/// Connection settings of one binlog reader.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    pub opts: Opts,
    pub server_id: u32,
    pub heartbeat: Duration,
    pub read_timeout: Duration,
}

/// Reads the binlog for one target.
pub struct BinlogReader {
    options: ReaderOptions,
    selects: Selector,
    /// Tables stopped earlier (e.g. after a DDL the replica could not follow).
    skip: HashSet<TableName>,
    floors: Option<Floors>,
    /// Bytes of binlog events read, for whoever watches (the metrics).
    bytes_read: Arc<AtomicU64>,
}

impl BinlogReader {
    pub fn new(options: ReaderOptions, selects: Selector, skip: HashSet<TableName>) -> Self {
        BinlogReader {
            options,
            selects,
            skip,
            floors: None,
            bytes_read: Arc::default(),
        }
    }

    /// Counts the bytes of binlog events read into `counter`.
    pub fn with_bytes_counter(mut self, counter: Arc<AtomicU64>) -> Self {
        self.bytes_read = counter;
        self
    }

    /// Per-table floors; the stream must start at `floors.start()`.
    pub fn with_floors(mut self, floors: Floors) -> Self {
        self.floors = Some(floors);
        self
    }

    /// Streams from `start` into `tx` until cancelled or an error occurs.
    pub async fn run(
        mut self,
        start: Checkpoint,
        tx: EventSender,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        let mut conn = super::conn::connect(&self.options.opts).await?;
        let info = SourceInfo::read(&mut conn).await?;
        if !info.log_bin {
            return Err(SourceError::BinlogOff);
        }
        let by_gtid = info.has_gtid()
            && matches!(
                (&start.gtid, info.flavor()),
                (Some(GtidSet::Maria(_)), Flavor::Mariadb)
                    | (Some(GtidSet::Mysql(_)), Flavor::Mysql)
            );
        if !by_gtid {
            check_identity(&start, &info)?;
            let head = info.head(&mut conn).await?;
            check_not_ahead(&start.position, &head.position)?;
        }
        let nanos = self.options.heartbeat.as_nanos().min(u64::MAX as u128);
        conn.query_drop(format!("SET @master_heartbeat_period = {nanos}"))
            .await?;
        let start_text;
        let file_name = start.position.file.to_string();
        let mut request = BinlogStreamRequest::new(self.options.server_id);
        if info.flavor() == Flavor::Mariadb {
            // Without this, MariaDB rewrites GTID events as BEGIN queries.
            conn.query_drop("SET @mariadb_slave_capability = 4").await?;
        }
        match (&start.gtid, by_gtid) {
            (Some(gtid @ GtidSet::Maria(_)), true) => {
                start_text = format!("GTID {gtid}");
                conn.exec_drop("SET @slave_connect_state = ?", (gtid.to_string(),))
                    .await?;
                conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
                request = request.with_filename(b"").with_pos(4u64);
            }
            (Some(GtidSet::Mysql(sets)), true) => {
                start_text = format!(
                    "GTID set {}",
                    start
                        .gtid
                        .as_ref()
                        .map(|g| g.to_string())
                        .unwrap_or_default()
                );
                let sids: Vec<DumpSid<'static>> = sets
                    .iter()
                    .map(|(sid, intervals)| {
                        DumpSid::new(sid.0).with_intervals(
                            intervals
                                .iter()
                                .map(|&(a, b)| GnoInterval::new(a, b + 1))
                                .collect(),
                        )
                    })
                    .collect();
                request = request.with_gtid().with_gtid_set(sids);
            }
            _ => {
                start_text = start.position.to_string();
                request = request
                    .with_filename(file_name.as_bytes())
                    .with_pos(start.position.offset);
            }
        }
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| SourceError::from(e).explain_start(&start_text))?;
        tracing::info!(server_id = self.options.server_id, from = %start_text, "binlog stream open");

        let skip = std::mem::take(&mut self.skip);
        let mut state = StreamState::new(start, info, self.selects.clone(), skip);
        if let Some(floors) = self.floors.take() {
            state.floors = floors;
        }
        self.follow(&mut stream, &mut state, &tx, &cancel, &start_text)
            .await
    }

    /// Turns the events of `stream` into batches for `tx` until cancelled or an error occurs.
    async fn follow<S>(
        &self,
        stream: &mut S,
        state: &mut StreamState,
        tx: &EventSender,
        cancel: &CancellationToken,
        start_text: &str,
    ) -> Result<(), SourceError>
    where
        S: Stream<Item = Result<Event, mysql_async::Error>> + Unpin,
    {
        let read_timeout = self.options.read_timeout;
        // Second session for information_schema reads (the dump connection is busy).
        let mut catalog_conn: Option<Conn> = None;
        let mut batch: Vec<SourceEvent> = Vec::with_capacity(EVENT_BATCH);
        loop {
            // Events already received are taken without waiting. The batch goes downstream
            // before the reader waits on the network, so batching never holds an event back.
            let ready = match next_event(stream).now_or_never() {
                Some(next) if batch.len() < EVENT_BATCH => Some(next),
                ready => {
                    if !batch.is_empty() {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(EVENT_BATCH));
                        tx.send(full).await.map_err(|_| SourceError::Closed)?;
                    }
                    ready
                }
            };
            let next = match ready {
                Some(next) => Ok(next),
                None => tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    next = tokio::time::timeout(read_timeout, next_event(stream)) => next,
                },
            };
            let event = match next {
                Err(_) => return Err(SourceError::ReadTimeout(read_timeout)),
                Ok(Err(message)) => {
                    return Err(SourceError::ClientPanic {
                        position: state.position().to_string(),
                        message,
                    })
                }
                // A server shutting down ends the stream without an error packet.
                Ok(Ok(None)) => return Err(SourceError::StreamEnded),
                Ok(Ok(Some(Err(e)))) => return Err(SourceError::from(e).explain_start(start_text)),
                Ok(Ok(Some(Ok(event)))) => event,
            };
            self.bytes_read.fetch_add(
                u64::from(event.header().event_size()),
                std::sync::atomic::Ordering::Relaxed,
            );
            if let Some(table) = state.catalog_needed(&event) {
                if catalog_conn.is_none() {
                    catalog_conn = Some(super::conn::connect(&self.options.opts).await?);
                }
                if let Some(conn) = catalog_conn.as_mut() {
                    let entry = catalog::load(conn, &table).await?;
                    state.catalog.insert(table, entry);
                }
            }
            state.handle_into(&event, &mut batch)?;
        }
    }
}

/// The next item of the binlog stream, or the message of a panic while reading it.
///
/// mysql_async reads, parses and (for TRANSACTION_PAYLOAD) decompresses each event inside the
/// stream's `poll_next`, and mysql_common panics there on some malformed input: an event
/// shorter than its header's size (`Event::read` unwraps its short read), an event too short
/// for its checksum, a payload header with an unknown compression type or a field running
/// past the event. Caught here, such a panic is a definite error at the reader's position
/// instead of the end of the task. Asserting unwind safety is sound because a stream that
/// panicked is never polled again: the reader returns, and drops it with its connection.
fn next_event<S>(
    stream: &mut S,
) -> impl std::future::Future<Output = Result<Option<S::Item>, String>> + '_
where
    S: Stream + Unpin,
{
    std::panic::AssertUnwindSafe(stream.next())
        .catch_unwind()
        .map(|caught| caught.map_err(|panic| crate::model::panic_message(panic.as_ref())))
}

/// A file/offset checkpoint is only valid on the server that wrote it.
fn check_identity(start: &Checkpoint, info: &SourceInfo) -> Result<(), SourceError> {
    let a = &start.source;
    let b = &info.identity;
    let same = a.flavor == b.flavor
        && a.server_id == b.server_id
        && a.server_uuid == b.server_uuid
        && a.binlog_base == b.binlog_base
        && start.position.file.base == b.binlog_base;
    if same {
        Ok(())
    } else {
        let show = |i: &crate::model::position::SourceIdentity| {
            format!(
                "{} server_id={} uuid={} binlog={}",
                i.flavor,
                i.server_id,
                i.server_uuid.as_deref().unwrap_or("-"),
                i.binlog_base
            )
        };
        Err(SourceError::IdentityMismatch {
            expected: show(a),
            found: show(b),
        })
    }
}

/// A file/offset beyond the source's head means its binlog was reset (RESET MASTER) since the
/// checkpoint was written: the position now names other transactions, or none.
fn check_not_ahead(start: &Position, head: &Position) -> Result<(), SourceError> {
    match start.partial_cmp(head) {
        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal) => Ok(()),
        _ => Err(SourceError::PositionUnavailable {
            position: start.to_string(),
            reason: format!(
                "it lies beyond the source's current head {head}, so the binlog was reset (RESET MASTER) or replaced since"
            ),
        }),
    }
}

/// Where the current event group is.
#[derive(Debug, Default)]
struct Group {
    open: bool,
    /// Ends after its one statement (DDL) rather than at XID/COMMIT.
    standalone: bool,
    /// A `Begin` was sent downstream (the group has selected rows).
    began: bool,
    /// Inside an XA transaction's prepared part: its rows are held downstream until the
    /// branch's XA COMMIT (or dropped at its XA ROLLBACK).
    xa: bool,
    /// Where the group began in the current binlog file (the floor of an XA branch).
    start_offset: u64,
    /// The XA branch whose prepared part this group is.
    xid: Option<String>,
    maria_gtid: Option<crate::model::position::MariaGtid>,
    mysql_gtid: Option<(Sid, u64)>,
    /// Which transaction this is, for the floors.
    id: Option<GroupId>,
}

/// Decoding format of a selected table, per binlog table id.
struct MappedTable {
    schema: Arc<TableSchema>,
    formats: Vec<ColumnFormat>,
}

/// What a table id stands for in the current binlog file.
struct KnownTable {
    /// The TABLE_MAP event as last received: the same bytes again (every transaction repeats
    /// them) mean nothing changed, and the event is not parsed again.
    raw: Vec<u8>,
    /// `None` when the table is not selected.
    mapped: Option<MappedTable>,
}

struct StreamState {
    info: SourceInfo,
    selects: Selector,
    skip: HashSet<TableName>,
    file: BinlogFile,
    offset: u64,
    gtid: Option<GtidSet>,
    tables: HashMap<u64, KnownTable>,
    /// information_schema entries of selected tables, when the binlog has no column names;
    /// dropped at every DDL on the table so the next TABLE_MAP reads them again.
    catalog: HashMap<TableName, CatalogTable>,
    /// Tables to stop, found while reading a TABLE_MAP.
    stops: Vec<(TableName, String)>,
    floors: Floors,
    group: Group,
    last_time: u32,
    /// The time zone the current QUERY event logged, if any.
    query_time_zone: Option<String>,
    /// A TRANSACTION_PAYLOAD event whose inner events are still arriving.
    payload: Option<payload::Pending>,
}

impl StreamState {
    fn new(
        start: Checkpoint,
        info: SourceInfo,
        selects: Selector,
        skip: HashSet<TableName>,
    ) -> Self {
        let floors = Floors::new(start.clone());
        StreamState {
            floors,
            file: start.position.file,
            offset: start.position.offset,
            gtid: start.gtid,
            info,
            selects,
            skip,
            tables: HashMap::new(),
            catalog: HashMap::new(),
            stops: Vec::new(),
            group: Group::default(),
            last_time: start.source_time,
            query_time_zone: None,
            payload: None,
        }
    }

    fn position(&self) -> Position {
        Position::new(self.file.clone(), self.offset)
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            position: self.position(),
            gtid: self.gtid.clone(),
            source: self.info.identity.clone(),
            source_time: self.last_time,
        }
    }

    fn unsupported(&self, what: impl Into<String>) -> SourceError {
        SourceError::Unsupported {
            position: self.position().to_string(),
            what: what.into(),
        }
    }

    fn begin_group(&mut self, standalone: bool) {
        self.group = Group {
            open: true,
            standalone,
            start_offset: self.offset,
            ..Group::default()
        };
    }

    /// Ends the current group: records its GTID and emits the commit.
    fn commit(&mut self, out: &mut Vec<SourceEvent>) {
        if let Some(g) = self.group.maria_gtid {
            self.gtid
                .get_or_insert_with(|| GtidSet::Maria(Default::default()))
                .add_maria(g);
        }
        if let Some((sid, gno)) = self.group.mysql_gtid {
            if let Some(set) = &mut self.gtid {
                set.add_mysql(sid, gno);
            }
        }
        let group = self.group.id.take();
        self.group = Group::default();
        out.push(SourceEvent::Commit {
            checkpoint: self.checkpoint(),
            group,
        });
    }

    fn ensure_begin(&mut self, out: &mut Vec<SourceEvent>) {
        if !self.group.began {
            self.group.began = true;
            out.push(SourceEvent::Begin);
        }
    }

    fn verify_checksum(&self, event: &Event) -> Result<(), SourceError> {
        let footer = event.footer();
        if let (Ok(Some(alg)), Some(stored)) = (footer.get_checksum_alg(), event.checksum()) {
            if footer.get_checksum_enabled() && event.calc_checksum(alg).to_le_bytes() != stored {
                return Err(SourceError::Checksum {
                    position: self.position().to_string(),
                });
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn handle(&mut self, event: &Event) -> Result<Vec<SourceEvent>, SourceError> {
        let mut out = Vec::new();
        self.handle_into(event, &mut out)?;
        Ok(out)
    }

    /// Follows `event`, appending what goes downstream to `out`.
    fn handle_into(
        &mut self,
        event: &Event,
        out: &mut Vec<SourceEvent>,
    ) -> Result<(), SourceError> {
        let header = event.header();
        let kind = header.event_type_raw();
        let event_start = self.position();
        if let Some(pending) = &mut self.payload {
            match pending.count(kind, u64::from(header.event_size())) {
                Ok(false) => {}
                Ok(true) => self.payload = None,
                Err(source) => {
                    return Err(SourceError::Payload {
                        position: pending.at.to_string(),
                        source,
                    })
                }
            }
        }
        if kind != EventType::ROTATE_EVENT as u8 || header.log_pos() != 0 {
            self.verify_checksum(event)?;
        }
        if header.timestamp() != 0 && kind != EventType::HEARTBEAT_EVENT as u8 {
            self.last_time = header.timestamp();
        }
        // The event's end offset; 0 on artificial events.
        let end = u64::from(header.log_pos());
        let advance = |s: &mut Self| {
            if end != 0 {
                s.offset = end;
            }
        };
        let io = |e: std::io::Error| SourceError::Protocol {
            reason: format!("malformed event {kind}: {e}"),
        };

        match kind {
            k if k == EventType::ROTATE_EVENT as u8 => {
                let rotate: RotateEvent<'_> = event.read_event().map_err(io)?;
                // The first, artificial rotate comes before the format description, so MariaDB's
                // copy still carries the 4 checksum bytes.
                let unstripped = end == 0;
                self.file = parse_rotate_name(rotate.name_raw(), unstripped)?;
                self.offset = rotate.position();
                if end != 0 {
                    // A real rotate closes the file; table ids are per file.
                    self.tables.clear();
                }
                return Ok(());
            }
            mariadb::GTID_EVENT => {
                let g = mariadb::parse_gtid(event.data(), header.server_id()).map_err(|e| {
                    SourceError::Protocol {
                        reason: format!("malformed GTID event: {e}"),
                    }
                })?;
                self.begin_group(g.standalone());
                self.group.id = Some(GroupId::Maria(g.gtid));
                self.group.maria_gtid = Some(g.gtid);
                // MariaDB logs no XA START statement: the GTID event says it.
                if let (true, Some(xid)) = (g.prepared_xa(), g.xid) {
                    self.xa_start(xid, out);
                }
            }
            k if k == EventType::GTID_EVENT as u8 || k == EventType::ANONYMOUS_GTID_EVENT as u8 => {
                // A single statement (DDL) unless a BEGIN or XA START follows.
                self.begin_group(true);
                if k == EventType::GTID_EVENT as u8 {
                    let g: GtidEvent = event.read_event().map_err(io)?;
                    if !(1..=MAX_GNO).contains(&g.gno()) {
                        return Err(SourceError::Protocol {
                            reason: format!(
                                "malformed GTID event at {event_start}: transaction number {} out of range",
                                g.gno()
                            ),
                        });
                    }
                    self.group.mysql_gtid = Some((Sid(g.sid()), g.gno()));
                    self.group.id = Some(GroupId::Mysql(Sid(g.sid()), g.gno()));
                } else {
                    self.group.id = Some(GroupId::Start(event_start.clone()));
                }
            }
            k if k == EventType::QUERY_EVENT as u8 => {
                let q: QueryEvent<'_> = event.read_event().map_err(io)?;
                advance(self);
                let sql = q.query();
                // Only a DDL needs its time zone; BEGIN (one per transaction) is skipped.
                self.query_time_zone = if sql.eq_ignore_ascii_case("BEGIN") {
                    None
                } else {
                    q.status_vars()
                        .get_status_var(StatusVarKey::TimeZone)
                        .and_then(|v| match v.get_value() {
                            Ok(StatusVarVal::TimeZone(tz)) => Some(tz.as_str().into_owned()),
                            _ => None,
                        })
                };
                self.query(&q.schema(), &sql, event_start, out)?;
                return Ok(());
            }
            k if k == EventType::TABLE_MAP_EVENT as u8 => {
                let id = table_id(event.data());
                let known = id
                    .and_then(|id| self.tables.get(&id))
                    .map(|t| t.raw.as_slice());
                if id.is_none() || known != Some(event.data()) {
                    let tme: TableMapEvent<'_> = event.read_event().map_err(io)?;
                    let mapped = self.table_map(&tme)?;
                    self.tables.insert(
                        tme.table_id(),
                        KnownTable {
                            raw: event.data().to_vec(),
                            mapped,
                        },
                    );
                }
                for (table, reason) in std::mem::take(&mut self.stops) {
                    self.ensure_begin(out);
                    out.push(SourceEvent::TableStopped { table, reason });
                }
            }
            k if k == EventType::XID_EVENT as u8 => {
                advance(self);
                self.commit(out);
                return Ok(());
            }
            k if k == EventType::XA_PREPARE_LOG_EVENT as u8 => {
                // The prepared part ends here. MySQL logs `XA COMMIT … ONE PHASE` the same way
                // with the event's first byte (one_phase) set: the branch commits right here.
                advance(self);
                if event.data().first() == Some(&1) {
                    if let Some(xid) = self.group.xid.clone() {
                        out.push(SourceEvent::XaEnd {
                            xid,
                            commit: true,
                            group: self.group.id.clone(),
                        });
                    }
                }
                self.commit(out);
                return Ok(());
            }
            k if rows_event_type(k).is_some() => {
                self.rows(k, event.data(), out)?;
            }
            mariadb::QUERY_COMPRESSED_EVENT => {
                let (db, sql) =
                    compressed_query(event.data()).map_err(|e| SourceError::Protocol {
                        reason: format!("malformed compressed query event: {e}"),
                    })?;
                advance(self);
                self.query_time_zone = None;
                self.query(&db, &sql, event_start, out)?;
                return Ok(());
            }
            k if k == EventType::HEARTBEAT_EVENT as u8 || k == HEARTBEAT_EVENT_V2 => {
                if !self.group.open {
                    out.push(SourceEvent::CaughtUp);
                }
                return Ok(());
            }
            k if k == EventType::INCIDENT_EVENT as u8 => {
                return Err(self.unsupported(
                    "an INCIDENT event: the source lost changes it could not log (a failed statement on a non-transactional table, or a binlog write error); the replicas may miss them — re-copy the tables, then resume from `current`",
                ));
            }
            mariadb::START_ENCRYPTION_EVENT => {
                return Err(self.unsupported("encrypted binlog (encrypt_binlog=ON)"));
            }
            k if k == EventType::TRANSACTION_PAYLOAD_EVENT as u8 => {
                // Its inner events follow from the stream itself; they are counted as they
                // arrive, so a payload the client library dropped is an error (see `payload`).
                let head =
                    payload::parse_header(event.data()).map_err(|e| SourceError::Payload {
                        position: event_start.to_string(),
                        source: e.into(),
                    })?;
                self.payload = Some(payload::Pending::new(event_start, &head));
            }
            _ => {}
        }
        advance(self);
        Ok(())
    }

    fn query(
        &mut self,
        db: &str,
        sql: &str,
        start: Position,
        out: &mut Vec<SourceEvent>,
    ) -> Result<(), SourceError> {
        let statement = classify(db, sql);
        let statement = if self.info.lower_case_table_names {
            statement.lowercase_names()
        } else {
            statement
        };
        let start_offset = start.offset;
        if !self.group.open {
            // A group without GTIDs (BEGIN, or a single statement) is known by its start.
            self.group.id = Some(GroupId::Start(start));
        }
        match statement {
            Statement::Begin => {
                if self.group.open {
                    // MySQL's GTID event does not say whether a multi-event group follows;
                    // BEGIN does.
                    self.group.standalone = false;
                } else {
                    let id = self.group.id.take();
                    self.begin_group(false);
                    self.group.id = id;
                    self.group.start_offset = start_offset;
                }
                return Ok(());
            }
            Statement::Commit => {
                self.commit(out);
                return Ok(());
            }
            Statement::Rollback => {
                // A group that rolled back (non-transactional tables mixed in): whatever rows
                // of it were sent are discarded by not committing; position still advances.
                if self.group.began {
                    return Err(self.unsupported(
                        "a logged transaction ended in ROLLBACK after changing selected tables",
                    ));
                }
                self.commit(out);
                return Ok(());
            }
            Statement::XaStart => {
                if !self.group.open {
                    let id = self.group.id.take();
                    self.begin_group(false);
                    self.group.id = id;
                    self.group.start_offset = start_offset;
                }
                self.xa_start(xa_xid(sql), out);
                return Ok(());
            }
            Statement::XaEnd | Statement::XaPrepare => return Ok(()),
            Statement::XaCommit { .. } | Statement::XaRollback => {
                // A group of its own, or the end of a one-phase branch: the group ends here.
                self.ensure_begin(out);
                out.push(SourceEvent::XaEnd {
                    xid: xa_xid(sql),
                    commit: matches!(statement, Statement::XaCommit { .. }),
                    group: self.group.id.clone(),
                });
                self.commit(out);
                return Ok(());
            }
            _ => {}
        }
        if let Statement::Create(..) = &statement {
            self.atomic_create_select(sql);
        }
        // Any other statement: DDL, or DML in STATEMENT format.
        let selected =
            |s: &Self, t: &TableName| (s.selects)(t) && !s.skip.contains(t) && s.wants(t);
        match &statement {
            Statement::Truncate(t) if selected(self, t) => {
                self.ensure_begin(out);
                out.push(SourceEvent::Truncate(t.clone()));
            }
            Statement::Alter(t) if selected(self, t) => {
                self.ddl(out, t, DdlKind::Alter, sql);
            }
            // A table created anew starts over, even one that had stopped.
            Statement::Create(t, mode) if (self.selects)(t) && self.wants(t) => {
                self.skip.remove(t);
                self.ddl(out, t, DdlKind::Create(*mode), sql);
            }
            Statement::Drop(tables) => {
                for t in tables
                    .iter()
                    .filter(|t| selected(self, t))
                    .cloned()
                    .collect::<Vec<_>>()
                {
                    self.ddl(out, &t, DdlKind::Drop, sql);
                }
            }
            Statement::Rename(pairs) => {
                for (from, to) in pairs {
                    for t in [from, to] {
                        if selected(self, t) {
                            self.ddl(out, t, DdlKind::Rename, sql);
                        }
                    }
                }
            }
            Statement::Dml(Some(t)) if selected(self, t) => {
                self.ensure_begin(out);
                self.skip.insert(t.clone());
                out.push(SourceEvent::TableStopped {
                    table: t.clone(),
                    reason: format!(
                        "a change to it was logged as a statement (binlog_format=STATEMENT or MIXED in that session): {sql}"
                    ),
                });
            }
            _ => {}
        }
        if self.group.standalone || !self.group.open {
            self.commit(out);
        }
        Ok(())
    }

    /// The current group is the prepared part of XA branch `xid`.
    fn xa_start(&mut self, xid: String, out: &mut Vec<SourceEvent>) {
        self.group.xa = true;
        self.group.standalone = false;
        // The state before this group: a restart that must see the branch again starts there.
        let floor = Checkpoint {
            position: Position::new(self.file.clone(), self.group.start_offset),
            ..self.checkpoint()
        };
        self.ensure_begin(out);
        self.group.xid = Some(xid.clone());
        out.push(SourceEvent::XaStart { xid, floor });
    }

    /// MySQL 8.0.21+ logs `CREATE TABLE … SELECT` as one transaction: the CREATE, marked
    /// `START TRANSACTION`, then its rows and an XID. The group ends there, not after the
    /// CREATE, so the new table and its rows commit together.
    fn atomic_create_select(&mut self, sql: &str) {
        let tail: String = sql
            .trim_end_matches(|c: char| c.is_whitespace() || c == ';')
            .chars()
            .rev()
            .take(17)
            .collect::<Vec<char>>()
            .into_iter()
            .rev()
            .collect();
        if tail.eq_ignore_ascii_case("START TRANSACTION") {
            self.group.standalone = false;
        }
    }

    fn ddl(&mut self, out: &mut Vec<SourceEvent>, table: &TableName, kind: DdlKind, sql: &str) {
        self.ensure_begin(out);
        out.push(SourceEvent::Ddl {
            table: table.clone(),
            kind,
            statement: sql.to_owned(),
            clock: StatementClock {
                timestamp: self.last_time,
                time_zone: self.query_time_zone.clone(),
            },
        });
        self.forget_table(table);
    }

    /// Whether the current group still has to be applied to `table` (see `Floors`).
    fn wants(&self, table: &TableName) -> bool {
        match &self.group.id {
            Some(id) => self.floors.wants(id, table),
            None => true,
        }
    }

    /// The selected table a TABLE_MAP `event` describes, when the event has no column names
    /// and no catalog entry is at hand.
    fn catalog_needed(&self, event: &Event) -> Option<TableName> {
        if event.header().event_type_raw() != EventType::TABLE_MAP_EVENT as u8 {
            return None;
        }
        // A table id already mapped needs nothing new (DDL forgets its ids), so the hot path
        // does not parse every TABLE_MAP twice.
        if self.tables.contains_key(&table_id(event.data())?) {
            return None;
        }
        let tme: TableMapEvent<'_> = event.read_event().ok()?;
        let name = TableName::new(tme.database_name(), tme.table_name());
        let wanted = (self.selects)(&name)
            && !self.skip.contains(&name)
            && !self.catalog.contains_key(&name)
            && !schema::has_column_names(&tme);
        wanted.then_some(name)
    }

    fn forget_table(&mut self, table: &TableName) {
        self.catalog.remove(table);
        self.tables.retain(|_, t| match &t.mapped {
            Some(m) => &m.schema.name != table,
            None => true,
        });
    }

    /// The selected table `tme` maps, or `None` when it is not selected (or stops here).
    fn table_map(&mut self, tme: &TableMapEvent<'_>) -> Result<Option<MappedTable>, SourceError> {
        let name = TableName::new(tme.database_name(), tme.table_name());
        if !(self.selects)(&name) || self.skip.contains(&name) {
            return Ok(None);
        }
        let schema = match schema::from_table_map(tme, &self.info.charsets, self.catalog.get(&name))
        {
            Ok(s) => s,
            Err(e @ SchemaError::CatalogMismatch { .. }) => {
                self.skip.insert(name.clone());
                self.stops.push((name, e.to_string()));
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        // Reuse the Arc when the table is unchanged so downstream caches stay warm.
        let schema = match self
            .tables
            .get(&tme.table_id())
            .and_then(|t| t.mapped.as_ref())
        {
            Some(m) if *m.schema == *schema => m.schema.clone(),
            _ => schema,
        };
        let formats = schema.formats();
        Ok(Some(MappedTable { schema, formats }))
    }

    fn rows(
        &mut self,
        kind: u8,
        body: &[u8],
        out: &mut Vec<SourceEvent>,
    ) -> Result<(), SourceError> {
        let data = rows_event::parse(kind, body).map_err(|e| SourceError::Protocol {
            reason: format!("malformed rows event at {}: {e}", self.position()),
        })?;
        let table_id = data.table_id;
        let mapped = match self.tables.get(&table_id).map(|t| t.mapped.as_ref()) {
            Some(Some(mapped)) => mapped,
            Some(None) => return Ok(()),
            // Every rows event follows its TABLE_MAP in the same group; a missing one means
            // we cannot tell whether the rows belong to a selected table.
            None => {
                return Err(SourceError::Protocol {
                    reason: format!(
                        "rows event for unknown table id {table_id} at {}",
                        self.position()
                    ),
                })
            }
        };
        let table = mapped.schema.clone();
        // A prepared XA branch is collected even when the table's floor includes its group:
        // whether its rows apply is decided at its XA COMMIT, which may come after the floor.
        if self.skip.contains(&table.name) || (!self.group.xa && !self.wants(&table.name)) {
            return Ok(());
        }
        if data.kind == RowsKind::PartialUpdate {
            return Err(self.unsupported(format!(
                "partial JSON update of {} (binlog_row_value_options=PARTIAL_JSON); turn it off",
                table.name
            )));
        }
        let ncols = table.columns.len();
        for image in [&data.before, &data.after].into_iter().flatten() {
            if data.columns != ncols || image.iter().any(|p| !p) {
                let reason = format!(
                    "a rows event at {} lacks columns (binlog_row_image must be FULL in every session writing it)",
                    self.position()
                );
                self.ensure_begin(out);
                self.skip.insert(table.name.clone());
                out.push(SourceEvent::TableStopped {
                    table: table.name.clone(),
                    reason,
                });
                return Ok(());
            }
        }
        let formats = &mapped.formats;
        // Checked above: every column is present in every image.
        let all = data
            .after
            .as_deref()
            .or(data.before.as_deref())
            .unwrap_or(&[]);
        let decoded = (|| {
            let rows = data.rows()?;
            let mut r = Reader::new(&rows);
            let mut changes = Vec::new();
            while !r.is_empty() {
                changes.push(match data.kind {
                    RowsKind::Write => RowChange::Insert(decode_row(&mut r, formats, all)?),
                    RowsKind::Delete => RowChange::Delete(decode_row(&mut r, formats, all)?),
                    RowsKind::Update | RowsKind::PartialUpdate => RowChange::Update {
                        before: decode_row(&mut r, formats, all)?,
                        after: decode_row(&mut r, formats, all)?,
                    },
                });
            }
            Ok(changes)
        })();
        self.ensure_begin(out);
        match decoded {
            Ok(changes) => out.push(SourceEvent::Rows(RowBatch { table, changes })),
            // A value rowsync cannot read stops that table, not the target.
            Err(source) => {
                let error = SourceError::Decode {
                    table: table.name.clone(),
                    position: self.position().to_string(),
                    source,
                };
                self.skip.insert(table.name.clone());
                out.push(SourceEvent::TableStopped {
                    table: table.name.clone(),
                    reason: error.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The table id at the start of a TABLE_MAP or rows event body (6 bytes, little-endian).
/// The XID an `XA START|END|PREPARE|COMMIT|ROLLBACK` statement names, as the server logs it
/// (`X'…',X'…',n`), without spaces and `ONE PHASE`, in lower case like `mariadb::GtidEvent`.
fn xa_xid(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let rest = words.get(2..).unwrap_or(&[]);
    let rest = match rest {
        [head @ .., one, phase]
            if one.eq_ignore_ascii_case("ONE") && phase.eq_ignore_ascii_case("PHASE") =>
        {
            head
        }
        all => all,
    };
    rest.concat().to_ascii_lowercase()
}

fn table_id(body: &[u8]) -> Option<u64> {
    let id = body.get(..6)?;
    Some(
        id.iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    )
}

/// The file name of a ROTATE event; an artificial one may end in 4 checksum bytes.
fn parse_rotate_name(name: &[u8], artificial: bool) -> Result<BinlogFile, SourceError> {
    let text = String::from_utf8_lossy(name);
    if let Ok(file) = text.parse() {
        return Ok(file);
    }
    if artificial && name.len() > 4 {
        if let Ok(file) = String::from_utf8_lossy(&name[..name.len() - 4]).parse() {
            return Ok(file);
        }
    }
    Err(SourceError::Protocol {
        reason: format!("rotate to unparseable binlog file name {text:?}"),
    })
}

#[cfg(test)]
#[path = "reader_mysql_tests.rs"]
mod mysql_tests;

#[cfg(test)]
#[path = "reader_stream_tests.rs"]
mod stream_tests;

#[cfg(test)]
#[path = "reader_fuzz_tests.rs"]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_beyond_the_head_are_refused() {
        let head: Position = "mysql-bin.000002:500".parse().unwrap();
        assert!(check_not_ahead(&"mysql-bin.000002:400".parse().unwrap(), &head).is_ok());
        assert!(check_not_ahead(&"mysql-bin.000001:9000".parse().unwrap(), &head).is_ok());
        assert!(check_not_ahead(&"mysql-bin.000002:501".parse().unwrap(), &head).is_err());
        assert!(check_not_ahead(&"mysql-bin.000007:4".parse().unwrap(), &head).is_err());
        assert!(check_not_ahead(&"other-bin.000001:4".parse().unwrap(), &head).is_err());
    }

    #[test]
    fn file_positions_need_the_same_server() {
        use crate::model::position::{Flavor, SourceIdentity};
        use crate::source::charset::Charsets;
        let identity = |server_id, uuid: &str| SourceIdentity {
            flavor: Flavor::Mysql,
            server_id,
            server_uuid: Some(uuid.to_string()),
            binlog_base: "mysql-bin".into(),
        };
        let info = SourceInfo {
            version: "8.0.36".into(),
            identity: identity(1, "a"),
            log_bin: true,
            binlog_format: "ROW".into(),
            binlog_row_image: "FULL".into(),
            binlog_row_metadata: Some("FULL".into()),
            mysql_gtid_mode: false,
            binlog_checksum: "CRC32".into(),
            lower_case_table_names: false,
            time_zone: "+00:00".into(),
            charsets: Charsets::default(),
        };
        let start = |source| Checkpoint {
            position: "mysql-bin.000001:4".parse().unwrap(),
            gtid: None,
            source,
            source_time: 0,
        };
        assert!(check_identity(&start(identity(1, "a")), &info).is_ok());
        let err = check_identity(&start(identity(1, "b")), &info).unwrap_err();
        assert!(err.to_string().contains("uuid=b"), "{err}");
        assert!(check_identity(&start(identity(2, "a")), &info).is_err());
    }

    #[test]
    fn rotate_name_with_checksum_tail() {
        assert_eq!(
            parse_rotate_name(b"mysql-bin.000003", false)
                .unwrap()
                .to_string(),
            "mysql-bin.000003"
        );
        assert_eq!(
            parse_rotate_name(b"mysql-bin.000003\x8f\x12\xab\x01", true)
                .unwrap()
                .to_string(),
            "mysql-bin.000003"
        );
        assert!(parse_rotate_name(b"garbage", false).is_err());
    }
}

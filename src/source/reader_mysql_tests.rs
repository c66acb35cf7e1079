//! Decode-level tests of the reader's MySQL 8 paths, without a server.
//!
//! Every event here is built byte by byte from the documented binlog format and read back
//! through `mysql_common`'s `Event::read` exactly as the dump stream does, then fed to
//! `StreamState::handle`. Layout references (MySQL source documentation):
//!
//! * common header and checksums — "Binary log event" / `Log_event_header` (libbinlogevents
//!   `binlog_event.h`): timestamp u32, type u8, server_id u32, event_size u32 (header, body
//!   and checksum), log_pos u32 (end offset of the event), flags u16, all little-endian; with
//!   `binlog_checksum=CRC32` the event ends in the CRC32 of everything before it. A
//!   FORMAT_DESCRIPTION_EVENT always ends in its checksum-algorithm byte and a CRC32.
//! * event bodies — `Format_description_event`, `Gtid_event`, `Query_event`,
//!   `Table_map_event` (with `Optional_metadata_field_type`), `Rows_event`, `Xid_event`
//!   (libbinlogevents `control_events.h`, `statement_events.h`, `rows_event.h`).
//! * MySQL's binary JSON — `json_binary.h` ("JSON binary format").

use serde_json::json;

use super::*;
use crate::model::position::SourceIdentity;
use crate::model::value::Value;
use crate::source::charset::Charsets;
use crate::source::value::json_text;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::FormatDescriptionEvent;

pub(super) const UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
pub(super) const SERVER_ID: u32 = 1;
pub(super) const TIME: u32 = 1_700_000_000;
pub(super) const PRODUCT_ID: u64 = 84;
const OTHER_ID: u64 = 85;

// Event type codes (libbinlogevents `Log_event_type`).
pub(super) const QUERY: u8 = 2;
pub(super) const FORMAT_DESCRIPTION: u8 = 15;
pub(super) const XID: u8 = 16;
pub(super) const TABLE_MAP: u8 = 19;
pub(super) const WRITE_ROWS_V2: u8 = 30;
pub(super) const UPDATE_ROWS_V2: u8 = 31;
pub(super) const GTID: u8 = 33;

// Column type codes (`enum_field_types`).
pub(super) const T_LONGLONG: u8 = 8;
pub(super) const T_VARCHAR: u8 = 15;
pub(super) const T_JSON: u8 = 245;

// ---------------------------------------------------------------------------------------------
// Little byte helpers
// ---------------------------------------------------------------------------------------------

/// A length-encoded integer (MySQL protocol `int<lenenc>`, also used by binlog bodies).
pub(super) fn lenenc(n: u64) -> Vec<u8> {
    match n {
        0..=250 => vec![n as u8],
        251..=0xffff => [&[0xfc][..], &(n as u16).to_le_bytes()].concat(),
        0x1_0000..=0xff_ffff => [&[0xfd][..], &(n as u32).to_le_bytes()[..3]].concat(),
        _ => [&[0xfe][..], &n.to_le_bytes()].concat(),
    }
}

/// The 6-byte little-endian table id of TABLE_MAP and rows events.
pub(super) fn table_id(id: u64) -> Vec<u8> {
    id.to_le_bytes()[..6].to_vec()
}

fn sid() -> [u8; 16] {
    UUID.parse::<Sid>().unwrap().0
}

// ---------------------------------------------------------------------------------------------
// Event framing
// ---------------------------------------------------------------------------------------------

/// Post-header lengths a MySQL 8.0 FORMAT_DESCRIPTION_EVENT announces, indexed by type - 1
/// (`Format_description_event` constructor in libbinlogevents `control_events.cpp`).
fn post_header_lengths() -> Vec<u8> {
    let mut lens = vec![0u8; 41];
    let mut set = |t: usize, len: u8| lens[t - 1] = len;
    set(1, 56); // START_EVENT_V3
    set(QUERY as usize, 13);
    set(4, 8); // ROTATE
    set(9, 4); // APPEND_BLOCK
    set(11, 4); // DELETE_FILE
    set(FORMAT_DESCRIPTION as usize, 98);
    set(17, 4); // BEGIN_LOAD_QUERY
    set(18, 26); // EXECUTE_LOAD_QUERY
    set(TABLE_MAP as usize, 8);
    for t in 23..=25 {
        set(t, 8); // rows events v1
    }
    set(26, 2); // INCIDENT
    for t in 30..=32 {
        set(t, 10); // rows events v2
    }
    set(GTID as usize, 42);
    set(34, 42); // ANONYMOUS_GTID
    set(36, 18); // TRANSACTION_CONTEXT
    set(37, 52); // VIEW_CHANGE
    set(39, 10); // PARTIAL_UPDATE_ROWS
    lens
}

/// One binlog file being written: frames bodies into events with the right sizes, end
/// offsets and checksums, and reads them back with the file's format description.
pub(super) struct Binlog {
    fde: FormatDescriptionEvent<'static>,
    crc32: bool,
    /// Offset of the next event in the file.
    next: u32,
}

impl Binlog {
    /// Starts a file: its FORMAT_DESCRIPTION_EVENT at offset 4 (after the magic bytes), read
    /// as the dump client reads it; later events are read with its checksum footer.
    pub(super) fn start(crc32: bool) -> (Binlog, Event) {
        let (log, bytes) = Binlog::start_framed(crc32);
        let event = log.read(&bytes);
        (log, event)
    }

    /// `start`, with the FORMAT_DESCRIPTION_EVENT as the bytes the server sends.
    pub(super) fn start_framed(crc32: bool) -> (Binlog, Vec<u8>) {
        let mut log = Binlog {
            fde: FormatDescriptionEvent::new(BinlogVersion::Version4),
            crc32,
            next: 4,
        };
        // Format_description_event: binlog_version u16, server_version char[50],
        // create_timestamp u32, common header length u8, post-header lengths, then the
        // checksum algorithm byte (0 = OFF, 1 = CRC32); `frame` appends the CRC32.
        let mut body = 4u16.to_le_bytes().to_vec();
        let mut version = b"8.0.36".to_vec();
        version.resize(50, 0);
        body.extend(version);
        body.extend(TIME.to_le_bytes());
        body.push(19);
        body.extend(post_header_lengths());
        body.push(u8::from(crc32));
        let (bytes, _) = log.frame(FORMAT_DESCRIPTION, &body);
        let event = log.read(&bytes);
        log.fde = event
            .read_event::<FormatDescriptionEvent<'_>>()
            .unwrap()
            .with_footer(event.footer())
            .into_owned();
        (log, bytes)
    }

    /// The bytes of one event with `body`, ending at the returned offset.
    pub(super) fn frame(&mut self, kind: u8, body: &[u8]) -> (Vec<u8>, u32) {
        let checksummed = self.crc32 || kind == FORMAT_DESCRIPTION;
        let size = 19 + body.len() as u32 + if checksummed { 4 } else { 0 };
        let end = self.next + size;
        let mut bytes = Vec::with_capacity(size as usize);
        bytes.extend(TIME.to_le_bytes());
        bytes.push(kind);
        bytes.extend(SERVER_ID.to_le_bytes());
        bytes.extend(size.to_le_bytes());
        bytes.extend(end.to_le_bytes());
        bytes.extend(0u16.to_le_bytes());
        bytes.extend_from_slice(body);
        if checksummed {
            let crc = crc32fast::hash(&bytes);
            bytes.extend(crc.to_le_bytes());
        }
        self.next = end;
        (bytes, end)
    }

    pub(super) fn read(&self, bytes: &[u8]) -> Event {
        Event::read(&self.fde, bytes).unwrap()
    }

    pub(super) fn event(&mut self, kind: u8, body: &[u8]) -> Event {
        let (bytes, _) = self.frame(kind, body);
        self.read(&bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Event bodies
// ---------------------------------------------------------------------------------------------

/// Gtid_event as MySQL 8.0 writes it: flags u8, sid 16 bytes, gno i64, logical-clock type
/// code 2, last_committed i64, sequence_number i64, immediate_commit_timestamp 7 bytes
/// (high bit clear: original = immediate), transaction_length lenenc,
/// immediate_server_version u32 (high bit clear: original = immediate).
pub(super) fn gtid_body(gno: u64) -> Vec<u8> {
    let mut b = vec![0x00];
    b.extend(sid());
    b.extend((gno as i64).to_le_bytes());
    b.push(2);
    b.extend(4i64.to_le_bytes());
    b.extend(5i64.to_le_bytes());
    b.extend(&1_700_000_000_123_456u64.to_le_bytes()[..7]);
    b.extend(lenenc(600));
    b.extend(80036u32.to_le_bytes());
    b
}

/// Query_event: thread_id u32, exec_time u32, db length u8, error_code u16, status-vars
/// length u16, status vars, db, NUL, query text (to the end of the event).
pub(super) fn query_body(db: &str, sql: &str) -> Vec<u8> {
    // Status vars as a MySQL 8 server sends them for a plain session: Q_FLAGS2_CODE (0),
    // Q_SQL_MODE_CODE (1), Q_CATALOG_NZ_CODE (6), Q_CHARSET_CODE (4).
    let mut vars = vec![0];
    vars.extend(0u32.to_le_bytes());
    vars.push(1);
    vars.extend(0x4000_0000u64.to_le_bytes());
    vars.extend([6, 3]);
    vars.extend(b"std");
    vars.push(4);
    for id in [255u16, 255, 255] {
        vars.extend(id.to_le_bytes());
    }
    let mut b = 12u32.to_le_bytes().to_vec();
    b.extend(0u32.to_le_bytes());
    b.push(db.len() as u8);
    b.extend(0u16.to_le_bytes());
    b.extend((vars.len() as u16).to_le_bytes());
    b.extend(vars);
    b.extend(db.as_bytes());
    b.push(0);
    b.extend(sql.as_bytes());
    b
}

/// One column of a TABLE_MAP.
pub(super) struct Col {
    pub(super) name: &'static str,
    pub(super) ty: u8,
    pub(super) meta: Vec<u8>,
    pub(super) nullable: bool,
    pub(super) unsigned: bool,
}

pub(super) fn is_numeric(ty: u8) -> bool {
    // TINY, SHORT, LONG, FLOAT, DOUBLE, LONGLONG, INT24, YEAR, DECIMAL, NEWDECIMAL
    matches!(ty, 0 | 1 | 2 | 3 | 4 | 5 | 8 | 9 | 13 | 246)
}

pub(super) fn is_character(ty: u8) -> bool {
    // VARCHAR, BLOB/TEXT family, VAR_STRING, STRING
    matches!(ty, 15 | 249..=254)
}

/// Table_map_event: table_id 6 bytes, flags u16, db (u8 length, bytes, NUL), table (same),
/// column count lenenc, one type byte per column, metadata block (lenenc length + bytes),
/// NULL-able bitmap, then optional metadata as TLVs (type u8, lenenc length, value) with
/// `binlog_row_metadata=FULL`: SIGNEDNESS (1; one bit per numeric column, most significant
/// bit first), DEFAULT_CHARSET (2; default collation lenenc, then non-default pairs),
/// COLUMN_NAME (4; lenenc-prefixed names), SIMPLE_PRIMARY_KEY (8; lenenc column indexes).
pub(super) fn table_map_body(id: u64, db: &str, table: &str, cols: &[Col], pk: &[u64]) -> Vec<u8> {
    let mut b = table_id(id);
    b.extend(1u16.to_le_bytes());
    for name in [db, table] {
        b.push(name.len() as u8);
        b.extend(name.as_bytes());
        b.push(0);
    }
    b.extend(lenenc(cols.len() as u64));
    b.extend(cols.iter().map(|c| c.ty));
    let meta: Vec<u8> = cols.iter().flat_map(|c| c.meta.clone()).collect();
    b.extend(lenenc(meta.len() as u64));
    b.extend(meta);
    let mut nulls = vec![0u8; cols.len().div_ceil(8)];
    for (i, c) in cols.iter().enumerate() {
        if c.nullable {
            nulls[i / 8] |= 1 << (i % 8);
        }
    }
    b.extend(nulls);

    let mut tlv = |t: u8, value: Vec<u8>| {
        b.push(t);
        b.extend(lenenc(value.len() as u64));
        b.extend(value);
    };
    let numeric: Vec<bool> = cols
        .iter()
        .filter(|c| is_numeric(c.ty))
        .map(|c| c.unsigned)
        .collect();
    let mut signedness = vec![0u8; numeric.len().div_ceil(8)];
    for (i, unsigned) in numeric.iter().enumerate() {
        if *unsigned {
            signedness[i / 8] |= 0x80 >> (i % 8);
        }
    }
    tlv(1, signedness);
    if cols.iter().any(|c| is_character(c.ty)) {
        tlv(2, lenenc(255)); // utf8mb4_0900_ai_ci, no exceptions
    }
    let mut names = Vec::new();
    for c in cols {
        names.extend(lenenc(c.name.len() as u64));
        names.extend(c.name.as_bytes());
    }
    tlv(4, names);
    tlv(8, pk.iter().flat_map(|&i| lenenc(i)).collect());
    b
}

/// `shop.<table>` as `id BIGINT UNSIGNED NOT NULL PRIMARY KEY, name VARCHAR(40),
/// doc JSON` in utf8mb4.
pub(super) fn product_map(id: u64, table: &str) -> Vec<u8> {
    let cols = [
        Col {
            name: "id",
            ty: T_LONGLONG,
            meta: vec![],
            nullable: false,
            unsigned: true,
        },
        Col {
            name: "name",
            ty: T_VARCHAR,
            meta: 160u16.to_le_bytes().to_vec(), // 40 characters × 4 bytes
            nullable: true,
            unsigned: false,
        },
        Col {
            name: "doc",
            ty: T_JSON,
            meta: vec![4], // bytes of the length prefix
            nullable: true,
            unsigned: false,
        },
    ];
    table_map_body(id, "shop", table, &cols, &[0])
}

/// One row image: a NULL bitmap over the image's columns, then each non-NULL value.
pub(super) fn row(values: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut nulls = vec![0u8; values.len().div_ceil(8)];
    for (i, v) in values.iter().enumerate() {
        if v.is_none() {
            nulls[i / 8] |= 1 << (i % 8);
        }
    }
    let mut out = nulls;
    for v in values.iter().flatten() {
        out.extend(v);
    }
    out
}

/// A product row's column values as stored: BIGINT as 8 bytes LE, VARCHAR(≤255 bytes) with a
/// 1-byte length, JSON with a 4-byte length and MySQL's binary JSON.
pub(super) fn product_row(id: u64, name: Option<&str>, doc: Option<&serde_json::Value>) -> Vec<u8> {
    row(&[
        Some(id.to_le_bytes().to_vec()),
        name.map(|n| [&[n.len() as u8][..], n.as_bytes()].concat()),
        doc.map(|d| {
            let bin = jsonb(d);
            [&(bin.len() as u32).to_le_bytes()[..], &bin].concat()
        }),
    ])
}

/// Rows_event v2: table_id 6 bytes, flags u16 (STMT_END_F = 1), extra-data length u16
/// (counting itself; 2 = none), column count lenenc, columns-present bitmap (a second one
/// for updates: after image), then the row images.
pub(super) fn rows_body(id: u64, columns: usize, update: bool, images: &[Vec<u8>]) -> Vec<u8> {
    let mut b = table_id(id);
    b.extend(1u16.to_le_bytes());
    b.extend(2u16.to_le_bytes());
    b.extend(lenenc(columns as u64));
    let mut all = vec![0u8; columns.div_ceil(8)];
    for i in 0..columns {
        all[i / 8] |= 1 << (i % 8);
    }
    b.extend(&all);
    if update {
        b.extend(&all);
    }
    for image in images {
        b.extend(image);
    }
    b
}

pub(super) fn xid_body(xid: u64) -> Vec<u8> {
    xid.to_le_bytes().to_vec()
}

// ---------------------------------------------------------------------------------------------
// MySQL binary JSON (json_binary.h), small storage format only
// ---------------------------------------------------------------------------------------------

/// A JSON document as MySQL stores it: a type byte, then the value.
pub(super) fn jsonb(v: &serde_json::Value) -> Vec<u8> {
    let (t, body) = jsonb_value(v);
    [vec![t], body].concat()
}

/// Type codes: 0x00 small object, 0x02 small array, 0x04 literal (0 null, 1 true, 2 false),
/// 0x05 int16, 0x07 int32, 0x09 int64, 0x0a uint64, 0x0b double, 0x0c string (length in
/// 7-bit groups, low group first, high bit = more).
fn jsonb_value(v: &serde_json::Value) -> (u8, Vec<u8>) {
    use serde_json::Value as J;
    match v {
        J::Null => (0x04, vec![0x00]),
        J::Bool(true) => (0x04, vec![0x01]),
        J::Bool(false) => (0x04, vec![0x02]),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                if let Ok(i) = i16::try_from(i) {
                    (0x05, i.to_le_bytes().to_vec())
                } else if let Ok(i) = i32::try_from(i) {
                    (0x07, i.to_le_bytes().to_vec())
                } else {
                    (0x09, i.to_le_bytes().to_vec())
                }
            } else if let Some(u) = n.as_u64() {
                (0x0a, u.to_le_bytes().to_vec())
            } else {
                (0x0b, n.as_f64().unwrap().to_le_bytes().to_vec())
            }
        }
        J::String(s) => {
            let mut out = Vec::new();
            let mut len = s.len();
            loop {
                let group = (len & 0x7f) as u8;
                len >>= 7;
                if len == 0 {
                    out.push(group);
                    break;
                }
                out.push(group | 0x80);
            }
            out.extend(s.as_bytes());
            (0x0c, out)
        }
        J::Array(items) => (
            0x02,
            jsonb_container(None, &items.iter().collect::<Vec<_>>()),
        ),
        J::Object(map) => {
            // Keys are stored sorted by length, then bytes.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
            let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
            let values: Vec<_> = entries.iter().map(|(_, v)| *v).collect();
            (0x00, jsonb_container(Some(&keys), &values))
        }
    }
}

/// A small object or array: element count u16, total size u16, key entries (offset u16,
/// length u16; objects only), value entries (type u8, then the value itself for literals and
/// int16 or its offset u16), then keys and the remaining values. Offsets count from the
/// element count.
fn jsonb_container(keys: Option<&[&str]>, values: &[&serde_json::Value]) -> Vec<u8> {
    let n = values.len();
    let header = 4 + keys.map_or(0, |k| 4 * k.len()) + 3 * n;
    let mut entries = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    for key in keys.unwrap_or(&[]) {
        entries.extend(((header + tail.len()) as u16).to_le_bytes());
        entries.extend((key.len() as u16).to_le_bytes());
        tail.extend(key.as_bytes());
    }
    for v in values {
        let (t, body) = jsonb_value(v);
        entries.push(t);
        if matches!(t, 0x04 | 0x05) {
            let mut inline = body;
            inline.resize(2, 0);
            entries.extend(inline);
        } else {
            entries.extend(((header + tail.len()) as u16).to_le_bytes());
            tail.extend(body);
        }
    }
    let mut out = (n as u16).to_le_bytes().to_vec();
    out.extend(((header + tail.len()) as u16).to_le_bytes());
    out.extend(entries);
    out.extend(tail);
    out
}

// ---------------------------------------------------------------------------------------------
// Reader state
// ---------------------------------------------------------------------------------------------

pub(super) fn identity() -> SourceIdentity {
    SourceIdentity {
        flavor: Flavor::Mysql,
        server_id: SERVER_ID,
        server_uuid: Some(UUID.into()),
        binlog_base: "binlog".into(),
    }
}

pub(super) fn info(checksum: &str) -> SourceInfo {
    SourceInfo {
        version: "8.0.36".into(),
        identity: identity(),
        log_bin: true,
        binlog_format: "ROW".into(),
        binlog_row_image: "FULL".into(),
        binlog_row_metadata: Some("FULL".into()),
        mysql_gtid_mode: true,
        binlog_checksum: checksum.into(),
        lower_case_table_names: false,
        time_zone: "+00:00".into(),
        charsets: Charsets::new([(255u16, "utf8mb4".to_string()), (63, "binary".into())]),
    }
}

/// A reader of `shop.product` resuming after `UUID:1-5`.
pub(super) fn state(crc32: bool) -> StreamState {
    let start = Checkpoint {
        position: Position::new("binlog.000001".parse().unwrap(), 4),
        gtid: Some(GtidSet::parse_mysql(&format!("{UUID}:1-5")).unwrap()),
        source: identity(),
        source_time: 0,
    };
    let checksum = if crc32 { "CRC32" } else { "NONE" };
    let selects: Selector = Arc::new(|t: &TableName| t == &TableName::new("shop", "product"));
    StreamState::new(start, info(checksum), selects, HashSet::new())
}

/// Feeds `events` in order and collects everything the reader emits.
pub(super) fn feed(state: &mut StreamState, events: &[Event]) -> Vec<SourceEvent> {
    events
        .iter()
        .flat_map(|e| state.handle(e).expect("event handled"))
        .collect()
}

pub(super) fn kinds(out: &[SourceEvent]) -> Vec<&'static str> {
    out.iter()
        .map(|e| match e {
            SourceEvent::Begin => "Begin",
            SourceEvent::Rows(_) => "Rows",
            SourceEvent::Truncate(_) => "Truncate",
            SourceEvent::Ddl { .. } => "Ddl",
            SourceEvent::TableStopped { .. } => "TableStopped",
            SourceEvent::Commit { .. } => "Commit",
            SourceEvent::CaughtUp => "CaughtUp",
            SourceEvent::XaStart { .. } => "XaStart",
            SourceEvent::XaEnd { .. } => "XaEnd",
        })
        .collect()
}

pub(super) fn product() -> TableName {
    TableName::new("shop", "product")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// GTID, BEGIN, TABLE_MAP, WRITE_ROWS v2, XID for `shop.product`; returns the reader output
/// and the XID event's end offset.
fn insert_transaction(crc32: bool) -> (Vec<SourceEvent>, u32) {
    let (mut log, fde) = Binlog::start(crc32);
    let doc = json!({"a": [1, "x", true]});
    let mut events = vec![
        fde,
        log.event(GTID, &gtid_body(6)),
        log.event(QUERY, &query_body("shop", "BEGIN")),
        log.event(TABLE_MAP, &product_map(PRODUCT_ID, "product")),
        log.event(
            WRITE_ROWS_V2,
            &rows_body(
                PRODUCT_ID,
                3,
                false,
                &[product_row(u64::MAX, Some("né"), Some(&doc))],
            ),
        ),
    ];
    let (xid, xid_end) = log.frame(XID, &xid_body(991));
    events.push(log.read(&xid));
    let mut st = state(crc32);
    (feed(&mut st, &events), xid_end)
}

fn check_insert_transaction(crc32: bool) {
    let (out, xid_end) = insert_transaction(crc32);
    assert_eq!(kinds(&out), ["Begin", "Rows", "Commit"]);

    let SourceEvent::Rows(batch) = &out[1] else {
        unreachable!()
    };
    assert_eq!(batch.table.name, product());
    let names: Vec<_> = batch
        .table
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["id", "name", "doc"]);
    assert_eq!(batch.table.primary_key, [0]);
    assert!(batch.table.columns[0].format.unsigned);
    assert!(!batch.table.columns[0].nullable && batch.table.columns[1].nullable);
    assert_eq!(
        batch.changes,
        [RowChange::Insert(vec![
            Value::UInt(u64::MAX),
            Value::Text("né".into()),
            Value::Json(json!({"a": [1, "x", true]}).to_string().into()),
        ])]
    );

    let SourceEvent::Commit { checkpoint: cp, .. } = &out[2] else {
        unreachable!()
    };
    assert_eq!(cp.gtid.as_ref().unwrap().to_string(), format!("{UUID}:1-6"));
    assert_eq!(cp.position.file.to_string(), "binlog.000001");
    assert_eq!(cp.position.offset, u64::from(xid_end));
    assert_eq!(cp.source, identity());
    assert_eq!(cp.source_time, TIME);
}

/// A whole MySQL 8 row transaction decodes: unsigned BIGINT max, utf8mb4 text, binary JSON,
/// and the commit checkpoint carries the new GTID and the XID's end offset.
#[test]
fn insert_transaction_without_checksums() {
    check_insert_transaction(false);
}

/// The same with `binlog_checksum=CRC32` (MySQL 8's default): checksums are verified and
/// stripped before decoding.
#[test]
fn insert_transaction_with_crc32() {
    check_insert_transaction(true);
}

/// A corrupted byte in a CRC32-checked event is reported as a checksum failure.
#[test]
fn corrupt_event_fails_its_checksum() {
    let (mut log, fde) = Binlog::start(true);
    let mut st = state(true);
    feed(&mut st, &[fde, log.event(GTID, &gtid_body(6))]);
    let (mut bytes, _) = log.frame(XID, &xid_body(991));
    bytes[19] ^= 0x01;
    let err = st.handle(&log.read(&bytes)).unwrap_err();
    assert!(matches!(err, SourceError::Checksum { .. }), "{err:?}");
    assert!(err.is_retryable());
}

/// Rows of a table the router does not select are skipped; the transaction still commits so
/// the position and GTID move past it.
#[test]
fn unselected_table_rows_are_skipped() {
    let (mut log, fde) = Binlog::start(false);
    let mut events = vec![
        fde,
        log.event(GTID, &gtid_body(6)),
        log.event(QUERY, &query_body("shop", "BEGIN")),
        log.event(TABLE_MAP, &product_map(OTHER_ID, "other")),
        log.event(
            WRITE_ROWS_V2,
            &rows_body(OTHER_ID, 3, false, &[product_row(7, Some("x"), None)]),
        ),
    ];
    let (xid, xid_end) = log.frame(XID, &xid_body(992));
    events.push(log.read(&xid));
    let mut st = state(false);
    let out = feed(&mut st, &events);
    assert_eq!(kinds(&out), ["Commit"]);
    let SourceEvent::Commit { checkpoint: cp, .. } = &out[0] else {
        unreachable!()
    };
    assert_eq!(cp.gtid.as_ref().unwrap().to_string(), format!("{UUID}:1-6"));
    assert_eq!(cp.position.offset, u64::from(xid_end));
    assert!(matches!(
        st.tables.get(&OTHER_ID),
        Some(KnownTable { mapped: None, .. })
    ));
}

/// MySQL logs DDL as a GTID event and one QUERY event, with neither BEGIN nor XID. The group
/// must end after the statement: Begin, Ddl, Commit with the DDL's GTID; the next transaction
/// then commits with both GTIDs.
#[test]
fn ddl_group_without_xid_commits() {
    let (mut log, fde) = Binlog::start(false);
    let sql = "ALTER TABLE product ADD COLUMN z INT";
    let mut st = state(false);
    let gtid = log.event(GTID, &gtid_body(6));
    let (ddl, ddl_end) = log.frame(QUERY, &query_body("shop", sql));
    let out = feed(&mut st, &[fde, gtid, log.read(&ddl)]);
    assert_eq!(kinds(&out), ["Begin", "Ddl", "Commit"]);
    match &out[1] {
        SourceEvent::Ddl {
            table,
            kind,
            statement,
            ..
        } => {
            assert_eq!(table, &product());
            assert_eq!(*kind, DdlKind::Alter);
            assert_eq!(statement, sql);
        }
        other => panic!("expected Ddl, got {other:?}"),
    }
    let SourceEvent::Commit { checkpoint: cp, .. } = &out[2] else {
        unreachable!()
    };
    assert_eq!(cp.gtid.as_ref().unwrap().to_string(), format!("{UUID}:1-6"));
    assert_eq!(cp.position.offset, u64::from(ddl_end));

    // The next transaction is a group of its own and keeps the DDL's GTID.
    let mut next = vec![
        log.event(GTID, &gtid_body(7)),
        log.event(QUERY, &query_body("shop", "BEGIN")),
    ];
    let (xid, _) = log.frame(XID, &xid_body(993));
    next.push(log.read(&xid));
    let out = feed(&mut st, &next);
    assert_eq!(kinds(&out), ["Commit"]);
    let SourceEvent::Commit { checkpoint: cp, .. } = &out[0] else {
        unreachable!()
    };
    assert_eq!(cp.gtid.as_ref().unwrap().to_string(), format!("{UUID}:1-7"));
}

/// An UPDATE that changes the primary key arrives as one Update with both full images,
/// NULL bitmaps honoured in each.
#[test]
fn update_changing_primary_key() {
    let (mut log, fde) = Binlog::start(true);
    let after_doc = json!({"k": 2.5, "tags": ["a", null, -300000]});
    let events = vec![
        fde,
        log.event(GTID, &gtid_body(6)),
        log.event(QUERY, &query_body("shop", "BEGIN")),
        log.event(TABLE_MAP, &product_map(PRODUCT_ID, "product")),
        log.event(
            UPDATE_ROWS_V2,
            &rows_body(
                PRODUCT_ID,
                3,
                true,
                &[
                    product_row(1, Some("old"), None),
                    product_row(2, None, Some(&after_doc)),
                ],
            ),
        ),
        log.event(XID, &xid_body(994)),
    ];
    let mut st = state(true);
    let out = feed(&mut st, &events);
    assert_eq!(kinds(&out), ["Begin", "Rows", "Commit"]);
    let SourceEvent::Rows(batch) = &out[1] else {
        unreachable!()
    };
    assert_eq!(batch.table.name, product());
    assert_eq!(
        batch.changes,
        [RowChange::Update {
            before: vec![Value::UInt(1), Value::Text("old".into()), Value::Null],
            after: vec![
                Value::UInt(2),
                Value::Null,
                Value::Json(after_doc.to_string().into())
            ],
        }]
    );
}

/// `json_text` on hand-assembled binary JSON values (json_binary.h).
#[test]
fn binary_json_values() {
    let text = |bytes: &[u8]| json_text(bytes).unwrap();
    let parsed = |bytes: &[u8]| serde_json::from_str::<serde_json::Value>(&text(bytes)).unwrap();

    // Literals: type 0x04, then 0x00 null / 0x01 true / 0x02 false.
    assert_eq!(text(&[0x04, 0x01]), "true");
    assert_eq!(text(&[0x04, 0x02]), "false");
    assert_eq!(text(&[0x04, 0x00]), "null");
    // An empty value is a JSON null too.
    assert_eq!(text(&[]), "null");

    // int16 -2, little-endian.
    assert_eq!(parsed(&[0x05, 0xfe, 0xff]), json!(-2));
    // uint64 max.
    assert_eq!(
        parsed(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        json!(u64::MAX)
    );
    // double 3.25.
    let mut double = vec![0x0b];
    double.extend(3.25f64.to_le_bytes());
    assert_eq!(parsed(&double), json!(3.25));
    // String "héllo": 6 bytes of UTF-8, one length byte.
    let mut string = vec![0x0c, 6];
    string.extend("héllo".as_bytes());
    assert_eq!(parsed(&string), json!("héllo"));

    // {"a": [1, "x", true]} as a small object:
    //   object at 0: count 1, size 27, key entry (offset 11, len 1),
    //                value entry (small array 0x02, offset 12), "a", then the array;
    //   array at 12: count 3, size 15, entries (int16 1 inline), (string at 13),
    //                (literal true inline), then 0x01 'x'.
    let object: &[u8] = &[
        0x00, // small object
        1, 0, 27, 0, // count, size
        11, 0, 1, 0, // key entry
        0x02, 12, 0,    // value entry
        b'a', // key
        3, 0, 15, 0, // array: count, size
        0x05, 1, 0, // int16 1
        0x0c, 13, 0, // string at 13
        0x04, 0x01, 0x00, // literal true
        1, b'x', // "x"
    ];
    let expected = json!({"a": [1, "x", true]});
    assert_eq!(parsed(object), expected);
    assert_eq!(text(object), expected.to_string());
    // The test encoder used by the row tests produces the same bytes.
    assert_eq!(jsonb(&expected), object);

    // A nested document through the encoder round-trips.
    let nested = json!({"b": {"c": [false, null, 70000, -5]}, "a": "", "long key": 1.5});
    assert_eq!(parsed(&jsonb(&nested)), nested);

    // Truncated input is an error, not a guess.
    assert!(json_text(&object[..20]).is_err());

    // Opaque values: type 0x0f, the column type, a length, the value as that type stores it.
    // DECIMAL(4,2) 12.34: precision, scale, then the binary decimal (sign bit set: positive).
    let decimal: &[u8] = &[0x0f, 246, 4, 4, 2, 0x8c, 0x22];
    assert_eq!(text(decimal), "12.34");
    // Inside an array, beside a plain number: [12.34, 1].
    let array: &[u8] = &[
        0x02, // small array
        2, 0, 17, 0, // count, size
        0x0f, 10, 0, // opaque at offset 10
        0x05, 1, 0, // int16 1, inline
        246, 4, 4, 2, 0x8c, 0x22, 0, // the opaque value (and a pad byte)
    ];
    assert_eq!(text(array), "[12.34,1]");
}

/// MySQL 8.0.21+: `CREATE TABLE … SELECT` is one transaction — the CREATE (marked
/// `START TRANSACTION`), its rows, an XID — and commits once, after the rows.
#[test]
fn atomic_create_select_commits_with_its_rows() {
    let (mut log, fde) = Binlog::start(false);
    let mut st = state(false);
    let events = vec![
        fde,
        log.event(GTID, &gtid_body(6)),
        log.event(
            QUERY,
            &query_body(
                "shop",
                "CREATE TABLE `product` (\n  `id` bigint unsigned NOT NULL,\n  `name` varchar(20),\n  `doc` json,\n  PRIMARY KEY (`id`)\n) START TRANSACTION",
            ),
        ),
        log.event(TABLE_MAP, &product_map(PRODUCT_ID, "product")),
        log.event(
            WRITE_ROWS_V2,
            &rows_body(PRODUCT_ID, 3, false, &[product_row(7, Some("x"), None)]),
        ),
    ];
    let (xid, xid_end) = log.frame(XID, &xid_body(995));
    let mut all = events;
    all.push(log.read(&xid));
    let out = feed(&mut st, &all);
    assert_eq!(kinds(&out), ["Begin", "Ddl", "Rows", "Commit"]);
    let SourceEvent::Commit { checkpoint: cp, .. } = &out[3] else {
        unreachable!()
    };
    assert_eq!(cp.position.offset, u64::from(xid_end));
    assert_eq!(cp.gtid.as_ref().unwrap().to_string(), format!("{UUID}:1-6"));
}

/// An INCIDENT event (lost changes on the source) stops the target with a clear error.
#[test]
fn an_incident_event_is_a_definite_error() {
    const INCIDENT: u8 = 26;
    let (mut log, fde) = Binlog::start(false);
    let mut st = state(false);
    feed(&mut st, &[fde]);
    // Incident type 1 (LOST_EVENTS), then an empty message.
    let incident = log.event(INCIDENT, &[1, 0, 0]);
    let err = st.handle(&incident).unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("INCIDENT event"), "{err}");
}

/// A value the reader cannot decode (here a cut-off binary JSON document) stops that table,
/// with the position and reason, instead of the whole target.
#[test]
fn an_undecodable_value_stops_only_its_table() {
    let (mut log, fde) = Binlog::start(false);
    let mut st = state(false);
    let broken = [0x00u8, 1, 0, 27];
    let image = row(&[
        Some(7u64.to_le_bytes().to_vec()),
        None,
        Some([&(broken.len() as u32).to_le_bytes()[..], &broken].concat()),
    ]);
    let mut events = vec![
        fde,
        log.event(GTID, &gtid_body(6)),
        log.event(QUERY, &query_body("shop", "BEGIN")),
        log.event(TABLE_MAP, &product_map(PRODUCT_ID, "product")),
        log.event(WRITE_ROWS_V2, &rows_body(PRODUCT_ID, 3, false, &[image])),
    ];
    let (xid, _) = log.frame(XID, &xid_body(996));
    events.push(log.read(&xid));
    let out = feed(&mut st, &events);
    assert_eq!(kinds(&out), ["Begin", "TableStopped", "Commit"]);
    let SourceEvent::TableStopped { table, reason } = &out[1] else {
        unreachable!()
    };
    assert_eq!(table, &product());
    assert!(
        reason.contains("cannot decode a row of shop.product"),
        "{reason}"
    );
}

/// MySQL XA: the prepared part (XA START … XA END, XA_PREPARE_LOG_EVENT) is a group whose rows
/// follow an `XaStart`; XA COMMIT is a group of its own; a one-phase commit is the same prepare
/// event with its one_phase byte set, and commits the branch in its own group.
#[test]
fn xa_branches_are_marked_for_holding() {
    const XA_PREPARE: u8 = 38;
    let (mut log, fde) = Binlog::start(false);
    let mut st = state(false);
    let insert = |log: &mut Binlog, id: u64| {
        vec![
            log.event(TABLE_MAP, &product_map(PRODUCT_ID, "product")),
            log.event(
                WRITE_ROWS_V2,
                &rows_body(PRODUCT_ID, 3, false, &[product_row(id, Some("x"), None)]),
            ),
        ]
    };
    let mut events = vec![
        fde,
        log.event(GTID, &gtid_body(6)),
        log.event(QUERY, &query_body("shop", "XA START X'7831',X'',1")),
    ];
    events.extend(insert(&mut log, 1));
    events.push(log.event(QUERY, &query_body("shop", "XA END X'7831',X'',1")));
    // one_phase u8, format id u32, gtrid and bqual lengths u32, then the XID's bytes.
    let mut prepare = vec![0u8];
    prepare.extend(1u32.to_le_bytes());
    prepare.extend(2u32.to_le_bytes());
    prepare.extend(0u32.to_le_bytes());
    prepare.extend(b"x1");
    events.push(log.event(XA_PREPARE, &prepare));
    let out = feed(&mut st, &events);
    assert_eq!(kinds(&out), ["Begin", "XaStart", "Rows", "Commit"]);
    let SourceEvent::XaStart { xid, floor } = &out[1] else {
        unreachable!()
    };
    assert_eq!(xid, "x'7831',x'',1");
    // The floor is the state before the branch: a restart reads it again.
    assert_eq!(
        floor.gtid.as_ref().unwrap().to_string(),
        format!("{UUID}:1-5")
    );

    let out = feed(
        &mut st,
        &[
            log.event(GTID, &gtid_body(7)),
            log.event(QUERY, &query_body("shop", "XA COMMIT X'7831',X'',1")),
        ],
    );
    assert_eq!(kinds(&out), ["Begin", "XaEnd", "Commit"]);
    assert!(
        matches!(&out[1], SourceEvent::XaEnd { xid, commit: true, .. } if xid == "x'7831',x'',1")
    );

    let mut events = vec![
        log.event(GTID, &gtid_body(8)),
        log.event(QUERY, &query_body("shop", "XA START X'7832',X'',1")),
    ];
    events.extend(insert(&mut log, 2));
    events.push(log.event(QUERY, &query_body("shop", "XA END X'7832',X'',1")));
    // One phase: the same prepare event, with its one_phase byte set (binlog.cc).
    let mut one_phase = prepare.clone();
    one_phase[0] = 1;
    events.push(log.event(XA_PREPARE, &one_phase));
    let out = feed(&mut st, &events);
    assert_eq!(kinds(&out), ["Begin", "XaStart", "Rows", "XaEnd", "Commit"]);
    let SourceEvent::Commit { checkpoint: cp, .. } = &out[4] else {
        unreachable!()
    };
    assert_eq!(cp.gtid.as_ref().unwrap().to_string(), format!("{UUID}:1-8"));
}

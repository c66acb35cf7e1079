//! Property tests of the reader's decoding path: mutated binlog events never panic it, and
//! never make it allocate more than the event's size justifies.
//!
//! Each case takes a recorded stream — valid events of every kind the reader handles, built
//! with the layouts of `reader_mysql_tests` — mutates one event (a length field found by the
//! event's layout, or any 1–8 bytes, rewritten to 0, a neighbour of its value, its maximum, the
//! event's length or a random value; bit flips, bytes set, truncation, bytes inserted or
//! appended), and replays the stream the way the real one runs: through
//! `MimicStream` (mysql_common's own `EventStreamReader` and payload decompression, see
//! `reader_stream_tests`), the reader's guarded `next_event`, and `StreamState::handle`. Most
//! cases rewrite the mutated event's size field and checksum, so the mutation reaches the
//! decoders rather than the checksum check; the rest leave them as mutated.
//!
//! The property: the reader returns (events or an error), never panics in rowsync's code —
//! a panic inside mysql_common while the stream reads a packet is caught by `next_event` and
//! is an error like any other — and no single allocation while handling an event exceeds
//! 1 MiB plus 2100 times the event's size (zlib's inflation ratio, doubled for `Vec` growth).
//! A test-only global allocator records the largest allocation on the handling thread.
//!
//! A second test truncates every event of every recording at every length; two more feed
//! arbitrary bytes to the decoders below the state machine (GTID, payload header, rows framing,
//! compressed records, column values, binary JSON). Regressions found this way stay below as
//! plain tests. Cases are drawn from a fixed seed, so a run is repeatable; `PROPTEST_RNG_SEED`
//! picks another and `PROPTEST_CASES` changes the count (e.g. `PROPTEST_CASES=1000000 cargo
//! test --lib reader::fuzz_tests`; a debug build keeps the overflow checks). The whole file
//! runs in about 10 s in a debug build.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};

use super::mysql_tests::{
    gtid_body, info, jsonb, product_map, product_row, query_body, row, rows_body, table_map_body,
    xid_body, Binlog, Col, FORMAT_DESCRIPTION, GTID, PRODUCT_ID, QUERY, TABLE_MAP, T_JSON,
    T_LONGLONG, T_VARCHAR, UPDATE_ROWS_V2, WRITE_ROWS_V2, XID,
};
use super::stream_tests::{
    event_at, inner_event, inner_transaction, payload_body, quietly, zstd, MimicStream,
    TRANSACTION_PAYLOAD,
};
use super::*;
use crate::model::position::{MariaGtid, SourceIdentity};
use crate::source::rows_event::tests::compress;

// ---------------------------------------------------------------------------------------------
// The largest allocation while handling an event
// ---------------------------------------------------------------------------------------------

/// The system allocator, noting the largest request made on a thread that asked for it.
struct Watch;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    if WATCHING.try_with(Cell::get).unwrap_or(false) {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

// SAFETY: every call is passed on to `System` unchanged; `note` touches only const-initialised
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Watch = Watch;

/// Runs `f`, returning its result and the largest single allocation it made.
fn watched<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    WATCHING.with(|w| w.set(true));
    let out = f();
    WATCHING.with(|w| w.set(false));
    (out, LARGEST.with(Cell::get))
}

/// What handling an event of `size` bytes may allocate at once.
fn allocation_bound(size: usize) -> usize {
    (1 << 20) + 2100 * size
}

// ---------------------------------------------------------------------------------------------
// Recordings
// ---------------------------------------------------------------------------------------------

const EVERYTHING_ID: u64 = 90;
const ROTATE: u8 = 4;
const INCIDENT: u8 = 26;
const HEARTBEAT: u8 = 27;
const ANONYMOUS_GTID: u8 = 34;
const XA_PREPARE: u8 = 38;
const PARTIAL_UPDATE: u8 = 39;

/// A stream as the server sends it: each packet one event's bytes.
struct Recording {
    name: &'static str,
    crc32: bool,
    maria: bool,
    packets: Vec<Vec<u8>>,
}

impl Recording {
    fn new(name: &'static str, crc32: bool, maria: bool) -> (Recording, Binlog) {
        let (log, fde) = Binlog::start_framed(crc32);
        // The dump starts with an artificial ROTATE (end offset 0), read before the format
        // description is known: with CRC32 its name still ends in the 4 checksum bytes.
        let mut rotate = 4u64.to_le_bytes().to_vec();
        rotate.extend(b"binlog.000001");
        let rotate = reframe(&event_at(ROTATE, &rotate, 0, crc32), crc32);
        let rec = Recording {
            name,
            crc32,
            maria,
            packets: vec![rotate, fde],
        };
        (rec, log)
    }

    fn push(&mut self, log: &mut Binlog, kind: u8, body: &[u8]) {
        self.packets.push(log.frame(kind, body).0);
    }
}

/// Sets the size field to the event's length and recomputes the checksum, if it has one.
fn reframe(bytes: &[u8], checksummed: bool) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.len() >= 13 {
        let size = out.len() as u32;
        out[9..13].copy_from_slice(&size.to_le_bytes());
    }
    if checksummed && out.len() >= 23 {
        let at = out.len() - 4;
        let crc = crc32fast::hash(&out[..at]);
        out[at..].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// Whether the event in `bytes` ends in a checksum, as the stream will read it.
fn checksummed(rec: &Recording, bytes: &[u8]) -> bool {
    rec.crc32 || bytes.get(4) == Some(&FORMAT_DESCRIPTION)
}

/// `shop.everything`: one column of each type the value decoder reads, with one value each.
fn everything() -> (Vec<Col>, Vec<Option<Vec<u8>>>) {
    let col = |name, ty, meta: &[u8], unsigned, value: Vec<u8>| {
        (
            Col {
                name,
                ty,
                meta: meta.to_vec(),
                nullable: true,
                unsigned,
            },
            Some(value),
        )
    };
    let date = (2024u32 << 9) | (2 << 5) | 29;
    let datetime: u64 = {
        let ym = 2024 * 13 + 2;
        let hms = (13 << 12) | (14 << 6) | 15;
        ((((ym << 5) | 29) << 17) | hms) + 0x80_0000_0000
    };
    let doc = jsonb(&serde_json::json!({"k": [1, "x", null], "n": -300000}));
    let blob = b"blob \xff bytes".to_vec();
    let (cols, values): (Vec<Col>, Vec<_>) = [
        col("id", T_LONGLONG, &[], true, 7u64.to_le_bytes().to_vec()),
        col("t", 1, &[], false, vec![0xff]),
        col("s", 2, &[], false, 300i16.to_le_bytes().to_vec()),
        col("m", 9, &[], true, vec![1, 2, 3]),
        col("i", 3, &[], false, (-5i32).to_le_bytes().to_vec()),
        col("f", 4, &[4], false, 1.5f32.to_le_bytes().to_vec()),
        col("d", 5, &[8], false, (-2.25f64).to_le_bytes().to_vec()),
        col(
            "dec",
            246,
            &[10, 2],
            false,
            vec![0x80, 0xbc, 0x61, 0x4e, 0x5a],
        ),
        col("y", 13, &[], false, vec![124]),
        col("dt", 10, &[], false, date.to_le_bytes()[..3].to_vec()),
        col("tm", 19, &[3], false, vec![0x80, 0xd3, 0x8f, 0x01, 0x23]),
        col("dtm", 18, &[0], false, datetime.to_be_bytes()[3..].to_vec()),
        col("ts", 17, &[6], false, vec![0x65, 0x5f, 0x00, 0x01, 0, 1, 2]),
        col("b", 16, &[3, 1], false, vec![0x05, 0xa1]),
        col("e", 254, &[247, 1], false, vec![2]),
        col("st", 254, &[248, 1], false, vec![5]),
        col("v", T_VARCHAR, &300u16.to_le_bytes(), false, {
            let mut v = 4u16.to_le_bytes().to_vec();
            v.extend("né!".as_bytes());
            v
        }),
        col("c", 254, &[254, 40], false, vec![2, b'o', b'k']),
        col("bl", 252, &[2], false, {
            let mut v = (blob.len() as u16).to_le_bytes().to_vec();
            v.extend(&blob);
            v
        }),
        col("j", T_JSON, &[4], false, {
            let mut v = (doc.len() as u32).to_le_bytes().to_vec();
            v.extend(&doc);
            v
        }),
        col("g", 255, &[4], false, {
            let mut v = 5u32.to_le_bytes().to_vec();
            v.extend([1, 2, 3, 4, 5]);
            v
        }),
        (
            Col {
                name: "nothing",
                ty: T_LONGLONG,
                meta: vec![],
                nullable: true,
                unsigned: false,
            },
            None,
        ),
    ]
    .into_iter()
    .unzip();
    (cols, values)
}

/// A rows body in another framing: `v1` drops the v2 extra-data length, `compressed` stores
/// the row images as a MariaDB compressed record.
fn framed_rows(
    id: u64,
    columns: usize,
    update: bool,
    images: &[&[u8]],
    v1: bool,
    compressed: bool,
) -> Vec<u8> {
    let head = rows_body(id, columns, update, &[]);
    let images = images.concat();
    let mut body = if v1 {
        [&head[..8], &head[10..]].concat()
    } else {
        head
    };
    body.extend(if compressed {
        compress(&images)
    } else {
        images
    });
    body
}

/// MySQL 8 row transactions of every rows-event type and framing, a DDL, a heartbeat and a
/// rotate.
fn mysql_rows(crc32: bool) -> Recording {
    let (mut rec, mut log) = Recording::new("mysql rows", crc32, false);
    let a = product_row(1, Some("a"), Some(&serde_json::json!({"a": [1, true]})));
    let b = product_row(2, None, None);
    for (gno, v1) in [(6, false), (7, true)] {
        rec.push(&mut log, GTID, &gtid_body(gno));
        rec.push(&mut log, QUERY, &query_body("shop", "BEGIN"));
        rec.push(&mut log, TABLE_MAP, &product_map(PRODUCT_ID, "product"));
        let base = if v1 { 23 } else { WRITE_ROWS_V2 };
        rec.push(
            &mut log,
            base,
            &framed_rows(PRODUCT_ID, 3, false, &[&a], v1, false),
        );
        rec.push(
            &mut log,
            base + 1,
            &framed_rows(PRODUCT_ID, 3, true, &[&a, &b], v1, false),
        );
        rec.push(
            &mut log,
            base + 2,
            &framed_rows(PRODUCT_ID, 3, false, &[&b], v1, false),
        );
        rec.push(&mut log, XID, &xid_body(gno));
    }
    rec.push(&mut log, ANONYMOUS_GTID, &gtid_body(0));
    rec.push(
        &mut log,
        QUERY,
        &query_body("shop", "ALTER TABLE product ADD COLUMN z INT"),
    );
    rec.push(&mut log, HEARTBEAT, b"binlog.000001");
    let mut rotate = 4u64.to_le_bytes().to_vec();
    rotate.extend(b"binlog.000002");
    rec.push(&mut log, ROTATE, &rotate);
    rec
}

/// Every value type in one row, inserted and updated; then a partial JSON update and an
/// incident, which end the stream with errors.
fn mysql_types(crc32: bool) -> Recording {
    let (mut rec, mut log) = Recording::new("mysql types", crc32, false);
    let (cols, values) = everything();
    let pk = [0];
    let image = row(&values);
    rec.push(&mut log, GTID, &gtid_body(6));
    rec.push(&mut log, QUERY, &query_body("shop", "BEGIN"));
    rec.push(
        &mut log,
        TABLE_MAP,
        &table_map_body(EVERYTHING_ID, "shop", "everything", &cols, &pk),
    );
    rec.push(
        &mut log,
        WRITE_ROWS_V2,
        &rows_body(
            EVERYTHING_ID,
            cols.len(),
            false,
            std::slice::from_ref(&image),
        ),
    );
    rec.push(
        &mut log,
        UPDATE_ROWS_V2,
        &rows_body(
            EVERYTHING_ID,
            cols.len(),
            true,
            &[image.clone(), image.clone()],
        ),
    );
    rec.push(&mut log, XID, &xid_body(6));
    rec.push(&mut log, GTID, &gtid_body(7));
    rec.push(&mut log, QUERY, &query_body("shop", "BEGIN"));
    rec.push(
        &mut log,
        TABLE_MAP,
        &table_map_body(EVERYTHING_ID, "shop", "everything", &cols, &pk),
    );
    rec.push(
        &mut log,
        PARTIAL_UPDATE,
        &rows_body(EVERYTHING_ID, cols.len(), true, &[image.clone(), image]),
    );
    rec.push(&mut log, INCIDENT, &[1, 0, 3, b'l', b'o', b's']);
    rec
}

/// A MySQL XA branch: prepared, committed in a group of its own, then one in one phase.
fn mysql_xa(crc32: bool) -> Recording {
    let (mut rec, mut log) = Recording::new("mysql xa", crc32, false);
    let mut prepare = vec![0u8];
    prepare.extend(1u32.to_le_bytes());
    prepare.extend(2u32.to_le_bytes());
    prepare.extend(0u32.to_le_bytes());
    prepare.extend(b"x1");
    for (gno, one_phase) in [(6, false), (8, true)] {
        rec.push(&mut log, GTID, &gtid_body(gno));
        rec.push(
            &mut log,
            QUERY,
            &query_body("shop", "XA START X'7831',X'',1"),
        );
        rec.push(&mut log, TABLE_MAP, &product_map(PRODUCT_ID, "product"));
        rec.push(
            &mut log,
            WRITE_ROWS_V2,
            &rows_body(PRODUCT_ID, 3, false, &[product_row(gno, Some("x"), None)]),
        );
        rec.push(&mut log, QUERY, &query_body("shop", "XA END X'7831',X'',1"));
        let mut p = prepare.clone();
        p[0] = u8::from(one_phase);
        rec.push(&mut log, XA_PREPARE, &p);
        if !one_phase {
            rec.push(&mut log, GTID, &gtid_body(gno + 1));
            rec.push(
                &mut log,
                QUERY,
                &query_body("shop", "XA COMMIT X'7831',X'',1"),
            );
        }
    }
    rec
}

/// Compressed transactions (MySQL 8 binlog transaction compression): one zstd payload, one
/// stored uncompressed, then a plain transaction.
fn mysql_payloads(crc32: bool) -> Recording {
    let (mut rec, mut log) = Recording::new("mysql payloads", crc32, false);
    let inner = inner_transaction(6);
    rec.push(&mut log, GTID, &gtid_body(6));
    rec.push(
        &mut log,
        TRANSACTION_PAYLOAD,
        &payload_body(0, inner.len() as u64, &zstd(&inner)),
    );
    let inner = [
        inner_event(QUERY, &query_body("shop", "BEGIN")),
        inner_event(TABLE_MAP, &product_map(PRODUCT_ID, "product")),
        inner_event(
            UPDATE_ROWS_V2,
            &rows_body(
                PRODUCT_ID,
                3,
                true,
                &[product_row(7, None, None), product_row(8, Some("q"), None)],
            ),
        ),
        inner_event(XID, &xid_body(7)),
    ]
    .concat();
    rec.push(&mut log, GTID, &gtid_body(7));
    rec.push(
        &mut log,
        TRANSACTION_PAYLOAD,
        &payload_body(255, inner.len() as u64, &inner),
    );
    rec.push(&mut log, GTID, &gtid_body(8));
    rec.push(&mut log, QUERY, &query_body("shop", "BEGIN"));
    rec.push(&mut log, XID, &xid_body(8));
    rec
}

/// A MariaDB GTID event body: seq_no, domain, flags, then the commit id and the XID when the
/// flags say so.
fn maria_gtid(seq: u64, flags: u8, xid: Option<&[u8]>) -> Vec<u8> {
    let mut b = seq.to_le_bytes().to_vec();
    b.extend(0u32.to_le_bytes());
    b.push(flags);
    if flags & 2 != 0 {
        b.extend(99u64.to_le_bytes());
    }
    if let Some(gtrid) = xid {
        b.extend(1u32.to_le_bytes());
        b.push(gtrid.len() as u8);
        b.push(0);
        b.extend(gtrid);
    }
    if b.len() < 19 {
        b.resize(19, 0);
    }
    b
}

/// A MariaDB QUERY_COMPRESSED_EVENT body: a QUERY body whose text is a compressed record.
fn maria_compressed_query(db: &str, sql: &str) -> Vec<u8> {
    let plain = query_body(db, "");
    [plain, compress(sql.as_bytes())].concat()
}

/// MariaDB: GTID list, row transactions in compressed rows events (v1 and v2), an annotate
/// event, a compressed DDL, and an XA branch prepared and committed.
fn mariadb(crc32: bool) -> Recording {
    let (mut rec, mut log) = Recording::new("mariadb", crc32, true);
    let mut list = 1u32.to_le_bytes().to_vec();
    list.extend(0u32.to_le_bytes());
    list.extend(1u32.to_le_bytes());
    list.extend(5u64.to_le_bytes());
    rec.push(&mut log, mariadb::GTID_LIST_EVENT, &list);
    let a = product_row(1, Some("a"), None);
    let b = product_row(2, Some("b"), None);
    for (seq, v1) in [(6, true), (7, false)] {
        rec.push(&mut log, mariadb::GTID_EVENT, &maria_gtid(seq, 2, None));
        rec.push(&mut log, QUERY, &query_body("shop", "BEGIN"));
        rec.push(
            &mut log,
            mariadb::ANNOTATE_ROWS_EVENT,
            b"INSERT INTO product VALUES (1)",
        );
        rec.push(&mut log, TABLE_MAP, &product_map(PRODUCT_ID, "product"));
        let base = if v1 { 166 } else { 169 };
        rec.push(
            &mut log,
            base,
            &framed_rows(PRODUCT_ID, 3, false, &[&a], v1, true),
        );
        rec.push(
            &mut log,
            base + 1,
            &framed_rows(PRODUCT_ID, 3, true, &[&a, &b], v1, true),
        );
        rec.push(
            &mut log,
            base + 2,
            &framed_rows(PRODUCT_ID, 3, false, &[&b], v1, true),
        );
        rec.push(&mut log, XID, &xid_body(seq));
    }
    rec.push(&mut log, mariadb::GTID_EVENT, &maria_gtid(8, 1, None));
    rec.push(
        &mut log,
        mariadb::QUERY_COMPRESSED_EVENT,
        &maria_compressed_query("shop", "ALTER TABLE product ADD COLUMN z INT"),
    );
    rec.push(
        &mut log,
        mariadb::GTID_EVENT,
        &maria_gtid(9, 64, Some(b"x1")),
    );
    rec.push(&mut log, TABLE_MAP, &product_map(PRODUCT_ID, "product"));
    rec.push(
        &mut log,
        WRITE_ROWS_V2,
        &rows_body(PRODUCT_ID, 3, false, &[a]),
    );
    rec.push(&mut log, QUERY, &query_body("shop", "XA END X'7831',X'',1"));
    rec.push(
        &mut log,
        QUERY,
        &query_body("shop", "XA PREPARE X'7831',X'',1"),
    );
    rec.push(
        &mut log,
        mariadb::GTID_EVENT,
        &maria_gtid(10, 128 | 1, Some(b"x1")),
    );
    rec.push(
        &mut log,
        QUERY,
        &query_body("shop", "XA COMMIT X'7831',X'',1"),
    );
    rec.push(&mut log, mariadb::START_ENCRYPTION_EVENT, &[1, 0, 0, 0, 0]);
    rec
}

fn recordings() -> &'static [Recording] {
    static ALL: std::sync::OnceLock<Vec<Recording>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        [false, true]
            .into_iter()
            .flat_map(|crc| {
                [
                    mysql_rows(crc),
                    mysql_types(crc),
                    mysql_xa(crc),
                    mysql_payloads(crc),
                    mariadb(crc),
                ]
            })
            .collect()
    })
}

/// A reader of every table of `shop`, on the recording's flavour.
fn fuzz_state(rec: &Recording) -> StreamState {
    let mut info = info(if rec.crc32 { "CRC32" } else { "NONE" });
    let gtid = if rec.maria {
        info.identity = SourceIdentity {
            flavor: Flavor::Mariadb,
            server_uuid: None,
            ..info.identity
        };
        info.mysql_gtid_mode = false;
        GtidSet::Maria(
            [(
                0,
                MariaGtid {
                    domain: 0,
                    server: 1,
                    seq: 5,
                },
            )]
            .into(),
        )
    } else {
        GtidSet::parse_mysql("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5").unwrap()
    };
    let start = Checkpoint {
        position: Position::new("binlog.000001".parse().unwrap(), 4),
        gtid: Some(gtid),
        source: info.identity.clone(),
        source_time: 0,
    };
    let selects: Selector = Arc::new(|t: &TableName| t.db == "shop");
    StreamState::new(start, info, selects, HashSet::new())
}

// ---------------------------------------------------------------------------------------------
// Replaying
// ---------------------------------------------------------------------------------------------

/// How a replay ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// Every event was read and handled.
    Read,
    /// The stream failed (an error, or a panic inside mysql_common, caught).
    Stream,
    /// The reader refused an event.
    Refused,
}

/// Replays `rec` with packet `index` replaced by `bytes`, as the reader's loop would. Panics
/// (failing the property) when rowsync's code panics or allocates past the bound; returns
/// how the replay ended and what the reader emitted.
fn replay(rec: &Recording, index: usize, bytes: &[u8]) -> (Ending, Vec<SourceEvent>) {
    let packets = rec.packets.iter().enumerate().map(|(i, p)| {
        if i == index {
            bytes.to_vec()
        } else {
            p.clone()
        }
    });
    let mut stream = MimicStream::new(packets);
    let mut st = fuzz_state(rec);
    let mut out = Vec::new();
    loop {
        let next = quietly(|| next_event(&mut stream).now_or_never());
        let event = match next {
            None => return (Ending::Read, out),
            Some(Ok(Some(Ok(event)))) => event,
            Some(_) => return (Ending::Stream, out),
        };
        let size = event.header().event_size() as usize;
        let (handled, largest) = watched(|| st.handle_into(&event, &mut out));
        let bound = allocation_bound(size.max(bytes.len()));
        assert!(
            largest <= bound,
            "{}: handling a {size}-byte event allocated {largest} bytes at once",
            rec.name
        );
        if handled.is_err() {
            return (Ending::Refused, out);
        }
    }
}

/// One change to an event's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    /// A little-endian field of 1, 2, 3, 4 or 8 bytes rewritten.
    Field(Index, usize, FieldValue),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Append(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
enum FieldValue {
    Zero,
    Max,
    /// The old value plus or minus a little.
    Nudge(i8),
    /// The event's own length, plus or minus a little.
    Length(i8),
    Any(u64),
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        Just(FieldValue::Zero),
        Just(FieldValue::Max),
        any::<i8>().prop_map(FieldValue::Nudge),
        any::<i8>().prop_map(FieldValue::Length),
        any::<u64>().prop_map(FieldValue::Any),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = field_value();
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        4 => (any::<Index>(), prop::sample::select(vec![1usize, 2, 3, 4, 8]), value)
            .prop_map(|(i, w, v)| Mutation::Field(i, w, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    // Mutations land in the body (after the 19-byte header) unless the event is shorter.
    let body = |i: &Index, len: usize| {
        if len > 19 {
            19 + i.index(len - 19)
        } else {
            i.index(len.max(1))
        }
    };
    match m {
        Mutation::Flip(i, bit) if !bytes.is_empty() => {
            let at = body(i, bytes.len());
            bytes[at] ^= 1 << bit;
        }
        Mutation::Set(i, b) if !bytes.is_empty() => {
            let at = body(i, bytes.len());
            bytes[at] = *b;
        }
        Mutation::Field(i, width, value) if bytes.len() >= *width => {
            let at = body(i, bytes.len() - width + 1).min(bytes.len() - width);
            let field = &mut bytes[at..at + width];
            let old = field
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            let max = if *width == 8 {
                u64::MAX
            } else {
                (1 << (8 * width)) - 1
            };
            let new = match value {
                FieldValue::Zero => 0,
                FieldValue::Max => max,
                FieldValue::Nudge(d) => old.wrapping_add_signed(i64::from(*d)),
                FieldValue::Length(d) => (field.len() as u64).wrapping_add_signed(i64::from(*d)),
                FieldValue::Any(v) => *v,
            } & max;
            field.copy_from_slice(&new.to_le_bytes()[..*width]);
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
        Mutation::Insert(i, extra) => {
            let at = body(i, bytes.len() + 1).min(bytes.len());
            bytes.splice(at..at, extra.iter().copied());
        }
        Mutation::Append(extra) => bytes.extend(extra),
        _ => {}
    }
}

/// How a length field is stored.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// A little-endian integer of this many bytes.
    Le(usize),
    /// A length-encoded integer (rewritten whole, so the event may grow or shrink).
    Lenenc,
    /// The head of a MariaDB compressed record: `0x8L`, then L bytes of length, big-endian.
    Record,
}

/// A length (or count, or position) field of a valid event, by its layout.
#[derive(Debug, Clone, Copy)]
struct Spot {
    at: usize,
    encoding: Encoding,
}

/// The length fields of the event in `p`, as far as its bytes follow the layout: the
/// header's event size, then those of its body (the layouts of `reader_mysql_tests`).
fn spots(p: &[u8]) -> Vec<Spot> {
    let le = |at, width| Spot {
        at,
        encoding: Encoding::Le(width),
    };
    let lenenc_at = |at| Spot {
        at,
        encoding: Encoding::Lenenc,
    };
    let byte = |at: usize| p.get(at).map(|b| usize::from(*b));
    // The value and width of the length-encoded integer at `at`.
    let lenenc = |at: usize| -> Option<(usize, usize)> {
        let width = match *p.get(at)? {
            0..=250 => return Some((usize::from(p[at]), 1)),
            252 => 2,
            253 => 3,
            254 => 8,
            _ => return None,
        };
        let bytes = p.get(at + 1..at + 1 + width)?;
        let value = bytes
            .iter()
            .rev()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        Some((value, 1 + width))
    };
    let mut out = vec![le(9, 4)];
    let Some(kind) = byte(4) else { return out };
    let b = 19;
    let mut body = || -> Option<()> {
        match kind as u8 {
            QUERY | mariadb::QUERY_COMPRESSED_EVENT => {
                out.extend([le(b + 8, 1), le(b + 11, 2)]);
                let vars = usize::from(u16::from_le_bytes([
                    byte(b + 11)? as u8,
                    byte(b + 12)? as u8,
                ]));
                if kind as u8 == mariadb::QUERY_COMPRESSED_EVENT {
                    out.push(Spot {
                        at: b + 13 + vars + byte(b + 8)? + 1,
                        encoding: Encoding::Record,
                    });
                }
            }
            TABLE_MAP => {
                let table = b + 8 + 1 + byte(b + 8)? + 1;
                let columns = table + 1 + byte(table)? + 1;
                out.extend([le(b + 8, 1), le(table, 1), lenenc_at(columns)]);
                let (n, width) = lenenc(columns)?;
                out.push(lenenc_at(columns + width + n));
            }
            23..=25 | 30..=32 | 39 | 166..=171 => {
                let v2 = matches!(kind, 30..=32 | 39 | 169..=171);
                let columns = if v2 {
                    out.push(le(b + 8, 2));
                    b + 8
                        + usize::from(u16::from_le_bytes([byte(b + 8)? as u8, byte(b + 9)? as u8]))
                } else {
                    b + 8
                };
                out.push(lenenc_at(columns));
                let (n, width) = lenenc(columns)?;
                let maps = if matches!(kind, 24 | 31 | 39 | 167 | 170) {
                    2
                } else {
                    1
                };
                if kind >= 166 {
                    out.push(Spot {
                        at: columns + width + maps * n.div_ceil(8),
                        encoding: Encoding::Record,
                    });
                }
            }
            TRANSACTION_PAYLOAD => {
                let mut at = b;
                while byte(at)? != 0 {
                    let (_, w) = lenenc(at)?;
                    let (_, l) = lenenc(at + w)?;
                    out.push(lenenc_at(at + w + l));
                    let (_, v) = lenenc(at + w + l)?;
                    at += w + l + v;
                }
            }
            mariadb::GTID_EVENT => {
                let flags = byte(b + 12)? as u8;
                out.push(le(b + 12, 1));
                if flags & (mariadb::FL_PREPARED_XA | mariadb::FL_COMPLETED_XA) != 0 {
                    let xid = b + 13 + if flags & 2 != 0 { 8 } else { 0 };
                    out.extend([le(xid + 4, 1), le(xid + 5, 1)]);
                }
            }
            mariadb::GTID_LIST_EVENT => out.push(le(b, 4)),
            XA_PREPARE => out.extend([le(b + 5, 4), le(b + 9, 4)]),
            ROTATE => out.push(le(b, 8)),
            GTID => out.extend([le(b + 17, 8), lenenc_at(b + 42)]),
            INCIDENT => out.push(le(b + 2, 1)),
            _ => {}
        }
        Some(())
    };
    let _ = body();
    out.retain(|s| s.at < p.len());
    out
}

/// Rewrites the field at `spot` with `value` (computed from its old value).
fn rewrite(bytes: &mut Vec<u8>, spot: Spot, value: FieldValue) {
    let Spot { at, encoding } = spot;
    let pick = |old: u64, max: u64, len: usize| {
        match value {
            FieldValue::Zero => 0,
            FieldValue::Max => max,
            FieldValue::Nudge(d) => old.wrapping_add_signed(i64::from(d)),
            FieldValue::Length(d) => (len as u64).wrapping_add_signed(i64::from(d)),
            FieldValue::Any(v) => v,
        }
        .min(max)
    };
    let len = bytes.len();
    match encoding {
        Encoding::Le(width) if at + width <= len => {
            let field = &mut bytes[at..at + width];
            let old = field
                .iter()
                .rev()
                .fold(0u64, |a, b| (a << 8) | u64::from(*b));
            let max = if width == 8 {
                u64::MAX
            } else {
                (1 << (8 * width)) - 1
            };
            field.copy_from_slice(&pick(old, max, len).to_le_bytes()[..width]);
        }
        Encoding::Lenenc => {
            let width = match bytes[at] {
                252 => 3,
                253 => 4,
                254 => 9,
                _ => 1,
            }
            .min(len - at);
            let new = super::mysql_tests::lenenc(pick(u64::from(bytes[at]), u64::MAX, len));
            bytes.splice(at..at + width, new);
        }
        Encoding::Record => {
            let width = (1 + usize::from(bytes[at] & 7)).min(len - at);
            let new = pick(0, u64::from(u32::MAX), len) as u32;
            let mut head = vec![0x84];
            head.extend(new.to_be_bytes());
            bytes.splice(at..at + width, head);
        }
        _ => {}
    }
}

fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x5eed_b10c);
    }
    // Failures are kept as plain unit tests below, not in files beside the sources.
    config.failure_persistence = None;
    config
}

proptest! {
    #![proptest_config(config(25_000))]

    /// The property, on one mutated event of one recording.
    #[test]
    fn mutated_events_never_panic_the_reader(
        which in any::<Index>(),
        event in any::<Index>(),
        spot in prop::option::weighted(0.5, (any::<Index>(), field_value())),
        mutations in prop::collection::vec(mutation(), 0..4),
        reframed in prop::bool::weighted(0.9),
    ) {
        let rec = which.get(recordings());
        let index = event.index(rec.packets.len());
        let mut bytes = rec.packets[index].clone();
        if let Some((which, value)) = spot {
            let spots = spots(&bytes);
            rewrite(&mut bytes, *which.get(&spots), value);
        }
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if reframed {
            bytes = reframe(&bytes, checksummed(rec, &bytes));
        }
        replay(rec, index, &bytes);
    }
}

/// Every column type the binlog knows, for `decode_value`.
const COLUMN_TYPES: [u8; 31] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 243, 244, 245, 246,
    247, 248, 249, 250, 251, 252,
];

proptest! {
    #![proptest_config(config(20_000))]

    /// The decoders below the state machine, on arbitrary bytes: the same property without
    /// the framing in the way.
    #[test]
    fn decoders_take_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        ty in prop::sample::select(&COLUMN_TYPES[..]),
        meta in any::<[u8; 2]>(),
        unsigned in any::<bool>(),
        rows_kind in prop::sample::select(vec![23u8, 24, 25, 30, 31, 32, 39, 166, 167, 168, 169, 170, 171]),
    ) {
        let bound = allocation_bound(bytes.len());
        let (_, largest) = watched(|| {
            let _ = mariadb::parse_gtid(&bytes, 1);
            let _ = mariadb::parse_gtid_list(&bytes);
            let _ = payload::parse_header(&bytes);
            let _ = crate::source::rows_event::compressed_query(&bytes);
            let _ = crate::source::rows_event::uncompress(&bytes);
            if let Ok(rows) = crate::source::rows_event::parse(rows_kind, &bytes) {
                let _ = rows.rows();
            }
            let _ = crate::source::value::json_text(&bytes);
            let Ok(ty) = mysql_common::constants::ColumnType::try_from(ty) else {
                return;
            };
            let format = crate::model::schema::ColumnFormat {
                ty,
                meta,
                unsigned,
                codec: crate::model::schema::Codec::Utf8,
            };
            let mut r = crate::source::value::Reader::new(&bytes);
            while !r.is_empty() {
                if crate::source::value::decode_value(&mut r, &format).is_err() {
                    break;
                }
            }
        });
        prop_assert!(largest <= bound, "{largest} bytes allocated at once");
    }

    /// JSON opaque values (a MySQL value of some column type inside a document), alone and as
    /// an array element, with arbitrary data: mysql_common decodes DECIMAL and the temporal
    /// types itself.
    #[test]
    fn json_opaque_values_take_any_bytes(
        ty in prop::sample::select(&COLUMN_TYPES[..]),
        data in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut opaque = vec![ty, data.len() as u8];
        opaque.extend(&data);
        let alone = [&[0x0f][..], &opaque].concat();
        // A small array: count 1, size, one value entry (opaque at offset 7), the value.
        let mut array = vec![0x02, 1, 0];
        array.extend((7 + opaque.len() as u16).to_le_bytes());
        array.extend([0x0f, 7, 0]);
        array.extend(&opaque);
        for doc in [alone, array] {
            let _ = crate::source::value::json_text(&doc);
        }
    }
}

/// Every event of every recording, cut at every length (size field and checksum rewritten).
#[test]
fn truncation_at_every_length_never_panics_the_reader() {
    for rec in recordings() {
        for (index, packet) in rec.packets.iter().enumerate() {
            for len in 0..packet.len() {
                let cut = reframe(&packet[..len], checksummed(rec, packet));
                replay(rec, index, &cut);
            }
        }
    }
}

/// The recordings are valid as recorded: every event is read and handled, so mutations start
/// from streams that reach every decoder.
#[test]
fn the_recordings_decode_whole() {
    for rec in recordings() {
        let last = rec.packets.len() - 1;
        let (ending, out) = replay(rec, last, &rec.packets[last]);
        let expected = match rec.name {
            // The partial JSON update and the incident are refused by design; the encryption
            // start event too.
            "mysql types" | "mariadb" => Ending::Refused,
            _ => Ending::Read,
        };
        assert_eq!(ending, expected, "{}", rec.name);
        let stopped: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                SourceEvent::TableStopped { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert!(stopped.is_empty(), "{}: {stopped:?}", rec.name);
        let rows = out
            .iter()
            .filter(|e| matches!(e, SourceEvent::Rows(_)))
            .count();
        assert!(rows >= 2, "{}: {rows} rows events", rec.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: what the fuzzing found, one plain test each
// ---------------------------------------------------------------------------------------------

/// Found by fuzzing: a MariaDB compressed record whose length field says 4 GiB (`0x84 ff ff ff
/// ff`) made `rows_event::uncompress` reserve 4 GiB before inflating a few bytes. Now a length
/// past 1 GiB is an error, and memory is reserved for what the input can inflate to.
#[test]
fn a_4_gib_compressed_length_is_an_error_not_an_allocation() {
    let mut record = vec![0x84, 0xff, 0xff, 0xff, 0xff];
    record.extend(&compress(b"tiny")[3..]);
    let (result, largest) = watched(|| crate::source::rows_event::uncompress(&record));
    assert!(result.is_err());
    assert!(largest < 1 << 20, "{largest} bytes");

    // Under the cap the length is only believed as far as the input can inflate.
    let mut record = vec![0x84, 0x3f, 0xff, 0xff, 0xff];
    record.extend(&compress(b"tiny")[3..]);
    let (result, largest) = watched(|| crate::source::rows_event::uncompress(&record));
    assert!(result.is_err());
    assert!(largest < 1 << 20, "{largest} bytes");

    // Through the reader: the table stops with the decode error, nothing is reserved.
    let rec = &recordings()[4];
    assert_eq!(rec.name, "mariadb");
    let index = rec
        .packets
        .iter()
        .position(|p| p[4] == 166)
        .expect("a compressed WRITE_ROWS v1");
    let mut bytes = rec.packets[index].clone();
    let at = spots(&bytes)
        .into_iter()
        .find(|s| matches!(s.encoding, Encoding::Record))
        .expect("the record's head")
        .at;
    bytes.splice(at..at + 3, [0x84, 0xff, 0xff, 0xff, 0xff]);
    let (_, out) = replay(rec, index, &reframe(&bytes, rec.crc32));
    assert!(
        out.iter()
            .any(|e| matches!(e, SourceEvent::TableStopped { .. })),
        "{:?}",
        super::mysql_tests::kinds(&out)
    );
}

/// Found by fuzzing: a MySQL GTID event numbered 2^64 − 1 (an i64 of −1) overflowed
/// `GtidSet::add_mysql` (`end + 1`) when its transaction committed, a panic in a debug build
/// and a wrong interval merge in a release build. GTID numbers are 1..=2^63 − 1; others are
/// refused, and the set arithmetic saturates.
#[test]
fn a_gtid_number_out_of_range_is_refused() {
    for gno in [0, u64::MAX, 1 << 63] {
        let (mut log, fde) = Binlog::start(false);
        let mut st = super::mysql_tests::state(false);
        super::mysql_tests::feed(&mut st, &[fde]);
        let mut body = gtid_body(1);
        body[17..25].copy_from_slice(&gno.to_le_bytes());
        let err = st.handle(&log.event(GTID, &body)).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }
}

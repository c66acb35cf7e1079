//! The binlog stream's crate hazards, without a server.
//!
//! `MimicStream` yields events as mysql_async's `BinlogStream::poll_next` does: each packet
//! through mysql_common's `EventStreamReader::read`; after a TRANSACTION_PAYLOAD event, the
//! payload's `danger_decompress` and its inner events through `read_decompressed`, all of them
//! before the next packet; a payload whose header mysql_common cannot parse is passed on
//! without its events. Every decision about the bytes is mysql_common's own code; only that
//! glue is restated. The tests run it through the reader's own loop (`BinlogReader::follow`).
//!
//! Scenarios:
//! * a zstd-compressed transaction decodes, its inner events counted exactly;
//! * a payload mysql_common cannot decompress (its events never arrive), one whose declared
//!   uncompressed size is too small (the same), and one whose header mysql_common rejects:
//!   a definite error naming the payload's position, never the next transaction's commit;
//! * a payload header mysql_common panics on (an unknown compression type);
//! * an event packet shorter than its header's size (mysql_common's `Event::read` unwraps the
//!   short read) and one too short for its checksum: a definite error, not a panic.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll};

use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::TransactionPayloadEvent;
use mysql_common::binlog::EventStreamReader;

use super::mysql_tests::{
    feed, gtid_body, kinds, lenenc, product_map, product_row, query_body, rows_body, state,
    xid_body, Binlog, GTID, PRODUCT_ID, QUERY, TABLE_MAP, WRITE_ROWS_V2, XID,
};
use super::*;
use crate::model::event::event_channel;

pub(super) const TRANSACTION_PAYLOAD: u8 = 40;

/// The largest payload the mimic lets mysql_common decompress: `danger_decompress` allocates
/// the declared uncompressed size up front (the process aborts when that fails), so past this
/// the mimic panics where the real stream would allocate.
const MIMIC_ALLOC_LIMIT: u64 = 64 << 20;

/// Yields the events of `packets` (each an event's bytes, without the OK byte) the way
/// mysql_async's binlog stream does; `Pending` once they run out.
pub(super) struct MimicStream {
    packets: VecDeque<Vec<u8>>,
    esr: EventStreamReader,
    inner: Option<Cursor<Vec<u8>>>,
}

impl MimicStream {
    pub(super) fn new(packets: impl IntoIterator<Item = Vec<u8>>) -> Self {
        MimicStream {
            packets: packets.into_iter().collect(),
            esr: EventStreamReader::new(BinlogVersion::Version4),
            inner: None,
        }
    }

    fn next_item(&mut self) -> Option<Result<Event, mysql_async::Error>> {
        if let Some(inner) = &mut self.inner {
            match self.esr.read_decompressed(inner) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => self.inner = None,
                Err(e) => return Some(Err(e.into())),
            }
        }
        let packet = self.packets.pop_front()?;
        match self.esr.read(&packet[..]) {
            Ok(Some(event)) => {
                if event.header().event_type_raw() == TRANSACTION_PAYLOAD {
                    // mysql_async ignores a header that does not parse (its "TODO: Log").
                    if let Ok(payload) = event.read_event::<TransactionPayloadEvent<'_>>() {
                        assert!(
                            payload.uncompressed_size() <= MIMIC_ALLOC_LIMIT,
                            "mysql_common would allocate {} bytes here",
                            payload.uncompressed_size()
                        );
                        self.inner = Some(Cursor::new(payload.danger_decompress()));
                    }
                }
                Some(Ok(event))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        }
    }
}

impl Stream for MimicStream {
    type Item = Result<Event, mysql_async::Error>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().next_item() {
            Some(item) => Poll::Ready(Some(item)),
            None => Poll::Pending,
        }
    }
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with panics on this thread left unprinted: the crate panics the reader catches
/// would otherwise flood the test output. Panics elsewhere print as usual.
pub(super) fn quietly<T>(f: impl FnOnce() -> T) -> T {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
    let before = QUIET.with(|q| q.replace(true));
    let out = f();
    QUIET.with(|q| q.set(before));
    out
}

/// A reader whose loop reads `packets` and sends to the returned channel. Its read timeout is
/// short: a stream that ran out ends the loop with `ReadTimeout`.
async fn follow(packets: Vec<Vec<u8>>, crc32: bool) -> (Result<(), SourceError>, Vec<SourceEvent>) {
    let options = ReaderOptions {
        opts: Opts::from_url("mysql://rowsync@127.0.0.1:9/none").unwrap(),
        server_id: 99,
        heartbeat: Duration::from_secs(1),
        read_timeout: Duration::from_millis(50),
    };
    let selects: Selector = Arc::new(|_: &TableName| true);
    let reader = BinlogReader::new(options, selects, HashSet::new());
    let mut st = state(crc32);
    let (tx, mut rx) = event_channel(1 << 16);
    let mut stream = MimicStream::new(packets);
    let result = reader
        .follow(&mut stream, &mut st, &tx, &CancellationToken::new(), "test")
        .await;
    drop(tx);
    let mut out = Vec::new();
    while let Some(event) = rx.recv().await {
        out.push(event);
    }
    (result, out)
}

/// An event's bytes with an explicit end offset (0 on artificial events and inside a payload),
/// with room for a checksum when `checksummed` (zero: `reframe` in the fuzz tests fills it).
pub(super) fn event_at(kind: u8, body: &[u8], log_pos: u32, checksummed: bool) -> Vec<u8> {
    let size = 19 + body.len() as u32 + if checksummed { 4 } else { 0 };
    let mut bytes = 1_700_000_000u32.to_le_bytes().to_vec();
    bytes.push(kind);
    bytes.extend(1u32.to_le_bytes());
    bytes.extend(size.to_le_bytes());
    bytes.extend(log_pos.to_le_bytes());
    bytes.extend(0u16.to_le_bytes());
    bytes.extend_from_slice(body);
    if checksummed {
        bytes.extend([0; 4]);
    }
    bytes
}

/// An event as it sits inside a payload: no checksum, no end offset.
pub(super) fn inner_event(kind: u8, body: &[u8]) -> Vec<u8> {
    event_at(kind, body, 0, false)
}

/// A TRANSACTION_PAYLOAD body: payload size, compression type (0 zstd, 255 none) and
/// uncompressed size fields, each as length-encoded type, length and value; the end mark; the
/// payload.
pub(super) fn payload_body(compression: u8, uncompressed: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (1u64, payload.len() as u64),
        (2, u64::from(compression)),
        (3, uncompressed),
    ] {
        let v = lenenc(value);
        body.extend(lenenc(field));
        body.extend(lenenc(v.len() as u64));
        body.extend(v);
    }
    body.push(0);
    body.extend_from_slice(payload);
    body
}

/// BEGIN, TABLE_MAP, WRITE_ROWS and XID of `shop.product` row `id`, as a payload holds them.
pub(super) fn inner_transaction(id: u64) -> Vec<u8> {
    [
        inner_event(QUERY, &query_body("shop", "BEGIN")),
        inner_event(TABLE_MAP, &product_map(PRODUCT_ID, "product")),
        inner_event(
            WRITE_ROWS_V2,
            &rows_body(PRODUCT_ID, 3, false, &[product_row(id, Some("z"), None)]),
        ),
        inner_event(XID, &xid_body(id)),
    ]
    .concat()
}

pub(super) fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).unwrap()
}

/// The FORMAT_DESCRIPTION_EVENT, then GTID 6 and a TRANSACTION_PAYLOAD with `payload_body`,
/// then GTID 7 and an uncompressed transaction of row 7. Returns the packets and the
/// payload's start offset.
fn compressed_then_plain(crc32: bool, payload_body: &[u8]) -> (Vec<Vec<u8>>, u32) {
    let (mut log, fde) = Binlog::start_framed(crc32);
    let mut packets = vec![fde, log.frame(GTID, &gtid_body(6)).0];
    let (gtid_end, payload) = {
        let start = log.frame(TRANSACTION_PAYLOAD, payload_body);
        (start.1 - start.0.len() as u32, start.0)
    };
    packets.push(payload);
    for body in [
        (GTID, gtid_body(7)),
        (QUERY, query_body("shop", "BEGIN")),
        (TABLE_MAP, product_map(PRODUCT_ID, "product")),
        (
            WRITE_ROWS_V2,
            rows_body(PRODUCT_ID, 3, false, &[product_row(7, Some("x"), None)]),
        ),
        (XID, xid_body(7)),
    ] {
        packets.push(log.frame(body.0, &body.1).0);
    }
    (packets, gtid_end)
}

#[tokio::test]
async fn a_compressed_transaction_decodes() {
    let inner = inner_transaction(6);
    let body = payload_body(0, inner.len() as u64, &zstd(&inner));
    let (packets, _) = compressed_then_plain(true, &body);
    let (result, out) = follow(packets, true).await;
    assert!(
        matches!(result, Err(SourceError::ReadTimeout(_))),
        "{result:?}"
    );
    assert_eq!(
        kinds(&out),
        ["Begin", "Rows", "Commit", "Begin", "Rows", "Commit"]
    );
    let SourceEvent::Commit { checkpoint, .. } = &out[2] else {
        unreachable!()
    };
    assert_eq!(
        checkpoint.gtid.as_ref().unwrap().to_string(),
        "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-6"
    );
}

/// The same transaction stored uncompressed (compression type NONE) inside the payload.
#[tokio::test]
async fn an_uncompressed_payload_decodes() {
    let inner = inner_transaction(6);
    let body = payload_body(255, inner.len() as u64, &inner);
    let (packets, _) = compressed_then_plain(false, &body);
    let (_, out) = follow(packets, false).await;
    assert_eq!(
        kinds(&out),
        ["Begin", "Rows", "Commit", "Begin", "Rows", "Commit"]
    );
}

/// Asserts the reader stopped at the payload with a definite error and committed nothing
/// after it.
fn assert_stopped_at_payload(
    result: Result<(), SourceError>,
    out: &[SourceEvent],
    payload_at: u32,
) {
    let err = result.unwrap_err();
    assert!(matches!(err, SourceError::Payload { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .contains(&format!("binlog.000001:{payload_at}")),
        "{err}"
    );
    assert!(
        !out.iter().any(|e| matches!(e, SourceEvent::Commit { .. })),
        "{:?}",
        kinds(out)
    );
}

/// mysql_common's `danger_decompress` answers a zstd error with an empty buffer and the stream
/// goes on with the next transaction: the reader must stop there instead.
#[tokio::test]
async fn a_payload_that_does_not_decompress_stops_the_reader() {
    let inner = inner_transaction(6);
    let mut compressed = zstd(&inner);
    let middle = compressed.len() / 2;
    compressed[middle] ^= 0xff;
    compressed.truncate(compressed.len() - 3);
    let body = payload_body(0, inner.len() as u64, &compressed);
    let (packets, at) = compressed_then_plain(true, &body);
    let (result, out) = follow(packets, true).await;
    assert_stopped_at_payload(result, &out, at);
}

/// A declared uncompressed size smaller than the data makes the decompression fail inside
/// mysql_common (its buffer is too small): the events are dropped the same way.
#[tokio::test]
async fn a_payload_with_a_short_uncompressed_size_stops_the_reader() {
    let inner = inner_transaction(6);
    let body = payload_body(0, inner.len() as u64 - 1, &zstd(&inner));
    let (packets, at) = compressed_then_plain(false, &body);
    let (result, out) = follow(packets, false).await;
    assert_stopped_at_payload(result, &out, at);
}

/// A header mysql_common rejects (no compression type) is passed on without its events.
#[tokio::test]
async fn a_payload_header_the_crate_rejects_stops_the_reader() {
    let inner = inner_transaction(6);
    let compressed = zstd(&inner);
    let mut body = lenenc(1);
    body.extend(lenenc(lenenc(compressed.len() as u64).len() as u64));
    body.extend(lenenc(compressed.len() as u64));
    body.push(0);
    body.extend(&compressed);
    let (packets, at) = compressed_then_plain(true, &body);
    let (result, out) = follow(packets, true).await;
    assert_stopped_at_payload(result, &out, at);
}

/// mysql_common unwraps an unknown compression type while the stream parses the payload.
#[tokio::test]
async fn a_payload_header_the_crate_panics_on_is_an_error() {
    let inner = inner_transaction(6);
    let body = payload_body(7, inner.len() as u64, &inner);
    let (packets, _) = compressed_then_plain(true, &body);
    let (result, out) = quietly(|| futures_util::FutureExt::now_or_never(follow(packets, true)))
        .expect("the mimic stream never waits before it runs out");
    let err = result.unwrap_err();
    assert!(matches!(err, SourceError::ClientPanic { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(!out.iter().any(|e| matches!(e, SourceEvent::Commit { .. })));
}

/// An event packet shorter than its header says: mysql_common's `Event::read` unwraps the
/// short read inside the stream's `poll_next`.
#[tokio::test]
async fn a_truncated_event_packet_is_an_error() {
    let (mut log, fde) = Binlog::start_framed(true);
    let (gtid, gtid_end) = log.frame(GTID, &gtid_body(6));
    let (mut query, _) = log.frame(QUERY, &query_body("shop", "BEGIN"));
    query.truncate(query.len() - 10);
    let (result, _) =
        quietly(|| futures_util::FutureExt::now_or_never(follow(vec![fde, gtid, query], true)))
            .expect("no wait before the error");
    let err = result.unwrap_err();
    assert!(matches!(err, SourceError::ClientPanic { .. }), "{err:?}");
    assert!(!err.is_retryable());
    // Named by where the truncated event starts: the end of the GTID event before it.
    assert!(
        err.to_string()
            .contains(&format!("binlog.000001:{gtid_end}")),
        "{err}"
    );
}

/// An event whose header size leaves no room for the checksum it must carry: mysql_common
/// slices `data.len() - 4` before anything checks it.
#[tokio::test]
async fn an_event_shorter_than_its_checksum_is_an_error() {
    let (mut log, fde) = Binlog::start_framed(true);
    let (mut xid, _) = log.frame(XID, &[]);
    xid.truncate(21);
    xid[9..13].copy_from_slice(&21u32.to_le_bytes());
    let (result, _) =
        quietly(|| futures_util::FutureExt::now_or_never(follow(vec![fde, xid], true)))
            .expect("no wait before the error");
    let err = result.unwrap_err();
    assert!(matches!(err, SourceError::ClientPanic { .. }), "{err:?}");
}

/// The events around a payload that mysql_common dropped, fed to the state machine directly:
/// what the stream delivers after a failed decompression.
#[test]
fn the_state_machine_refuses_a_gtid_while_a_payload_is_open() {
    let (mut log, fde) = Binlog::start(false);
    let inner = inner_transaction(6);
    let body = payload_body(0, inner.len() as u64, &zstd(&inner));
    let mut st = state(false);
    feed(
        &mut st,
        &[
            fde,
            log.event(GTID, &gtid_body(6)),
            log.event(TRANSACTION_PAYLOAD, &body),
        ],
    );
    let err = st.handle(&log.event(GTID, &gtid_body(7))).unwrap_err();
    assert!(matches!(err, SourceError::Payload { .. }), "{err:?}");
}

//! MySQL 8's binlog transaction compression (`binlog_transaction_compression=ON`): checks that
//! every event of a TRANSACTION_PAYLOAD event reaches the reader.
//!
//! # The hazard
//! A compressed transaction is one TRANSACTION_PAYLOAD event after its GTID event: a small
//! header (fields as length-encoded type, length and value; type 0 ends the header), then the
//! transaction's events (BEGIN, TABLE_MAP, rows, XID), zstd-compressed and without checksums.
//! mysql_async's binlog stream decompresses the payload itself and yields the inner events
//! right after the payload event. When that fails it says nothing: a payload whose header it
//! cannot parse is passed on without its events, and mysql_common's `danger_decompress`
//! answers a zstd error (or a declared uncompressed size smaller than the data) with an empty
//! buffer, so the stream simply goes on with the next transaction. The rows would be lost,
//! and the next commit would even carry the position past them.
//!
//! # The check
//! The reader parses the payload header itself (without the crate's parser, which panics on an
//! unknown compression type or a field running past the event) and knows how many bytes of
//! events the stream must deliver: the declared uncompressed size for zstd (the crate
//! decompresses into a buffer of exactly that size, or into nothing), the payload's own
//! length when it is stored uncompressed. Each event that follows is counted against that
//! total by the size in its header, which is what the crate consumed to read it. The payload
//! is complete when the count reaches the total exactly. An event that cannot be inside a
//! payload (GTID, ROTATE, heartbeat, another payload, …) before that, an inner event running
//! past the total, or an inner event shorter than an event header is a definite error naming
//! the payload's position: the binlog itself is unreadable there, and a restart would read
//! the same bytes again. The inner events never arrive interleaved with others: the stream
//! yields all of them before it reads its next packet.

use mysql_common::binlog::consts::EventType;

use super::rows_event::packed_int;
use super::value::{DecodeError, Reader};
use crate::model::position::Position;

/// The common header every binlog event starts with.
pub const EVENT_HEADER_LEN: u64 = 19;

/// Header fields (`Transaction_payload_event` "on the wire" field types).
const END_MARK: u64 = 0;
const PAYLOAD_SIZE: u64 = 1;
const COMPRESSION_TYPE: u64 = 2;
const UNCOMPRESSED_SIZE: u64 = 3;

/// Compression types.
const ZSTD: u64 = 0;
const NONE: u64 = 255;

/// What a TRANSACTION_PAYLOAD event's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    pub compressed: bool,
    /// Bytes of the payload after the header.
    pub payload_size: u64,
    pub uncompressed_size: u64,
}

impl PayloadHeader {
    /// Bytes of inner events the stream delivers for this payload when it reads it in full.
    pub fn inner_bytes(&self) -> u64 {
        if self.compressed {
            self.uncompressed_size
        } else {
            self.payload_size
        }
    }
}

/// Parses the header of a TRANSACTION_PAYLOAD event body (after the common header, without
/// checksum). Reads each known field's value as a length-encoded integer right after its
/// length, as mysql_common does, so both agree on what the stream delivers.
pub fn parse_header(body: &[u8]) -> Result<PayloadHeader, DecodeError> {
    let bad = |why: String| DecodeError::Malformed("transaction payload header", why);
    let mut r = Reader::new(body);
    let (mut size, mut compression, mut uncompressed) = (None, None, 0);
    loop {
        if r.is_empty() {
            return Err(bad("no end mark".into()));
        }
        let field = packed_int(&mut r)?;
        if field == END_MARK {
            break;
        }
        let length = packed_int(&mut r)?;
        match field {
            PAYLOAD_SIZE => size = Some(packed_int(&mut r)?),
            COMPRESSION_TYPE => compression = Some(packed_int(&mut r)?),
            UNCOMPRESSED_SIZE => uncompressed = packed_int(&mut r)?,
            _ => {
                let length = usize::try_from(length).map_err(|_| DecodeError::Truncated)?;
                r.take(length)?;
            }
        }
    }
    let payload_size = size.ok_or_else(|| bad("no payload size".into()))?;
    let compressed = match compression {
        Some(ZSTD) => true,
        Some(NONE) => false,
        Some(other) => return Err(bad(format!("unknown compression type {other}"))),
        None => return Err(bad("no compression type".into())),
    };
    if payload_size > r.len() as u64 {
        return Err(bad(format!(
            "payload size {payload_size} exceeds the {} bytes left",
            r.len()
        )));
    }
    let header = PayloadHeader {
        compressed,
        payload_size,
        uncompressed_size: uncompressed,
    };
    if header.inner_bytes() < EVENT_HEADER_LEN {
        return Err(bad(format!(
            "{} bytes of events cannot hold one event",
            header.inner_bytes()
        )));
    }
    Ok(header)
}

/// Why the events of a payload cannot all be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("malformed header: {0}")]
    Header(#[from] DecodeError),
    /// An event that is never inside a payload came before the payload's end.
    #[error("{missing} of its {total} bytes of events never arrived (the binlog client could not decompress or parse them; an event of type {next} came next)")]
    Missing { missing: u64, total: u64, next: u8 },
    /// An inner event runs past the payload's declared size.
    #[error("an inner event of {size} bytes runs past the {left} bytes the payload has left")]
    Overrun { size: u64, left: u64 },
    /// An inner event declares less than its own header.
    #[error("an inner event declares {size} bytes, less than its header")]
    Runt { size: u64 },
}

/// A payload whose inner events are still arriving.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Where the TRANSACTION_PAYLOAD event starts.
    pub at: Position,
    total: u64,
    left: u64,
}

impl Pending {
    pub fn new(at: Position, header: &PayloadHeader) -> Self {
        Pending {
            at,
            total: header.inner_bytes(),
            left: header.inner_bytes(),
        }
    }

    /// Counts the next event of the stream (type `kind`, `size` bytes by its header) against
    /// the payload. `Ok(true)` when the payload is complete with it.
    pub fn count(&mut self, kind: u8, size: u64) -> Result<bool, PayloadError> {
        if never_inside(kind) {
            return Err(PayloadError::Missing {
                missing: self.left,
                total: self.total,
                next: kind,
            });
        }
        if size < EVENT_HEADER_LEN {
            return Err(PayloadError::Runt { size });
        }
        if size > self.left {
            return Err(PayloadError::Overrun {
                size,
                left: self.left,
            });
        }
        self.left -= size;
        Ok(self.left == 0)
    }
}

/// Event types that start or frame a transaction, or come from the dump protocol itself: never
/// one of the events inside a payload.
fn never_inside(kind: u8) -> bool {
    const OUTER: [EventType; 9] = [
        EventType::STOP_EVENT,
        EventType::ROTATE_EVENT,
        EventType::FORMAT_DESCRIPTION_EVENT,
        EventType::INCIDENT_EVENT,
        EventType::HEARTBEAT_EVENT,
        EventType::GTID_EVENT,
        EventType::ANONYMOUS_GTID_EVENT,
        EventType::PREVIOUS_GTIDS_EVENT,
        EventType::TRANSACTION_PAYLOAD_EVENT,
    ];
    // HEARTBEAT_LOG_EVENT_V2 (41), GTID_TAGGED_LOG_EVENT (42); MariaDB's own events (160–164)
    // do not exist on a server that writes payloads.
    OUTER.iter().any(|t| *t as u8 == kind) || matches!(kind, 41 | 42 | 160..=164)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header as MySQL writes it: each field's type, length and value length-encoded.
    fn header(fields: &[(u64, u64)], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(field, value) in fields {
            out.push(field as u8);
            let v = if value < 251 {
                vec![value as u8]
            } else {
                [&[0xfdu8][..], &value.to_le_bytes()[..3]].concat()
            };
            out.push(v.len() as u8);
            out.extend(v);
        }
        out.push(0);
        out.extend(payload);
        out
    }

    #[test]
    fn zstd_payload_counts_its_uncompressed_size() {
        let body = header(&[(1, 5), (2, 0), (3, 300)], &[1, 2, 3, 4, 5]);
        let h = parse_header(&body).unwrap();
        assert_eq!(h.inner_bytes(), 300);
        let mut p = Pending::new("binlog.000001:4".parse().unwrap(), &h);
        assert!(matches!(p.count(2, 100), Ok(false)));
        assert!(matches!(p.count(16, 200), Ok(true)));
    }

    #[test]
    fn uncompressed_payload_counts_its_own_length() {
        let events = vec![0u8; 40];
        let body = header(&[(1, 40), (2, 255)], &events);
        assert_eq!(parse_header(&body).unwrap().inner_bytes(), 40);
    }

    #[test]
    fn malformed_headers_are_errors() {
        // Unknown compression type (mysql_common unwraps it), a payload longer than the event,
        // an unknown field running past the end, no end mark, no events at all.
        assert!(parse_header(&header(&[(1, 1), (2, 7), (3, 30)], &[0])).is_err());
        assert!(parse_header(&header(&[(1, 9), (2, 0), (3, 30)], &[0])).is_err());
        assert!(parse_header(&[9, 200, 1]).is_err());
        assert!(parse_header(&[1, 1, 5]).is_err());
        assert!(parse_header(&header(&[(1, 1), (2, 0), (3, 0)], &[0])).is_err());
        assert!(parse_header(&[]).is_err());
    }

    #[test]
    fn an_outer_event_before_the_end_is_an_error() {
        let h = parse_header(&header(&[(1, 1), (2, 0), (3, 300)], &[0])).unwrap();
        let mut p = Pending::new("binlog.000001:4".parse().unwrap(), &h);
        assert!(matches!(p.count(2, 100), Ok(false)));
        assert!(matches!(
            p.count(EventType::GTID_EVENT as u8, 79),
            Err(PayloadError::Missing { missing: 200, .. })
        ));
        assert!(matches!(
            p.count(19, 201),
            Err(PayloadError::Overrun { .. })
        ));
        assert!(matches!(p.count(19, 0), Err(PayloadError::Runt { .. })));
    }
}

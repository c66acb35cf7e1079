//! MariaDB-only binlog events that mysql_common reports as unknown (types 160–163), decoded
//! from their documented layouts.

use super::value::{DecodeError, Reader};
use crate::model::position::MariaGtid;

pub const ANNOTATE_ROWS_EVENT: u8 = 160;
pub const BINLOG_CHECKPOINT_EVENT: u8 = 161;
pub const GTID_EVENT: u8 = 162;
pub const GTID_LIST_EVENT: u8 = 163;
pub const START_ENCRYPTION_EVENT: u8 = 164;
/// MariaDB's compressed QUERY event (`log_bin_compress`); compressed rows events are framed
/// in `rows_event`.
pub const QUERY_COMPRESSED_EVENT: u8 = 165;

/// The group is a single statement with no BEGIN/COMMIT (DDL).
pub const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;
pub const FL_PREPARED_XA: u8 = 64;
pub const FL_COMPLETED_XA: u8 = 128;

/// The start of a MariaDB event group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GtidEvent {
    pub gtid: MariaGtid,
    pub flags: u8,
    /// The XA branch of a prepared or completed XA group, as its XA statements print it
    /// (`x'…',x'…',n`, lower case).
    pub xid: Option<String>,
}

impl GtidEvent {
    pub fn standalone(&self) -> bool {
        self.flags & FL_STANDALONE != 0
    }

    pub fn prepared_xa(&self) -> bool {
        self.flags & FL_PREPARED_XA != 0
    }
}

/// Parses a GTID event body: seq_no u64, domain u32, flags u8, then optional parts we skip.
/// The server id is the event header's.
pub fn parse_gtid(data: &[u8], server_id: u32) -> Result<GtidEvent, DecodeError> {
    let mut r = Reader::new(data);
    let seq = u64::from_le_bytes(r.take(8)?.try_into().unwrap_or_default());
    let domain = u32::from_le_bytes(r.take(4)?.try_into().unwrap_or_default());
    let flags = r.take(1)?[0];
    if flags & FL_GROUP_COMMIT_ID != 0 {
        r.take(8)?;
    }
    // XA groups carry their XID: format id u32, gtrid length u8, bqual length u8, both parts.
    let xid = if flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0 {
        let format = u32::from_le_bytes(r.take(4)?.try_into().unwrap_or_default());
        let lengths = r.take(2)?;
        let (gtrid, bqual) = (r.take(lengths[0].into())?, r.take(lengths[1].into())?);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        Some(format!("x'{}',x'{}',{format}", hex(gtrid), hex(bqual)))
    } else {
        None
    };
    Ok(GtidEvent {
        gtid: MariaGtid {
            domain,
            server: server_id,
            seq,
        },
        flags,
        xid,
    })
}

/// Parses a GTID_LIST event: a count (low 28 bits) and that many domain/server/seq triples.
pub fn parse_gtid_list(data: &[u8]) -> Result<Vec<MariaGtid>, DecodeError> {
    let mut r = Reader::new(data);
    let count = u32::from_le_bytes(r.take(4)?.try_into().unwrap_or_default()) & 0x0fff_ffff;
    (0..count)
        .map(|_| {
            let domain = u32::from_le_bytes(r.take(4)?.try_into().unwrap_or_default());
            let server = u32::from_le_bytes(r.take(4)?.try_into().unwrap_or_default());
            let seq = u64::from_le_bytes(r.take(8)?.try_into().unwrap_or_default());
            Ok(MariaGtid {
                domain,
                server,
                seq,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_event_layout() {
        let mut data = 4u64.to_le_bytes().to_vec();
        data.extend_from_slice(&7u32.to_le_bytes());
        data.push(FL_STANDALONE | FL_GROUP_COMMIT_ID);
        data.extend_from_slice(&99u64.to_le_bytes());
        let ev = parse_gtid(&data, 1).unwrap();
        assert_eq!(ev.gtid.to_string(), "7-1-4");
        assert!(ev.standalone());
        assert!(parse_gtid(&data[..10], 1).is_err());
    }

    #[test]
    fn gtid_list_layout() {
        let mut data = 2u32.to_le_bytes().to_vec();
        for (d, s, n) in [(0u32, 1u32, 10u64), (1, 2, 20)] {
            data.extend_from_slice(&d.to_le_bytes());
            data.extend_from_slice(&s.to_le_bytes());
            data.extend_from_slice(&n.to_le_bytes());
        }
        let list = parse_gtid_list(&data).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].to_string(), "1-2-20");
    }
}

//! The framing of binlog rows events (v1, v2 and MariaDB's compressed ones) and of MariaDB's
//! compressed QUERY event: which table, which columns each image holds, and the row bytes.
//!
//! One parser serves every flavour so the row decoder never cares how an event was framed.
//! MariaDB's `log_bin_compress` keeps the event header and the rows-event head as they are and
//! compresses the row bytes (or the query text): a header byte `0x8L` (L = bytes of length),
//! the uncompressed length big-endian, then a zlib stream. The length is the input's word, so
//! it bounds what is inflated but never what is reserved up front.

use std::borrow::Cow;
use std::io::Read;

use super::value::{DecodeError, Reader};

/// What a rows event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsKind {
    Write,
    Update,
    Delete,
    /// MySQL's partial JSON update (binlog_row_value_options=PARTIAL_JSON).
    PartialUpdate,
}

/// A rows event's head and its row bytes.
#[derive(Debug)]
pub struct RowsEvent<'a> {
    pub kind: RowsKind,
    pub table_id: u64,
    pub columns: usize,
    /// Columns present in the before image (updates and deletes).
    pub before: Option<Vec<bool>>,
    /// Columns present in the after image (writes and updates).
    pub after: Option<Vec<bool>>,
    /// Row bytes as stored: compressed for MariaDB's compressed events.
    stored: &'a [u8],
    compressed: bool,
}

impl<'a> RowsEvent<'a> {
    /// The row images' bytes, inflated if needed (only call this for selected tables).
    pub fn rows(&self) -> Result<Cow<'a, [u8]>, DecodeError> {
        if self.compressed {
            uncompress(self.stored).map(Cow::Owned)
        } else {
            Ok(Cow::Borrowed(self.stored))
        }
    }
}

/// Rows event types: (kind, v2 framing, compressed).
pub fn rows_event_type(t: u8) -> Option<(RowsKind, bool, bool)> {
    use RowsKind::*;
    Some(match t {
        23 => (Write, false, false),
        24 => (Update, false, false),
        25 => (Delete, false, false),
        30 => (Write, true, false),
        31 => (Update, true, false),
        32 => (Delete, true, false),
        39 => (PartialUpdate, true, false),
        166 => (Write, false, true),
        167 => (Update, false, true),
        168 => (Delete, false, true),
        169 => (Write, true, true),
        170 => (Update, true, true),
        171 => (Delete, true, true),
        _ => return None,
    })
}

/// A length-encoded ("packed") integer: one byte up to 250, else 0xfc, 0xfd or 0xfe and 2, 3 or
/// 8 bytes little-endian.
pub(super) fn packed_int(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let first = r.take(1)?[0];
    let n = match first {
        0..=250 => return Ok(u64::from(first)),
        252 => 2,
        253 => 3,
        254 => 8,
        _ => return Err(DecodeError::Malformed("packed integer", first.to_string())),
    };
    Ok(r.take(n)?
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

fn bitmap(r: &mut Reader<'_>, n: usize) -> Result<Vec<bool>, DecodeError> {
    let bytes = r.take(n.div_ceil(8))?;
    Ok((0..n).map(|i| bytes[i / 8] & (1 << (i % 8)) != 0).collect())
}

/// The most a compressed record may inflate to: what the format's length field can say
/// (4 GiB; a 1 GiB compressed event may hold more than 1 GiB of rows). Memory is bounded
/// by what the input can actually inflate to (`MAX_ZLIB_RATIO`), not by this.
const MAX_UNCOMPRESSED: u64 = u32::MAX as u64;

/// zlib's deflate cannot expand by more than about 1032:1.
const MAX_ZLIB_RATIO: u64 = 1032;

/// Inflates a MariaDB compressed record.
pub fn uncompress(record: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let bad = |why: &str| DecodeError::Malformed("compressed event", why.to_string());
    let (&head, rest) = record.split_first().ok_or_else(|| bad("empty"))?;
    if head & 0x80 == 0 {
        return Err(bad("not marked compressed"));
    }
    if head & 0x70 != 0 {
        return Err(bad("unknown compression algorithm"));
    }
    let lenlen = (head & 0x07) as usize;
    if lenlen == 0 || lenlen > 4 || rest.len() < lenlen {
        return Err(bad("bad length field"));
    }
    let (len, stream) = rest.split_at(lenlen);
    let len = len.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if len > MAX_UNCOMPRESSED {
        return Err(bad(&format!(
            "declares {len} bytes uncompressed, more than an event can hold"
        )));
    }
    // The declared length is the input's word: memory is reserved for at most what the
    // compressed bytes can expand to, and the inflater stops one byte past the declared
    // length, so neither a lying length field nor a zlib bomb allocates more than that.
    let reserve = len.min((stream.len() as u64).saturating_mul(MAX_ZLIB_RATIO));
    let mut out = Vec::with_capacity(reserve as usize);
    flate2::read::ZlibDecoder::new(stream)
        .take(len + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(&e.to_string()))?;
    if out.len() as u64 != len {
        return Err(bad("length does not match"));
    }
    Ok(out)
}

/// Parses the body (after the common header, without checksum) of rows event type `t`.
pub fn parse(t: u8, data: &[u8]) -> Result<RowsEvent<'_>, DecodeError> {
    let (kind, v2, compressed) = rows_event_type(t)
        .ok_or_else(|| DecodeError::Malformed("rows event type", t.to_string()))?;
    let mut r = Reader::new(data);
    let id = r.take(6)?;
    let table_id = id
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let _flags = r.take(2)?;
    if v2 {
        let extra = u16::from_le_bytes([r.take(1)?[0], r.take(1)?[0]]) as usize;
        r.take(extra.saturating_sub(2))?;
    }
    let columns = packed_int(&mut r)? as usize;
    let first = bitmap(&mut r, columns)?;
    let (before, after) = match kind {
        RowsKind::Write => (None, Some(first)),
        RowsKind::Delete => (Some(first), None),
        RowsKind::Update | RowsKind::PartialUpdate => (Some(first), Some(bitmap(&mut r, columns)?)),
    };
    Ok(RowsEvent {
        kind,
        table_id,
        columns,
        before,
        after,
        stored: r.take(r.len())?,
        compressed,
    })
}

/// The default database and query text of a MariaDB QUERY_COMPRESSED_EVENT body.
pub fn compressed_query(data: &[u8]) -> Result<(String, String), DecodeError> {
    let mut r = Reader::new(data);
    r.take(4 + 4)?; // thread id, execution time
    let db_len = r.take(1)?[0] as usize;
    r.take(2)?; // error code
    let vars_len = u16::from_le_bytes([r.take(1)?[0], r.take(1)?[0]]) as usize;
    r.take(vars_len)?;
    let db = String::from_utf8_lossy(r.take(db_len)?).into_owned();
    r.take(1)?; // NUL after the database name
    let query = uncompress(r.take(r.len())?)?;
    Ok((db, String::from_utf8_lossy(&query).into_owned()))
}

#[cfg(test)]
pub(in crate::source) mod tests {
    use super::*;
    use std::io::Write;

    /// A MariaDB compressed record of `data`: header byte 0x82, a 2-byte length, zlib.
    pub(in crate::source) fn compress(data: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).unwrap();
        let body = z.finish().unwrap();
        let mut out = vec![0x82, (data.len() >> 8) as u8, data.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn compressed_rows_event_round_trips() {
        let rows = b"row bytes of some length".repeat(20);
        let mut data = vec![7, 0, 0, 0, 0, 0, 1, 0, 3, 0b111, 0b101];
        data.extend(compress(&rows));
        let ev = parse(167, &data).unwrap();
        assert_eq!(ev.kind, RowsKind::Update);
        assert_eq!(ev.table_id, 7);
        assert_eq!(ev.columns, 3);
        assert_eq!(ev.before, Some(vec![true, true, true]));
        assert_eq!(ev.after, Some(vec![true, false, true]));
        assert_eq!(&ev.rows().unwrap()[..], &rows[..]);
    }

    #[test]
    fn v2_extra_data_is_skipped() {
        let data = [9, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0xAA, 0xBB, 2, 0b11, 42];
        let ev = parse(30, &data).unwrap();
        assert_eq!((ev.table_id, ev.columns), (9, 2));
        assert_eq!(&ev.rows().unwrap()[..], &[42]);
    }

    #[test]
    fn corrupt_compression_is_an_error() {
        assert!(uncompress(&[0x81, 5, 1, 2, 3]).is_err());
        assert!(uncompress(&[0x01, 5]).is_err());
    }
}

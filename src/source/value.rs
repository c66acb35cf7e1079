//! Typed column values and the decoder of binlog row images.
//!
//! Values keep the source's meaning exactly: integers keep their signedness from the column
//! metadata, DECIMAL stays a decimal string of its full precision, temporal values stay text in
//! the server's own format (zero dates, TIME beyond 24 h and fractional seconds included, with
//! TIMESTAMP rendered in UTC for target sessions running at `+00:00`), ENUM and SET keep their
//! stored index and bitmask, and character columns are decoded with their column charset.
//! Targets bind these values; they never pass through a lossy Rust type.
//!
//! The decoder is our own rather than mysql_common's `BinlogRow`: that one rebuilds column
//! metadata for every row, renders YEAR 0 as 1900 and reads negative old-style TIME values as
//! positive. We reuse its MySQL binary-JSON reader, which is exact, after checking each
//! document ourselves (`check_json_shape`): that reader and the conversions after it recurse once
//! per nesting level without a limit, and its DECIMAL reader panics on malformed digits.

use std::io;

use compact_str::{format_compact, CompactString, ToCompactString};
use mysql_common::constants::ColumnType;

use crate::model::schema::{Codec, ColumnFormat};
use crate::model::value::Value;

/// A row image that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("row image ends early")]
    Truncated,
    #[error("unsupported column type {0:?} (metadata {1:?})")]
    Unsupported(ColumnType, [u8; 2]),
    #[error("malformed {0} value: {1}")]
    Malformed(&'static str, String),
}

impl From<io::Error> for DecodeError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            DecodeError::Truncated
        } else {
            DecodeError::Malformed("binary", e.to_string())
        }
    }
}

/// A little cursor over row-image bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes left.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn le(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }
}

fn sign_extend(v: u64, bytes: usize) -> i64 {
    let shift = 64 - 8 * bytes as u32;
    ((v << shift) as i64) >> shift
}

fn int(r: &mut Reader<'_>, bytes: usize, unsigned: bool) -> Result<Value, DecodeError> {
    let raw = r.le(bytes)?;
    Ok(if unsigned {
        Value::UInt(raw)
    } else {
        Value::Int(sign_extend(raw, bytes))
    })
}

/// Appends `.ffffff` cut to `fsp` digits.
pub(crate) fn push_fraction(out: &mut CompactString, micros: u64, fsp: u8) {
    if fsp > 0 {
        let digits = format_compact!("{micros:06}");
        out.push('.');
        out.push_str(&digits[..fsp.min(6) as usize]);
    }
}

/// Reads the fractional-seconds part stored after a TIME2/DATETIME2/TIMESTAMP2 value.
fn fraction(r: &mut Reader<'_>, fsp: u8) -> Result<(u64, u64), DecodeError> {
    // Returns (raw, micros); raw is needed for TIME2's signed arithmetic.
    Ok(match fsp {
        0 => (0, 0),
        1 | 2 => {
            let v = r.be(1)?;
            (v, v * 10_000)
        }
        3 | 4 => {
            let v = r.be(2)?;
            (v, v * 100)
        }
        5 | 6 => {
            let v = r.be(3)?;
            (v, v)
        }
        _ => {
            return Err(DecodeError::Malformed(
                "fractional seconds",
                fsp.to_string(),
            ))
        }
    })
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A TIMESTAMP (seconds since the epoch) as UTC text; 0 is the zero timestamp.
pub fn timestamp_text(secs: u64, micros: u64, fsp: u8) -> CompactString {
    let mut out = if secs == 0 && micros == 0 {
        CompactString::const_new("0000-00-00 00:00:00")
    } else {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        format_compact!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    };
    push_fraction(&mut out, micros, fsp);
    out
}

/// Bytes holding 0..=9 leftover decimal digits in the binary DECIMAL format.
const DECIMAL_DIGIT_BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// 10^n for a group of n digits.
const POW10: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// Binary DECIMAL(precision, scale) straight to its text (`-12.340`), without an intermediate
/// number: the hottest value of a typical product table, so written for speed.
///
/// The format (MySQL's `decimal2bin`): the integer digits, then the fraction digits, each
/// stored in big-endian groups of 9 digits per 4 bytes, with the integer part's leftover
/// digits in a short group first and the fraction's leftover digits in a short group last.
/// The first byte's top bit is flipped; a negative value has every bit inverted.
fn decimal(r: &mut Reader<'_>, meta: [u8; 2]) -> Result<Value, DecodeError> {
    let (precision, scale) = (meta[0] as usize, meta[1] as usize);
    if scale > precision || precision > 65 {
        return Err(DecodeError::Unsupported(
            ColumnType::MYSQL_TYPE_NEWDECIMAL,
            meta,
        ));
    }
    let intg = precision - scale;
    let (intg_full, intg_left) = (intg / 9, intg % 9);
    let (frac_full, frac_left) = (scale / 9, scale % 9);
    let size = DECIMAL_DIGIT_BYTES[intg_left]
        + 4 * (intg_full + frac_full)
        + DECIMAL_DIGIT_BYTES[frac_left];
    let raw = r.take(size)?;
    let Some(&first) = raw.first() else {
        return Ok(Value::Decimal("0".into()));
    };
    let negative = first & 0x80 == 0;
    let mask = if negative { 0xff } else { 0 };
    let mut at = 0;
    let mut group = |bytes: usize| {
        let mut v: u32 = 0;
        for (i, &b) in raw.iter().enumerate().skip(at).take(bytes) {
            let sign = if i == 0 { 0x80 } else { 0 };
            v = (v << 8) | u32::from(b ^ mask ^ sign);
        }
        at += bytes;
        v
    };
    // Digits as ASCII, integer part first, then the fraction. A group holding more than its
    // digits cannot come from the server: the value is refused rather than printed wrong.
    let mut digits = [b'0'; 81];
    let mut n = 0;
    let mut in_range = true;
    let mut put = |v: u32, width: usize, digits: &mut [u8; 81]| {
        in_range &= v < POW10[width];
        let mut v = v;
        for i in (0..width).rev() {
            digits[n + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        n += width;
    };
    if intg_left > 0 {
        put(
            group(DECIMAL_DIGIT_BYTES[intg_left]),
            intg_left,
            &mut digits,
        );
    }
    for _ in 0..intg_full {
        put(group(4), 9, &mut digits);
    }
    for _ in 0..frac_full {
        put(group(4), 9, &mut digits);
    }
    if frac_left > 0 {
        put(
            group(DECIMAL_DIGIT_BYTES[frac_left]),
            frac_left,
            &mut digits,
        );
    }
    if !in_range {
        return Err(DecodeError::Malformed(
            "DECIMAL",
            "a digit group out of range".into(),
        ));
    }
    let (int_digits, frac_digits) = digits[..precision].split_at(intg);
    let int_digits = match int_digits.iter().position(|&d| d != b'0') {
        Some(i) => &int_digits[i..],
        None => b"0".as_slice(),
    };
    let zero = int_digits == b"0" && frac_digits.iter().all(|&d| d == b'0');
    // Assembled as bytes, then made a string once (pushing char by char was a tenth of the
    // reader's instructions).
    let mut out = [0u8; 84];
    let mut len = 0;
    let mut append = |part: &[u8]| {
        out[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    };
    if negative && !zero {
        append(b"-");
    }
    append(int_digits);
    if scale > 0 {
        append(b".");
        append(frac_digits);
    }
    let text = std::str::from_utf8(&out[..len])
        .map_err(|e| DecodeError::Malformed("DECIMAL", e.to_string()))?;
    let text = CompactString::from(text);
    Ok(Value::Decimal(text))
}

fn time2(r: &mut Reader<'_>, fsp: u8) -> Result<Value, DecodeError> {
    const INT_OFS: i64 = 0x80_0000;
    let int_raw = r.be(3)? as i64;
    let mut intpart = int_raw - INT_OFS;
    let (frac_raw, _) = fraction(r, fsp)?;
    // Negative values store the fraction as a complement of the whole (see MySQL's
    // my_time_packed_from_binary).
    let mut frac = frac_raw as i64;
    let micros_scale = match fsp {
        1 | 2 => {
            if intpart < 0 && frac != 0 {
                intpart += 1;
                frac -= 0x100;
            }
            10_000
        }
        3 | 4 => {
            if intpart < 0 && frac != 0 {
                intpart += 1;
                frac -= 0x1_0000;
            }
            100
        }
        5 | 6 => {
            if intpart < 0 && frac != 0 {
                intpart += 1;
                frac -= 0x100_0000;
            }
            1
        }
        _ => 1,
    };
    let mut packed = (intpart << 24) + frac * micros_scale;
    let negative = packed < 0;
    if negative {
        packed = -packed;
    }
    let hms = packed >> 24;
    let micros = (packed % (1 << 24)) as u64;
    let hour = (hms >> 12) % (1 << 10);
    let minute = (hms >> 6) % 64;
    let second = hms % 64;
    let mut out = format_compact!(
        "{}{:02}:{minute:02}:{second:02}",
        if negative { "-" } else { "" },
        hour
    );
    push_fraction(&mut out, micros, fsp);
    Ok(Value::Temporal(out))
}

fn datetime2(r: &mut Reader<'_>, fsp: u8) -> Result<Value, DecodeError> {
    let intpart = r.be(5)? as i64 - 0x80_0000_0000;
    let (_, micros) = fraction(r, fsp)?;
    let ymd = intpart >> 17;
    let ym = ymd >> 5;
    let hms = intpart % (1 << 17);
    let mut out = format_compact!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        ym / 13,
        ym % 13,
        ymd % 32,
        hms >> 12,
        (hms >> 6) % 64,
        hms % 64
    );
    push_fraction(&mut out, micros, fsp);
    Ok(Value::Temporal(out))
}

fn length_prefixed<'a>(r: &mut Reader<'a>, prefix: usize) -> Result<&'a [u8], DecodeError> {
    let len = r.le(prefix)? as usize;
    r.take(len)
}

fn text(bytes: &[u8], codec: &Codec) -> Value {
    match codec.decode(bytes) {
        Some(s) => Value::Text(s),
        None => Value::Bytes(bytes.to_vec()),
    }
}

/// Decodes one non-NULL value of column `col` from `r`.
pub fn decode_value(r: &mut Reader<'_>, col: &ColumnFormat) -> Result<Value, DecodeError> {
    use ColumnType::*;
    let meta = col.meta;
    match col.ty {
        MYSQL_TYPE_TINY => int(r, 1, col.unsigned),
        MYSQL_TYPE_SHORT => int(r, 2, col.unsigned),
        MYSQL_TYPE_INT24 => int(r, 3, col.unsigned),
        MYSQL_TYPE_LONG => int(r, 4, col.unsigned),
        MYSQL_TYPE_LONGLONG => int(r, 8, col.unsigned),
        MYSQL_TYPE_FLOAT => Ok(Value::Float(f32::from_bits(r.le(4)? as u32))),
        MYSQL_TYPE_DOUBLE => Ok(Value::Double(f64::from_bits(r.le(8)?))),
        MYSQL_TYPE_NEWDECIMAL => decimal(r, meta),
        MYSQL_TYPE_YEAR => {
            let y = r.le(1)? as u16;
            Ok(Value::Year(if y == 0 { 0 } else { 1900 + y }))
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => {
            let v = r.le(3)?;
            Ok(Value::Temporal(format_compact!(
                "{:04}-{:02}-{:02}",
                v >> 9,
                (v >> 5) & 15,
                v & 31
            )))
        }
        MYSQL_TYPE_TIME => {
            let v = sign_extend(r.le(3)?, 3);
            let (sign, v) = if v < 0 { ("-", -v) } else { ("", v) };
            Ok(Value::Temporal(format_compact!(
                "{sign}{:02}:{:02}:{:02}",
                v / 10_000,
                v / 100 % 100,
                v % 100
            )))
        }
        MYSQL_TYPE_DATETIME => {
            let v = r.le(8)?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            Ok(Value::Temporal(format_compact!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                d / 10_000,
                d / 100 % 100,
                d % 100,
                t / 10_000,
                t / 100 % 100,
                t % 100
            )))
        }
        MYSQL_TYPE_TIMESTAMP => Ok(Value::Temporal(timestamp_text(r.le(4)?, 0, 0))),
        MYSQL_TYPE_TIMESTAMP2 => {
            let secs = r.be(4)?;
            let (_, micros) = fraction(r, meta[0])?;
            Ok(Value::Temporal(timestamp_text(secs, micros, meta[0])))
        }
        MYSQL_TYPE_DATETIME2 => datetime2(r, meta[0]),
        MYSQL_TYPE_TIME2 => time2(r, meta[0]),
        MYSQL_TYPE_BIT => {
            let bytes = meta[1] as usize + usize::from(meta[0] > 0);
            if bytes > 8 {
                return Err(DecodeError::Unsupported(col.ty, meta));
            }
            Ok(Value::Bit(r.be(bytes)?))
        }
        MYSQL_TYPE_ENUM => match meta[1] {
            1 | 2 => Ok(Value::Enum(r.le(meta[1] as usize)? as u16)),
            _ => Err(DecodeError::Unsupported(col.ty, meta)),
        },
        MYSQL_TYPE_SET => match meta[1] {
            1..=8 => Ok(Value::Set(r.le(meta[1] as usize)?)),
            _ => Err(DecodeError::Unsupported(col.ty, meta)),
        },
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            let max_len = u16::from_le_bytes(meta) as usize;
            let bytes = length_prefixed(r, if max_len < 256 { 1 } else { 2 })?;
            Ok(text(bytes, &col.codec))
        }
        MYSQL_TYPE_STRING => {
            let (b0, b1) = (meta[0] as usize, meta[1] as usize);
            // A long CHAR() keeps two length bits in the real-type byte (MySQL bug #37426).
            let max_len = if b0 & 0x30 != 0x30 {
                b1 | (((b0 & 0x30) ^ 0x30) << 4)
            } else {
                b1
            };
            let bytes = length_prefixed(r, if max_len < 256 { 1 } else { 2 })?;
            if col.codec == Codec::Binary && bytes.len() < max_len {
                // Row events drop BINARY(n)'s trailing zero bytes; the column holds them, and
                // a key compares equal only with them (a DELETE by the short value finds
                // nothing).
                let mut padded = bytes.to_vec();
                padded.resize(max_len, 0);
                return Ok(Value::Bytes(padded));
            }
            Ok(text(bytes, &col.codec))
        }
        MYSQL_TYPE_BLOB
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_GEOMETRY => match meta[0] {
            1..=4 => {
                let bytes = length_prefixed(r, meta[0] as usize)?;
                Ok(if col.ty == MYSQL_TYPE_GEOMETRY {
                    Value::Bytes(bytes.to_vec())
                } else {
                    text(bytes, &col.codec)
                })
            }
            _ => Err(DecodeError::Unsupported(col.ty, meta)),
        },
        MYSQL_TYPE_JSON => {
            let bytes = length_prefixed(r, meta[0].clamp(1, 4) as usize)?;
            json_text(bytes).map(Value::Json)
        }
        other => Err(DecodeError::Unsupported(other, meta)),
    }
}

/// MySQL's binary JSON to JSON text (MariaDB stores JSON as text and never gets here).
pub fn json_text(bytes: &[u8]) -> Result<CompactString, DecodeError> {
    if bytes.is_empty() {
        // An empty binary value is how MySQL logs a JSON NULL literal in some versions.
        return Ok("null".into());
    }
    check_json_shape(bytes)?;
    let mut buf = mysql_common::io::ParseBuf(bytes);
    let value: mysql_common::binlog::jsonb::Value<'_> = buf
        .parse(())
        .map_err(|e| DecodeError::Malformed("JSON", e.to_string()))?;
    // The value borrows `bytes`: cloning it copies no data.
    match serde_json::Value::try_from(value.clone()) {
        Ok(json) => Ok(json.to_compact_string()),
        // A DECIMAL, DATE, TIME or DATETIME stored inside the document (opaque values).
        Err(mysql_common::binlog::jsonb::JsonbToJsonError::Opaque) => {
            let dom = value
                .parse()
                .map_err(|e| DecodeError::Malformed("JSON", e.to_string()))?;
            let mut out = String::new();
            write_dom(&dom, &mut out);
            Ok(out.into())
        }
        Err(e) => Err(DecodeError::Malformed("JSON", e.to_string())),
    }
}

/// Containers nested deeper than this are refused. MySQL never writes more than 100
/// (`JSON_DOCUMENT_MAX_DEPTH`); the conversions below recurse once per level, and a few hundred
/// levels overflow a 2 MiB thread stack in a debug build, which aborts the whole process.
const MAX_JSON_DEPTH: usize = 150;

/// Checks that a binary JSON document is a tree of bounded depth before the recursive
/// conversions walk it: containers nest at most `MAX_JSON_DEPTH` deep, and no more value
/// entries are reachable than the document has bytes (entries pointing at a shared container
/// would make any walk exponential); its DECIMALs are well formed. Everything else is left to
/// mysql_common's parser.
///
/// Layout (MySQL's `json_binary.h`): a type byte, then the value. Objects (0x00 small, 0x01
/// large) and arrays (0x02, 0x03) start with an element count and a byte size (2 bytes each
/// when small, 4 when large), then for objects a key entry per element (offset, plus a 2-byte
/// length), then a value entry per element: a type byte and an inline value or an offset from
/// the container's start (2 bytes small, 4 large).
fn check_json_shape(bytes: &[u8]) -> Result<(), DecodeError> {
    let bad = |why: &str| DecodeError::Malformed("JSON", why.to_string());
    let (&kind, body) = bytes.split_first().ok_or_else(|| bad("empty document"))?;
    if kind == JSONB_OPAQUE {
        return check_json_opaque(body);
    }
    if kind > 0x03 {
        return Ok(());
    }
    let mut stack: Vec<(u8, &[u8], usize)> = vec![(kind, body, 1)];
    let mut entries = 0usize;
    while let Some((kind, container, depth)) = stack.pop() {
        if depth > MAX_JSON_DEPTH {
            return Err(bad(&format!(
                "containers nested more than {MAX_JSON_DEPTH} deep"
            )));
        }
        let large = kind & 1 == 1;
        let object = kind < 0x02;
        let width = if large { 4 } else { 2 };
        let mut head = Reader::new(container);
        let count = head.le(width)? as usize;
        let size = head.le(width)? as usize;
        let container = &container[..size.min(container.len())];
        let mut r = Reader::new(container.get(2 * width..).unwrap_or_default());
        if object {
            r.take(count.saturating_mul(width + 2))?; // the key entries
        }
        for _ in 0..count {
            entries += 1;
            if entries > bytes.len() {
                return Err(bad("value entries share containers"));
            }
            let entry_kind = r.take(1)?[0];
            let offset = r.le(width)? as usize;
            if entry_kind <= 0x03 || entry_kind == JSONB_OPAQUE {
                let inner = container
                    .get(offset..)
                    .ok_or_else(|| bad("value offset past its container"))?;
                if entry_kind == JSONB_OPAQUE {
                    check_json_opaque(inner)?;
                } else {
                    stack.push((entry_kind, inner, depth + 1));
                }
            }
        }
    }
    Ok(())
}

/// The type byte of an opaque JSON value (a DECIMAL, temporal or other MySQL value).
const JSONB_OPAQUE: u8 = 0x0f;

/// An opaque value (column type, variable-length size, data). A DECIMAL must be one
/// mysql_common can read: its reader panics on a scale above the precision
/// (`decimal_bin_size`) and on digit groups out of range (an `i32` overflow).
fn check_json_opaque(value: &[u8]) -> Result<(), DecodeError> {
    let mut r = Reader::new(value);
    let ty = r.take(1)?[0];
    // Variable-length size: 7 bits a byte, low bits first, at most 5 bytes.
    let mut len = 0usize;
    for i in 0..5 {
        let b = r.take(1)?[0];
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
        if i == 4 {
            return Err(DecodeError::Malformed(
                "JSON",
                "opaque size too long".into(),
            ));
        }
    }
    let data = r.take(len)?;
    if ty == ColumnType::MYSQL_TYPE_NEWDECIMAL as u8 {
        let mut r = Reader::new(data);
        let meta = [r.take(1)?[0], r.take(1)?[0]];
        decimal(&mut r, meta)?;
    }
    Ok(())
}

/// Compact JSON text of a parsed binary document, as `json_text` writes one without opaque
/// values, with MySQL's own rendering of those: a DECIMAL as its exact number, temporal
/// values as strings (`2015-01-15 23:24:25.000000`), anything else as
/// `"base64:type<n>:<data>"`.
fn write_dom(dom: &mysql_common::binlog::jsonb::JsonDom, out: &mut String) {
    use mysql_common::binlog::jsonb::{JsonContainer, JsonDom, JsonNumber, JsonScalar};
    let quoted = |s: &str, out: &mut String| out.push_str(&serde_json::Value::from(s).to_string());
    match dom {
        JsonDom::Container(JsonContainer::Array(items)) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_dom(item, out);
            }
            out.push(']');
        }
        JsonDom::Container(JsonContainer::Object(fields)) => {
            out.push('{');
            for (i, (key, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                quoted(key, out);
                out.push(':');
                write_dom(item, out);
            }
            out.push('}');
        }
        JsonDom::Scalar(JsonScalar::Number(JsonNumber::Decimal(d))) => out.push_str(&d.to_string()),
        JsonDom::Scalar(scalar) => {
            out.push_str(&serde_json::Value::from(scalar.clone()).to_string())
        }
    }
}

/// Decodes one row image: a NULL bitmap over the present columns, then their values.
/// `present` says which columns the image holds (all of them with `binlog_row_image=FULL`).
pub fn decode_row(
    r: &mut Reader<'_>,
    columns: &[ColumnFormat],
    present: &[bool],
) -> Result<Vec<Value>, DecodeError> {
    let n_present = present.iter().filter(|p| **p).count();
    let nulls = r.take(n_present.div_ceil(8))?;
    let mut out = Vec::with_capacity(columns.len());
    let mut image_idx = 0;
    for (col, &is_present) in columns.iter().zip(present) {
        if !is_present {
            out.push(Value::Null);
            continue;
        }
        let is_null = nulls[image_idx / 8] & (1 << (image_idx % 8)) != 0;
        image_idx += 1;
        out.push(if is_null {
            Value::Null
        } else {
            decode_value(r, col)?
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColumnType, meta: [u8; 2], unsigned: bool) -> ColumnFormat {
        ColumnFormat {
            ty,
            meta,
            unsigned,
            codec: Codec::Utf8,
        }
    }

    fn one(bytes: &[u8], c: &ColumnFormat) -> Value {
        let mut r = Reader::new(bytes);
        let v = decode_value(&mut r, c).unwrap();
        assert!(r.is_empty(), "bytes left over");
        v
    }

    #[test]
    fn binary_n_gets_its_zero_padding_back_and_char_n_does_not() {
        // BINARY(4): real type STRING (0xfe), 4 bytes; the event carries 'A' alone.
        let mut binary = col(ColumnType::MYSQL_TYPE_STRING, [0xfe, 4], false);
        binary.codec = Codec::Binary;
        assert_eq!(one(&[1, b'A'], &binary), Value::Bytes(b"A\0\0\0".to_vec()));
        assert_eq!(one(&[0], &binary), Value::Bytes(vec![0; 4]));
        // CHAR(4) drops trailing spaces, which the column does not keep either.
        let text = col(ColumnType::MYSQL_TYPE_STRING, [0xfe, 16], false);
        assert_eq!(one(&[1, b'A'], &text), Value::Text("A".into()));
    }

    #[test]
    fn integers_follow_signedness() {
        let c = col(ColumnType::MYSQL_TYPE_LONGLONG, [0, 0], true);
        assert_eq!(one(&[0xff; 8], &c), Value::UInt(u64::MAX));
        let c = col(ColumnType::MYSQL_TYPE_LONGLONG, [0, 0], false);
        assert_eq!(one(&[0xff; 8], &c), Value::Int(-1));
        let c = col(ColumnType::MYSQL_TYPE_INT24, [0, 0], false);
        assert_eq!(one(&[0x00, 0x00, 0x80], &c), Value::Int(-8_388_608));
    }

    #[test]
    fn decimals_match_the_servers_format() {
        // The worked examples of MySQL's decimal2bin comment.
        let c = col(ColumnType::MYSQL_TYPE_NEWDECIMAL, [14, 4], false);
        let bytes = [0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2];
        assert_eq!(one(&bytes, &c), Value::Decimal("1234567890.1234".into()));
        let negative = bytes.map(|b| !b);
        assert_eq!(
            one(&negative, &c),
            Value::Decimal("-1234567890.1234".into())
        );

        // Random values of many shapes, encoded by the format's definition.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let widths = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
        for _ in 0..5000 {
            let precision = rng.random_range(1..=65usize);
            let scale = rng.random_range(0..=precision.min(30));
            let digits: Vec<u8> = (0..precision).map(|_| rng.random_range(0..10u8)).collect();
            let negative = rng.random_bool(0.5);
            let intg = precision - scale;
            let mut groups: Vec<(u32, usize)> = Vec::new();
            let value = |d: &[u8]| d.iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
            let (int_part, frac_part) = digits.split_at(intg);
            let lead = intg % 9;
            if lead > 0 {
                groups.push((value(&int_part[..lead]), widths[lead]));
            }
            for g in int_part[lead..].chunks(9) {
                groups.push((value(g), 4));
            }
            for g in frac_part.chunks(9) {
                groups.push((value(g), if g.len() == 9 { 4 } else { widths[g.len()] }));
            }
            let mut bytes: Vec<u8> = groups
                .iter()
                .flat_map(|&(v, w)| v.to_be_bytes()[4 - w..].to_vec())
                .collect();
            bytes[0] ^= 0x80;
            if negative {
                bytes.iter_mut().for_each(|b| *b = !*b);
            }
            let text = |d: &[u8]| d.iter().map(|x| char::from(b'0' + x)).collect::<String>();
            let int_text = text(int_part).trim_start_matches('0').to_string();
            let mut want = if int_text.is_empty() {
                "0".to_string()
            } else {
                int_text
            };
            if scale > 0 {
                want = format!("{want}.{}", text(frac_part));
            }
            if negative && digits.iter().any(|&d| d != 0) {
                want = format!("-{want}");
            }
            let c = col(
                ColumnType::MYSQL_TYPE_NEWDECIMAL,
                [precision as u8, scale as u8],
                false,
            );
            assert_eq!(
                one(&bytes, &c),
                Value::Decimal(want.into()),
                "DECIMAL({precision},{scale})"
            );
        }
    }

    #[test]
    fn temporal_values_render_like_the_server() {
        // DATETIME(6) '2024-02-29 13:14:15.123456'
        let packed: i64 = {
            let ym = 2024 * 13 + 2;
            let ymd = (ym << 5) | 29;
            let hms = (13 << 12) | (14 << 6) | 15;
            ((ymd << 17) | hms) + 0x80_0000_0000
        };
        let mut bytes = packed.to_be_bytes()[3..].to_vec();
        bytes.extend_from_slice(&123_456u32.to_be_bytes()[1..]);
        let c = col(ColumnType::MYSQL_TYPE_DATETIME2, [6, 0], false);
        assert_eq!(
            one(&bytes, &c),
            Value::Temporal("2024-02-29 13:14:15.123456".into())
        );
        // TIMESTAMP(0) at the epoch's zero is the zero timestamp.
        let c = col(ColumnType::MYSQL_TYPE_TIMESTAMP2, [0, 0], false);
        assert_eq!(
            one(&[0, 0, 0, 0], &c),
            Value::Temporal("0000-00-00 00:00:00".into())
        );
        assert_eq!(timestamp_text(951_782_400, 0, 0), "2000-02-29 00:00:00");
        // YEAR 0 stays 0000, not 1900.
        let c = col(ColumnType::MYSQL_TYPE_YEAR, [0, 0], true);
        assert_eq!(one(&[0], &c), Value::Year(0));
    }

    #[test]
    fn negative_time2_with_fraction() {
        // '-838:59:59.000000' is the TIME minimum.
        let hms: i64 = (838 << 12) | (59 << 6) | 59;
        let packed = -(hms << 24);
        let stored = (packed + 0x8000_0000_0000) as u64;
        let bytes = &stored.to_be_bytes()[2..];
        let c = col(ColumnType::MYSQL_TYPE_TIME2, [6, 0], false);
        assert_eq!(one(bytes, &c), Value::Temporal("-838:59:59.000000".into()));
    }

    /// Large arrays nested `depth` deep, each holding the next `fanout` times (the same bytes).
    fn nested_arrays(depth: usize, fanout: u32) -> Vec<u8> {
        let header = 8 + 5 * fanout;
        let mut doc = vec![0x03];
        for level in 0..depth {
            let size = header * (depth - level) as u32 + 8;
            doc.extend(fanout.to_le_bytes());
            doc.extend(size.to_le_bytes());
            for _ in 0..fanout {
                doc.push(0x03);
                doc.extend(header.to_le_bytes());
            }
        }
        doc.extend([0u32.to_le_bytes(), 8u32.to_le_bytes()].concat());
        doc
    }

    /// Small objects `{"k": …}` nested `depth` deep around an empty object.
    fn nested_objects(depth: usize) -> Vec<u8> {
        let mut inner: Vec<u8> = vec![0, 0, 4, 0];
        for _ in 0..depth {
            let size = 12 + inner.len() as u16;
            let mut next = 1u16.to_le_bytes().to_vec();
            next.extend(size.to_le_bytes());
            next.extend(11u16.to_le_bytes()); // key at 11, 1 byte
            next.extend(1u16.to_le_bytes());
            next.push(0x00);
            next.extend(12u16.to_le_bytes()); // value at 12
            next.push(b'k');
            next.extend(&inner);
            inner = next;
        }
        [vec![0x00], inner].concat()
    }

    /// Reviewing the decode path while fuzzing it: the JSON conversions recurse once per
    /// nesting level, and a document nested a few hundred deep overflowed a 2 MiB thread stack
    /// (a tokio worker's), aborting the process. MySQL writes at most 100 levels; deeper
    /// documents, and entries sharing one container (an exponential walk), are errors now.
    #[test]
    fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
        let run = |doc: Vec<u8>| {
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || json_text(&doc).map(|t| t.to_string()))
                .unwrap()
                .join()
                .expect("no panic")
        };
        let arrays = run(nested_arrays(100, 1)).unwrap();
        assert_eq!(arrays, format!("{}{}", "[".repeat(101), "]".repeat(101)));
        let objects = run(nested_objects(100)).unwrap();
        assert!(objects.starts_with(r#"{"k":{"k":"#), "{objects}");
        for doc in [
            nested_arrays(MAX_JSON_DEPTH, 1),
            nested_arrays(100_000, 1),
            nested_arrays(40, 2),
        ] {
            assert!(matches!(run(doc), Err(DecodeError::Malformed("JSON", _))));
        }
        assert!(run(nested_objects(MAX_JSON_DEPTH)).is_err());
    }

    /// Found by fuzzing `json_text`: mysql_common's DECIMAL reader, which renders the opaque
    /// DECIMALs of a JSON document, panics on a scale above the precision (`precision -
    /// scale` underflows in `decimal_bin_size`) and on a digit group out of range (an `i32`
    /// overflow). Both are checked first, with rowsync's own decimal reader, which now refuses
    /// such groups in row values too.
    #[test]
    fn malformed_json_decimals_are_errors() {
        // Opaque (0x0f), NEWDECIMAL (246), 2 bytes: precision 0, scale 1.
        assert!(json_text(&[0x0f, 246, 2, 0, 1]).is_err());
        // DECIMAL(1,1) whose one digit group holds 127.
        assert!(json_text(&[0x0f, 246, 3, 1, 1, 0xff]).is_err());
        // The same inside an array: count 1, size 13, opaque entry at offset 7.
        assert!(json_text(&[0x02, 1, 0, 13, 0, 0x0f, 7, 0, 246, 3, 1, 1, 0xff]).is_err());
        // A good one still reads: DECIMAL(1,1) 0.5.
        assert_eq!(json_text(&[0x0f, 246, 3, 1, 1, 0x85]).unwrap(), "0.5");
        let c = col(ColumnType::MYSQL_TYPE_NEWDECIMAL, [1, 1], false);
        assert!(decode_value(&mut Reader::new(&[0xff]), &c).is_err());
    }

    #[test]
    fn truncated_image_is_an_error() {
        let c = col(ColumnType::MYSQL_TYPE_LONG, [0, 0], false);
        let mut r = Reader::new(&[1, 2]);
        assert!(matches!(
            decode_value(&mut r, &c),
            Err(DecodeError::Truncated)
        ));
    }
}

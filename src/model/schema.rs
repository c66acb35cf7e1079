//! What a source table looks like at one point of the stream: its columns (name, binlog
//! format, nullability), its primary key, and how each character column's bytes become text.
//! The source builds these from TABLE_MAP events; everything downstream reads them.

use compact_str::CompactString;
use mysql_common::constants::ColumnType;

use super::name::TableName;

/// One column of a source table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    pub name: String,
    pub format: ColumnFormat,
    pub nullable: bool,
}

/// A source table's columns and primary key, as of one TABLE_MAP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub name: TableName,
    pub columns: Vec<ColumnSchema>,
    /// Indexes into `columns`, in key order.
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    pub fn formats(&self) -> Vec<ColumnFormat> {
        self.columns.iter().map(|c| c.format.clone()).collect()
    }
}

/// What the decoder needs to know about one column, precomputed once per TABLE_MAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnFormat {
    pub ty: ColumnType,
    /// Type metadata from the TABLE_MAP (length, precision, fsp, ...), real type resolved.
    pub meta: [u8; 2],
    pub unsigned: bool,
    pub codec: Codec,
}

/// How the bytes of a character column become text.
///
/// Every charset whose bytes map to Unicode one way is decoded to text, in the stream as in
/// the copy (where the server converts to the session's utf8mb4 by the same tables), so a row
/// filter sees the same text in both and a replica column of any charset gets it back by the
/// server's conversion. Charsets without a decoder here (armscii8, cp850, swe7, …) are carried
/// as raw bytes, which a replica column of the same charset stores unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// utf8mb4, utf8mb3 (a subset) and ascii: the bytes are UTF-8 already.
    Utf8,
    /// A single- or multi-byte legacy charset or UTF-16, by its WHATWG decoder. MySQL's latin1
    /// is Windows-1252 with the five undefined bytes mapped to C1 controls — exactly what the
    /// WHATWG windows-1252 decoder does.
    Encoded(&'static encoding_rs::Encoding),
    /// utf32: four big-endian bytes per code point (no WHATWG decoder exists).
    Utf32,
    /// The binary charset (BINARY, VARBINARY, BLOB): bytes that compare as bytes.
    Binary,
    /// A charset carried as raw bytes (the replica column has the same charset).
    Raw,
}

impl Codec {
    pub fn for_charset(name: &str) -> Codec {
        use encoding_rs::*;
        let encoding = match name {
            "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => return Codec::Utf8,
            "utf32" => return Codec::Utf32,
            "binary" => return Codec::Binary,
            "latin1" => WINDOWS_1252,
            "latin2" => ISO_8859_2,
            "latin5" => WINDOWS_1254,
            "latin7" => ISO_8859_13,
            "greek" => ISO_8859_7,
            "hebrew" => ISO_8859_8,
            "cp1250" => WINDOWS_1250,
            "cp1251" => WINDOWS_1251,
            "cp1256" => WINDOWS_1256,
            "cp1257" => WINDOWS_1257,
            "cp866" => IBM866,
            "koi8r" => KOI8_R,
            "koi8u" => KOI8_U,
            "macroman" => MACINTOSH,
            "tis620" => WINDOWS_874,
            "gbk" | "gb2312" => GBK,
            "gb18030" => GB18030,
            "big5" => BIG5,
            "sjis" | "cp932" => SHIFT_JIS,
            "ujis" | "eucjpms" => EUC_JP,
            "euckr" => EUC_KR,
            "utf16" | "ucs2" => UTF_16BE,
            "utf16le" => UTF_16LE,
            _ => return Codec::Raw,
        };
        Codec::Encoded(encoding)
    }

    /// Text for `bytes`, or `None` to carry them as bytes (also when they are not valid in
    /// the charset: nothing is replaced).
    pub fn decode(&self, bytes: &[u8]) -> Option<CompactString> {
        match self {
            Codec::Utf8 => CompactString::from_utf8(bytes).ok(),
            Codec::Encoded(encoding) => encoding
                .decode_without_bom_handling_and_without_replacement(bytes)
                .map(CompactString::from),
            Codec::Utf32 => {
                if !bytes.len().is_multiple_of(4) {
                    return None;
                }
                bytes
                    .chunks_exact(4)
                    .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect::<Option<String>>()
                    .map(CompactString::from)
            }
            Codec::Binary | Codec::Raw => None,
        }
    }
}

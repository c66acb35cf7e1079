//! Character sets of source columns: which collation ids belong to which charset, and how to
//! turn a column's bytes into text.
//!
//! The id → charset table comes from the source server itself (`information_schema`), since
//! MariaDB and MySQL number their collations differently and MariaDB 11 adds ids above 255.

use std::collections::HashMap;

use compact_str::CompactString;

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
    /// binary, or a charset carried as raw bytes (the replica column has the same charset).
    Raw,
}

impl Codec {
    pub fn for_charset(name: &str) -> Codec {
        use encoding_rs::*;
        let encoding = match name {
            "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => return Codec::Utf8,
            "utf32" => return Codec::Utf32,
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
            Codec::Raw => None,
        }
    }
}

/// Collation id → charset name, as the source server reports them.
#[derive(Debug, Clone, Default)]
pub struct Charsets {
    by_id: HashMap<u16, String>,
}

impl Charsets {
    pub fn new(pairs: impl IntoIterator<Item = (u16, String)>) -> Self {
        Charsets {
            by_id: pairs.into_iter().collect(),
        }
    }

    /// The codec for collation `id`; 63 is `binary`. Unknown ids are carried raw.
    pub fn codec(&self, id: u16) -> Codec {
        if id == 63 {
            return Codec::Raw;
        }
        self.by_id
            .get(&id)
            .map(|name| Codec::for_charset(name))
            .unwrap_or(Codec::Raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_maps_like_mysql() {
        let latin1 = Codec::for_charset("latin1");
        assert_eq!(latin1.decode(b"caf\xe9").unwrap(), "café");
        assert_eq!(latin1.decode(b"\x80").unwrap(), "€");
        assert_eq!(latin1.decode(b"\x81").unwrap(), "\u{81}");
    }

    #[test]
    fn legacy_and_wide_charsets_decode_to_text() {
        let text = |cs: &str, b: &[u8]| Codec::for_charset(cs).decode(b);
        assert_eq!(
            text("cp1251", b"\xcf\xf0\xe8\xe2\xe5\xf2").unwrap(),
            "Привет"
        );
        assert_eq!(text("latin2", b"\xb1").unwrap(), "ą");
        assert_eq!(text("gbk", b"\xc4\xe3\xba\xc3").unwrap(), "你好");
        assert_eq!(text("utf16", b"\x00A\xd8\x3d\xde\x00").unwrap(), "A😀");
        assert_eq!(text("utf32", b"\x00\x01\xf6\x00").unwrap(), "😀");
        // Bytes that are not text in the charset stay bytes rather than be replaced.
        assert_eq!(text("gbk", b"\x81"), None);
        assert_eq!(text("utf16", b"\xd8\x3d"), None);
        assert_eq!(Codec::for_charset("armscii8"), Codec::Raw);
    }

    #[test]
    fn unknown_collations_stay_raw() {
        let cs = Charsets::new([(45, "utf8mb4".to_string()), (8, "latin1".into())]);
        assert_eq!(cs.codec(45), Codec::Utf8);
        assert_eq!(cs.codec(8), Codec::for_charset("latin1"));
        assert_eq!(cs.codec(63), Codec::Raw);
        assert_eq!(cs.codec(9999), Codec::Raw);
    }
}

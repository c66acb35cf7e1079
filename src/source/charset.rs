//! Character sets of source columns: which collation ids belong to which charset, and how to
//! turn a column's bytes into text.
//!
//! The id → charset table comes from the source server itself (`information_schema`), since
//! MariaDB and MySQL number their collations differently and MariaDB 11 adds ids above 255.

use std::collections::HashMap;

use crate::model::schema::Codec;

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
            return Codec::Binary;
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
        assert_eq!(cs.codec(63), Codec::Binary);
        assert_eq!(cs.codec(9999), Codec::Raw);
    }
}

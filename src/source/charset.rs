//! Character sets of source columns: which collation ids belong to which charset, and how to
//! turn a column's bytes into text.
//!
//! The id → charset table comes from the source server itself (`information_schema`), since
//! MariaDB and MySQL number their collations differently and MariaDB 11 adds ids above 255.

use std::collections::HashMap;

use compact_str::CompactString;

/// How the bytes of a character column become text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// utf8mb4, utf8mb3 (a subset) and ascii: the bytes are UTF-8 already.
    Utf8,
    /// MySQL's latin1, which is Windows-1252 with the five undefined bytes mapped to C1
    /// controls — exactly what the WHATWG windows-1252 decoder does.
    Latin1,
    /// binary, or a charset we carry as raw bytes (the replica column has the same charset).
    Raw,
}

impl Codec {
    pub fn for_charset(name: &str) -> Codec {
        match name {
            "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => Codec::Utf8,
            "latin1" => Codec::Latin1,
            _ => Codec::Raw,
        }
    }

    /// Text for `bytes`, or `None` to carry them as bytes.
    pub fn decode(&self, bytes: &[u8]) -> Option<CompactString> {
        match self {
            Codec::Utf8 => CompactString::from_utf8(bytes).ok(),
            Codec::Latin1 => {
                let (text, _, had_errors) = encoding_rs::WINDOWS_1252.decode(bytes);
                (!had_errors).then(|| CompactString::from(text))
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
        assert_eq!(Codec::Latin1.decode(b"caf\xe9").unwrap(), "café");
        assert_eq!(Codec::Latin1.decode(b"\x80").unwrap(), "€");
        assert_eq!(Codec::Latin1.decode(b"\x81").unwrap(), "\u{81}");
    }

    #[test]
    fn unknown_collations_stay_raw() {
        let cs = Charsets::new([(45, "utf8mb4".to_string()), (8, "latin1".into())]);
        assert_eq!(cs.codec(45), Codec::Utf8);
        assert_eq!(cs.codec(8), Codec::Latin1);
        assert_eq!(cs.codec(63), Codec::Raw);
        assert_eq!(cs.codec(9999), Codec::Raw);
    }
}

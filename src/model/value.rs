//! Typed column values, as the source row held them (see `source::value` for the decoder), and
//! the text form of a primary key kept with copy progress.

use compact_str::CompactString;
use serde_json::{json, Value as Json};

/// One column value as it was in the source row.
///
/// Text-like values are `CompactString`s: up to 24 bytes live inline, so a typical row (short
/// codes, names, prices, dates) costs one allocation instead of one per column — on a busy
/// stream the allocator was the reader's biggest cost.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// Exact decimal text, e.g. `-12.340`.
    Decimal(CompactString),
    /// DATE, TIME, DATETIME or TIMESTAMP (in UTC) as the server prints it.
    Temporal(CompactString),
    Year(u16),
    Bit(u64),
    /// ENUM member index (1-based; 0 is the empty error value).
    Enum(u16),
    /// SET members as a bitmask.
    Set(u64),
    /// Character data decoded from its column charset.
    Text(CompactString),
    /// Binary data, or character data in a charset we do not transcode.
    Bytes(Vec<u8>),
    /// JSON document text.
    Json(CompactString),
}

impl Value {
    /// Approximate memory and wire size, for batching limits.
    pub fn size_hint(&self) -> usize {
        match self {
            Value::Decimal(s) | Value::Temporal(s) | Value::Text(s) | Value::Json(s) => s.len() + 4,
            Value::Bytes(b) => b.len() + 4,
            _ => 9,
        }
    }
}

/// A stored key that `decode_key` cannot read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable copy key `{0}`")]
pub struct BadKey(pub String);

/// A key as JSON text, for `rowsync_copy.last_key`.
pub fn encode_key(key: &[Value]) -> String {
    let items: Vec<Json> = key
        .iter()
        .map(|v| match v {
            Value::Null => Json::Null,
            Value::Int(i) => json!(i),
            Value::UInt(u) | Value::Bit(u) | Value::Set(u) => json!(u),
            Value::Year(y) | Value::Enum(y) => json!(y),
            Value::Float(f) => json!(f),
            Value::Double(d) => json!(d),
            Value::Decimal(s) | Value::Temporal(s) | Value::Text(s) | Value::Json(s) => {
                json!({ "s": s.as_str() })
            }
            Value::Bytes(b) => {
                json!({ "b": b.iter().map(|x| format!("{x:02x}")).collect::<String>() })
            }
        })
        .collect();
    Json::Array(items).to_string()
}

/// The key back from `encode_key`, as values good for binding.
pub fn decode_key(text: &str) -> Result<Vec<Value>, BadKey> {
    let bad = || BadKey(text.to_owned());
    let Json::Array(items) = serde_json::from_str(text).map_err(|_| bad())? else {
        return Err(bad());
    };
    items
        .iter()
        .map(|item| {
            Ok(match item {
                Json::Null => Value::Null,
                Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => Value::Int(i),
                    (_, Some(u), _) => Value::UInt(u),
                    (_, _, Some(f)) => Value::Double(f),
                    _ => return Err(bad()),
                },
                Json::Object(o) => match (o.get("s"), o.get("b")) {
                    (Some(Json::String(s)), _) => Value::Text(s.into()),
                    (_, Some(Json::String(h))) => Value::Bytes(
                        (0..h.len())
                            .step_by(2)
                            .map(|i| {
                                u8::from_str_radix(h.get(i..i + 2).unwrap_or("zz"), 16)
                                    .map_err(|_| bad())
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => return Err(bad()),
                },
                _ => return Err(bad()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_json() {
        let key = vec![
            Value::Int(-5),
            Value::UInt(u64::MAX),
            Value::Text("a\"b".into()),
            Value::Bytes(vec![0, 255, 16]),
            Value::Null,
        ];
        let back = decode_key(&encode_key(&key)).unwrap();
        assert_eq!(back, key);
        assert!(decode_key("not json").is_err());
        assert!(decode_key("[{\"b\": \"zz\"}]").is_err());
    }
}

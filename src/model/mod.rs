//! The leaf of the crate: the types every other layer speaks in, with no I/O and no import
//! of any other rowsync module. Names and identifier quoting (`name`), column values
//! (`value`), table schemas and definitions (`schema`, `definition`), binlog positions, GTID
//! sets, checkpoints and floors (`position`), the events the reader emits (`event`), row
//! filters (`filter`), the lifecycle state of a table on a target (`table`), the session
//! settings of every connection (`sql`) and the class of an error (`ErrorClass`).

/// Serializes types with a text form (`Display` + `FromStr` that round-trip) as that text.
macro_rules! serde_as_text {
    ($($ty:ty),*) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
pub(crate) use serde_as_text;

pub mod definition;
pub mod event;
pub mod filter;
pub mod name;
pub mod position;
pub mod schema;
pub mod sql;
pub mod table;
pub mod value;

pub use name::{quote_ident, TableName, TablePattern};
pub use position::Checkpoint;
pub use table::TableState;
pub use value::Value;

/// The text of a caught panic's payload (a bug's message, for the status and the log).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Whether an error can heal by waiting and retrying (a network cut, a deadlock, a server
/// restarting) or not (a purged binlog, a constraint the replica rejects, a bad setting).
/// Kept from the error's origin up to the status, where operators and alerts read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Transient,
    Definite,
}

impl ErrorClass {
    pub fn of(retryable: bool) -> ErrorClass {
        if retryable {
            ErrorClass::Transient
        } else {
            ErrorClass::Definite
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Definite => "definite",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

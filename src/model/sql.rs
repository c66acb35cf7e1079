//! The session settings every rowsync connection runs with, source or target: UTC, an
//! `sql_mode` that accepts every value the source holds, and utf8mb4.

/// `sql_mode` for rowsync sessions. Not strict: the source may hold values its own (possibly
/// non-strict) sessions wrote — zero and partial dates, the empty ENUM error value — and a
/// replica must take them as they are, as native row replication does. Replica columns have
/// the source's types (checked or created by rowsync), so nothing is truncated. A stored 0
/// in an AUTO_INCREMENT column stays 0.
pub const SESSION_SQL_MODE: &str =
    "ALLOW_INVALID_DATES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION";

/// Statements run on every new rowsync session, source or target.
pub fn session_init() -> Vec<String> {
    vec![
        "SET time_zone = '+00:00'".into(),
        format!("SET sql_mode = '{SESSION_SQL_MODE}'"),
        "SET NAMES utf8mb4".into(),
    ]
}

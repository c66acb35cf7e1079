//! rowsync keeps read-only copies of one service's tables inside other services' databases,
//! by tailing the source's binlog as a replica does and applying every change exactly once.
//!
//! # Layout
//! Layers, each importing only the ones before it (`grep -rn "use crate::" src/` shows it):
//! 1. `model`: the leaf. Names and quoting, values, schemas and definitions, positions, GTID
//!    sets, checkpoints and floors, the events, row filters, table states, error classes. It
//!    imports nothing of the crate.
//! 2. `config`: the TOML configuration, parsed once into model types (patterns, filters, the
//!    start position) and validated.
//! 3. `routing`: which source tables go to which replica table of which target, with which
//!    columns and rows (`mapping`), and what each replica must hold (`replicas`). Imports the
//!    model and the configuration.
//! 4. `source` (binlog reader, source catalog, snapshots for copies, range checksums) and
//!    `sink` (target writes, replica tables, checkpoints, the target's lock and its fence,
//!    verify results). Neither knows the other: the sink never opens a
//!    source connection; what it needs from the source (a table's definition) it is given by
//!    its caller, and it reports progress through `sink::Observer`.
//! 5. `engine`: the only module that joins source and sink. It owns the lifecycles: per target
//!    the run loop (stand by until the target's lock is this process's, prepare, resolve the
//!    start, stream), the initial copy and re-copies, verify and repair (and their schedule),
//!    and the live status. `Engine::start(config)` returns a `Handle` with every target's status
//!    and a command sender (pause, resume, re-copy, reload as a diff).
//! 6. `state` (the local SQLite store of what the daemon saw) and `commands` (`run`, `check`,
//!    `status`, `resync`, `verify`, `demo`, `bench`): they drive the engine or read the
//!    stores. `main.rs` is the command line only. `local` starts throwaway MariaDB servers for
//!    the demo, the bench and the tests.
//! 7. `admin`: the HTTP API, web UI and metrics, on the engine's handle; only `main.rs`
//!    imports it and hands it to `run` and `demo`.

pub mod admin;
pub mod commands;
pub mod config;
pub mod engine;
pub mod local;
pub mod model;
pub mod routing;
pub mod sink;
pub mod source;
pub mod state;

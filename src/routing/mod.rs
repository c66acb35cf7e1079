//! Routing: which source tables go where, under what name, with which columns and rows
//! (`mapping`), and what each replica table must hold, compared with what it does
//! (`replicas`). Pure decisions over the configuration and model types; no I/O.

pub mod mapping;
pub mod replicas;

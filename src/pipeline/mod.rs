//! The middle of the data flow: which source tables go where (`mapping`) and which of their
//! rows (`filter`), the per-target pipelines that join a binlog reader to a target writer
//! (`runner`), what each replica table holds (`replicas`), and their live state (`status`), which observers read but never change.

pub mod filter;
pub mod mapping;
pub mod replicas;
pub mod runner;
pub mod status;

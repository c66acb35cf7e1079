//! `rowsync resync`: re-copies one table into one target (see `engine::recopy`), through the
//! running daemon when there is one.

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::recopy::{self, Recopied};
use crate::engine::target::TargetSpec;
use crate::model::name::TableName;

/// Re-copies `table` (`db.table`) into target `target_name`; `None` when cancelled.
pub async fn run(
    config: &Config,
    target_name: &str,
    table: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<Recopied>> {
    let Some(spec) = TargetSpec::all(config)
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(target_name))
    else {
        bail!(
            "there is no target `{target_name}` in {}",
            config.path.display()
        );
    };
    let (db, name) = table
        .split_once('.')
        .with_context(|| format!("`{table}` is not of the form db.table"))?;
    let table = TableName::new(db, name);
    Ok(recopy::run(&spec, &table, cancel).await?)
}

//! `rowsync resync`: re-copies one table into one target, e.g. after a DDL the replica could
//! not follow ("needs re-copy") or when a replica has drifted.
//!
//! The table is marked `copying`, copied from a consistent snapshot (chunks committed with
//! their progress, so an interrupted re-copy resumes), then marked `catching_up` from the
//! snapshot's position: the next stream of that target applies the table's changes after that
//! position, exactly once, while every other table goes on from the target's checkpoint.
//! A `rowsync run` working on the target holds its lock; the re-copy waits for it briefly and
//! otherwise asks to stop it first (the running daemon will take re-copy commands through
//! the admin API).

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pipeline::mapping::Router;
use crate::pipeline::status::TargetStatus;
use crate::sink::copy::{self, CopyJob};
use crate::sink::{checkpoint, replica, target};
use crate::source::conn::{connect, source_opts};
use crate::source::info::SourceInfo;
use crate::source::schema::TableName;

/// What a finished re-copy did.
#[derive(Debug)]
pub struct Resynced {
    pub rows: u64,
    pub floor: String,
}

/// Re-copies `table` (`db.table`) into target `target_name`; `None` when cancelled.
pub async fn run(
    config: &Config,
    target_name: &str,
    table: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<Resynced>> {
    let Some(target) = config
        .targets
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(target_name))
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
    let router = Router::for_target(config, &target.name);
    if !router.selects(&table) {
        bail!("no mapping sends {table} to target `{}`", target.name);
    }
    let opts = source_opts(&config.source.url, config.source.tls.as_ref())?;
    let mut conn = target::connect(target).await?;
    checkpoint::ensure_tables(&mut conn).await?;
    checkpoint::lock_target(&mut conn, &config.pipeline, &target.name)
        .await
        .context("stop `rowsync run` for this target first")?;
    if checkpoint::load(&mut conn, &config.pipeline)
        .await?
        .is_none()
    {
        bail!(
            "target `{}` has not started yet; its first `rowsync run` copies every table",
            target.name
        );
    }
    let mut src = connect(&opts).await?;
    let info = SourceInfo::read(&mut src).await?;
    for mapping in router.mappings_for(&table) {
        replica::ensure_replica(&mut src, &mut conn, mapping, &table).await?;
    }
    drop(src);
    let status = TargetStatus::new(&target.name);
    let skip = Default::default();
    let job = CopyJob {
        pipeline: &config.pipeline,
        source: &opts,
        info: &info,
        router: &router,
        skip: &skip,
        target,
        chunk_rows: config.copy.chunk_rows,
        parallel_tables: 1,
        batch_rows: config.apply.batch_rows,
        status: &status,
        cancel,
    };
    let Some(floor) = copy::recopy(&mut conn, &job, &table).await? else {
        return Ok(None);
    };
    let rows = status.snapshot().copy.iter().map(|p| p.rows_copied).sum();
    Ok(Some(Resynced {
        rows,
        floor: floor.position.to_string(),
    }))
}

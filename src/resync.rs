//! `rowsync resync`: re-copies one table into one target, e.g. after a DDL the replica could
//! not follow ("needs re-copy") or when a replica has drifted.
//!
//! The table is marked `copying`, copied from a consistent snapshot (chunks committed with
//! their progress, so an interrupted re-copy resumes), then marked `catching_up` from the
//! snapshot's position: the target's stream applies the table's changes after that position,
//! exactly once, while every other table goes on from the target's checkpoint.
//!
//! Without a `rowsync run` on the target, this command copies the table itself (holding the
//! target's lock) and the next run catches it up. While `rowsync run` works on the target, the
//! command leaves a request in the target; the daemon stops applying the table at a
//! transaction boundary, copies it while the other tables keep streaming, restarts its stream
//! from the floors, and this command reports when the copy is done.

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pipeline::mapping::Router;
use crate::pipeline::status::TargetStatus;
use crate::sink::checkpoint::TableState;
use crate::sink::copy::{self, CopyJob};
use crate::sink::{checkpoint, target};
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
    if checkpoint::lock_target(&mut conn, &config.pipeline, &target.name, 0)
        .await
        .is_err()
    {
        // `rowsync run` works on the target: it carries the re-copy out, streaming on.
        return ask_the_daemon(&mut conn, config, &table, cancel).await;
    }
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
    drop(src);
    // The copy makes the table's replicas that are missing or no longer fit.
    let status = TargetStatus::new(&target.name);
    let skip = Default::default();
    let job = CopyJob {
        pipeline: &config.pipeline,
        source: &opts,
        info: &info,
        router: &router,
        skip: &skip,
        target,
        copy: &config.copy,
        batch_rows: config.apply.batch_rows,
        status: &status,
        cancel,
    };
    let floor = match copy::recopy(&mut conn, &job, &table).await? {
        copy::Recopy::Done(floor) => floor,
        copy::Recopy::Cancelled => return Ok(None),
        copy::Recopy::Stopped(reason) => bail!("{table} cannot be copied: {reason}"),
    };
    let rows = status.snapshot().copy.iter().map(|p| p.rows_copied).sum();
    Ok(Some(Resynced {
        rows,
        floor: floor.position.to_string(),
    }))
}

/// Asks the running `rowsync run` to re-copy `table` and waits until it has.
async fn ask_the_daemon(
    conn: &mut sqlx::mysql::MySqlConnection,
    config: &Config,
    table: &TableName,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<Resynced>> {
    checkpoint::mark_table(
        conn,
        &config.pipeline,
        table,
        TableState::RecopyRequested,
        None,
        "asked for by `rowsync resync`",
    )
    .await?;
    let mut last = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
        }
        let state = checkpoint::table_state(conn, &config.pipeline, table).await?;
        if state != last {
            last = state;
            let shown = state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "streaming".into());
            tracing::info!(table = %table, state = %shown, "re-copy by the running daemon");
        }
        match state {
            Some(TableState::RecopyRequested) | Some(TableState::Copying) => continue,
            // Copied; the daemon's stream catches the table up (or already has).
            Some(TableState::CatchingUp) | None => {
                let rows = checkpoint::copy_progress(conn, &config.pipeline)
                    .await?
                    .into_iter()
                    .find(|p| &p.table == table)
                    .map(|p| p.rows_copied)
                    .unwrap_or(0);
                let floor = checkpoint::table_floors(conn, &config.pipeline)
                    .await?
                    .into_iter()
                    .find(|f| &f.table == table)
                    .and_then(|f| f.position)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "its snapshot (already caught up)".into());
                return Ok(Some(Resynced { rows, floor }));
            }
            Some(other @ TableState::NeedsRecopy) => {
                bail!("the re-copy of {table} ended in state `{other}`; see `rowsync status`")
            }
        }
    }
}

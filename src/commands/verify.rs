//! `rowsync verify`: compares each target's replica tables with the source while replication
//! runs, and with `--repair` rewrites the rows that differ (see `engine::verify`).
//!
//! Exit status: 0 when nothing differs (any more, after a repair), 1 when rows differ, 2
//! when verify could not finish (a table skipped, a server unreachable).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::target::TargetSpec;
use crate::engine::verify::{self, Progress, TableReport, VerifyRequest};
use crate::model::name::TableName;

/// What `rowsync verify` was asked.
pub struct Options {
    pub target: Option<String>,
    pub table: Option<String>,
    pub repair: bool,
    pub json: bool,
    /// Overrides `[verify] rows_per_second`.
    pub rows_per_second: Option<u64>,
}

#[derive(Serialize)]
struct Output<'a> {
    tables: &'a [TableReport],
    errors: &'a [TargetError],
    differing: u64,
    repaired: u64,
}

#[derive(Serialize)]
struct TargetError {
    target: String,
    error: String,
}

/// Runs verify over the chosen targets, prints the result, and says how to exit.
pub async fn run(
    config: &Config,
    options: &Options,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let specs: Vec<TargetSpec> = TargetSpec::all(config)
        .into_iter()
        .filter(|s| {
            options
                .target
                .as_deref()
                .is_none_or(|t| s.name().eq_ignore_ascii_case(t))
        })
        .collect();
    if specs.is_empty() {
        bail!(
            "there is no target `{}` in {}",
            options.target.as_deref().unwrap_or_default(),
            config.path.display()
        );
    }
    let table: Option<TableName> = options
        .table
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mut settings = config.verify.clone();
    if let Some(rate) = options.rows_per_second {
        settings.rows_per_second = rate.max(1);
    }
    let request = VerifyRequest {
        table: table.as_ref(),
        repair: options.repair,
        settings: &settings,
        scheduled: false,
        cancel,
    };
    let bars = Bars::new(!options.json && std::io::stderr().is_terminal());
    let mut tables = Vec::new();
    let mut errors = Vec::new();
    for spec in &specs {
        match verify::verify_target(spec, &request, &|p| bars.show(p)).await {
            Ok(reports) => tables.extend(reports),
            // `--table` names a table some targets do not get: not theirs to verify.
            Err(verify::VerifyError::NotSelected { .. }) if options.target.is_none() => {}
            Err(e) => errors.push(TargetError {
                target: spec.name().to_owned(),
                error: e.to_string(),
            }),
        }
    }
    bars.finish();
    if let (Some(t), true) = (&table, tables.is_empty() && errors.is_empty()) {
        bail!("no mapping sends {t} to any target");
    }
    let differing = tables.iter().map(TableReport::remaining).sum();
    let repaired = tables.iter().map(|t| t.repaired).sum();
    if options.json {
        let out = Output {
            tables: &tables,
            errors: &errors,
            differing,
            repaired,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&tables, &errors));
    }
    let unfinished = !errors.is_empty()
        || cancel.is_cancelled()
        || tables.iter().any(|t| t.skipped.is_some() || !t.complete);
    Ok(if differing > 0 {
        ExitCode::from(1)
    } else if unfinished {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The human-readable report.
fn render(tables: &[TableReport], errors: &[TargetError]) -> String {
    let mut out = String::new();
    for t in tables {
        let head = format!("{} {} -> {}", t.target, t.source, t.replica);
        if let Some(reason) = &t.skipped {
            out.push_str(&format!("{head}: skipped: {reason}\n"));
            continue;
        }
        let verdict = match (t.differing, t.remaining()) {
            (0, _) => "equal".to_owned(),
            (d, 0) => format!("{d} rows differed, all repaired"),
            (d, r) if r < d => format!("{d} rows differ, {} repaired, {r} still differ", d - r),
            (d, _) => format!("{d} rows differ"),
        };
        let partial = if t.complete { "" } else { " (interrupted)" };
        out.push_str(&format!(
            "{head}: {} rows in {} chunks{partial}: {verdict}\n",
            t.rows, t.chunks
        ));
        for r in &t.ranges {
            out.push_str(&format!(
                "  keys after {} up to {}: {} rows differ\n",
                r.after.as_deref().unwrap_or("(start)"),
                r.upto.as_deref().unwrap_or("(end)"),
                r.rows
            ));
        }
        for k in &t.keys {
            let what = match k.difference {
                verify::Difference::Missing => "missing in the replica",
                verify::Difference::Extra => "extra in the replica",
                verify::Difference::Different => "different values",
            };
            out.push_str(&format!("    key {}: {what}\n", k.key));
        }
        if (t.keys.len() as u64) < t.differing {
            out.push_str(&format!(
                "    … and {} more keys\n",
                t.differing - t.keys.len() as u64
            ));
        }
    }
    for e in errors {
        out.push_str(&format!("{}: verify failed: {}\n", e.target, e.error));
    }
    out
}

/// A progress bar for the table being compared, on a terminal; a finished table's bar stays.
struct Bars {
    enabled: bool,
    current: Mutex<Option<(String, ProgressBar)>>,
}

impl Bars {
    fn new(enabled: bool) -> Self {
        Bars {
            enabled,
            current: Mutex::new(None),
        }
    }

    fn show(&self, p: Progress<'_>) {
        if !self.enabled {
            return;
        }
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        let name = format!("{} {}", p.target, p.table);
        if current.as_ref().is_none_or(|(n, _)| *n != name) {
            if let Some((_, old)) = current.take() {
                old.finish();
            }
            let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{prefix:>30} [{bar:40}] {pos}/~{len} rows {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name.clone());
            *current = Some((name, bar));
        }
        if let Some((_, bar)) = current.as_ref() {
            bar.set_length(p.estimate.max(p.rows).max(1));
            bar.set_position(p.rows);
        }
    }

    fn finish(&self) {
        if let Ok(mut current) = self.current.lock() {
            if let Some((_, bar)) = current.take() {
                bar.finish();
            }
        }
    }
}

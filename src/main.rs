//! The `rowsync` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use rowsync::config::Config;
use rowsync::pipeline::runner;
use rowsync::pipeline::status::TargetStatus;
use rowsync::state::StateStore;

// Rows are decoded on the reader's thread and freed on the writer's: glibc malloc serializes
// those cross-thread frees on its arena locks (a third of the reader's time, by perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rowsync",
    version,
    about = "Replicates selected MySQL/MariaDB tables into other databases from the binlog, exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream the source's changes into every target until SIGTERM/SIGINT.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check the configuration, the source's settings and grants, and the targets.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print each target's checkpoint and lag, then exit.
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Re-copy one table into one target (the stream then catches it up exactly).
    Resync {
        #[arg(long, short)]
        config: PathBuf,
        /// Target name, as in [[targets]].
        #[arg(long)]
        target: String,
        /// Source table, as db.table.
        #[arg(long)]
        table: String,
    },
    /// Measure rowsync beside MariaDB replication, mariadb-binlog and mariadb-dump on local servers.
    Bench(rowsync::bench::BenchOptions),
    /// Start local MariaDB servers with a product workload and replicate it, until Ctrl-C.
    Demo {
        /// Stop by itself after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; only warnings and errors go to the log there.
    let default_level = match cli.command {
        Command::Demo { .. } | Command::Bench(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROWSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config: path } => {
            let config = Config::load(&path)?;
            run(path, config).await
        }
        Command::Check { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    println!("FAIL {e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            println!("ok   configuration {} is valid", config.path.display());
            let report = rowsync::check::run(&config).await;
            for f in &report.findings {
                println!("{f}");
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Resync {
            config,
            target,
            table,
        } => {
            let config = Config::load(&config)?;
            let cancel = CancellationToken::new();
            let stop = cancel.clone();
            tokio::spawn(async move {
                rowsync::shutdown_signal().await;
                stop.cancel();
            });
            match rowsync::resync::run(&config, &target, &table, &cancel).await? {
                Some(done) => {
                    println!(
                        "re-copied {table} into target `{target}`: {} rows; the stream catches it up from {}",
                        done.rows, done.floor
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    println!("re-copy interrupted; run the same command again to resume it");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Bench(options) => {
            let report = rowsync::bench::run(options).await?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { seconds } => {
            rowsync::demo::run(seconds.map(Duration::from_secs)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config } => {
            let config = Config::load(&config)?;
            let (head, targets) = rowsync::report::collect(&config)
                .await
                .context("reading the source")?;
            print!("{}", rowsync::report::render(&head, &targets));
            let path = config.state_path();
            if path.exists() {
                let stored = StateStore::open(&path)
                    .await?
                    .load(&config.pipeline)
                    .await?;
                print!("{}", rowsync::report::render_daemon(&stored));
            }
            Ok(if targets.iter().all(|t| t.error.is_none()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn run(path: PathBuf, config: Config) -> anyhow::Result<ExitCode> {
    let cancel = CancellationToken::new();
    let signals = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            rowsync::shutdown_signal().await;
            tracing::info!("shutting down: finishing or rolling back open target transactions");
            cancel.cancel();
        })
    };
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut config = Arc::new(config);
    loop {
        // One generation per configuration; SIGHUP ends it at transaction boundaries.
        let generation = cancel.child_token();
        let statuses = TargetStatus::for_targets(&config);
        let reporter = tokio::spawn(report(config.clone(), statuses.clone(), generation.clone()));
        let bars = tokio::spawn(rowsync::progress::show(
            statuses.clone(),
            generation.clone(),
        ));
        let pipelines = runner::run_all(config.clone(), statuses, generation.clone());
        tokio::pin!(pipelines);
        let reloaded = loop {
            tokio::select! {
                _ = &mut pipelines => break None,
                _ = hangup.recv() => match Config::load(&path) {
                    Ok(new) => break Some(new),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the running one"),
                },
            }
        };
        if reloaded.is_some() {
            tracing::info!("SIGHUP: reloading {}", path.display());
            generation.cancel();
            pipelines.await;
        }
        generation.cancel();
        let _ = reporter.await?;
        let _ = bars.await;
        match reloaded {
            Some(new) => config = Arc::new(new),
            None => break,
        }
    }
    signals.abort();
    Ok(ExitCode::SUCCESS)
}

/// Records each target's state every second and logs progress every ten, until `stop`.
async fn report(
    config: Arc<Config>,
    statuses: Vec<Arc<TargetStatus>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let store = StateStore::open(&config.state_path()).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        n += 1;
        for s in &statuses {
            let snap = s.snapshot();
            if let Err(e) = store.save(&config.pipeline, &snap).await {
                tracing::warn!(error = %e, "cannot record target state");
            }
            if last || !n.is_multiple_of(10) {
                continue;
            }
            let copied: u64 = snap.copy.iter().map(|p| p.rows_copied).sum();
            let estimated: u64 = snap.copy.iter().map(|p| p.rows_estimated).sum();
            tracing::info!(
                target = %snap.target,
                state = ?snap.state,
                copied,
                estimated,
                position = %snap.checkpoint.as_ref().map(|c| c.position.to_string()).unwrap_or_default(),
                lag_secs = ?snap.lag_secs(),
                rows = snap.rows_applied,
                transactions = snap.transactions_applied,
                "progress"
            );
        }
        if last {
            return Ok(());
        }
    }
}

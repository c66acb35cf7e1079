//! The `rowsync` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use futures_util::future::BoxFuture;
use rowsync::commands;
use rowsync::config::Config;
use rowsync::engine::Handle;
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
    /// Compare every replica table with the source while replication runs; exit 0 only when
    /// nothing differs (1: rows differ, 2: not everything could be compared).
    Verify {
        #[arg(long, short)]
        config: PathBuf,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Only this source table, as db.table.
        #[arg(long)]
        table: Option<String>,
        /// Rewrite the rows that differ from the source (consistently with the stream).
        #[arg(long)]
        repair: bool,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: OutputFormat,
        /// Most source rows read per second (default: [verify] rows_per_second).
        #[arg(long)]
        rows_per_second: Option<u64>,
    },
    /// Measure rowsync beside MariaDB replication, mariadb-binlog and mariadb-dump on local servers.
    Bench(commands::bench::BenchOptions),
    /// Print an argon2 hash of the password on standard input, for [[admin.users]].
    HashPassword {
        /// Make a new API token and print it with its hash, for [[admin.tokens]].
        #[arg(long)]
        token: bool,
    },
    /// Start local MariaDB servers with a product workload and replicate it, until Ctrl-C.
    Demo {
        /// Stop by itself after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
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
            commands::run::run(path, config, Box::new(serve_admin)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::HashPassword { token } => {
            rowsync::admin::hash_password_command(token)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => Ok(commands::check::run(&config).await),
        Command::Resync {
            config,
            target,
            table,
        } => {
            let config = Config::load(&config)?;
            let cancel = commands::cancelled_on_signal();
            match commands::resync::run(&config, &target, &table, &cancel).await? {
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
        Command::Verify {
            config,
            target,
            table,
            repair,
            format,
            rows_per_second,
        } => {
            let config = Config::load(&config)?;
            let cancel = commands::cancelled_on_signal();
            let options = commands::verify::Options {
                target,
                table,
                repair,
                json: matches!(format, OutputFormat::Json),
                rows_per_second,
            };
            commands::verify::run(&config, &options, &cancel).await
        }
        Command::Bench(options) => {
            let report = commands::bench::run(options).await?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { seconds } => {
            commands::demo::run(seconds.map(Duration::from_secs), Box::new(serve_admin)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config } => {
            let config = Config::load(&config)?;
            let (head, targets) = rowsync::engine::inspect::collect(&config)
                .await
                .context("reading the source")?;
            print!("{}", commands::status::render(&head, &targets));
            let path = config.state_path();
            if path.exists() {
                let stored = StateStore::open_read_only(&path)
                    .await?
                    .load(&config.pipeline)
                    .await?;
                print!("{}", commands::status::render_daemon(&stored));
            }
            Ok(if targets.iter().all(|t| t.error.is_none()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The admin API beside the engine, when someone can log in to it.
fn serve_admin(
    config: Arc<Config>,
    handle: Arc<Handle>,
    stop: CancellationToken,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        match rowsync::admin::bind(config, handle, stop).await {
            Ok(serve) => serve.await,
            Err(e) => tracing::warn!("{e}"),
        }
    })
}

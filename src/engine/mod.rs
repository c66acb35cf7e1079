//! The engine: the only part that joins the source and the sink, and the owner of every
//! target's lifecycle. `Engine::start(config)` runs one pipeline per target (`target`) and
//! returns a `Handle`: each target's live status (`status`), and commands (`Command`) carried
//! out by one supervising task, one at a time, so two commands never race on a target.
//!
//! - `Pause` ends a target's pipeline at a transaction boundary (as a shutdown does: whole
//!   source transactions are committed, the rest rolled back) and keeps it stopped;
//!   `Resume` starts it again from its checkpoint.
//! - `Recopy` records the request in the target, durably, where the running pipeline picks it
//!   up (as it does `rowsync resync`'s): the table is copied online while the others stream.
//! - `Reload` applies a new configuration as a diff: a target whose spec (its slice of the
//!   configuration: source, its own settings, its mappings) is unchanged keeps running
//!   untouched; a changed one restarts from its checkpoint and plans its replicas against the
//!   new mappings (new or reshaped tables are copied online, the others stream on); a removed
//!   one stops; a new one starts. A target stopped by a definite error is started again too:
//!   a reload is how an operator says the cause was fixed.
//!
//! Restarting from the checkpoint is what makes each step safe: nothing a pipeline holds in
//! memory is needed to resume it exactly once.

pub mod copy;
pub mod inspect;
pub mod preflight;
pub mod recopy;
pub mod status;
pub mod target;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::name::TableName;
use status::{Snapshot, State, TargetStatus};
use target::TargetSpec;

/// A command to the running engine.
#[derive(Debug)]
pub enum Command {
    Pause { target: String },
    Resume { target: String },
    Recopy { target: String, table: TableName },
    Reload(Arc<Config>),
}

/// Why a command was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("there is no target `{0}`")]
    UnknownTarget(String),
    #[error("target `{0}` is already paused")]
    AlreadyPaused(String),
    #[error("target `{0}` is not paused")]
    NotPaused(String),
    #[error(transparent)]
    Recopy(#[from] recopy::RecopyError),
    #[error("the engine has shut down")]
    Gone,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Engine(#[from] CommandError),
}

/// The entry point: starts the engine.
pub struct Engine;

impl Engine {
    /// Starts every target of `config`; runs until the handle shuts it down.
    pub fn start(config: Arc<Config>) -> Handle {
        let (tx, rx) = mpsc::channel(16);
        let statuses = Arc::new(RwLock::new(Vec::new()));
        let cancel = CancellationToken::new();
        let mut supervisor = Supervisor {
            targets: HashMap::new(),
            order: Vec::new(),
            statuses: statuses.clone(),
            cancel: cancel.clone(),
        };
        supervisor.start_missing(config.clone());
        let task = tokio::spawn(supervisor.run(rx));
        Handle {
            commands: tx,
            statuses,
            cancel,
            task: tokio::sync::Mutex::new(Some(task)),
            reloads: Reloads::default(),
            config: RwLock::new(config),
            reloading: tokio::sync::Mutex::new(()),
        }
    }
}

/// What a running engine offers: statuses to read, commands to send.
pub struct Handle {
    commands: mpsc::Sender<(Command, oneshot::Sender<Result<(), CommandError>>)>,
    statuses: Arc<RwLock<Vec<Arc<TargetStatus>>>>,
    cancel: CancellationToken,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    reloads: Reloads,
    /// The configuration last applied.
    config: RwLock<Arc<Config>>,
    /// Held from reading a file to applying it, so two reloads apply in the order they read.
    reloading: tokio::sync::Mutex<()>,
}

/// Counts of `Handle::reload_file` by result.
#[derive(Default)]
struct Reloads {
    applied: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
}

impl Handle {
    /// Every target's live status, in the configuration's order.
    pub fn statuses(&self) -> Vec<Arc<TargetStatus>> {
        self.statuses
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.statuses().iter().map(|s| s.snapshot()).collect()
    }

    /// Sends `command` and waits until it is carried out (a pause: until the target's
    /// pipeline has ended; a re-copy: until it is requested).
    pub async fn send(&self, command: Command) -> Result<(), CommandError> {
        let (reply, replied) = oneshot::channel();
        self.commands
            .send((command, reply))
            .await
            .map_err(|_| CommandError::Gone)?;
        replied.await.unwrap_or(Err(CommandError::Gone))
    }

    /// Reads the configuration file at `path` again and applies it as a diff: the one way a
    /// changed file reaches the engine (SIGHUP, and the admin API after it wrote the file). An
    /// invalid file changes nothing.
    pub async fn reload_file(&self, path: &std::path::Path) -> Result<Arc<Config>, ReloadError> {
        let _in_order = self.reloading.lock().await;
        let result = async {
            // With the environment's overrides only if the running configuration had them.
            let config = Arc::new(Config::load_as(path, self.config().environment)?);
            self.send(Command::Reload(config.clone())).await?;
            if let Ok(mut current) = self.config.write() {
                *current = config.clone();
            }
            Ok(config)
        }
        .await;
        let counter = match &result {
            Ok(_) => &self.reloads.applied,
            Err(_) => &self.reloads.refused,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// The configuration last applied.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Reloads of the configuration file so far.
    pub fn reloads(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.reloads.applied.load(Relaxed),
            self.reloads.refused.load(Relaxed),
        )
    }

    /// Stops every target at a transaction boundary and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// One target's running pipeline.
struct Running {
    spec: Arc<TargetSpec>,
    status: Arc<TargetStatus>,
    /// `None` while paused.
    task: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Running {
    fn start(spec: Arc<TargetSpec>, status: Arc<TargetStatus>, parent: &CancellationToken) -> Self {
        let mut running = Running {
            spec,
            status,
            task: None,
        };
        running.resume(parent);
        running
    }

    fn resume(&mut self, parent: &CancellationToken) {
        // Not after a shutdown began: nothing new may take a target's lock then.
        if parent.is_cancelled() {
            return;
        }
        self.status.set_state(State::Starting);
        let cancel = parent.child_token();
        let run = target::run_target(self.spec.clone(), self.status.clone(), cancel.clone());
        let task = tokio::spawn(target::watch(tokio::spawn(run), self.status.clone()));
        tokio::spawn(verify::schedule(
            self.spec.clone(),
            self.status.clone(),
            cancel.clone(),
        ));
        self.task = Some((cancel, task));
    }

    /// Ends the pipeline at a transaction boundary and waits for it.
    async fn stop(&mut self) {
        if let Some((cancel, task)) = self.task.take() {
            cancel.cancel();
            let _ = task.await;
        }
    }
}

/// The task that owns the targets and carries out commands, one at a time.
struct Supervisor {
    targets: HashMap<String, Running>,
    /// Target names in the configuration's order.
    order: Vec<String>,
    statuses: Arc<RwLock<Vec<Arc<TargetStatus>>>>,
    cancel: CancellationToken,
}

impl Supervisor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(Command, oneshot::Sender<Result<(), CommandError>>)>,
    ) {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                next = rx.recv() => match next {
                    Some((command, reply)) => {
                        let result = self.carry_out(command).await;
                        let _ = reply.send(result);
                    }
                    None => break,
                },
            }
        }
        self.cancel.cancel();
        for running in self.targets.values_mut() {
            running.stop().await;
        }
    }

    async fn carry_out(&mut self, command: Command) -> Result<(), CommandError> {
        match command {
            Command::Pause { target } => {
                let running = self.find(&target)?;
                if running.task.is_none() {
                    return Err(CommandError::AlreadyPaused(target));
                }
                running.stop().await;
                running.status.set_state(State::Paused);
                tracing::info!(target = %target, "paused");
                Ok(())
            }
            Command::Resume { target } => {
                let cancel = self.cancel.clone();
                let running = self.find(&target)?;
                if running.task.is_some() {
                    return Err(CommandError::NotPaused(target));
                }
                running.resume(&cancel);
                tracing::info!(target = %target, "resumed");
                Ok(())
            }
            Command::Recopy { target, table } => {
                let running = self.find(&target)?;
                recopy::request(&running.spec, &table, "asked for through the engine").await?;
                Ok(())
            }
            Command::Reload(config) => {
                self.apply_diff(config).await;
                Ok(())
            }
        }
    }

    fn find(&mut self, target: &str) -> Result<&mut Running, CommandError> {
        self.targets
            .values_mut()
            .find(|r| r.spec.name().eq_ignore_ascii_case(target))
            .ok_or_else(|| CommandError::UnknownTarget(target.to_owned()))
    }

    /// Restarts what `config` changed and nothing else (see the module doc).
    async fn apply_diff(&mut self, config: Arc<Config>) {
        let specs = TargetSpec::all(&config);
        let mut gone: Vec<String> = self.targets.keys().cloned().collect();
        gone.retain(|name| !specs.iter().any(|s| s.name() == name));
        for name in gone {
            if let Some(mut running) = self.targets.remove(&name) {
                tracing::info!(target = %name, "target removed from the configuration; stopping it");
                running.stop().await;
            }
        }
        // All changed targets stop before any restarts: a target's binlog connection id
        // follows its place in the file, which may have passed to another target.
        let mut changed = Vec::new();
        for spec in specs {
            let Some(running) = self.targets.get_mut(spec.name()) else {
                continue;
            };
            let stopped = matches!(running.status.snapshot().state, State::Stopped(_));
            if *running.spec != spec || stopped {
                tracing::info!(target = %spec.name(), "its configuration changed, or it had stopped; restarting it from its checkpoint");
                let paused = running.task.is_none();
                running.stop().await;
                changed.push((spec, paused));
            }
        }
        for (spec, paused) in changed {
            let Some(running) = self.targets.get_mut(spec.name()) else {
                continue;
            };
            running.status = Arc::new(TargetStatus::new(spec.name()));
            running.spec = Arc::new(spec);
            if paused {
                running.status.set_state(State::Paused);
            } else {
                running.resume(&self.cancel);
            }
        }
        self.start_missing(config);
    }

    /// Starts the targets of `config` not running yet, and publishes the statuses in order.
    fn start_missing(&mut self, config: Arc<Config>) {
        let specs = TargetSpec::all(&config);
        for spec in specs.iter() {
            if !self.targets.contains_key(spec.name()) {
                let status = Arc::new(TargetStatus::new(spec.name()));
                let running = Running::start(Arc::new(spec.clone()), status, &self.cancel);
                self.targets.insert(spec.name().to_owned(), running);
            }
        }
        self.order = specs.iter().map(|s| s.name().to_owned()).collect();
        let statuses = self
            .order
            .iter()
            .filter_map(|n| self.targets.get(n).map(|r| r.status.clone()))
            .collect();
        if let Ok(mut published) = self.statuses.write() {
            *published = statuses;
        }
    }
}

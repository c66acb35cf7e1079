//! The admin side of `rowsync run`: an HTTP server (axum) on the engine's handle, with the JSON
//! API (`api`), login, sessions and roles (`auth`) and Prometheus metrics (`metrics`). It only
//! reads statuses and sends commands; nothing in the engine knows it exists.
//!
//! The server starts only when someone can log in (`[[admin.users]]`, `[[admin.tokens]]` or
//! `ROWSYNC_ADMIN__PASSWORD`); replication never depends on it.

pub mod api;
pub mod auth;
pub mod mappings;
pub mod metrics;
pub mod ui;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminConfig, Config};
use crate::engine::{inspect, Handle};
use crate::model::position::Checkpoint;
use crate::state::StateStore;
use auth::Auth;

/// What the handlers share.
pub struct Admin {
    pub handle: Arc<Handle>,
    /// Users and tokens of the admin configuration in force, with the configuration they were
    /// made from: a reload that changes them replaces both (and so ends every session).
    auth: RwLock<(AdminConfig, Arc<Auth>)>,
    file: mappings::ConfigFile,
    /// The audit log's home; `None` when the state store cannot be opened.
    store: Option<StateStore>,
    /// Each target's lag over the last `LAG_WINDOW`, sampled every `SAMPLE_EVERY`.
    lag: Mutex<LagHistory>,
    /// The source head as last read by the sampler, or why it could not be read.
    source: Mutex<Result<Checkpoint, String>>,
    /// Per target: the row changes applied at the last sample, and the rate since the one
    /// before.
    rates: Mutex<std::collections::HashMap<String, (std::time::Instant, u64, f64)>>,
}

/// How far back the lag chart reaches, and how often the lag and the source are sampled.
const LAG_WINDOW: Duration = Duration::from_secs(15 * 60);
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// (unix seconds, lag seconds) samples per target, oldest first.
pub type LagHistory = std::collections::BTreeMap<String, std::collections::VecDeque<(u64, u64)>>;

/// Every `SAMPLE_EVERY` until `stop`: each target's lag into the history, the source head
/// (one connection per sample, whatever the number of API callers), and the admin
/// configuration a reload may have changed.
async fn sample(admin: Arc<Admin>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        admin.sample_lag();
        let config = admin.handle.config();
        let head = match tokio::time::timeout(Duration::from_secs(3), inspect::source_head(&config))
            .await
        {
            Ok(Ok(head)) => Ok(head),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the source did not answer within 3 s".into()),
        };
        *admin.source.lock().unwrap_or_else(|p| p.into_inner()) = head;
        admin.follow_admin_config(&config.admin);
    }
}

impl Admin {
    fn sample_lag(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let snapshots = self.handle.snapshots();
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        rates.retain(|name, _| snapshots.iter().any(|s| &s.target == name));
        for s in &snapshots {
            let at = std::time::Instant::now();
            let rate = match rates.get(&s.target) {
                Some((then, rows, _)) if s.rows_applied >= *rows => {
                    (s.rows_applied - rows) as f64
                        / at.duration_since(*then).as_secs_f64().max(0.001)
                }
                _ => 0.0,
            };
            rates.insert(s.target.clone(), (at, s.rows_applied, rate));
        }
        drop(rates);
        let mut history = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        history.retain(|name, _| snapshots.iter().any(|s| &s.target == name));
        for s in snapshots {
            let points = history.entry(s.target.clone()).or_default();
            if let Some(lag) = s.lag_secs() {
                points.push_back((now, lag));
            }
            // The clock may step back: a sample "from the future" is old too.
            while points
                .front()
                .is_some_and(|(t, _)| now.saturating_sub(*t) > LAG_WINDOW.as_secs() || *t > now)
            {
                points.pop_front();
            }
        }
    }

    /// Replaces users and tokens when a reload changed them.
    fn follow_admin_config(&self, wanted: &AdminConfig) {
        let current = self
            .auth
            .read()
            .map(|a| a.0.clone())
            .unwrap_or_else(|p| p.into_inner().0.clone());
        // User admin's plain password comes from the environment (or the demo) at start; it
        // cannot change without a restart, so it stays.
        let mut wanted = wanted.clone();
        wanted.password.clone_from(&current.password);
        if current == wanted {
            return;
        }
        let wanted = &wanted;
        match Auth::from_config(wanted) {
            Ok(Some(auth)) => {
                if let Ok(mut slot) = self.auth.write() {
                    *slot = (wanted.clone(), Arc::new(auth));
                }
                tracing::info!("admin users and tokens reloaded; sessions must log in again");
            }
            Ok(None) => {
                // Nobody could log in any more: nobody can.
                if let Ok(mut slot) = self.auth.write() {
                    *slot = (wanted.clone(), Arc::new(Auth::nobody()));
                }
                tracing::warn!("the reloaded configuration has no admin users or tokens; the admin API refuses every login");
            }
            Err(e) => tracing::error!(error = %e, "admin users not reloaded"),
        }
    }

    /// The users and tokens in force.
    pub fn auth(&self) -> Arc<Auth> {
        self.auth
            .read()
            .map(|a| a.1.clone())
            .unwrap_or_else(|p| p.into_inner().1.clone())
    }

    /// Records an action in the audit log (and the log).
    async fn audit(&self, user: &str, action: &str, subject: &str) {
        tracing::info!(user = %user, action, subject = %subject, "admin action");
        if let Some(store) = &self.store {
            if let Err(e) = store.audit(user, action, subject, None, None).await {
                tracing::warn!(error = %e, "cannot record the action in the audit log");
            }
        }
    }

    /// Row changes applied per second by `target`, over the last sample period.
    fn rows_per_second(&self, target: &str) -> f64 {
        let rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        rates.get(target).map(|r| r.2).unwrap_or(0.0)
    }

    /// The source head as last sampled.
    fn source_head(&self) -> Result<Checkpoint, String> {
        self.source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Why the admin server did not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the admin API is off: no user can log in; add [[admin.users]] (`rowsync hash-password` prints a password_hash) or set ROWSYNC_ADMIN__PASSWORD")]
    NoUsers,
    #[error("hashing ROWSYNC_ADMIN__PASSWORD: {0}")]
    Hash(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// `rowsync hash-password`: reads a password from standard input and prints its argon2 PHC
/// string for `[[admin.users]] password_hash`; with `token`, makes a new API token and prints
/// it with its hash for `[[admin.tokens]] token_hash`.
pub fn hash_password_command(token: bool) -> anyhow::Result<()> {
    if token {
        let (token, hash) = auth::new_token();
        println!("token (give it to the script): {token}");
        println!("token_hash (put it in [[admin.tokens]]): {hash}");
        return Ok(());
    }
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "give the password on standard input");
    let hash = auth::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{hash}");
    Ok(())
}

/// The API's routes.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(ui::index))
        .route("/index.html", get(ui::index))
        .route("/app.js", get(ui::app_js))
        .route("/app.css", get(ui::app_css))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/login", post(api::login))
        .route("/api/v1/logout", post(api::logout))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/source/tables", get(api::source_tables))
        .route("/api/v1/audit", get(api::audit))
        .route("/api/v1/lag", get(api::lag))
        .route(
            "/api/v1/mappings",
            get(mappings::list).post(mappings::create),
        )
        .route(
            "/api/v1/mappings/{id}",
            get(mappings::get_one)
                .put(mappings::update)
                .delete(mappings::delete),
        )
        .route("/api/v1/targets/{name}/pause", post(api::pause))
        .route("/api/v1/targets/{name}/resume", post(api::resume))
        .route(
            "/api/v1/targets/{name}/tables/{table}/recopy",
            post(api::recopy),
        )
        .method_not_allowed_fallback(api::method_not_allowed)
        .fallback(|| async {
            api::ApiError::new(axum::http::StatusCode::NOT_FOUND, "no such endpoint")
        })
        .with_state(admin)
}

/// Binds the admin address; the returned future serves until `stop`.
pub async fn bind(
    config: Arc<Config>,
    handle: Arc<Handle>,
    stop: CancellationToken,
) -> Result<impl std::future::Future<Output = ()>, AdminError> {
    let auth = Auth::from_config(&config.admin)
        .map_err(|e| AdminError::Hash(e.to_string()))?
        .ok_or(AdminError::NoUsers)?;
    let addr = config.admin.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Listen { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(address = %bound, "admin API listening on http://{bound}/");
    let store = match StateStore::open(&config.state_path()).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "the admin API cannot keep an audit log");
            None
        }
    };
    let admin = Arc::new(Admin {
        handle,
        auth: RwLock::new((config.admin.clone(), Arc::new(auth))),
        file: mappings::ConfigFile::new(&config),
        store,
        lag: Default::default(),
        source: Mutex::new(Err("not read yet".into())),
        rates: Default::default(),
    });
    tokio::spawn(sample(admin.clone(), stop.clone()));
    let app = router(admin);
    Ok(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the admin API stopped");
        }
    })
}

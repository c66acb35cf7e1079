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
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{inspect, Handle};
use crate::state::StateStore;
use auth::Auth;

/// What the handlers share.
pub struct Admin {
    pub handle: Arc<Handle>,
    pub auth: Auth,
    config: Arc<Config>,
    file: mappings::ConfigFile,
    /// The audit log's home; `None` when the state store cannot be opened.
    store: Option<StateStore>,
    /// Each target's lag over the last `LAG_WINDOW`, sampled every `LAG_EVERY`.
    lag: std::sync::Mutex<LagHistory>,
}

/// How far back the lag chart reaches, and how often it is sampled.
const LAG_WINDOW: Duration = Duration::from_secs(15 * 60);
const LAG_EVERY: Duration = Duration::from_secs(2);

/// (unix seconds, lag seconds) samples per target, oldest first.
pub type LagHistory = std::collections::BTreeMap<String, std::collections::VecDeque<(u64, u64)>>;

/// Samples every target's lag into `admin.lag` until `stop`.
async fn sample_lag(admin: Arc<Admin>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(LAG_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let snapshots = admin.handle.snapshots();
        let mut history = admin.lag.lock().unwrap_or_else(|p| p.into_inner());
        history.retain(|name, _| snapshots.iter().any(|s| &s.target == name));
        for s in snapshots {
            let points = history.entry(s.target.clone()).or_default();
            if let Some(lag) = s.lag_secs() {
                points.push_back((now, lag));
            }
            while points
                .front()
                .is_some_and(|(t, _)| now - t > LAG_WINDOW.as_secs())
            {
                points.pop_front();
            }
        }
    }
}

impl Admin {
    /// Records an action in the audit log (and the log).
    async fn audit(&self, user: &str, action: &str, subject: &str) {
        tracing::info!(user = %user, action, subject = %subject, "admin action");
        if let Some(store) = &self.store {
            if let Err(e) = store.audit(user, action, subject, None, None).await {
                tracing::warn!(error = %e, "cannot record the action in the audit log");
            }
        }
    }

    /// The source head, read with a short deadline (the API must answer when the source does
    /// not).
    async fn source_head(&self) -> Result<crate::model::position::Checkpoint, String> {
        match tokio::time::timeout(Duration::from_secs(3), inspect::source_head(&self.config)).await
        {
            Ok(Ok(head)) => Ok(head),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the source did not answer within 3 s".into()),
        }
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
        auth,
        file: mappings::ConfigFile::new(&config),
        config,
        store,
        lag: Default::default(),
    });
    tokio::spawn(sample_lag(admin.clone(), stop.clone()));
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

//! The JSON API under `/api/v1`, documented by the OpenAPI document it generates
//! (`/api/v1/openapi.json`, from the handlers' annotations, never written by hand).
//!
//! Every answer is JSON; every error is `{"error": …}` with a 4xx status for what the caller
//! can fix (401 unknown caller, 403 not allowed or no CSRF token, 404 unknown target, 409 the
//! state does not allow it, 422 a request that does not make sense, 429 too many failed
//! logins) and 5xx only for what the server cannot do.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::auth::{Caller, LoginError, COOKIE};
use super::Admin;
use crate::config::Role;
use crate::engine::status::{Snapshot, State as TargetState};
use crate::engine::{Command, CommandError};
use crate::model::name::TableName;
use crate::model::position::Checkpoint;
use crate::state::AuditEntry;

/// An error as the API answers it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    pub error: String,
    /// The configuration key a validation error concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    status: StatusCode,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            error: error.into(),
            field: None,
            status,
        }
    }

    pub fn with_field(mut self, field: Option<String>) -> ApiError {
        self.field = field;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let status = match &e {
            CommandError::UnknownTarget(_) => StatusCode::NOT_FOUND,
            CommandError::AlreadyPaused(_) | CommandError::NotPaused(_) => StatusCode::CONFLICT,
            CommandError::Recopy(crate::engine::recopy::RecopyError::NotSelected { .. })
            | CommandError::Recopy(crate::engine::recopy::RecopyError::NotStarted(_)) => {
                StatusCode::CONFLICT
            }
            CommandError::Recopy(_) => StatusCode::BAD_GATEWAY,
            CommandError::Gone => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// A JSON body whose rejection is a JSON error too.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            // 400 bad syntax, 415 not JSON, 422 the wrong shape, 413 too large.
            Err(e) => Err(ApiError::new(e.status(), e.body_text())),
        }
    }
}

/// Path parameters whose rejection is a JSON error.
pub struct PathArg<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathArg<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| PathArg(v))
            .map_err(|e| ApiError::new(e.status(), e.body_text()))
    }
}

/// Query parameters whose rejection is a JSON error.
pub struct QueryArg<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryArg<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryArg(v))
            .map_err(|e| ApiError::new(e.status(), e.body_text()))
    }
}

/// A known path asked with a method it does not have.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method",
    )
}

/// The caller of a request: by bearer token or session cookie. State-changing requests with
/// a cookie must carry the session's CSRF token.
pub async fn caller(
    admin: &Admin,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let unknown = || ApiError::new(StatusCode::UNAUTHORIZED, "log in, or send a bearer token");
    if let Some(token) = bearer(headers) {
        return admin.auth().token(token).ok_or_else(unknown);
    }
    let jar = CookieJar::from_headers(headers);
    let caller = jar
        .get(COOKIE)
        .and_then(|c| admin.auth().session(c.value()))
        .ok_or_else(unknown)?;
    if *method != Method::GET && *method != Method::HEAD {
        let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        let matches = match (sent, caller.csrf.as_deref()) {
            (Some(sent), Some(wanted)) => super::auth::same(sent.as_bytes(), wanted.as_bytes()),
            _ => false,
        };
        if !matches {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token header (the login's csrf_token)",
            ));
        }
    }
    Ok(caller)
}

/// The caller, who must be an admin.
pub async fn admin_caller(
    admin: &Admin,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let caller = caller(admin, method, headers).await?;
    if caller.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("`{}` is a viewer; this needs the admin role", caller.name),
        ));
    }
    Ok(caller)
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("user", &self.user)
            .field("password", &"…")
            .finish()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub user: String,
    pub role: String,
    /// Send it as `X-CSRF-Token` with every request that changes something.
    pub csrf_token: String,
}

/// Logs in; sets the session cookie.
#[utoipa::path(post, path = "/api/v1/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn login(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    Body(req): Body<LoginRequest>,
) -> Result<(CookieJar, Json<LoginResponse>), ApiError> {
    match admin
        .auth()
        .login(from.ip(), &req.user, &req.password)
        .await
    {
        Ok((id, caller)) => {
            let cookie = Cookie::build((COOKIE, id))
                .http_only(true)
                .same_site(SameSite::Strict)
                .path("/")
                .build();
            let role = match caller.role {
                Role::Admin => "admin",
                Role::Viewer => "viewer",
            };
            tracing::info!(user = %caller.name, "admin login");
            Ok((
                jar.add(cookie),
                Json(LoginResponse {
                    user: caller.name,
                    role: role.into(),
                    csrf_token: caller.csrf.unwrap_or_default(),
                }),
            ))
        }
        Err(LoginError::Wrong) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong user or password",
        )),
        Err(LoginError::Throttled(wait)) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed logins from this address; try again in {} s",
                wait.as_secs() + 1
            ),
        )),
    }
}

/// Ends the session.
#[utoipa::path(post, path = "/api/v1/logout", responses((status = 204)))]
pub async fn logout(State(admin): State<Arc<Admin>>, jar: CookieJar) -> (CookieJar, StatusCode) {
    if let Some(c) = jar.get(COOKIE) {
        admin.auth().logout(c.value());
    }
    (
        jar.remove(Cookie::build(COOKIE).path("/")),
        StatusCode::NO_CONTENT,
    )
}

/// A source position.
#[derive(Debug, Serialize, ToSchema)]
pub struct PositionView {
    /// `file:offset`
    pub position: String,
    pub gtid: Option<String>,
}

impl From<&Checkpoint> for PositionView {
    fn from(c: &Checkpoint) -> Self {
        PositionView {
            position: c.position.to_string(),
            gtid: c.gtid.as_ref().map(|g| g.to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    pub connected: bool,
    pub head: Option<PositionView>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorView {
    pub message: String,
    /// `transient` (retried) or `definite` (stopped until fixed).
    pub class: String,
    pub statement: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TableView {
    pub table: String,
    /// `needs_recopy` or `recopy_requested`.
    pub state: String,
    pub since: String,
    pub reason: String,
    pub statement: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CopyView {
    pub table: String,
    pub rows_copied: u64,
    pub rows_estimated: u64,
    pub done: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TargetView {
    pub name: String,
    /// starting, standby, copying, streaming, paused, retrying, stopped or shut down.
    pub state: String,
    pub error: Option<ErrorView>,
    pub checkpoint: Option<PositionView>,
    /// Seconds behind the source; 0 when everything the source has is applied.
    pub lag_seconds: Option<u64>,
    /// Row changes applied per second over the last 2 s.
    pub rows_per_second: f64,
    /// Events read from the binlog and not yet taken by the writer.
    pub pending_events: u64,
    pub rows_applied: u64,
    pub transactions_applied: u64,
    pub tables: Vec<TableView>,
    pub copy: Vec<CopyView>,
    /// Row changes applied per source table since the process started.
    pub applied: Vec<AppliedView>,
    /// Attempts that ended in an error since the process started, by class.
    pub errors_transient: u64,
    pub errors_definite: u64,
    /// Pipeline attempts after the first (retries, re-copies, reloads).
    pub restarts: u64,
    /// The last `verify` result per replica table.
    pub verified: Vec<VerifiedView>,
    /// While standing by: the process that holds the target's lock.
    pub lock_holder: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedView {
    pub replica: String,
    pub source: String,
    /// When the run ended, seconds since the epoch.
    pub finished_at: u64,
    pub rows: u64,
    /// Rows that differed from the source.
    pub differing: u64,
    /// Rows known to differ now: after repairs, and at least what the last whole scheduled
    /// pass found (the metric `rowsync_verify_mismatched_rows`).
    pub mismatched: u64,
    pub repaired: u64,
    /// Whether the run covered the table (or its scheduled share) to the end.
    pub complete: bool,
    /// The first differing keys.
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppliedView {
    pub table: String,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
}

impl From<&Snapshot> for TargetView {
    fn from(s: &Snapshot) -> Self {
        TargetView {
            name: s.target.clone(),
            state: s.state.name().into(),
            error: s.state.failure().map(|f| ErrorView {
                message: f.message.clone(),
                class: f.class.to_string(),
                statement: f.statement.clone(),
            }),
            checkpoint: s.checkpoint.as_ref().map(PositionView::from),
            lag_seconds: s.lag_secs(),
            rows_per_second: 0.0,
            pending_events: s.pending_events,
            rows_applied: s.rows_applied,
            transactions_applied: s.transactions_applied,
            tables: s
                .stopped_tables
                .iter()
                .map(|t| TableView {
                    table: t.table.to_string(),
                    state: t.state.to_string(),
                    since: t.since.clone(),
                    reason: t.reason.clone(),
                    statement: t.statement.clone(),
                })
                .collect(),
            copy: s
                .copy
                .iter()
                .map(|p| CopyView {
                    table: p.table.to_string(),
                    rows_copied: p.rows_copied,
                    rows_estimated: p.rows_estimated,
                    done: p.done,
                })
                .collect(),
            applied: s
                .tables_applied
                .iter()
                .map(|(t, c)| AppliedView {
                    table: t.to_string(),
                    inserts: c.inserts,
                    updates: c.updates,
                    deletes: c.deletes,
                })
                .collect(),
            errors_transient: s.errors_transient,
            errors_definite: s.errors_definite,
            restarts: s.runs.saturating_sub(1),
            lock_holder: match &s.state {
                crate::engine::status::State::Standby(holder) => Some(holder.clone()),
                _ => None,
            },
            verified: s
                .verified
                .iter()
                .map(|v| VerifiedView {
                    replica: v.replica.clone(),
                    source: v.source.to_string(),
                    finished_at: v.finished_at,
                    rows: v.rows,
                    differing: v.differing,
                    mismatched: v.mismatched(),
                    repaired: v.repaired,
                    complete: v.complete,
                    detail: v.detail.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusView {
    pub source: SourceView,
    pub targets: Vec<TargetView>,
}

/// The source head and every target's state, checkpoint, lag and tables.
#[utoipa::path(get, path = "/api/v1/status", responses((status = 200, body = StatusView), (status = 401, body = ApiError)))]
pub async fn status(
    State(admin): State<Arc<Admin>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<StatusView>, ApiError> {
    caller(&admin, &method, &headers).await?;
    let source = match admin.source_head() {
        Ok(head) => SourceView {
            connected: true,
            head: Some(PositionView::from(&head)),
            error: None,
        },
        Err(e) => SourceView {
            connected: false,
            head: None,
            error: Some(e),
        },
    };
    let targets = admin
        .handle
        .snapshots()
        .iter()
        .map(|s| TargetView {
            rows_per_second: admin.rows_per_second(&s.target),
            ..TargetView::from(s)
        })
        .collect();
    Ok(Json(StatusView { source, targets }))
}

/// Pauses a target at a transaction boundary.
#[utoipa::path(post, path = "/api/v1/targets/{name}/pause", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn pause(
    State(admin): State<Arc<Admin>>,
    PathArg(target): PathArg<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let command = Command::Pause {
        target: target.clone(),
    };
    target_command(&admin, &method, &headers, command, "target.pause", &target).await
}

/// Resumes a paused target from its checkpoint.
#[utoipa::path(post, path = "/api/v1/targets/{name}/resume", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn resume(
    State(admin): State<Arc<Admin>>,
    PathArg(target): PathArg<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let command = Command::Resume {
        target: target.clone(),
    };
    target_command(&admin, &method, &headers, command, "target.resume", &target).await
}

/// Sends an admin's `command` about `target` to the engine and records it.
async fn target_command(
    admin: &Admin,
    method: &Method,
    headers: &HeaderMap,
    command: Command,
    action: &str,
    target: &str,
) -> Result<StatusCode, ApiError> {
    let who = admin_caller(admin, method, headers).await?;
    admin.handle.send(command).await?;
    admin.audit(&who.name, action, target).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Re-copies one table (`db.table`) into a target, online.
#[utoipa::path(post, path = "/api/v1/targets/{name}/tables/{table}/recopy",
    params(("name" = String, Path), ("table" = String, Path, description = "db.table")),
    responses((status = 202), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
pub async fn recopy(
    State(admin): State<Arc<Admin>>,
    PathArg((name, table)): PathArg<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let who = admin_caller(&admin, &method, &headers).await?;
    let table: TableName = table
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    admin
        .handle
        .send(Command::Recopy {
            target: name.clone(),
            table: table.clone(),
        })
        .await?;
    admin
        .audit(&who.name, "table.recopy", &format!("{name}/{table}"))
        .await;
    Ok(StatusCode::ACCEPTED)
}

/// Process up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// The source answering and every target streaming or copying (a paused, retrying or
/// stopped one is not ready).
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = String), (status = 503, body = String)))]
pub async fn readyz(State(admin): State<Arc<Admin>>) -> (StatusCode, String) {
    let source = admin.source_head().err().map(|e| format!("source: {e}"));
    let waiting: Vec<String> = source
        .into_iter()
        .chain(
            admin
                .handle
                .snapshots()
                .iter()
                .filter(|s| !matches!(s.state, TargetState::Streaming | TargetState::Copying))
                .map(|s| format!("{}: {}", s.target, s.state.name())),
        )
        .collect();
    if waiting.is_empty() {
        (StatusCode::OK, "ready".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, waiting.join("\n"))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ColumnView {
    pub name: String,
    /// The column type as the source prints it.
    #[serde(rename = "type")]
    pub ty: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceTableView {
    /// `db.table`
    pub table: String,
    pub columns: Vec<ColumnView>,
    pub primary_key: Vec<String>,
}

/// The source's tables with their columns and primary keys, for the mapping editor.
#[utoipa::path(get, path = "/api/v1/source/tables", responses((status = 200, body = [SourceTableView]), (status = 502, body = ApiError)))]
pub async fn source_tables(
    State(admin): State<Arc<Admin>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<Vec<SourceTableView>>, ApiError> {
    caller(&admin, &method, &headers).await?;
    let config = admin.handle.config();
    let read = crate::engine::inspect::source_tables(&config);
    let tables = match tokio::time::timeout(std::time::Duration::from_secs(10), read).await {
        Ok(Ok(tables)) => tables,
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("reading the source: {e}"),
            ))
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "the source did not answer within 10 s",
            ))
        }
    };
    Ok(Json(
        tables
            .into_iter()
            .map(|t| SourceTableView {
                table: t.table.to_string(),
                columns: t
                    .columns
                    .into_iter()
                    .map(|(name, ty)| ColumnView { name, ty })
                    .collect(),
                primary_key: t.primary_key,
            })
            .collect(),
    ))
}

/// The newest changes made through the API, newest first.
#[utoipa::path(get, path = "/api/v1/audit", responses((status = 200, body = [AuditEntry])))]
pub async fn audit(
    State(admin): State<Arc<Admin>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    caller(&admin, &method, &headers).await?;
    let Some(store) = &admin.store else {
        return Ok(Json(Vec::new()));
    };
    store
        .audit_log(200)
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LagSeries {
    pub target: String,
    /// `[unix seconds, lag seconds]`, oldest first, every 2 s over the last 15 minutes.
    pub points: Vec<(u64, u64)>,
}

/// Each target's lag over the last 15 minutes, for the chart.
#[utoipa::path(get, path = "/api/v1/lag", responses((status = 200, body = [LagSeries])))]
pub async fn lag(
    State(admin): State<Arc<Admin>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<Vec<LagSeries>>, ApiError> {
    caller(&admin, &method, &headers).await?;
    let history = admin.lag.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Json(
        history
            .iter()
            .map(|(target, points)| LagSeries {
                target: target.clone(),
                points: points.iter().copied().collect(),
            })
            .collect(),
    ))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "rowsync admin API",
        description = "Status, targets and mappings of a running rowsync."
    ),
    paths(
        login,
        logout,
        status,
        pause,
        resume,
        recopy,
        source_tables,
        audit,
        lag,
        healthz,
        readyz,
        super::metrics::metrics,
        super::mappings::list,
        super::mappings::get_one,
        super::mappings::create,
        super::mappings::update,
        super::mappings::delete
    ),
    components(schemas(
        ApiError,
        LoginRequest,
        LoginResponse,
        StatusView,
        SourceView,
        TargetView,
        ErrorView,
        TableView,
        CopyView,
        AppliedView,
        VerifiedView,
        LagSeries,
        PositionView,
        SourceTableView,
        ColumnView,
        AuditEntry,
        super::mappings::MappingView,
        super::mappings::MappingInput,
        super::mappings::MappingList,
        super::mappings::EditResult,
        super::mappings::Effect
    ))
)]
pub struct ApiDoc;

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

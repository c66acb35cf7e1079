//! Mapping management: the configuration file stays the one source of truth, and an edit from
//! the API changes that file the way a person would, then goes the way SIGHUP goes.
//!
//! One edit, under one lock: read the file and check the caller's `If-Match` against its
//! SHA-256 (409 when someone changed it since); change the `[[mappings]]` entry with
//! `toml_edit`, so comments, order and every other key (secrets included) stay as written;
//! validate the whole new file with the start-up validator (422 with its message and key);
//! describe what will happen per target (`dry_run=true` stops here); write a temporary file
//! beside it, fsync, keep the old file as `<name>.bak`, rename over it and fsync the directory,
//! so a crash leaves the old file or the new one, never half of one; then
//! `Handle::reload_file`, as SIGHUP does, and a row in the audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};
use utoipa::{IntoParams, ToSchema};

use super::api::{admin_caller, caller, ApiError, Body, PathArg, QueryArg};
use super::Admin;
use crate::config::{derived_mapping_id, Config, ConfigError, MappingConfig};
use crate::engine::recopy;
use crate::engine::target::TargetSpec;
use crate::routing::mapping::Mapping;

/// A mapping as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MappingView {
    pub id: String,
    /// `db.table`; either part may use `*`.
    pub source: String,
    pub targets: Vec<String>,
    pub table: Option<String>,
    pub columns: Option<Vec<String>>,
    #[serde(rename = "where")]
    pub filter: Option<String>,
}

impl From<&MappingConfig> for MappingView {
    fn from(m: &MappingConfig) -> Self {
        MappingView {
            id: m.id.clone(),
            source: m.source.to_string(),
            targets: m.targets.clone(),
            table: m.table.clone(),
            columns: m.columns.clone(),
            filter: m.filter.as_ref().map(|f| f.text().to_owned()),
        }
    }
}

/// A mapping to create, or what a mapping becomes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingInput {
    /// Kept when absent on an update; made from the source and table when absent on a create.
    pub id: Option<String>,
    pub source: String,
    pub targets: Vec<String>,
    pub table: Option<String>,
    pub columns: Option<Vec<String>>,
    #[serde(rename = "where")]
    pub filter: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MappingList {
    /// The file's hash: send it back as `If-Match` with a change.
    pub etag: String,
    /// Whether the file can be changed from here, and why not.
    pub writable: bool,
    pub read_only_reason: Option<String>,
    pub mappings: Vec<MappingView>,
}

/// What an edit does, per target.
#[derive(Debug, Serialize, ToSchema)]
pub struct Effect {
    pub target: String,
    pub mapping: String,
    pub effect: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EditResult {
    /// Whether the file was written and applied (false for `dry_run`).
    pub applied: bool,
    pub etag: String,
    pub effects: Vec<Effect>,
    pub mapping: Option<MappingView>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EditParams {
    /// Validate and describe the change without making it.
    #[serde(default)]
    pub dry_run: bool,
    /// With a delete: also drop the replica tables rowsync filled for the mapping (those no
    /// other mapping fills). Without it they stay as they are.
    #[serde(default)]
    pub drop_replica: bool,
}

/// The configuration file, the file its mappings are in (the same one, or `mappings_file`),
/// and the lock that makes edits one at a time.
pub struct ConfigFile {
    main: PathBuf,
    edited: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl ConfigFile {
    pub fn new(config: &Config) -> ConfigFile {
        ConfigFile {
            main: config.path.clone(),
            edited: config.mappings_path().to_owned(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration with `mappings` as the mappings file's text.
    fn with_mappings(&self, mappings: &str, environment: bool) -> Result<Config, ApiError> {
        // The environment's overrides apply as they did to the running configuration.
        let env = Config::environment(environment);
        let config = if self.edited == self.main {
            Config::from_parts(mappings, &self.main, None, env)
        } else {
            let main = read(&self.main)?;
            Config::from_parts(&main, &self.main, Some(mappings), env)
        };
        config.map_err(invalid)
    }

    /// The mappings file's text, and the configuration as it is.
    fn current(&self, environment: bool) -> Result<(String, Config), ApiError> {
        let text = read(&self.edited)?;
        let config = self.with_mappings(&text, environment)?;
        Ok((text, config))
    }
}

fn etag(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The directory `path` is in (`.` for a bare file name).
fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Why the file cannot be written, if it cannot.
fn read_only_reason(path: &Path) -> Option<String> {
    let dir = directory_of(path);
    let file = std::fs::OpenOptions::new().append(true).open(path);
    // A new, unnamed file: nothing existing is followed or truncated.
    let made = tempfile::tempfile_in(dir);
    match (file, made) {
        (Err(e), _) => Some(format!("{} is not writable: {e}", path.display())),
        (_, Err(e)) => Some(format!(
            "its directory {} is not writable (the file is replaced by a rename): {e}",
            dir.display()
        )),
        _ => None,
    }
}

fn read(path: &Path) -> Result<String, ApiError> {
    std::fs::read_to_string(path).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading {}: {e}", path.display()),
        )
    })
}

/// A configuration error as a 422 naming the key. A TOML syntax error quotes the line it is
/// on, which may hold a password: only its position and reason are passed on.
fn invalid(e: ConfigError) -> ApiError {
    let field = match &e {
        ConfigError::Invalid { key, .. } => Some(key.clone()),
        _ => None,
    };
    let text = e.to_string();
    let message = match &e {
        ConfigError::Parse { .. } => text
            .lines()
            .filter(|l| !l.trim_start().starts_with('|') && !l.contains(" | "))
            .collect::<Vec<_>>()
            .join(" "),
        _ => text,
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).with_field(field)
}

/// Every mapping of the file, with its hash and whether it can be changed.
#[utoipa::path(get, path = "/api/v1/mappings", responses((status = 200, body = MappingList), (status = 401, body = ApiError)))]
pub async fn list(
    State(admin): State<Arc<Admin>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<MappingList>, ApiError> {
    caller(&admin, &method, &headers).await?;
    let (text, config) = admin.file.current(admin.handle.config().environment)?;
    let reason = read_only_reason(&admin.file.edited);
    Ok(Json(MappingList {
        etag: etag(&text),
        writable: reason.is_none(),
        read_only_reason: reason,
        mappings: config.mappings.iter().map(MappingView::from).collect(),
    }))
}

/// One mapping; its `ETag` is the file's.
#[utoipa::path(get, path = "/api/v1/mappings/{id}", params(("id" = String, Path)),
    responses((status = 200, body = MappingView), (status = 404, body = ApiError)))]
pub async fn get_one(
    State(admin): State<Arc<Admin>>,
    PathArg(id): PathArg<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller(&admin, &method, &headers).await?;
    let (text, config) = admin.file.current(admin.handle.config().environment)?;
    let m = config
        .mappings
        .iter()
        .find(|m| m.id == id)
        .ok_or_else(|| not_found(&id))?;
    Ok(with_etag(
        &etag(&text),
        Json(MappingView::from(m)).into_response(),
    ))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("there is no mapping `{id}`"))
}

fn with_etag(tag: &str, mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(tag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// Creates a mapping: copied online into its targets, then streamed.
#[utoipa::path(post, path = "/api/v1/mappings", request_body = MappingInput, params(EditParams),
    responses((status = 201, body = EditResult), (status = 200, body = EditResult, description = "dry run"),
        (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
pub async fn create(
    State(admin): State<Arc<Admin>>,
    QueryArg(params): QueryArg<EditParams>,
    method: Method,
    headers: HeaderMap,
    Body(input): Body<MappingInput>,
) -> Result<Response, ApiError> {
    let who = admin_caller(&admin, &method, &headers).await?;
    let edit = Edit::Create(input);
    let result = apply(&admin, &who.name, &headers, edit, params.dry_run).await?;
    let status = if result.applied {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(
        &result.etag.clone(),
        (status, Json(result)).into_response(),
    ))
}

/// Changes a mapping: a changed shape is copied again online.
#[utoipa::path(put, path = "/api/v1/mappings/{id}", request_body = MappingInput, params(("id" = String, Path), EditParams),
    responses((status = 200, body = EditResult), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
pub async fn update(
    State(admin): State<Arc<Admin>>,
    PathArg(id): PathArg<String>,
    QueryArg(params): QueryArg<EditParams>,
    method: Method,
    headers: HeaderMap,
    Body(input): Body<MappingInput>,
) -> Result<Response, ApiError> {
    let who = admin_caller(&admin, &method, &headers).await?;
    let result = apply(
        &admin,
        &who.name,
        &headers,
        Edit::Update(id, input),
        params.dry_run,
    )
    .await?;
    Ok(with_etag(
        &result.etag.clone(),
        Json(result).into_response(),
    ))
}

/// Deletes a mapping: its tables stop applying; the replica tables stay.
#[utoipa::path(delete, path = "/api/v1/mappings/{id}", params(("id" = String, Path), EditParams),
    responses((status = 200, body = EditResult), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn delete(
    State(admin): State<Arc<Admin>>,
    PathArg(id): PathArg<String>,
    QueryArg(params): QueryArg<EditParams>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = admin_caller(&admin, &method, &headers).await?;
    let result = apply(
        &admin,
        &who.name,
        &headers,
        Edit::Delete(id, params.drop_replica),
        params.dry_run,
    )
    .await?;
    Ok(with_etag(
        &result.etag.clone(),
        Json(result).into_response(),
    ))
}

enum Edit {
    Create(MappingInput),
    Update(String, MappingInput),
    /// The mapping, and whether its replica tables go too.
    Delete(String, bool),
}

/// Carries out one edit (see the module doc).
async fn apply(
    admin: &Admin,
    user: &str,
    headers: &HeaderMap,
    edit: Edit,
    dry_run: bool,
) -> Result<EditResult, ApiError> {
    let path = &admin.file.edited;
    let _one_at_a_time = admin.file.lock.lock().await;
    let (text, old) = admin.file.current(admin.handle.config().environment)?;
    let tag = etag(&text);
    if let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if wanted != tag && wanted != "*" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the configuration changed since you read it; reload the mappings and try again",
            ));
        }
    }
    if !dry_run {
        if let Some(reason) = read_only_reason(path) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("mappings are read-only here: {reason}"),
            ));
        }
    }
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")))?;
    let (action, subject) = change(&mut doc, &old, &edit)?;
    let new_text = doc.to_string();
    let new = admin
        .file
        .with_mappings(&new_text, admin.handle.config().environment)?;
    if let Edit::Create(input) | Edit::Update(_, input) = &edit {
        check_against_source(&new, input).await?;
    }
    let before = old
        .mappings
        .iter()
        .find(|m| m.id == subject)
        .map(MappingView::from);
    let after = new
        .mappings
        .iter()
        .find(|m| m.id == subject)
        .map(MappingView::from);
    let effects = effects(&old, &new);
    // Which replica tables rowsync filled for a mapping deleted with its tables, read before
    // the reload makes rowsync forget them.
    let doomed = match (&edit, &before) {
        (Edit::Delete(id, true), Some(_)) => owned_replicas(&old, id).await?,
        _ => Vec::new(),
    };
    if dry_run {
        let mut effects = effects;
        for (target, replicas) in &doomed {
            effects.extend(replicas.iter().map(|r| Effect {
                target: target.clone(),
                mapping: subject.clone(),
                effect: format!("replica table `{r}` is dropped (unless another mapping fills it)"),
            }));
        }
        return Ok(EditResult {
            applied: false,
            etag: tag,
            effects,
            mapping: after,
        });
    }
    write_atomically(path, &new_text).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing {}: {e}", path.display()),
        )
    })?;
    // Recorded once the file changed, whether or not it applies.
    let json = |m: &Option<MappingView>| m.as_ref().and_then(|m| serde_json::to_string(m).ok());
    if let Some(store) = &admin.store {
        if let Err(e) = store
            .audit(
                user,
                action,
                &subject,
                json(&before).as_deref(),
                json(&after).as_deref(),
            )
            .await
        {
            tracing::warn!(error = %e, "cannot record the change in the audit log");
        }
    }
    admin
        .handle
        .reload_file(&admin.file.main)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("written, but not applied: {e}"),
            )
        })?;
    let mut effects = effects;
    for (target, replicas) in doomed {
        let Some(spec) = TargetSpec::all(&new)
            .into_iter()
            .find(|s| s.name() == target)
        else {
            continue;
        };
        let dropped = recopy::drop_replicas(&spec, &replicas).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("applied, but the replica tables of `{target}` were not dropped: {e}"),
            )
        })?;
        for replica in dropped {
            effects.push(Effect {
                target: target.clone(),
                mapping: subject.clone(),
                effect: format!("replica table `{replica}` dropped"),
            });
        }
    }
    tracing::info!(user = %user, action, mapping = %subject, "mappings changed through the admin API");
    Ok(EditResult {
        applied: true,
        etag: etag(&new_text),
        effects,
        mapping: after,
    })
}

/// Changes `doc` as `edit` says; returns the audit action and the mapping's id.
fn change(
    doc: &mut DocumentMut,
    old: &Config,
    edit: &Edit,
) -> Result<(&'static str, String), ApiError> {
    let index = |id: &str| {
        old.mappings
            .iter()
            .position(|m| m.id == id)
            .ok_or_else(|| not_found(id))
    };
    if doc.get("mappings").is_none() {
        doc.insert("mappings", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let list = doc
        .get_mut("mappings")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "`mappings` in the file is not a list of [[mappings]] tables; edit it by hand",
            )
        })?;
    let input_id = match edit {
        Edit::Create(i) | Edit::Update(_, i) => i.id.as_deref(),
        Edit::Delete(..) => None,
    };
    if input_id.is_some_and(|id| id.trim().is_empty()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`id` must not be empty (leave it out to keep or derive one)",
        )
        .with_field(Some("id".into())));
    }
    match edit {
        Edit::Create(input) => {
            let id = input.id.clone().unwrap_or_else(|| {
                derived_mapping_id(&input.source, input.table.as_deref(), |id| {
                    old.mappings.iter().any(|m| m.id == id)
                })
            });
            let mut table = Table::new();
            fill(&mut table, &id, input);
            list.push(table);
            Ok(("mapping.create", id))
        }
        Edit::Update(id, input) => {
            let i = index(id)?;
            let table = list.get_mut(i).ok_or_else(|| not_found(id))?;
            let new_id = input.id.clone().unwrap_or_else(|| id.clone());
            fill(table, &new_id, input);
            Ok(("mapping.update", new_id))
        }
        Edit::Delete(id, _) => {
            list.remove(index(id)?);
            Ok(("mapping.delete", id.clone()))
        }
    }
}

/// Writes `input` into a `[[mappings]]` table, keeping the table's comments and other keys.
fn fill(table: &mut Table, id: &str, input: &MappingInput) {
    table.insert("id", value(id));
    table.insert("source", value(&input.source));
    table.insert("targets", value(input.targets.iter().collect::<Array>()));
    let optional = |table: &mut Table, key: &str, v: Option<Item>| match v {
        Some(item) => {
            table.insert(key, item);
        }
        None => {
            table.remove(key);
        }
    };
    optional(table, "table", input.table.as_deref().map(value));
    optional(
        table,
        "columns",
        input
            .columns
            .as_ref()
            .map(|c| value(c.iter().collect::<Array>())),
    );
    optional(table, "where", input.filter.as_deref().map(value));
}

/// What changes per target between two configurations' mappings.
fn effects(old: &Config, new: &Config) -> Vec<Effect> {
    let mut out = Vec::new();
    let shape = |m: &MappingConfig| {
        (
            m.source.clone(),
            m.table.clone(),
            m.columns.clone(),
            m.filter.clone(),
        )
    };
    for m in &new.mappings {
        let before = old.mappings.iter().find(|o| o.id == m.id);
        for t in &m.targets {
            let had = before.filter(|o| o.targets.contains(t));
            let effect = match had {
                None => "copied online, then streams",
                Some(o) if shape(o) != shape(m) => {
                    "copied again online under the new shape, then streams"
                }
                Some(_) => continue,
            };
            out.push(Effect {
                target: t.clone(),
                mapping: m.id.clone(),
                effect: effect.into(),
            });
        }
    }
    for o in &old.mappings {
        let after = new.mappings.iter().find(|m| m.id == o.id);
        for t in &o.targets {
            if !after.is_some_and(|m| m.targets.contains(t)) {
                out.push(Effect {
                    target: t.clone(),
                    mapping: o.id.clone(),
                    effect: "stops applying; the replica table stays as it is".into(),
                });
            }
        }
    }
    out
}

/// Replaces `path` with `text` so that a crash leaves one whole file or the other, keeping
/// the old one as `<path>.bak`.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = directory_of(path);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    if let Ok(perms) = std::fs::metadata(path).map(|m| m.permissions()) {
        let _ = std::fs::set_permissions(tmp.path(), perms);
    }
    let mut backup = path.as_os_str().to_owned();
    backup.push(".bak");
    std::fs::copy(path, PathBuf::from(backup))?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Per target of mapping `id` in `config`: the replica tables rowsync filled for it.
async fn owned_replicas(config: &Config, id: &str) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let Some(m) = config.mappings.iter().find(|m| m.id == id) else {
        return Ok(Vec::new());
    };
    let mapping = Mapping::from(m);
    let mut out = Vec::new();
    for spec in TargetSpec::all(config)
        .iter()
        .filter(|s| m.targets.iter().any(|t| t.eq_ignore_ascii_case(s.name())))
    {
        let owned = recopy::owned_replicas(spec, &mapping).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("reading what target `{}` holds: {e}", spec.name()),
            )
        })?;
        out.push((spec.name().to_owned(), owned));
    }
    Ok(out)
}

/// The names a request gives, checked against the source's real schema: an exact source
/// table that exists must have the columns the mapping lists (its key among them) and those
/// its filter names. A table that does not exist yet is picked up when it is created.
async fn check_against_source(config: &Config, input: &MappingInput) -> Result<(), ApiError> {
    let Ok(pattern) = input.source.parse::<crate::model::TablePattern>() else {
        return Ok(());
    };
    let Some(exact) = pattern.exact() else {
        return Ok(());
    };
    let read = crate::engine::inspect::source_tables(config);
    let tables = match tokio::time::timeout(std::time::Duration::from_secs(10), read).await {
        Ok(Ok(tables)) => tables,
        // The source cannot be asked now: the validator's checks stand, the copy checks more.
        _ => return Ok(()),
    };
    let Some(table) = tables.iter().find(|t| t.table == exact) else {
        return Ok(());
    };
    let has = |c: &str| table.columns.iter().any(|(n, _)| n.eq_ignore_ascii_case(c));
    let refuse = |field: &str, why: String| {
        Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why).with_field(Some(field.into())))
    };
    if let Some(columns) = &input.columns {
        if let Some(c) = columns.iter().find(|c| !has(c)) {
            return refuse("columns", format!("{exact} has no column `{c}`"));
        }
        if let Some(k) = table
            .primary_key
            .iter()
            .find(|k| !columns.iter().any(|c| c.eq_ignore_ascii_case(k)))
        {
            return refuse(
                "columns",
                format!("the columns must include the primary key column `{k}` of {exact}"),
            );
        }
    }
    if let Some(filter) = config
        .mappings
        .iter()
        .find(|m| {
            m.source == pattern && m.filter.as_ref().map(|f| f.text()) == input.filter.as_deref()
        })
        .and_then(|m| m.filter.as_ref())
    {
        if let Some(c) = filter.columns().into_iter().find(|c| !has(c)) {
            return refuse(
                "where",
                format!("the filter names column `{c}`, which {exact} does not have"),
            );
        }
    }
    Ok(())
}

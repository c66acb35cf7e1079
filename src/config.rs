//! The configuration file: TOML with environment overrides, validated before anything runs.
//!
//! Every key may be overridden by an environment variable: `ROWSYNC_` followed by the key path
//! in upper case with `__` between levels; array entries of `[[targets]]` are addressed by
//! their `name` (`ROWSYNC_TARGETS__ORDER__URL`). `ROWSYNC_LOG` is reserved for the log filter.
//! Errors name the file, the key and the reason.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::filter::Filter;
use crate::model::name::TablePattern;
use crate::model::position::StartAt;

/// The file as written: the same shape as `Config`, with the values that have a parsed form
/// still text. `Config::from_toml` validates it and parses each of them once.
mod file {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        #[serde(default = "super::default_pipeline")]
        pub pipeline: String,
        pub source: Source,
        pub targets: Vec<super::TargetConfig>,
        #[serde(default)]
        pub mappings: Vec<Mapping>,
        #[serde(default)]
        pub apply: super::ApplyConfig,
        #[serde(default)]
        pub copy: super::CopyConfig,
        #[serde(default)]
        pub state: super::StateConfig,
        #[serde(default)]
        pub admin: Admin,
        /// A file holding the `[[mappings]]` instead of this one.
        #[serde(default)]
        pub mappings_file: Option<String>,
        #[serde(default)]
        pub verify: Verify,
        #[serde(default)]
        pub standby: Standby,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Verify {
        pub every: Option<String>,
        pub share: Option<f64>,
        pub rows_per_second: Option<u64>,
        pub chunk_rows: Option<usize>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Standby {
        pub takeover_secs: Option<u64>,
    }

    /// A separate mappings file: `[[mappings]]` entries and nothing else. Deserialized only to
    /// check that shape, with line and column in the errors.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct Mappings {
        #[serde(default)]
        pub mappings: Vec<Mapping>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Admin {
        pub listen: Option<String>,
        #[serde(default)]
        pub users: Vec<super::AdminUser>,
        #[serde(default)]
        pub tokens: Vec<super::AdminToken>,
        pub metrics_token: Option<String>,
        /// `ROWSYNC_ADMIN__PASSWORD`: user `admin`'s password, in plain text.
        pub password: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Source {
        pub url: String,
        pub server_id: u32,
        #[serde(default = "default_start")]
        pub start: String,
        #[serde(default = "default_heartbeat")]
        pub heartbeat_secs: f64,
        #[serde(default)]
        pub read_timeout_secs: Option<f64>,
        #[serde(default)]
        pub tls: Option<super::TlsConfig>,
    }

    fn default_start() -> String {
        "snapshot".into()
    }

    fn default_heartbeat() -> f64 {
        5.0
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Mapping {
        #[serde(default)]
        pub id: Option<String>,
        pub source: String,
        pub targets: Vec<String>,
        #[serde(default)]
        pub table: Option<String>,
        #[serde(default)]
        pub columns: Option<Vec<String>>,
        #[serde(default, rename = "where")]
        pub filter: Option<String>,
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

/// A validated configuration: every value with a meaning beyond text is parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Name under which targets store their checkpoint; several pipelines may share a target.
    pub pipeline: String,
    pub source: SourceConfig,
    pub targets: Vec<TargetConfig>,
    pub mappings: Vec<MappingConfig>,
    pub apply: ApplyConfig,
    pub copy: CopyConfig,
    pub state: StateConfig,
    pub admin: AdminConfig,
    pub verify: VerifyConfig,
    pub standby: StandbyConfig,
    /// Where the file was read from, for messages.
    pub path: PathBuf,
    /// The file holding the mappings, when not this one (`mappings_file`, resolved beside it).
    pub mappings_file: Option<PathBuf>,
    /// Whether the process environment's `ROWSYNC_*` overrides were applied (`load`), so a
    /// reload reads the file the same way.
    pub environment: bool,
}

pub(crate) fn default_pipeline() -> String {
    "rowsync".into()
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub url: String,
    /// Base replica server id; binlog connection `i` uses `server_id + i`.
    pub server_id: u32,
    /// Start point for a target without a checkpoint.
    pub start: StartAt,
    /// Seconds between source heartbeats when the binlog is idle.
    pub heartbeat_secs: f64,
    /// Seconds without any event (heartbeats included) before the connection is considered
    /// dead and reopened; must exceed `heartbeat_secs`.
    pub read_timeout_secs: Option<f64>,
    pub tls: Option<TlsConfig>,
}

impl SourceConfig {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_secs)
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs_f64(
            self.read_timeout_secs
                .unwrap_or(self.heartbeat_secs * 3.0 + 1.0),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// TLS to one server. Without `[tls]` the connection is plain.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the server certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that require X509.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub verify: TlsVerify,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsVerify {
    /// Certificate chain and host name.
    #[default]
    Full,
    /// Certificate chain only.
    Ca,
    /// Encrypt without checking the certificate.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingConfig {
    /// Stable name of the mapping for the admin API: its `id` key, or one made from its source
    /// and replica name.
    pub id: String,
    /// `db.table`, either part may use `*`.
    pub source: TablePattern,
    pub targets: Vec<String>,
    /// Replica table name; defaults to the source table's name.
    pub table: Option<String>,
    /// Columns to copy; all when absent. Must include the primary key.
    pub columns: Option<Vec<String>>,
    /// Row filter over the source columns (see `model::filter`); all rows when absent.
    pub filter: Option<Filter>,
}

/// How targets group and batch their writes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    /// Most source transactions grouped into one target transaction.
    #[serde(default = "default_group_txns")]
    pub max_group_transactions: usize,
    /// Most row changes buffered before they are written (inside the open transaction).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Longest a group stays open before it commits, in milliseconds.
    #[serde(default = "default_group_ms")]
    pub max_group_ms: u64,
    /// Events buffered between a target's binlog reader and its writer.
    #[serde(default = "default_queue")]
    pub queue_events: usize,
    /// Target connections applying groups with disjoint keys at once (see `sink::lanes`).
    #[serde(default = "default_lanes")]
    pub lanes: usize,
}

/// Most `apply.lanes`: beyond this, the target's commit order, not its cores, is the limit.
pub const MAX_LANES: usize = 16;

fn default_group_txns() -> usize {
    5000
}
fn default_batch_rows() -> usize {
    2000
}
fn default_group_ms() -> u64 {
    500
}
fn default_queue() -> usize {
    256
}
fn default_lanes() -> usize {
    2
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            max_group_transactions: default_group_txns(),
            batch_rows: default_batch_rows(),
            max_group_ms: default_group_ms(),
            queue_events: default_queue(),
            lanes: default_lanes(),
        }
    }
}

/// How the initial copy reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyConfig {
    /// Rows read from the source per chunk; each chunk commits with its progress.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// Fewer rows per chunk for wide tables: about this many bytes, by the source's average
    /// row size.
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: usize,
    /// Tables copied at the same time, each in its own snapshot and connections.
    #[serde(default = "default_parallel_tables")]
    pub parallel_tables: usize,
    /// Target connections writing one table's chunks at once (they commit in key order).
    #[serde(default = "default_copy_writers")]
    pub writers: usize,
}

fn default_copy_writers() -> usize {
    2
}

fn default_parallel_tables() -> usize {
    2
}

fn default_chunk_rows() -> usize {
    20_000
}

fn default_chunk_bytes() -> usize {
    4 * 1024 * 1024
}

impl Default for CopyConfig {
    fn default() -> Self {
        CopyConfig {
            chunk_rows: default_chunk_rows(),
            chunk_bytes: default_chunk_bytes(),
            parallel_tables: default_parallel_tables(),
            writers: default_copy_writers(),
        }
    }
}

/// The admin HTTP API and UI of `rowsync run`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: std::net::SocketAddr,
    pub users: Vec<AdminUser>,
    pub tokens: Vec<AdminToken>,
    /// When set, `/metrics` wants it as a bearer token.
    pub metrics_token: Option<String>,
    /// User `admin`'s password from `ROWSYNC_ADMIN__PASSWORD`, hashed when the admin starts.
    pub password: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field(
                "users",
                &self.users.iter().map(|u| &u.name).collect::<Vec<_>>(),
            )
            .field(
                "tokens",
                &self.tokens.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "…"))
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

/// What an admin user or token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: mappings, pause and resume, re-copies.
    Admin,
    /// Reads only.
    Viewer,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub name: String,
    pub role: Role,
    /// An argon2 PHC string (`rowsync hash-password` prints one).
    pub password_hash: String,
}

/// An API token for scripts, sent as `Authorization: Bearer <token>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    pub role: Role,
    /// `sha256:<hex>` of the token (`rowsync hash-password --token` makes both).
    pub token_hash: String,
}

/// How replicas are compared with their source (`rowsync verify`, and the daemon's schedule).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyConfig {
    /// How often the daemon verifies each target; never when absent.
    pub every: Option<Duration>,
    /// The share of each table's chunks one scheduled run checks (0 < share ≤ 1); the next
    /// run goes on where the last one stopped, so `1 / share` runs cover every row.
    pub share: f64,
    /// Most source rows read per second, to keep verify's load on the source low.
    pub rows_per_second: u64,
    /// Rows per compared chunk: what one checksum covers and what a repair rewrites at most.
    pub chunk_rows: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            every: None,
            share: 1.0,
            rows_per_second: 50_000,
            chunk_rows: 1000,
        }
    }
}

/// Active/standby: how fast a standby takes over from an active process that vanished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyConfig {
    /// The target sessions holding the lock close after this long without a word from
    /// rowsync (`wait_timeout`; rowsync pings well within it), so a dead host's lock is
    /// released and a standby takes over within about this time.
    pub takeover: Duration,
}

impl Default for StandbyConfig {
    fn default() -> Self {
        StandbyConfig {
            takeover: Duration::from_secs(30),
        }
    }
}

/// Parses `30s`, `10m`, `6h` or `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: use a number and a unit, e.g. 30s, 10m, 6h or 1d"))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// Local state of the daemon (what `status` shows besides the targets' checkpoints).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// SQLite file; defaults to `<config file stem>.state.db` beside the config file.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl Config {
    /// Reads, overrides from the environment and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_as(path, true)
    }

    /// Reads and validates `path`, with the environment's overrides when `environment`.
    pub fn load_as(path: &Path, environment: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_parts(&text, path, None, Self::environment(environment))?;
        config.environment = environment;
        Ok(config)
    }

    /// The `ROWSYNC_*` overrides to apply: the process's, or none.
    pub fn environment(apply: bool) -> Vec<(String, String)> {
        if apply {
            std::env::vars().collect()
        } else {
            Vec::new()
        }
    }

    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::from_parts(text, path, None, env)
    }

    /// The file holding the mappings: `mappings_file`, or this one.
    pub fn mappings_path(&self) -> &Path {
        self.mappings_file.as_deref().unwrap_or(&self.path)
    }

    /// Like `from_toml`, with `mappings_text` as the text of the mappings file (when the
    /// configuration names one) instead of what is on disk: an edit being validated.
    pub fn from_parts(
        text: &str,
        path: &Path,
        mappings_text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            file: path.to_owned(),
            message,
        };
        // Deserialize the file alone first: its errors carry line and column.
        let alone = toml::from_str::<file::Config>(text).map_err(|e| parse_err(e.to_string()))?;
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let mappings_file = match &alone.mappings_file {
            Some(name) => {
                let file = path.parent().unwrap_or(Path::new(".")).join(name);
                if doc.contains_key("mappings") {
                    return Err(ConfigError::Invalid {
                        file: path.to_owned(),
                        key: "mappings".into(),
                        reason: format!(
                            "the mappings are in mappings_file ({}); keep them in one place",
                            file.display()
                        ),
                    });
                }
                doc.insert("mappings".into(), read_mappings(&file, mappings_text)?);
                Some(file)
            }
            None => None,
        };
        for (name, value) in env {
            // ROWSYNC_LOG is the log filter, not a config key.
            if let Some(key) = name.strip_prefix("ROWSYNC_").filter(|k| *k != "LOG") {
                apply_override(&mut doc, key, &value).map_err(|reason| ConfigError::Invalid {
                    file: path.to_owned(),
                    key: name.clone(),
                    reason,
                })?;
            }
        }
        let raw: file::Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(format!("after environment overrides: {e}")))?;
        let config = Config::parse(raw, path, mappings_file)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses the values of `raw` that have a meaning beyond text, naming the key of any that
    /// does not parse.
    fn parse(
        raw: file::Config,
        path: &Path,
        mappings_file: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let mappings_path = mappings_file.as_deref().unwrap_or(path);
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            file: if key.starts_with("mappings") {
                mappings_path.to_owned()
            } else {
                path.to_owned()
            },
            key,
            reason,
        };
        let start = raw
            .source
            .start
            .parse::<StartAt>()
            .map_err(|e| invalid("source.start".into(), e.to_string()))?;
        let mappings = raw
            .mappings
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let source = m
                    .source
                    .parse::<TablePattern>()
                    .map_err(|e| invalid(format!("mappings[{i}].source"), e))?;
                let filter = m
                    .filter
                    .map(|text| text.parse::<Filter>())
                    .transpose()
                    .map_err(|e| invalid(format!("mappings[{i}].where"), e.to_string()))?;
                Ok(MappingConfig {
                    id: m.id.unwrap_or_default(),
                    source,
                    targets: m.targets,
                    table: m.table,
                    columns: m.columns,
                    filter,
                })
            })
            .collect::<Result<Vec<MappingConfig>, ConfigError>>()?;
        let mappings = with_ids(mappings);
        let defaults = VerifyConfig::default();
        let verify = VerifyConfig {
            every: raw
                .verify
                .every
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| invalid("verify.every".into(), e))?,
            share: raw.verify.share.unwrap_or(defaults.share),
            rows_per_second: raw
                .verify
                .rows_per_second
                .unwrap_or(defaults.rows_per_second),
            chunk_rows: raw.verify.chunk_rows.unwrap_or(defaults.chunk_rows),
        };
        let standby = StandbyConfig {
            takeover: raw
                .standby
                .takeover_secs
                .map(Duration::from_secs)
                .unwrap_or(StandbyConfig::default().takeover),
        };
        Ok(Config {
            pipeline: raw.pipeline,
            source: SourceConfig {
                url: raw.source.url,
                server_id: raw.source.server_id,
                start,
                heartbeat_secs: raw.source.heartbeat_secs,
                read_timeout_secs: raw.source.read_timeout_secs,
                tls: raw.source.tls,
            },
            targets: raw.targets,
            mappings,
            apply: raw.apply,
            copy: raw.copy,
            state: raw.state,
            admin: AdminConfig {
                listen: raw
                    .admin
                    .listen
                    .as_deref()
                    .unwrap_or("127.0.0.1:8080")
                    .parse()
                    .map_err(|e| {
                        invalid(
                            "admin.listen".into(),
                            format!("{e}; use host:port, e.g. 127.0.0.1:8080"),
                        )
                    })?,
                users: raw.admin.users,
                tokens: raw.admin.tokens,
                metrics_token: raw.admin.metrics_token,
                password: raw.admin.password,
            },
            verify,
            standby,
            path: path.to_owned(),
            mappings_file,
            environment: false,
        })
    }

    fn invalid(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        let key = key.into();
        // Errors in a mapping name the file it is in.
        let file = if key.starts_with("mappings") {
            self.mappings_path().to_owned()
        } else {
            self.path.clone()
        };
        ConfigError::Invalid {
            file,
            key,
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.source.server_id == 0 {
            return Err(self.invalid("source.server_id", "must be a non-zero replica id"));
        }
        if self.copy.chunk_rows == 0 {
            return Err(self.invalid("copy.chunk_rows", "must be at least 1"));
        }
        if !(self.verify.share > 0.0 && self.verify.share <= 1.0) {
            return Err(self.invalid("verify.share", "must be above 0 and at most 1"));
        }
        if self.verify.rows_per_second == 0 || self.verify.chunk_rows == 0 {
            return Err(self.invalid(
                "verify",
                "rows_per_second and chunk_rows must be at least 1",
            ));
        }
        if self
            .verify
            .every
            .is_some_and(|d| d < Duration::from_secs(10))
        {
            return Err(self.invalid("verify.every", "must be at least 10s"));
        }
        let takeover = self.standby.takeover.as_secs();
        if !(5..=3600).contains(&takeover) {
            return Err(self.invalid(
                "standby.takeover_secs",
                "must be between 5 and 3600: shorter would close the sessions of a busy but healthy process",
            ));
        }
        if !(1..=MAX_LANES).contains(&self.apply.lanes) {
            return Err(self.invalid("apply.lanes", format!("must be between 1 and {MAX_LANES}")));
        }
        if self.copy.parallel_tables == 0 {
            return Err(self.invalid("copy.parallel_tables", "must be at least 1"));
        }
        if self.source.heartbeat_secs <= 0.0 || !self.source.heartbeat_secs.is_finite() {
            return Err(self.invalid("source.heartbeat_secs", "must be a positive number"));
        }
        if self.source.read_timeout() <= self.source.heartbeat() {
            return Err(self.invalid(
                "source.read_timeout_secs",
                "must be longer than heartbeat_secs, or every idle period would look like a dead connection",
            ));
        }
        check_url(&self.source.url).map_err(|r| self.invalid("source.url", r))?;
        if self.targets.is_empty() {
            return Err(self.invalid("targets", "at least one [[targets]] entry is required"));
        }
        let mut names = HashSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(self.invalid(
                    format!("targets[{i}].name"),
                    "use letters, digits, '_' or '-'",
                ));
            }
            if !names.insert(t.name.to_ascii_lowercase()) {
                return Err(self.invalid(
                    format!("targets[{i}].name"),
                    format!("target `{}` is defined twice", t.name),
                ));
            }
            let url = check_url(&t.url)
                .map_err(|r| self.invalid(format!("targets.{}.url", t.name), r))?;
            if url.path().trim_matches('/').is_empty() {
                return Err(self.invalid(
                    format!("targets.{}.url", t.name),
                    "name the target database in the URL path, e.g. mysql://user:pw@host:3306/order_db",
                ));
            }
        }
        if u32::MAX - self.source.server_id < self.targets.len() as u32 {
            return Err(self.invalid("source.server_id", "too large for one id per target"));
        }
        if self.mappings.is_empty() {
            return Err(self.invalid("mappings", "at least one [[mappings]] entry is required"));
        }
        let mut ids = HashSet::new();
        for (i, m) in self.mappings.iter().enumerate() {
            let key = |k: &str| format!("mappings[{i}].{k}");
            if !ids.insert(m.id.as_str())
                || !m
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(self.invalid(
                    key("id"),
                    format!(
                        "`{}`: ids are unique and use letters, digits, '.', '_' or '-'",
                        m.id
                    ),
                ));
            }
            if m.targets.is_empty() {
                return Err(self.invalid(key("targets"), "name at least one target"));
            }
            for t in &m.targets {
                if !names.contains(&t.to_ascii_lowercase()) {
                    return Err(self.invalid(
                        key("targets"),
                        format!("target `{t}` is not defined in [[targets]]"),
                    ));
                }
            }
            if let Some(table) = &m.table {
                if table.is_empty() {
                    return Err(self.invalid(key("table"), "must not be empty"));
                }
                if !m.source.is_exact() {
                    return Err(self.invalid(
                        key("table"),
                        "a `*` pattern maps many tables and cannot rename them to one",
                    ));
                }
            }
            if let Some(cols) = &m.columns {
                if cols.is_empty() {
                    return Err(
                        self.invalid(key("columns"), "must name at least the primary key columns")
                    );
                }
                let mut seen = HashSet::new();
                for c in cols {
                    if !seen.insert(c.to_ascii_lowercase()) {
                        return Err(
                            self.invalid(key("columns"), format!("column `{c}` is listed twice"))
                        );
                    }
                }
            }
        }
        self.check_one_writer_per_replica()?;
        self.check_admin()
    }

    fn check_admin(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, u) in self.admin.users.iter().enumerate() {
            if u.name.is_empty() || !names.insert(u.name.as_str()) {
                return Err(self.invalid(
                    format!("admin.users[{i}].name"),
                    "give each user its own, non-empty name",
                ));
            }
            if let Err(e) = argon2::PasswordHash::new(&u.password_hash) {
                return Err(self.invalid(
                    format!("admin.users[{i}].password_hash"),
                    format!("not an argon2 PHC string ({e}); `rowsync hash-password` prints one"),
                ));
            }
        }
        for (i, t) in self.admin.tokens.iter().enumerate() {
            let hex = t.token_hash.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(self.invalid(
                    format!("admin.tokens[{i}].token_hash"),
                    "must be `sha256:` and 64 hex digits; `rowsync hash-password --token` makes a token and its hash",
                ));
            }
        }
        if self.admin.password.as_deref() == Some("") {
            return Err(self.invalid("admin.password", "must not be empty"));
        }
        Ok(())
    }

    /// Two mappings that resolve to one (target, replica table) would wipe each other's rows
    /// (each copy starts by emptying its replica, and TRUNCATE of either empties both). What
    /// the file alone shows is refused here; tables a `*` pattern picks up at run time are
    /// checked when they appear (`routing::replicas`).
    fn check_one_writer_per_replica(&self) -> Result<(), ConfigError> {
        for (j, b) in self.mappings.iter().enumerate() {
            for (i, a) in self.mappings.iter().enumerate().take(j) {
                let shared = a
                    .targets
                    .iter()
                    .find(|t| b.targets.iter().any(|u| u.eq_ignore_ascii_case(t)));
                let Some(target) = shared else { continue };
                let (pa, pb) = (&a.source, &b.source);
                let replica = match (pa.exact(), pb.exact()) {
                    (Some(ta), Some(tb)) => {
                        let ra = a.table.clone().unwrap_or(ta.table);
                        let rb = b.table.clone().unwrap_or(tb.table);
                        ra.eq_ignore_ascii_case(&rb).then_some(ra)
                    }
                    // A pattern keeps table names: it collides with an exact mapping of a
                    // table it matches that keeps its name too.
                    (Some(t), None) if a.table.is_none() && pb.matches(&t) => Some(t.table),
                    (None, Some(t)) if b.table.is_none() && pa.matches(&t) => Some(t.table),
                    (None, None) if pa == pb => Some(format!("{pa}")),
                    _ => None,
                };
                if let Some(replica) = replica {
                    return Err(self.invalid(
                        format!("mappings[{j}]"),
                        format!(
                            "source `{}` writes replica table `{replica}` in target `{target}`, as mappings[{i}] (source `{}`) does; two mappings into one replica table would wipe each other's rows — give one of them its own `table`",
                            b.source, a.source
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The SQLite state file.
    pub fn state_path(&self) -> PathBuf {
        if let Some(p) = &self.state.path {
            return p.clone();
        }
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rowsync".into());
        self.path
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("{stem}.state.db"))
    }
}

/// The `[[mappings]]` of the separate mappings file `file` (or `text`, its new content), as
/// a TOML array for the main document.
fn read_mappings(file: &Path, text: Option<&str>) -> Result<toml::Value, ConfigError> {
    let read;
    let text = match text {
        Some(t) => t,
        None => {
            read = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                file: file.to_owned(),
                source,
            })?;
            &read
        }
    };
    let parse_err = |e: toml::de::Error| ConfigError::Parse {
        file: file.to_owned(),
        message: e.to_string(),
    };
    toml::from_str::<file::Mappings>(text).map_err(parse_err)?;
    let mut doc: toml::Table = toml::from_str(text).map_err(parse_err)?;
    Ok(doc
        .remove("mappings")
        .unwrap_or_else(|| toml::Value::Array(Vec::new())))
}

/// Gives every mapping without an `id` key one made from its source and replica name, unique
/// in the file; explicit ids stay as written (their uniqueness is validated).
fn with_ids(mut mappings: Vec<MappingConfig>) -> Vec<MappingConfig> {
    let mut used: HashSet<String> = mappings
        .iter()
        .filter(|m| !m.id.is_empty())
        .map(|m| m.id.clone())
        .collect();
    for m in mappings.iter_mut().filter(|m| m.id.is_empty()) {
        let id = derived_mapping_id(&m.source.to_string(), m.table.as_deref(), |id| {
            used.contains(id)
        });
        used.insert(id.clone());
        m.id = id;
    }
    mappings
}

/// The id of a mapping without an `id` key: its source and replica name, with characters an
/// id does not take replaced, and a number added until `taken` says no.
pub fn derived_mapping_id(
    source: &str,
    table: Option<&str>,
    taken: impl Fn(&str) -> bool,
) -> String {
    let keep = |c: char, extra: &str| {
        if c.is_ascii_alphanumeric() || extra.contains(c) {
            c
        } else {
            '_'
        }
    };
    let mut base: String = source.chars().map(|c| keep(c, "._-")).collect();
    if let Some(table) = table {
        base.push('-');
        base.extend(table.chars().map(|c| keep(c, "_")));
    }
    let mut id = base.clone();
    let mut n = 2;
    while taken(&id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

fn check_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "mysql" && url.scheme() != "mariadb" {
        return Err("use a mysql:// URL".into());
    }
    if url.host_str().is_none() {
        return Err("the URL has no host".into());
    }
    Ok(url)
}

/// Applies one `ROWSYNC_A__B__C=value` override to the parsed document.
fn apply_override(doc: &mut toml::Table, key: &str, value: &str) -> Result<(), String> {
    let parts: Vec<String> = key.split("__").map(|p| p.to_ascii_lowercase()).collect();
    // A password is text, whatever it looks like.
    let parsed = if parts.last().is_some_and(|p| p == "password") {
        toml::Value::String(value.to_owned())
    } else {
        parse_scalar(value)
    };
    let mut table = doc;
    let mut i = 0;
    while i < parts.len() {
        let part = &parts[i];
        let last = i + 1 == parts.len();
        if part == "targets" || part == "mappings" {
            if last {
                return Err("name an entry and a key, e.g. ROWSYNC_TARGETS__ORDER__URL".into());
            }
            let Some(toml::Value::Array(entries)) = table.get_mut(part.as_str()) else {
                return Err(format!("there is no `{part}` list to override"));
            };
            let wanted = &parts[i + 1];
            let entry = entries
                .iter_mut()
                .enumerate()
                .find(|(idx, e)| {
                    idx.to_string() == *wanted
                        || e.get("name")
                            .and_then(|n| n.as_str())
                            .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
                })
                .map(|(_, e)| e)
                .ok_or_else(|| format!("no `{part}` entry named `{wanted}`"))?;
            table = entry
                .as_table_mut()
                .ok_or_else(|| format!("`{part}` entries must be tables"))?;
            i += 2;
            continue;
        }
        if last {
            table.insert(part.clone(), parsed);
            return Ok(());
        }
        table = table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a table"))?;
        i += 1;
    }
    Err("empty key".into())
}

/// Numbers and booleans become TOML numbers and booleans; everything else stays text.
fn parse_scalar(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = value.parse::<f64>() {
        if value.contains('.') {
            return toml::Value::Float(f);
        }
    }
    match value {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[source]
url = "mysql://repl:secret@127.0.0.1:3306/"
server_id = 4101

[[targets]]
name = "order"
url = "mysql://rowsync:secret@127.0.0.1:3307/order_db"

[[targets]]
name = "purchase"
url = "mysql://rowsync:secret@127.0.0.1:3308/purchase_db"

[[mappings]]
source = "product.product"
targets = ["order", "purchase"]
"#;

    fn load(text: &str, env: Vec<(&str, &str)>) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            Path::new("rowsync.toml"),
            env.into_iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn contract_example_loads() {
        let c = load(BASE, vec![]).unwrap();
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.source.start, StartAt::Snapshot);
        assert_eq!(c.pipeline, "rowsync");
    }

    #[test]
    fn env_overrides_reach_targets_by_name() {
        let c = load(
            BASE,
            vec![
                ("ROWSYNC_SOURCE__URL", "mysql://a:b@10.0.0.1:3306/"),
                ("ROWSYNC_TARGETS__ORDER__URL", "mysql://x:y@h:1/o"),
                ("ROWSYNC_SOURCE__SERVER_ID", "77"),
            ],
        )
        .unwrap();
        assert_eq!(c.source.url, "mysql://a:b@10.0.0.1:3306/");
        assert_eq!(c.targets[0].url, "mysql://x:y@h:1/o");
        assert_eq!(c.source.server_id, 77);
        let err = load(BASE, vec![("ROWSYNC_TARGETS__NOPE__URL", "x")]).unwrap_err();
        assert!(
            err.to_string().contains("no `targets` entry named `nope`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_file_and_key() {
        let text = BASE.replace("server_id = 4101", "server_id = 4101\nserverid = 1");
        let err = load(&text, vec![]).unwrap_err().to_string();
        assert!(err.starts_with("rowsync.toml:"), "{err}");
        assert!(err.contains("unknown field `serverid`"), "{err}");
    }

    #[test]
    fn undefined_target_in_mapping_is_rejected() {
        let text = BASE.replace(
            r#"targets = ["order", "purchase"]"#,
            r#"targets = ["order", "billing"]"#,
        );
        let err = load(&text, vec![]).unwrap_err().to_string();
        assert!(err.contains("mappings[0].targets"), "{err}");
        assert!(err.contains("`billing` is not defined"), "{err}");
    }

    #[test]
    fn bad_filters_are_rejected_with_the_key() {
        let text = BASE.replace(
            r#"targets = ["order", "purchase"]"#,
            "targets = [\"order\"]\nwhere = \"deleted = = 0\"",
        );
        let err = load(&text, vec![]).unwrap_err().to_string();
        assert!(
            err.contains("mappings[0].where") && err.contains("cannot parse"),
            "{err}"
        );
        let ok = BASE.replace(
            r#"targets = ["order", "purchase"]"#,
            "targets = [\"order\"]\nwhere = \"deleted = 0 AND category_id IN (1, 2, 3)\"",
        );
        assert!(load(&ok, vec![]).unwrap().mappings[0].filter.is_some());
    }

    #[test]
    fn two_mappings_into_one_replica_are_rejected_naming_both() {
        let two = |a: &str, b: &str| {
            format!("{BASE}\n[[mappings]]\n{a}\ntargets = [\"order\"]\n\n[[mappings]]\n{b}\ntargets = [\"order\"]\n")
        };
        for (a, b) in [
            (
                "source = \"product.category\"",
                "source = \"product.batch\"\ntable = \"category\"",
            ),
            ("source = \"db1.t\"", "source = \"db2.t\""),
            ("source = \"shop.*\"", "source = \"shop.category\""),
            ("source = \"shop_*.item\"", "source = \"shop_*.item\""),
        ] {
            let err = load(&two(a, b), vec![]).unwrap_err().to_string();
            assert!(
                err.contains("mappings[2]")
                    && err.contains("as mappings[1]")
                    && err.contains("target `order`"),
                "{a} / {b}: {err}"
            );
        }
        // Other replica names, or other targets, are fine.
        load(
            &two(
                "source = \"product.category\"",
                "source = \"product.category\"\ntable = \"category_children\"",
            ),
            vec![],
        )
        .unwrap();
        load(
            &two(
                "source = \"shop.*\"",
                "source = \"shop.category\"\ntable = \"cat2\"",
            ),
            vec![],
        )
        .unwrap();
        let other_target = two("source = \"db1.t\"", "source = \"db2.t\"").replacen(
            "targets = [\"order\"]\n\n[[mappings]]\nsource = \"db2.t\"\ntargets = [\"order\"]",
            "targets = [\"order\"]\n\n[[mappings]]\nsource = \"db2.t\"\ntargets = [\"purchase\"]",
            1,
        );
        load(&other_target, vec![]).unwrap();
    }

    #[test]
    fn mappings_may_live_in_their_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let (head, mappings) = BASE.split_at(BASE.find("[[mappings]]").unwrap());
        let main = format!("mappings_file = \"maps.toml\"\n{head}");
        std::fs::write(dir.path().join("maps.toml"), mappings).unwrap();
        let path = dir.path().join("rowsync.toml");
        std::fs::write(&path, &main).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.mappings.len(), 1);
        assert_eq!(c.mappings_path(), dir.path().join("maps.toml"));
        // An error in a mapping names the mappings file; mappings in both files are refused.
        std::fs::write(
            dir.path().join("maps.toml"),
            mappings.replace(
                "targets = [\"order\", \"purchase\"]",
                "targets = [\"billing\"]",
            ),
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&dir.path().join("maps.toml").display().to_string())
                && err.contains("mappings[0].targets"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("maps.toml"),
            format!("pipeline = \"x\"\n{mappings}"),
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("maps.toml") && err.contains("unknown field `pipeline`"),
            "{err}"
        );
        std::fs::write(&path, format!("{main}\n{mappings}")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("keep them in one place"), "{err}");
    }

    #[test]
    fn admin_users_tokens_and_password_are_checked() {
        let with = |admin: &str| format!("{BASE}\n{admin}");
        let err = load(
            &with("[[admin.users]]\nname = \"a\"\nrole = \"admin\"\npassword_hash = \"plain\"\n"),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("admin.users[0].password_hash") && err.contains("hash-password"),
            "{err}"
        );
        let err = load(
            &with("[[admin.tokens]]\nname = \"ci\"\nrole = \"viewer\"\ntoken_hash = \"abc\"\n"),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("admin.tokens[0].token_hash"), "{err}");
        let err = load(&with("[admin]\nlisten = \"nowhere\"\n"), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin.listen"), "{err}");
        // A numeric password from the environment stays text.
        let c = load(BASE, vec![("ROWSYNC_ADMIN__PASSWORD", "12345")]).unwrap();
        assert_eq!(c.admin.password.as_deref(), Some("12345"));
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn bad_start_and_target_without_database_are_rejected() {
        let text = BASE.replace(
            "server_id = 4101",
            "server_id = 4101\nstart = \"yesterday\"",
        );
        assert!(load(&text, vec![])
            .unwrap_err()
            .to_string()
            .contains("source.start"));
        let text = BASE.replace("/order_db", "/");
        assert!(load(&text, vec![])
            .unwrap_err()
            .to_string()
            .contains("targets.order.url"));
    }
}

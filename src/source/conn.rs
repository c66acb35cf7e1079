//! Connection options for the source: URL, TLS and the session settings every source session
//! uses (UTC, and an `sql_mode` that accepts every value the source holds).

use std::time::Duration;

use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};

use super::SourceError;
use crate::config::{TlsConfig, TlsVerify};

/// `sql_mode` for rowsync sessions. Not strict: the source may hold values its own (possibly
/// non-strict) sessions wrote — zero and partial dates, the empty ENUM error value — and a
/// replica must take them as they are, as native row replication does. Replica columns have
/// the source's types (checked or created by rowsync), so nothing is truncated. A stored 0
/// in an AUTO_INCREMENT column stays 0.
pub const SESSION_SQL_MODE: &str =
    "ALLOW_INVALID_DATES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION";

/// Statements run on every new rowsync session, source or target.
pub fn session_init() -> Vec<String> {
    vec![
        "SET time_zone = '+00:00'".into(),
        format!("SET sql_mode = '{SESSION_SQL_MODE}'"),
        "SET NAMES utf8mb4".into(),
    ]
}

/// How long opening a connection may take. A frozen server accepts TCP connections but never
/// answers, so without a limit a reconnect would hang forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a source session within `CONNECT_TIMEOUT`.
pub async fn connect(opts: &Opts) -> Result<mysql_async::Conn, SourceError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts.clone())).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(SourceError::ConnectTimeout(CONNECT_TIMEOUT)),
    }
}

/// Options for a source connection.
pub fn source_opts(url: &str, tls: Option<&TlsConfig>) -> Result<Opts, mysql_async::UrlError> {
    let opts = Opts::from_url(url)?;
    let mut builder = OptsBuilder::from_opts(opts)
        .prefer_socket(false)
        .init(session_init())
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .stmt_cache_size(64);
    if let Some(tls) = tls {
        builder = builder.ssl_opts(ssl_opts(tls));
    }
    Ok(builder.into())
}

fn ssl_opts(tls: &TlsConfig) -> SslOpts {
    let mut ssl = SslOpts::default();
    if let Some(ca) = &tls.ca {
        ssl = ssl
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true);
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    match tls.verify {
        TlsVerify::Full => ssl,
        TlsVerify::Ca => ssl.with_danger_skip_domain_validation(true),
        TlsVerify::None => ssl
            .with_danger_accept_invalid_certs(true)
            .with_danger_skip_domain_validation(true),
    }
}

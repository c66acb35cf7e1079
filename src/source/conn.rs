//! Connection options for the source: URL, TLS and the session settings every source session
//! uses (UTC, and an `sql_mode` that accepts every value the source holds).

use std::time::Duration;

use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};

use super::SourceError;
use crate::config::{SourceConfig, TlsConfig, TlsVerify};
use crate::model::sql::session_init;

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

/// The connection options `source` names, a bad URL being a configuration error.
pub fn configured_opts(source: &SourceConfig) -> Result<Opts, SourceError> {
    source_opts(&source.url, source.tls.as_ref()).map_err(|e| SourceError::Config {
        reason: format!("source.url: {e}"),
    })
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

//! What rowsync needs to know about the source server before streaming: flavour, identity,
//! binlog settings, the current head position and the collation table.

use mysql_async::prelude::*;
use mysql_async::{Conn, Row};

use super::charset::Charsets;
use super::SourceError;
use crate::model::position::{
    BinlogFile, Checkpoint, Flavor, GtidSet, Position, SourceIdentity, StartAt,
};

/// Source server facts read at connect time.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub version: String,
    pub identity: SourceIdentity,
    pub log_bin: bool,
    pub binlog_format: String,
    pub binlog_row_image: String,
    /// `None` where the server has no such setting (MySQL 5.7).
    pub binlog_row_metadata: Option<String>,
    /// MySQL only: `gtid_mode=ON`. MariaDB always has GTIDs.
    pub mysql_gtid_mode: bool,
    /// `binlog_checksum` (CRC32 or NONE).
    pub binlog_checksum: String,
    /// `lower_case_table_names` is set: statements may name tables in any case, and the
    /// server means (and logs in TABLE_MAP events) the lower-case name.
    pub lower_case_table_names: bool,
    /// The server's own time zone as a name or `+HH:MM` offset (the offset now, for SYSTEM):
    /// statements whose session logged no time zone ran in it.
    pub time_zone: String,
    pub charsets: Charsets,
}

async fn var(conn: &mut Conn, name: &str) -> Result<Option<String>, SourceError> {
    // Unknown variables are an error on the server; treat them as absent.
    match conn
        .query_first::<Option<String>, _>(format!("SELECT @@{name}"))
        .await
    {
        Ok(v) => Ok(v.flatten()),
        Err(mysql_async::Error::Server(e)) if e.code == 1193 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl SourceInfo {
    pub async fn read(conn: &mut Conn) -> Result<SourceInfo, SourceError> {
        let version = var(conn, "version").await?.unwrap_or_default();
        let flavor = Flavor::from_version(&version);
        let server_id: u32 = var(conn, "server_id")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let server_uuid = match flavor {
            Flavor::Mysql => var(conn, "server_uuid").await?,
            Flavor::Mariadb => None,
        };
        let log_bin = var(conn, "log_bin").await?.as_deref() == Some("1");
        let basename = var(conn, "log_bin_basename").await?.unwrap_or_default();
        let binlog_base = basename.rsplit('/').next().unwrap_or_default().to_string();
        let mysql_gtid_mode =
            flavor == Flavor::Mysql && var(conn, "gtid_mode").await?.as_deref() == Some("ON");
        let mut charsets: Vec<(u16, String)> = conn
            .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")
            .await?;
        // MariaDB 10.10+ lists further ids (e.g. uca1400 per charset) here.
        if let Ok(more) = conn
            .query::<(u16, String), _>(
                "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY WHERE ID IS NOT NULL",
            )
            .await
        {
            charsets.extend(more);
        }
        let (zone, offset): (String, i64) = conn
            .query_first("SELECT @@global.time_zone, TIMESTAMPDIFF(MINUTE, UTC_TIMESTAMP(), NOW())")
            .await?
            .unwrap_or_else(|| ("+00:00".into(), 0));
        let time_zone = if zone.eq_ignore_ascii_case("SYSTEM") {
            let sign = if offset < 0 { '-' } else { '+' };
            format!("{sign}{:02}:{:02}", offset.abs() / 60, offset.abs() % 60)
        } else {
            zone
        };
        Ok(SourceInfo {
            time_zone,
            identity: SourceIdentity {
                flavor,
                server_id,
                server_uuid,
                binlog_base,
            },
            log_bin,
            binlog_format: var(conn, "binlog_format").await?.unwrap_or_default(),
            binlog_row_image: var(conn, "binlog_row_image").await?.unwrap_or_default(),
            binlog_row_metadata: var(conn, "binlog_row_metadata").await?,
            mysql_gtid_mode,
            binlog_checksum: var(conn, "binlog_checksum").await?.unwrap_or_default(),
            lower_case_table_names: var(conn, "lower_case_table_names")
                .await?
                .is_some_and(|v| v != "0"),
            charsets: Charsets::new(charsets),
            version,
        })
    }

    pub fn flavor(&self) -> Flavor {
        self.identity.flavor
    }

    /// Whether positions are kept as GTIDs (always on MariaDB; with gtid_mode=ON on MySQL).
    pub fn has_gtid(&self) -> bool {
        self.flavor() == Flavor::Mariadb || self.mysql_gtid_mode
    }

    /// The source's head: its current binlog position and the GTID state matching it.
    pub async fn head(&self, conn: &mut Conn) -> Result<Checkpoint, SourceError> {
        let row: Option<Row> = match conn.query_first("SHOW MASTER STATUS").await {
            Ok(r) => r,
            // MySQL 8.4 renamed it.
            Err(mysql_async::Error::Server(e)) if e.code == 1064 => {
                conn.query_first("SHOW BINARY LOG STATUS").await?
            }
            Err(e) => return Err(e.into()),
        };
        let row = row.ok_or(SourceError::BinlogOff)?;
        let file: String = row.get(0).unwrap_or_default();
        let offset: u64 = row.get(1).unwrap_or_default();
        let file: BinlogFile = file.parse().map_err(|_| SourceError::Protocol {
            reason: format!("the source reports binlog file `{file}`"),
        })?;
        let position = Position::new(file, offset);
        let gtid = match self.flavor() {
            // BINLOG_GTID_POS gives exactly the state at that file/offset, so the two agree
            // even while the source keeps writing.
            Flavor::Mariadb => Some(gtid_at(conn, &position).await?),
            Flavor::Mysql if self.mysql_gtid_mode => {
                let text: String = row.get("Executed_Gtid_Set").unwrap_or_default();
                Some(GtidSet::parse_mysql(&text)?)
            }
            Flavor::Mysql => None,
        };
        Ok(Checkpoint {
            position,
            gtid,
            source: self.identity.clone(),
            source_time: 0,
        })
    }

    /// The checkpoint a target without one starts from.
    pub async fn resolve_start(
        &self,
        conn: &mut Conn,
        start: &StartAt,
    ) -> Result<Checkpoint, SourceError> {
        match start {
            // The copier opens its own snapshot; its position is the head at that moment.
            StartAt::Current | StartAt::Snapshot => self.head(conn).await,
            StartAt::Gtid(text) => {
                let gtid = match self.flavor() {
                    Flavor::Mariadb => GtidSet::parse_maria(text)?,
                    Flavor::Mysql => GtidSet::parse_mysql(text)?,
                };
                if !self.has_gtid() {
                    return Err(SourceError::Config {
                        reason: "start = \"gtid:…\" but the source has gtid_mode OFF; use file:NAME:OFFSET".into(),
                    });
                }
                // The file/pos is unknown until the stream's first rotate; record the head's
                // file with offset 4 as a placeholder that is replaced on the first commit.
                let head = self.head(conn).await?;
                Ok(Checkpoint {
                    position: Position::new(head.position.file, 4),
                    gtid: Some(gtid),
                    source: self.identity.clone(),
                    source_time: 0,
                })
            }
            StartAt::File(position) => {
                let gtid = match self.flavor() {
                    Flavor::Mariadb => {
                        let text: Option<String> = conn
                            .exec_first(
                                "SELECT BINLOG_GTID_POS(?, ?)",
                                (position.file.to_string(), position.offset),
                            )
                            .await?;
                        match text {
                            Some(t) => Some(GtidSet::parse_maria(&t)?),
                            None => {
                                return Err(SourceError::PositionUnavailable {
                                    position: position.to_string(),
                                    reason: "BINLOG_GTID_POS found no such file/offset".into(),
                                })
                            }
                        }
                    }
                    Flavor::Mysql => None,
                };
                Ok(Checkpoint {
                    position: position.clone(),
                    gtid,
                    source: self.identity.clone(),
                    source_time: 0,
                })
            }
        }
    }
}

/// MariaDB's GTID state at binlog `position` (`BINLOG_GTID_POS`). NULL — the server cannot
/// name it (a file it does not have) — is an error, not an empty state: resuming from an empty
/// state would replay every binlog.
pub async fn gtid_at(conn: &mut Conn, position: &Position) -> Result<GtidSet, SourceError> {
    // A NULL column, not a missing row: read as such, never converted to a String (a panic).
    let row: Option<(Option<String>,)> = conn
        .exec_first(
            "SELECT BINLOG_GTID_POS(?, ?)",
            (position.file.to_string(), position.offset),
        )
        .await?;
    let text = row.and_then(|(text,)| text).ok_or_else(|| SourceError::Unsupported {
        position: position.to_string(),
        what: "BINLOG_GTID_POS() returned NULL, so the GTID state there is unknown (is the binlog index readable?)".into(),
    })?;
    Ok(GtidSet::parse_maria(&text)?)
}

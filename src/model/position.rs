//! Source positions as types: binlog files, file/offset positions, MariaDB and MySQL GTID
//! state, and the `Checkpoint` a target commits with its rows.
//!
//! Every type prints back exactly what it parsed (`Display` and `FromStr` round-trip), so a
//! checkpoint stored as text in a target is the same value when read back. Positions in binlogs
//! with different base names are not comparable: `Position::partial_cmp` says `None`, never a
//! made-up order.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::name::TableName;

/// A malformed position, GTID or checkpoint text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {what} `{text}`: {reason}")]
pub struct ParsePositionError {
    what: &'static str,
    text: String,
    reason: &'static str,
}

fn bad(what: &'static str, text: &str, reason: &'static str) -> ParsePositionError {
    ParsePositionError {
        what,
        text: text.to_owned(),
        reason,
    }
}

/// A binlog file name such as `mysql-bin.000042`: base name, sequence number and the
/// zero-padding width of the suffix, so it prints back exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinlogFile {
    pub base: String,
    pub seq: u64,
    width: usize,
}

impl BinlogFile {
    pub fn new(base: impl Into<String>, seq: u64, width: usize) -> Self {
        BinlogFile {
            base: base.into(),
            seq,
            width,
        }
    }
}

impl fmt::Display for BinlogFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:0width$}", self.base, self.seq, width = self.width)
    }
}

impl FromStr for BinlogFile {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (base, suffix) = s
            .rsplit_once('.')
            .ok_or_else(|| bad("binlog file name", s, "expected BASE.NUMBER"))?;
        if base.is_empty() || suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("binlog file name", s, "expected BASE.NUMBER"));
        }
        let seq = suffix
            .parse()
            .map_err(|_| bad("binlog file name", s, "number too large"))?;
        Ok(BinlogFile::new(base, seq, suffix.len()))
    }
}

/// A place in the source's binlog: the offset of the next event to read in `file`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    pub file: BinlogFile,
    pub offset: u64,
}

impl Position {
    pub fn new(file: BinlogFile, offset: u64) -> Self {
        Position { file, offset }
    }
}

impl PartialOrd for Position {
    /// Ordered within one binlog base name only.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        if self.file.base != other.file.base {
            return None;
        }
        Some(
            self.file
                .seq
                .cmp(&other.file.seq)
                .then(self.offset.cmp(&other.offset)),
        )
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)
    }
}

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (file, offset) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("binlog position", s, "expected FILE:OFFSET"))?;
        let offset = offset
            .parse()
            .map_err(|_| bad("binlog position", s, "offset is not a number"))?;
        Ok(Position::new(file.parse()?, offset))
    }
}

/// One MariaDB GTID: `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MariaGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl FromStr for MariaGtid {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().splitn(3, '-');
        let mut next = || {
            parts
                .next()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| bad("MariaDB GTID", s, "expected DOMAIN-SERVER-SEQ"))
        };
        let domain = next()?;
        let server = next()?;
        let seq = next()?;
        let num = |_| bad("MariaDB GTID", s, "number out of range");
        Ok(MariaGtid {
            domain: domain.parse().map_err(num)?,
            server: server.parse().map_err(num)?,
            seq: seq.parse().map_err(num)?,
        })
    }
}

/// A MySQL server UUID (the source id of `uuid:interval` GTIDs), kept as its 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid(pub [u8; 16]);

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Sid {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
        if hex.len() != 32 {
            return Err(bad("server uuid", s, "expected 32 hex digits"));
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| bad("server uuid", s, "not hex"))?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| bad("server uuid", s, "not hex"))?;
        }
        Ok(Sid(out))
    }
}

/// The largest MySQL transaction number (`GNO_END - 1`: numbers are signed 64-bit, from 1).
pub const MAX_GNO: u64 = i64::MAX as u64;

/// A GTID state: what a replica has executed.
///
/// MariaDB keeps the last GTID per replication domain; MySQL keeps, per server uuid, the set
/// of executed transaction numbers as closed intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtidSet {
    Maria(BTreeMap<u32, MariaGtid>),
    Mysql(BTreeMap<Sid, Vec<(u64, u64)>>),
}

impl GtidSet {
    /// Records that the transaction `gtid` has been applied.
    pub fn add_maria(&mut self, gtid: MariaGtid) {
        if let GtidSet::Maria(domains) = self {
            domains.insert(gtid.domain, gtid);
        }
    }

    /// Records that MySQL transaction `sid:gno` has been applied.
    pub fn add_mysql(&mut self, sid: Sid, gno: u64) {
        let GtidSet::Mysql(sets) = self else { return };
        let intervals = sets.entry(sid).or_default();
        // Saturating: a number at the very end of the range must not wrap and merge wrongly.
        let at = intervals.partition_point(|&(_, end)| end.saturating_add(1) < gno);
        match intervals.get_mut(at) {
            Some((start, end))
                if *start <= gno.saturating_add(1) && gno <= end.saturating_add(1) =>
            {
                *start = (*start).min(gno);
                *end = (*end).max(gno);
                // Merge with the next interval when the gap closed.
                if let Some(&(next_start, next_end)) = intervals.get(at + 1) {
                    if next_start <= intervals[at].1.saturating_add(1) {
                        intervals[at].1 = intervals[at].1.max(next_end);
                        intervals.remove(at + 1);
                    }
                }
            }
            _ => intervals.insert(at, (gno, gno)),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            GtidSet::Maria(d) => d.is_empty(),
            GtidSet::Mysql(s) => s.is_empty(),
        }
    }

    /// Parses a GTID state in `flavor`'s dialect.
    pub fn parse_for(flavor: Flavor, s: &str) -> Result<Self, ParsePositionError> {
        match flavor {
            Flavor::Mariadb => Self::parse_maria(s),
            Flavor::Mysql => Self::parse_mysql(s),
        }
    }

    /// Parses a MariaDB GTID list (`0-1-100,1-2-5`); empty text is the empty state.
    pub fn parse_maria(s: &str) -> Result<Self, ParsePositionError> {
        let mut domains = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let gtid: MariaGtid = part.parse()?;
            if domains.insert(gtid.domain, gtid).is_some() {
                return Err(bad("MariaDB GTID list", s, "a domain appears twice"));
            }
        }
        Ok(GtidSet::Maria(domains))
    }

    /// Parses a MySQL GTID set (`uuid:1-5:7,uuid2:1-3`).
    pub fn parse_mysql(s: &str) -> Result<Self, ParsePositionError> {
        let mut set = GtidSet::Mysql(BTreeMap::new());
        let text: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let mut pieces = part.split(':');
            let sid: Sid = pieces.next().unwrap_or_default().parse()?;
            for interval in pieces {
                let (a, b) = interval.split_once('-').unwrap_or((interval, interval));
                let num = |t: &str| {
                    t.parse::<u64>()
                        .map_err(|_| bad("MySQL GTID set", s, "interval is not numeric"))
                };
                let (a, b) = (num(a)?, num(b)?);
                if a == 0 || b < a || b > MAX_GNO {
                    return Err(bad("MySQL GTID set", s, "bad interval"));
                }
                if let GtidSet::Mysql(sets) = &mut set {
                    let intervals = sets.entry(sid).or_default();
                    intervals.push((a, b));
                    intervals.sort_unstable();
                    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
                    for &(s0, e0) in intervals.iter() {
                        match merged.last_mut() {
                            Some(last) if s0 <= last.1.saturating_add(1) => last.1 = last.1.max(e0),
                            _ => merged.push((s0, e0)),
                        }
                    }
                    *intervals = merged;
                }
            }
        }
        Ok(set)
    }
}

/// A GTID set as printed: MySQL's `uuid:interval` sets contain a colon, MariaDB's
/// `domain-server-seq` lists do not.
impl FromStr for GtidSet {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            GtidSet::parse_mysql(s)
        } else {
            GtidSet::parse_maria(s)
        }
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidSet::Maria(domains) => {
                for (i, gtid) in domains.values().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{gtid}")?;
                }
            }
            GtidSet::Mysql(sets) => {
                for (i, (sid, intervals)) in sets.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{sid}")?;
                    for (a, b) in intervals {
                        if a == b {
                            write!(f, ":{a}")?;
                        } else {
                            write!(f, ":{a}-{b}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The server flavour, which decides the GTID dialect and a few protocol details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Mariadb,
    Mysql,
}

impl Flavor {
    pub fn from_version(version: &str) -> Self {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::Mariadb
        } else {
            Flavor::Mysql
        }
    }
}

impl FromStr for Flavor {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mariadb" => Ok(Flavor::Mariadb),
            "mysql" => Ok(Flavor::Mysql),
            other => Err(bad("server flavor", other, "expected mariadb or mysql")),
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::Mariadb => "mariadb",
            Flavor::Mysql => "mysql",
        })
    }
}

/// Which server a position belongs to: a file/pos is meaningless on another server or after
/// `RESET MASTER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIdentity {
    pub flavor: Flavor,
    pub server_id: u32,
    /// MySQL's `server_uuid`; MariaDB has none.
    pub server_uuid: Option<String>,
    /// Base name of the binlog files, e.g. `mysql-bin`.
    pub binlog_base: String,
}

/// The position after the last whole source transaction a target applied, committed in the
/// same target transaction as that transaction's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub position: Position,
    /// GTID state after that transaction, when the source has GTIDs.
    pub gtid: Option<GtidSet>,
    pub source: SourceIdentity,
    /// Commit time on the source (seconds since the epoch) of that transaction; 0 if unknown.
    pub source_time: u32,
}

impl Checkpoint {
    /// The one definition of lag, used by `status`, the logs and the metrics: seconds between
    /// the source commit of the newest applied transaction and `now`, 0 when the target has
    /// applied everything the source has (an idle source is not lag), unknown when the commit
    /// time is.
    pub fn lag_secs(&self, caught_up: bool, now: u64) -> Option<u64> {
        if caught_up {
            return Some(0);
        }
        (self.source_time > 0).then(|| now.saturating_sub(u64::from(self.source_time)))
    }

    /// Whether a target at `self` has applied every transaction the source had at `other`:
    /// by GTID state where both have one (rotations and restarts do not move it), else by
    /// file and offset of one server.
    pub fn includes(&self, other: &Checkpoint) -> bool {
        match (&self.gtid, &other.gtid) {
            (Some(GtidSet::Maria(mine)), Some(GtidSet::Maria(theirs))) => theirs
                .iter()
                .all(|(d, g)| mine.get(d).is_some_and(|m| m.seq >= g.seq)),
            (Some(GtidSet::Mysql(mine)), Some(GtidSet::Mysql(theirs))) => {
                theirs.iter().all(|(sid, xs)| {
                    let have = mine.get(sid).map(Vec::as_slice).unwrap_or(&[]);
                    intersect(xs, have) == *xs
                })
            }
            _ => {
                self.source.server_id == other.source.server_id
                    && matches!(
                        self.position.partial_cmp(&other.position),
                        Some(Ordering::Greater | Ordering::Equal)
                    )
            }
        }
    }

    /// The earlier of two states of one source: per GTID domain (or uuid) the lesser, and the
    /// lesser file/offset. Reading from it misses nothing either of them still needs.
    pub fn earliest(&self, other: &Checkpoint) -> Checkpoint {
        let position = match self.position.partial_cmp(&other.position) {
            Some(Ordering::Greater) => other.position.clone(),
            _ => self.position.clone(),
        };
        let gtid = match (&self.gtid, &other.gtid) {
            (Some(GtidSet::Maria(a)), Some(GtidSet::Maria(b))) => {
                let mut out = BTreeMap::new();
                for (d, g) in a {
                    // A domain one state lacks has to be read from its start.
                    if let Some(h) = b.get(d) {
                        out.insert(*d, if h.seq < g.seq { *h } else { *g });
                    }
                }
                Some(GtidSet::Maria(out))
            }
            (Some(GtidSet::Mysql(a)), Some(GtidSet::Mysql(b))) => {
                let mut out = BTreeMap::new();
                for (sid, xs) in a {
                    let both = intersect(xs, b.get(sid).map(Vec::as_slice).unwrap_or(&[]));
                    if !both.is_empty() {
                        out.insert(*sid, both);
                    }
                }
                Some(GtidSet::Mysql(out))
            }
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        Checkpoint {
            position,
            gtid,
            source: self.source.clone(),
            source_time: self.source_time.min(other.source_time),
        }
    }
}

/// The transactions in both of two sorted lists of disjoint, inclusive intervals, interval
/// by interval (a set like `uuid:1-500000000` is two numbers, not half a billion).
fn intersect(xs: &[(u64, u64)], ys: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j) = (0, 0);
    let mut out: Vec<(u64, u64)> = Vec::new();
    while i < xs.len() && j < ys.len() {
        let (lo, hi) = (xs[i].0.max(ys[j].0), xs[i].1.min(ys[j].1));
        if lo <= hi {
            match out.last_mut() {
                Some(last) if last.1 + 1 >= lo => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        if xs[i].1 < ys[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// One source transaction (event group): its GTID, or where it starts when there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupId {
    Maria(MariaGtid),
    Mysql(Sid, u64),
    Start(Position),
}

impl GroupId {
    /// Whether the state `at` already includes this transaction.
    pub fn applied_at(&self, at: &Checkpoint) -> bool {
        match (self, &at.gtid) {
            (GroupId::Maria(g), Some(GtidSet::Maria(domains))) => {
                domains.get(&g.domain).is_some_and(|d| d.seq >= g.seq)
            }
            (GroupId::Mysql(sid, gno), Some(GtidSet::Mysql(sets))) => sets
                .get(sid)
                .is_some_and(|iv| iv.iter().any(|&(a, b)| a <= *gno && *gno <= b)),
            (GroupId::Start(p), _) => matches!(p.partial_cmp(&at.position), Some(Ordering::Less)),
            _ => false,
        }
    }
}

/// Where a target with no checkpoint starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// A consistent copy of every selected table, then the stream from the copy's position.
    Snapshot,
    /// The source's current state: all GTID domains, or its current file/pos.
    Current,
    /// Right after the given GTID state.
    Gtid(String),
    /// At a file/offset.
    File(Position),
}

impl FromStr for StartAt {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "snapshot" {
            Ok(StartAt::Snapshot)
        } else if s == "current" {
            Ok(StartAt::Current)
        } else if let Some(gtid) = s.strip_prefix("gtid:") {
            if gtid.contains('-') && !gtid.contains(':') && gtid.split(',').count() > 0 {
                GtidSet::parse_maria(gtid)?;
            } else {
                GtidSet::parse_mysql(gtid)?;
            }
            Ok(StartAt::Gtid(gtid.to_owned()))
        } else if let Some(pos) = s.strip_prefix("file:") {
            Ok(StartAt::File(pos.parse()?))
        } else {
            Err(bad(
                "start",
                s,
                "expected \"snapshot\", \"current\", \"gtid:<state>\" or \"file:<name>:<offset>\"",
            ))
        }
    }
}

impl fmt::Display for StartAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartAt::Snapshot => f.write_str("snapshot"),
            StartAt::Current => f.write_str("current"),
            StartAt::Gtid(g) => write!(f, "gtid:{g}"),
            StartAt::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// Where each table's already-applied history ends on the target: the main checkpoint, and
/// an earlier floor for tables catching up after a re-copy. A group is applied to a table only
/// if the table's floor does not include it yet.
///
/// Unresolved XA branches add floors of their own (`xa`): the stream starts early enough to
/// read their prepared parts again, which are held but never applied by reading them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Floors {
    pub main: Checkpoint,
    pub tables: HashMap<TableName, Checkpoint>,
    pub xa: Vec<Checkpoint>,
}

impl Floors {
    pub fn new(main: Checkpoint) -> Floors {
        Floors {
            main,
            tables: HashMap::new(),
            xa: Vec::new(),
        }
    }

    /// Where the stream has to start so that every table gets what it lacks.
    pub fn start(&self) -> Checkpoint {
        self.tables
            .values()
            .chain(&self.xa)
            .fold(self.main.clone(), |acc, f| acc.earliest(f))
    }

    /// Whether group `id` still has to be applied to `table`.
    pub fn wants(&self, id: &GroupId, table: &TableName) -> bool {
        !id.applied_at(self.tables.get(table).unwrap_or(&self.main))
    }
}

crate::model::serde_as_text!(Position, GtidSet, StartAt);

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of MySQL's transaction number range neither overflows nor parses past it (the
    /// fuzzing of the binlog reader found `add_mysql` overflowing on 2^64 − 1).
    #[test]
    fn mysql_gtid_numbers_at_the_end_of_the_range() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut set = GtidSet::parse_mysql(&format!("{uuid}:1-5")).unwrap();
        let sid: Sid = uuid.parse().unwrap();
        for gno in [MAX_GNO, MAX_GNO - 1, u64::MAX, u64::MAX] {
            set.add_mysql(sid, gno);
        }
        assert_eq!(
            set.to_string(),
            format!("{uuid}:1-5:{}-{MAX_GNO}:{}", MAX_GNO - 1, u64::MAX)
        );
        assert!(GtidSet::parse_mysql(&format!("{uuid}:1-{MAX_GNO}")).is_ok());
        assert!(GtidSet::parse_mysql(&format!("{uuid}:1-{}", MAX_GNO + 1)).is_err());
    }

    #[test]
    fn binlog_file_keeps_padding() {
        let f: BinlogFile = "mysql-bin.000042".parse().unwrap();
        assert_eq!(f.base, "mysql-bin");
        assert_eq!(f.seq, 42);
        assert_eq!(f.to_string(), "mysql-bin.000042");
        assert!("nodot".parse::<BinlogFile>().is_err());
        assert!("a.b".parse::<BinlogFile>().is_err());
    }

    #[test]
    fn positions_of_different_bases_do_not_compare() {
        let a: Position = "a-bin.000001:400".parse().unwrap();
        let b: Position = "b-bin.000002:4".parse().unwrap();
        let c: Position = "a-bin.000002:4".parse().unwrap();
        assert_eq!(a.partial_cmp(&b), None);
        assert!(a < c);
        assert_eq!(a.to_string(), "a-bin.000001:400");
    }

    #[test]
    fn maria_gtid_list_round_trips() {
        let s = GtidSet::parse_maria("1-2-30,0-1-100").unwrap();
        assert_eq!(s.to_string(), "0-1-100,1-2-30");
        assert!(GtidSet::parse_maria("0-1").is_err());
        assert!(GtidSet::parse_maria("0-1-5,0-2-6").is_err());
        assert!(GtidSet::parse_maria("").unwrap().is_empty());
    }

    #[test]
    fn mysql_gtid_set_merges_intervals() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut s = GtidSet::parse_mysql(&format!("{uuid}:1-5:7-9")).unwrap();
        assert_eq!(s.to_string(), format!("{uuid}:1-5:7-9"));
        s.add_mysql(uuid.parse().unwrap(), 6);
        assert_eq!(s.to_string(), format!("{uuid}:1-9"));
        s.add_mysql(uuid.parse().unwrap(), 11);
        assert_eq!(s.to_string(), format!("{uuid}:1-9:11"));
        assert!(GtidSet::parse_mysql(&format!("{uuid}:5-1")).is_err());
    }

    fn maria_checkpoint(gtid: &str, pos: &str) -> Checkpoint {
        Checkpoint {
            position: pos.parse().unwrap(),
            gtid: Some(GtidSet::parse_maria(gtid).unwrap()),
            source: SourceIdentity {
                flavor: Flavor::Mariadb,
                server_id: 1,
                server_uuid: None,
                binlog_base: "mysql-bin".into(),
            },
            source_time: 0,
        }
    }

    #[test]
    fn groups_know_whether_a_state_includes_them() {
        let at = maria_checkpoint("0-1-10,1-1-5", "mysql-bin.000002:400");
        let g = |d, s| {
            GroupId::Maria(MariaGtid {
                domain: d,
                server: 1,
                seq: s,
            })
        };
        assert!(g(0, 10).applied_at(&at));
        assert!(!g(0, 11).applied_at(&at));
        assert!(g(1, 2).applied_at(&at));
        assert!(!g(2, 1).applied_at(&at));
        let start = |p: &str| GroupId::Start(p.parse().unwrap());
        assert!(start("mysql-bin.000002:300").applied_at(&at));
        assert!(!start("mysql-bin.000002:400").applied_at(&at));
    }

    #[test]
    fn earliest_takes_the_lesser_per_domain() {
        let a = maria_checkpoint("0-1-10,1-1-5", "mysql-bin.000002:400");
        let b = maria_checkpoint("0-1-7,1-1-9,2-1-1", "mysql-bin.000001:900");
        let e = a.earliest(&b);
        assert_eq!(e.gtid.unwrap().to_string(), "0-1-7,1-1-5");
        assert_eq!(e.position.to_string(), "mysql-bin.000001:900");
    }

    #[test]
    fn includes_compares_gtid_states_then_positions() {
        let a = maria_checkpoint("0-1-10,1-1-5", "mysql-bin.000002:400");
        assert!(a.includes(&maria_checkpoint("0-1-10", "mysql-bin.000009:4")));
        assert!(!a.includes(&maria_checkpoint("0-1-11,1-1-5", "mysql-bin.000001:4")));
        assert!(!a.includes(&maria_checkpoint("2-1-1", "mysql-bin.000001:4")));
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mysql = |text: &str| Checkpoint {
            gtid: Some(GtidSet::parse_mysql(text).unwrap()),
            ..a.clone()
        };
        assert!(mysql(&format!("{uuid}:1-9")).includes(&mysql(&format!("{uuid}:2-5"))));
        assert!(!mysql(&format!("{uuid}:1-4:6-9")).includes(&mysql(&format!("{uuid}:2-5"))));
        let plain = |p: &str| Checkpoint {
            gtid: None,
            ..maria_checkpoint("", p)
        };
        assert!(plain("mysql-bin.000002:400").includes(&plain("mysql-bin.000002:400")));
        assert!(!plain("mysql-bin.000002:400").includes(&plain("mysql-bin.000003:4")));
    }

    #[test]
    fn earliest_of_mysql_sets_works_by_interval() {
        let set = |text: &str| Checkpoint {
            gtid: Some(GtidSet::parse_mysql(text).unwrap()),
            ..maria_checkpoint("0-1-1", "mysql-bin.000001:4")
        };
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let other = "4e11fa47-71ca-11e1-9e33-c80aa9429562";
        let a = set(&format!("{uuid}:1-500000000,{other}:1-5"));
        let b = set(&format!("{uuid}:1-400000000:400000002-600000000"));
        let started = std::time::Instant::now();
        let e = a.earliest(&b);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            e.gtid.unwrap().to_string(),
            format!("{uuid}:1-400000000:400000002-500000000")
        );
        assert_eq!(
            intersect(&[(1, 3), (5, 9)], &[(2, 6), (8, 20)]),
            [(2, 3), (5, 6), (8, 9)]
        );
    }

    #[test]
    fn start_specs_parse() {
        assert_eq!("current".parse::<StartAt>().unwrap(), StartAt::Current);
        assert_eq!("snapshot".parse::<StartAt>().unwrap(), StartAt::Snapshot);
        assert!(matches!(
            "gtid:0-1-100".parse::<StartAt>().unwrap(),
            StartAt::Gtid(_)
        ));
        assert!(matches!(
            "file:mysql-bin.000003:4".parse::<StartAt>().unwrap(),
            StartAt::File(_)
        ));
        assert!("somewhere".parse::<StartAt>().is_err());
    }
}

//! `/metrics` in the Prometheus text format, built from the engine's live statuses at each
//! scrape: a fresh registry each time, so the series of a removed target or a resolved table
//! state disappear with it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{CounterVec, Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use super::api::bearer;
use super::Admin;
use crate::engine::status::{Snapshot, COMMIT_BUCKETS};

fn gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// The metrics of `snapshots` (and whether the source answered, when asked, and the reloads
/// applied and refused) in the text format.
pub fn render(
    snapshots: &[Snapshot],
    source_connected: Option<bool>,
    reloads: (u64, u64),
) -> prometheus::Result<String> {
    let r = Registry::new();
    let reload = counter(
        &r,
        "rowsync_config_reloads_total",
        "Reloads of the configuration file by result",
        &["result"],
    )?;
    reload.with_label_values(&["applied"]).inc_by(reloads.0);
    reload.with_label_values(&["refused"]).inc_by(reloads.1);
    let errors = counter(
        &r,
        "rowsync_target_errors_total",
        "Pipeline attempts that ended in an error, by class",
        &["target", "class"],
    )?;
    let restarts = counter(
        &r,
        "rowsync_target_restarts_total",
        "Pipeline attempts after the first (retries, re-copies, reloads)",
        &["target"],
    )?;
    let changes = counter(
        &r,
        "rowsync_table_changes_applied_total",
        "Row changes applied per table and kind",
        &["target", "table", "kind"],
    )?;
    let pending = gauge(
        &r,
        "rowsync_target_pending_events",
        "Events read from the binlog and not yet taken by the target's writer",
        &["target"],
    )?;
    let bytes = counter(
        &r,
        "rowsync_source_binlog_bytes_total",
        "Bytes of binlog events read for the target",
        &["target"],
    )?;
    let build = gauge(&r, "rowsync_build_info", "rowsync's version", &["version"])?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let source = gauge(
        &r,
        "rowsync_source_connected",
        "1 when the source answered this scrape",
        &[],
    )?;
    if let Some(up) = source_connected {
        source.with_label_values::<&str>(&[]).set(i64::from(up));
    }
    let lag = gauge(
        &r,
        "rowsync_target_lag_seconds",
        "Seconds the target is behind the source; 0 when it has applied everything the source has",
        &["target"],
    )?;
    let last = gauge(
        &r,
        "rowsync_target_last_event_timestamp_seconds",
        "Source commit time of the newest transaction the target applied",
        &["target"],
    )?;
    let checkpoint = gauge(
        &r,
        "rowsync_target_checkpoint_info",
        "The target's checkpoint, as labels",
        &["target", "position", "gtid"],
    )?;
    let state = gauge(
        &r,
        "rowsync_target_state",
        "1 for the target's current state",
        &["target", "state"],
    )?;
    let error = gauge(
        &r,
        "rowsync_target_error_info",
        "1 while the target is retrying or stopped, by error class",
        &["target", "class"],
    )?;
    let rows = counter(
        &r,
        "rowsync_target_rows_applied_total",
        "Row changes applied since the process started",
        &["target"],
    )?;
    let txns = counter(
        &r,
        "rowsync_target_transactions_applied_total",
        "Source transactions applied since the process started",
        &["target"],
    )?;
    let tables = gauge(
        &r,
        "rowsync_table_state",
        "1 for a table that needs a re-copy or waits for one",
        &["target", "table", "state"],
    )?;
    let copied = gauge(
        &r,
        "rowsync_copy_rows",
        "Rows copied per table",
        &["target", "table"],
    )?;
    let estimated = gauge(
        &r,
        "rowsync_copy_rows_estimated",
        "Rows the copy of a table expects",
        &["target", "table"],
    )?;
    let mismatched = gauge(
        &r,
        "rowsync_verify_mismatched_rows",
        "Rows of a replica table that differed from the source in its last verify (after repairs)",
        &["target", "replica"],
    )?;
    let verified_at = gauge(
        &r,
        "rowsync_verify_last_run_timestamp_seconds",
        "When the last verify of a replica table ended",
        &["target", "replica"],
    )?;
    let lane_busy = CounterVec::new(
        Opts::new(
            "rowsync_apply_lane_busy_seconds_total",
            "Seconds each apply lane of a target spent running statements and commits; its rate is the lane's utilisation",
        ),
        &["target", "lane"],
    )?;
    r.register(Box::new(lane_busy.clone()))?;
    for s in snapshots {
        let t = s.target.as_str();
        for (lane, busy) in s.lane_busy.iter().enumerate() {
            lane_busy
                .with_label_values(&[t, &lane.to_string()])
                .inc_by(*busy);
        }
        for v in &s.verified {
            let labels = [t, v.replica.as_str()];
            mismatched
                .with_label_values(&labels)
                .set(v.mismatched() as i64);
            verified_at
                .with_label_values(&labels)
                .set(v.finished_at as i64);
        }
        if let Some(l) = s.lag_secs() {
            lag.with_label_values(&[t]).set(l as i64);
        }
        if let Some(c) = &s.checkpoint {
            last.with_label_values(&[t]).set(i64::from(c.source_time));
            let gtid = c.gtid.as_ref().map(|g| g.to_string()).unwrap_or_default();
            checkpoint
                .with_label_values(&[t, &c.position.to_string(), &gtid])
                .set(1);
        }
        state.with_label_values(&[t, s.state.name()]).set(1);
        if let Some(f) = s.state.failure() {
            error.with_label_values(&[t, f.class.as_str()]).set(1);
        }
        rows.with_label_values(&[t]).inc_by(s.rows_applied);
        pending.with_label_values(&[t]).set(s.pending_events as i64);
        bytes.with_label_values(&[t]).inc_by(s.binlog_bytes);
        errors
            .with_label_values(&[t, "transient"])
            .inc_by(s.errors_transient);
        errors
            .with_label_values(&[t, "definite"])
            .inc_by(s.errors_definite);
        restarts
            .with_label_values(&[t])
            .inc_by(s.runs.saturating_sub(1));
        for (table, c) in &s.tables_applied {
            let table = table.to_string();
            for (kind, n) in [
                ("insert", c.inserts),
                ("update", c.updates),
                ("delete", c.deletes),
            ] {
                changes.with_label_values(&[t, &table, kind]).inc_by(n);
            }
        }
        txns.with_label_values(&[t]).inc_by(s.transactions_applied);
        for st in &s.stopped_tables {
            tables
                .with_label_values(&[t, &st.table.to_string(), st.state.as_str()])
                .set(1);
        }
        for p in &s.copy {
            let table = p.table.to_string();
            copied
                .with_label_values(&[t, &table])
                .set(p.rows_copied as i64);
            estimated
                .with_label_values(&[t, &table])
                .set(p.rows_estimated as i64);
        }
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&r.gather(), &mut out)?;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    commit_histogram(&mut text, snapshots);
    Ok(text)
}

/// `rowsync_target_commit_seconds`, written from the buckets the status keeps (target names
/// are letters, digits, `_` and `-`, so they need no escaping).
fn commit_histogram(out: &mut String, snapshots: &[Snapshot]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP rowsync_target_commit_seconds How long the target's COMMITs took"
    );
    let _ = writeln!(out, "# TYPE rowsync_target_commit_seconds histogram");
    for s in snapshots {
        let (t, c) = (&s.target, &s.commits);
        for (bound, n) in COMMIT_BUCKETS.iter().zip(c.buckets) {
            let _ = writeln!(
                out,
                "rowsync_target_commit_seconds_bucket{{target=\"{t}\",le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "rowsync_target_commit_seconds_bucket{{target=\"{t}\",le=\"+Inf\"}} {}",
            c.count
        );
        let _ = writeln!(
            out,
            "rowsync_target_commit_seconds_sum{{target=\"{t}\"}} {}",
            c.sum_secs
        );
        let _ = writeln!(
            out,
            "rowsync_target_commit_seconds_count{{target=\"{t}\"}} {}",
            c.count
        );
    }
}

/// Prometheus metrics (a bearer token when `admin.metrics_token` is set).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format"), (status = 401)))]
pub async fn metrics(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !admin.auth().metrics_allowed(bearer(&headers)) {
        return (
            StatusCode::UNAUTHORIZED,
            "send admin.metrics_token as a bearer token",
        )
            .into_response();
    }
    let connected = admin.source_head().is_ok();
    match render(
        &admin.handle.snapshots(),
        Some(connected),
        admin.handle.reloads(),
    ) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::engine::status::{Failure, State, TargetStatus};
    use crate::model::position::{Checkpoint, SourceIdentity};
    use crate::model::table::{CopyProgress, StoppedTable, TableState};
    use crate::model::{ErrorClass, TableName};
    use crate::sink::Observer;

    /// Every series name `render` can produce, from a status that has all of them.
    fn series() -> BTreeSet<String> {
        let status = TargetStatus::new("order");
        status.started(
            &Checkpoint {
                position: "mysql-bin.000001:4".parse().unwrap(),
                gtid: None,
                source: SourceIdentity {
                    flavor: crate::model::position::Flavor::Mariadb,
                    server_id: 1,
                    server_uuid: None,
                    binlog_base: "mysql-bin".into(),
                },
                source_time: 1,
            },
            vec![StoppedTable {
                table: TableName::new("p", "t"),
                state: TableState::NeedsRecopy,
                since: String::new(),
                statement: None,
                reason: "r".into(),
            }],
        );
        status.copy_progress(&CopyProgress {
            table: TableName::new("p", "t"),
            done: false,
            last_key: None,
            rows_copied: 1,
            rows_estimated: 2,
        });
        status.set_state(State::Retrying(Failure {
            class: ErrorClass::Transient,
            message: "m".into(),
            statement: None,
        }));
        status.rows_applied(
            &TableName::new("p", "t"),
            crate::model::event::ChangeCounts {
                inserts: 1,
                updates: 0,
                deletes: 0,
            },
        );
        status.set_verified(vec![crate::model::table::VerifyRecord {
            replica: "t".into(),
            source: TableName::new("p", "t"),
            finished_at: 1,
            chunks: 1,
            rows: 1,
            differing: 0,
            repaired: 0,
            complete: true,
            detail: String::new(),
            last_pass: 0,
        }]);
        let text = render(&[status.snapshot()], Some(true), (1, 0)).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect()
    }

    fn names_in(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("rowsync_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            out.insert(name);
        }
        out
    }

    #[test]
    fn the_dashboard_and_the_alerts_parse_and_name_only_real_series() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let real = series();
        let dashboard = std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
        let exprs: Vec<String> = doc["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .map(|t| t["expr"].as_str().unwrap().to_owned())
            .collect();
        assert!(exprs.len() >= 5, "{exprs:?}");
        let alerts = std::fs::read_to_string(root.join("prometheus-alerts.yml")).unwrap();
        let rules: serde_norway::Value = serde_norway::from_str(&alerts).unwrap();
        let mut alert_names = Vec::new();
        for group in rules["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                alert_names.push(rule["alert"].as_str().unwrap().to_owned());
                assert!(
                    rule["expr"].as_str().is_some() && rule["annotations"]["summary"].is_string()
                );
            }
        }
        for wanted in [
            "RowsyncLagHigh",
            "RowsyncTargetStopped",
            "RowsyncSourceDisconnected",
            "RowsyncTableNeedsRecopy",
        ] {
            assert!(alert_names.iter().any(|a| a == wanted), "{wanted} missing");
        }
        for name in names_in(&exprs.join(" ")).union(&names_in(&alerts)) {
            assert!(
                real.contains(name),
                "{name} is not a series rowsync exports ({real:?})"
            );
        }
    }
}

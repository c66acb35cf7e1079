//! Which replica tables a target's mappings fill, set against what the target records that
//! each replica holds (`rowsync_replica`): the plan that decides, at every start and reload,
//! what must be copied, what must stop and what is forgotten.
//!
//! # Why nothing is lost
//! A replica holds the rows of one source table under one mapping shape (columns and filter).
//! Rows are only ever streamed into a replica whose record matches the mapping that streams
//! into it, so:
//! - a replica with no record (a new mapping, a renamed `table`, or a mapping removed and added
//!   back, whose record was forgotten on removal) is copied before it streams;
//! - a replica recorded under another shape (changed `columns` or `where`) is copied again;
//! - a replica recorded for another source table is never written by a second one: two source
//!   tables resolving to one replica (a `*` pattern over several schemas) would wipe each
//!   other's rows, so every claimant but the recorded owner (or, with no owner, the first by
//!   name) stops with the reason.
//!
//! Records are written in the target transaction that starts a copy (or registers a table
//! that starts empty), so a crash leaves either the old record (and the copy is redone) or
//! the new one with the copy's own resumable progress.

use std::collections::HashMap;

use super::mapping::Router;
use crate::model::name::TableName;
use crate::model::table::ReplicaRecord;

/// What to do with a target's replicas before it streams.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplicaPlan {
    /// Source tables to copy (again), with the reason.
    pub copy: Vec<(TableName, String)>,
    /// Source tables that must stop: a replica they map to belongs to another source table.
    pub conflicts: Vec<(TableName, String)>,
    /// Replicas no current mapping fills any more.
    pub forget: Vec<String>,
}

/// Plans the replicas of `selected` (source tables that exist now, in name order) under
/// `router`, given what the target `records`. Tables in `idle` (stopped, or waiting for a
/// re-copy already) keep their replicas but are not planned for a copy.
pub fn plan(
    router: &Router,
    selected: &[TableName],
    idle: &dyn Fn(&TableName) -> bool,
    records: &[ReplicaRecord],
) -> ReplicaPlan {
    let mut out = ReplicaPlan::default();
    let recorded: HashMap<&str, &ReplicaRecord> =
        records.iter().map(|r| (r.replica.as_str(), r)).collect();
    for r in records {
        if !router
            .mappings_for(&r.source)
            .any(|m| m.replica_name(&r.source) == r.replica)
        {
            out.forget.push(r.replica.clone());
        }
    }
    // Recorded owners claim their replicas first, so a newcomer never displaces them.
    let mut owner: HashMap<String, TableName> = HashMap::new();
    for r in records {
        if !out.forget.contains(&r.replica) {
            owner.insert(r.replica.clone(), r.source.clone());
        }
    }
    for table in selected {
        let mut mine: Vec<String> = Vec::new();
        let mut conflict = None;
        for m in router.mappings_for(table) {
            let replica = m.replica_name(table);
            if mine.contains(&replica) {
                conflict = Some(format!(
                    "two mappings write {table} into replica table `{replica}`; give one of them another `table`"
                ));
                break;
            }
            match owner.get(&replica) {
                Some(other) if other != table => {
                    conflict = Some(format!(
                        "replica table `{replica}` already holds the rows of {other}; two source tables cannot share one replica table (give one mapping its own `table`)"
                    ));
                    break;
                }
                _ => mine.push(replica),
            }
        }
        if let Some(reason) = conflict {
            out.conflicts.push((table.clone(), reason));
            continue;
        }
        for replica in &mine {
            owner.insert(replica.clone(), table.clone());
        }
        if idle(table) {
            continue;
        }
        let stale = router.mappings_for(table).find_map(|m| {
            let replica = m.replica_name(table);
            match recorded.get(replica.as_str()) {
                None => Some(format!("newly mapped into replica table `{replica}`")),
                Some(r) if r.source != *table || out.forget.contains(&r.replica) => Some(format!(
                    "replica table `{replica}` held the rows of {}",
                    r.source
                )),
                Some(r) if r.shape != m.shape() => Some(format!(
                    "the mapping into `{replica}` changed its columns or filter"
                )),
                Some(_) => None,
            }
        });
        if let Some(reason) = stale {
            out.copy.push((table.clone(), reason));
        }
    }
    out
}

/// The records of every replica of `table` under `router`, as a copy of it starts.
pub fn records_for(router: &Router, table: &TableName) -> Vec<ReplicaRecord> {
    router
        .mappings_for(table)
        .map(|m| ReplicaRecord {
            replica: m.replica_name(table),
            source: table.clone(),
            shape: m.shape(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::mapping::Mapping;

    fn mapping(source: &str, table: Option<&str>, filter: Option<&str>) -> Mapping {
        Mapping {
            source: source.parse().unwrap(),
            table: table.map(str::to_owned),
            columns: None,
            filter: filter.map(|f| f.parse().unwrap()),
        }
    }

    fn t(name: &str) -> TableName {
        let (db, table) = name.split_once('.').unwrap();
        TableName::new(db, table)
    }

    #[test]
    fn new_changed_and_readded_mappings_are_copied() {
        let category = t("p.category");
        let router = Router::new(vec![
            mapping("p.category", None, None),
            mapping(
                "p.category",
                Some("children"),
                Some("parent_id IS NOT NULL"),
            ),
        ]);
        let held = records_for(
            &Router::new(vec![mapping("p.category", None, None)]),
            &category,
        );
        let none = |_: &TableName| false;
        let p = plan(&router, std::slice::from_ref(&category), &none, &held);
        assert_eq!(p.copy.len(), 1, "{p:?}");
        assert!(p.copy[0]
            .1
            .contains("newly mapped into replica table `children`"));

        // The filter changed since the copy.
        let mut records = records_for(&router, &category);
        records[1].shape = mapping("p.category", Some("children"), None).shape();
        let p = plan(&router, std::slice::from_ref(&category), &none, &records);
        assert!(
            p.copy[0].1.contains("changed its columns or filter"),
            "{p:?}"
        );

        // Everything recorded as it is mapped: nothing to do.
        let p = plan(
            &router,
            std::slice::from_ref(&category),
            &none,
            &records_for(&router, &category),
        );
        assert_eq!(p, ReplicaPlan::default());

        // A removed mapping's record is forgotten, so adding it back copies it.
        let fewer = Router::new(vec![mapping("p.category", None, None)]);
        let p = plan(
            &fewer,
            std::slice::from_ref(&category),
            &none,
            &records_for(&router, &category),
        );
        assert_eq!(p.forget, vec!["children".to_string()]);
        assert!(p.copy.is_empty());
    }

    #[test]
    fn two_source_tables_never_share_a_replica() {
        let router = Router::new(vec![mapping("shop_*.item", None, None)]);
        let (a, b) = (t("shop_a.item"), t("shop_b.item"));
        let none = |_: &TableName| false;
        // Nothing recorded: the first by name wins, the other stops.
        let p = plan(&router, &[a.clone(), b.clone()], &none, &[]);
        assert_eq!(p.copy.len(), 1);
        assert_eq!(p.copy[0].0, a);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].0, b);
        assert!(p.conflicts[0]
            .1
            .contains("already holds the rows of shop_a.item"));
        // The recorded owner keeps its replica even when a newcomer sorts first.
        let p = plan(
            &router,
            &[a.clone(), b.clone()],
            &none,
            &records_for(&router, &b),
        );
        assert_eq!(p.conflicts[0].0, a);
        assert!(p.copy.is_empty(), "{p:?}");
    }
}

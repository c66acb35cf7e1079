-- Live state of each target's pipeline, written by `rowsync run`, read by `rowsync status`
-- (and later the admin API). Checkpoints themselves live in the targets, never here.
CREATE TABLE target_state (
    pipeline TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    binlog_position TEXT,
    gtid TEXT,
    lag_secs INTEGER,
    rows_applied INTEGER NOT NULL DEFAULT 0,
    transactions_applied INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (pipeline, target)
);

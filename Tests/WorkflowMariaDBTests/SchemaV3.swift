// The schema as version 3 shipped it (schema.sql at that version), for the upgrade test.
// Never edit: a database created by that release looks exactly like this.

enum SchemaV3 {
    static let sql = """
-- workflowd schema, version 3.
--
-- Applied as-is by `docker-compose up` (mounted into /docker-entrypoint-initdb.d) and, statement
-- by statement, by `workflowd migrate` / `workflowd serve` at start-up. Every statement is
-- idempotent, so applying it twice changes nothing. Versions only go forward: the tables below
-- are version 1, and each later version's step follows them (idempotent too), so applying the
-- file brings a database of any older version, or an empty one, to the newest. The seed's table and column names are kept
-- (workflow_records, workflow_outbox, workflow_timeouts), so its SQL runs unchanged.
--
-- Times are UTC DATETIME(3) (milliseconds). Integer codes are those of the seed:
--   status     1 OrderCreated 2 OrderValidated 3 PaymentProcessed 4 OrderFulfilled
--              5 OrderCompleted 6 OrderRejected 7 PaymentFailed 8 FulfillmentFailed
--   run_state  1 Initiated 2 Running 3 Paused 4 Cancelled 5 Completed 6 DataDeleted
--              7 RequestedDataDeleted

-- One row per run.
CREATE TABLE IF NOT EXISTS workflow_records (
    workflow_name VARCHAR(255) NOT NULL,
    foreign_id    VARCHAR(255) NOT NULL,
    run_id        VARCHAR(255) NOT NULL,
    run_state     INT NOT NULL,
    status        INT NOT NULL,
    object        LONGBLOB NOT NULL,
    created_at    DATETIME(3) NOT NULL,
    updated_at    DATETIME(3) NOT NULL,
    meta          BLOB NULL,
    -- Grows by 1 with every change; every update is `... WHERE run_id = ? AND version = ?`.
    version       BIGINT NOT NULL DEFAULT 1,
    -- Why the run was paused, cancelled, rejected or failed.
    reason        TEXT NULL,
    -- The foreign id while the run is unfinished (Initiated, Running, Paused), NULL after.
    -- The unique key below lets the database refuse a second unfinished run per foreign id.
    active_foreign_id VARCHAR(255) AS (IF(run_state IN (1, 2, 3), foreign_id, NULL)) PERSISTENT,
    PRIMARY KEY (run_id),
    UNIQUE KEY uniq_active_run (workflow_name, active_foreign_id),
    KEY idx_foreign (workflow_name, foreign_id, created_at),
    KEY idx_workflow_created (workflow_name, created_at),
    KEY idx_status (workflow_name, status, created_at),
    KEY idx_run_state (workflow_name, run_state, created_at),
    KEY idx_counts (workflow_name, status, run_state),
    KEY idx_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Changes waiting for the relay: written in the transaction of the change, moved to
-- workflow_events in creation order, then deleted.
CREATE TABLE IF NOT EXISTS workflow_outbox (
    id            BIGINT NOT NULL AUTO_INCREMENT,
    workflow_name VARCHAR(255) NOT NULL,
    -- The event as JSON, for readers of the table; the columns below are what the relay moves.
    data          BLOB NOT NULL,
    created_at    DATETIME(3) NOT NULL,
    foreign_id    VARCHAR(255) NOT NULL,
    run_id        VARCHAR(255) NOT NULL,
    status        INT NOT NULL,
    run_state     INT NOT NULL,
    version       BIGINT NOT NULL,
    reason        TEXT NULL,
    PRIMARY KEY (id),
    KEY idx_outbox_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Scheduled operations: workflow deadlines (kind 1) and durable step retries (kind 2).
CREATE TABLE IF NOT EXISTS workflow_timeouts (
    id            BIGINT NOT NULL AUTO_INCREMENT,
    workflow_name VARCHAR(255) NOT NULL,
    foreign_id    VARCHAR(255) NOT NULL,
    run_id        VARCHAR(255) NOT NULL,
    status        INT NOT NULL,
    kind          TINYINT NOT NULL DEFAULT 1,
    attempt       INT NOT NULL DEFAULT 0,
    completed     BOOLEAN NOT NULL DEFAULT FALSE,
    cancelled     BOOLEAN NOT NULL DEFAULT FALSE,
    expire_at     DATETIME(3) NOT NULL,
    created_at    DATETIME(3) NOT NULL,
    PRIMARY KEY (id),
    KEY idx_timeouts_due (completed, cancelled, expire_at),
    KEY idx_timeouts_run (run_id, completed, cancelled)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The gap-free event log: seq grows by exactly 1 in commit order.
CREATE TABLE IF NOT EXISTS workflow_events (
    seq           BIGINT NOT NULL,
    workflow_name VARCHAR(255) NOT NULL,
    foreign_id    VARCHAR(255) NOT NULL,
    run_id        VARCHAR(255) NOT NULL,
    status        INT NOT NULL,
    run_state     INT NOT NULL,
    version       BIGINT NOT NULL,
    at            DATETIME(3) NOT NULL,
    reason        TEXT NULL,
    PRIMARY KEY (seq),
    KEY idx_events_run (run_id, seq),
    KEY idx_events_status (workflow_name, status, seq),
    KEY idx_events_at (at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The last seq each named consumer has finished.
CREATE TABLE IF NOT EXISTS workflow_cursors (
    name       VARCHAR(255) NOT NULL,
    seq        BIGINT NOT NULL,
    updated_at DATETIME(3) NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Who holds which role (relay, consumer partition, poller) until when.
CREATE TABLE IF NOT EXISTS workflow_leases (
    name       VARCHAR(255) NOT NULL,
    holder     VARCHAR(255) NOT NULL,
    expires_at DATETIME(3) NOT NULL,
    generation BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Applied schema versions; `workflowd migrate` adds a row per version it applies.
CREATE TABLE IF NOT EXISTS workflow_schema_version (
    version    INT NOT NULL,
    applied_at DATETIME(3) NOT NULL,
    PRIMARY KEY (version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

INSERT IGNORE INTO workflow_schema_version (version, applied_at) VALUES (1, UTC_TIMESTAMP(3));

-- Version 2: retention (`workflowd prune`, `workflowd serve --retain-runs/--retain-events`).

-- Finished runs by age: retention deletes Cancelled (4), Completed (5) and DataDeleted (6) runs
-- whose updated_at is older than its cutoff, a batch at a time.
CREATE INDEX IF NOT EXISTS idx_records_finished ON workflow_records (run_state, updated_at);

-- The lowest consumer cursor: retention never deletes events a consumer has not finished.
CREATE INDEX IF NOT EXISTS idx_cursors_seq ON workflow_cursors (seq);

-- Runs removed by retention with `--archive`: the columns of workflow_records (without the
-- generated active_foreign_id) and when they were archived, written in the transaction that
-- deletes them.
CREATE TABLE IF NOT EXISTS workflow_records_archive (
    workflow_name VARCHAR(255) NOT NULL,
    foreign_id    VARCHAR(255) NOT NULL,
    run_id        VARCHAR(255) NOT NULL,
    run_state     INT NOT NULL,
    status        INT NOT NULL,
    object        LONGBLOB NOT NULL,
    created_at    DATETIME(3) NOT NULL,
    updated_at    DATETIME(3) NOT NULL,
    meta          BLOB NULL,
    version       BIGINT NOT NULL DEFAULT 1,
    reason        TEXT NULL,
    archived_at   DATETIME(3) NOT NULL,
    PRIMARY KEY (run_id),
    KEY idx_archive_foreign (workflow_name, foreign_id, created_at),
    KEY idx_archive_archived (archived_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

INSERT IGNORE INTO workflow_schema_version (version, applied_at) VALUES (2, UTC_TIMESTAMP(3));

-- Version 3: external steps (a status's step done by another program over the socket).

-- One task per (run, version) whose status is external. It is opened in the transaction that
-- puts the run there, given to one worker at a time (claim grows with each offer), and closed
-- in the transaction of whatever moves the run on: the worker's answer (done_claim and
-- done_status record it, so a repeated answer is recognised), a callback, a timeout, pause or
-- cancel. Closed rows stay until retention deletes their run.
CREATE TABLE IF NOT EXISTS workflow_tasks (
    run_id        VARCHAR(255) NOT NULL,
    version       BIGINT NOT NULL,
    workflow_name VARCHAR(255) NOT NULL,
    foreign_id    VARCHAR(255) NOT NULL,
    status        INT NOT NULL,
    -- 1 for the first offer of the step; grows with each `fail`.
    attempt       INT NOT NULL DEFAULT 1,
    claim         BIGINT NOT NULL DEFAULT 0,
    -- When it may be given to a worker: free at or before now, held until this deadline, or
    -- retried at this time after a `fail`; NULL once closed.
    available_at  DATETIME(3) NULL,
    -- When it last became free (copied from available_at at each claim): for the wait metric.
    free_since    DATETIME(3) NOT NULL,
    -- The claim batch that holds it (instance id and a number), NULL when free or closed.
    holder        VARCHAR(255) NULL,
    done_claim    BIGINT NULL,
    done_status   INT NULL,
    created_at    DATETIME(3) NOT NULL,
    PRIMARY KEY (run_id, version),
    KEY idx_tasks_free (workflow_name, status, available_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

INSERT IGNORE INTO workflow_schema_version (version, applied_at) VALUES (3, UTC_TIMESTAMP(3));
"""
}

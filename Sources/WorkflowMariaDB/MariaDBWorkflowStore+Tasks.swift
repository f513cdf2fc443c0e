import WorkflowEngine

/// Tasks of external steps (`workflow_tasks`). Opening and closing happen inside the record
/// transactions (`openTasks`, `closeTasks`, called by `create` and `update`); claiming, freeing
/// and extending are single conditional statements in autocommit, so two instances (or two
/// Galera nodes) never both hold a task: the row lock, or certification, lets one win and the
/// other's condition no longer matches.
extension MariaDBWorkflowStore {
    static let taskColumns =
        "run_id, version, workflow_name, foreign_id, status, attempt, claim, available_at, holder, done_claim, done_status"

    static func decodeTask(_ row: SQLRow) throws -> TaskRecord {
        TaskRecord(
            runID: try row.string(0), version: try row.int(1), workflow: try row.string(2), foreignID: try row.string(3),
            status: Int(try row.int(4)), attempt: Int(try row.int(5)), claim: try row.int(6),
            availableAt: try row.optionalTimestamp(7), holder: try row.optionalString(8),
            doneClaim: try row.optionalInt(9), doneStatus: try row.optionalInt(10).map { Int($0) })
    }

    // MARK: Inside record transactions

    /// Opens a task for each run at its current version: free, or already held (claim 1) when
    /// the update hands it to a worker of this instance.
    static func openTasks(_ c: MariaDBConnection, _ runs: [(run: Run, held: TaskHold?)]) throws {
        guard !runs.isEmpty else { return }
        try insertRows(
            c,
            prefix:
                "INSERT INTO workflow_tasks (run_id, version, workflow_name, foreign_id, status, attempt, claim, available_at, holder, free_since, created_at)",
            tuple: "(?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
            rows: runs.map { r, held in
                [
                    .text(r.runID), .int(r.version), .text(r.workflow), .text(r.foreignID), .int(r.status),
                    .int(held == nil ? 0 : 1), .timestamp(held?.deadline ?? r.updatedAt), .optionalText(held?.holder),
                    .timestamp(r.updatedAt), .timestamp(r.updatedAt),
                ]
            })
    }

    /// Closes the open tasks of runs that leave their external status without an answer.
    static func withdrawTasks(_ c: MariaDBConnection, runIDs: [String]) throws {
        var start = 0
        while start < runIDs.count {
            let chunk = Array(runIDs[start..<min(start + 256, runIDs.count)])
            let (list, values) = inList(chunk.map { .text($0) })
            try c.execute(
                "UPDATE workflow_tasks SET available_at = NULL, holder = NULL WHERE run_id IN \(list) AND available_at IS NOT NULL",
                values)
            start += chunk.count
        }
    }

    /// The claim-checked close of one update (`complete` or `retry`); false when the claim is
    /// not the task's current one or the task is closed (the update must then be refused).
    static func closeClaimed(_ c: MariaDBConnection, _ u: RunUpdate) throws -> Bool {
        switch u.closesTask {
        case .complete(let claim)?:
            return try c.execute(
                """
                UPDATE workflow_tasks SET available_at = NULL, holder = NULL, done_claim = claim, done_status = ?
                WHERE run_id = ? AND version = ? AND claim = ? AND available_at IS NOT NULL
                """, [.int(u.run.status), .text(u.run.runID), .int(u.expectedVersion), .int(claim)]
            ).affectedRows == 1
        case .retry(let claim, let at, let attempt)?:
            return try c.execute(
                """
                UPDATE workflow_tasks SET available_at = ?, holder = NULL, attempt = ?
                WHERE run_id = ? AND version = ? AND claim = ? AND available_at IS NOT NULL
                """, [.timestamp(at), .int(attempt), .text(u.run.runID), .int(u.expectedVersion), .int(claim)]
            ).affectedRows == 1
        case .withdraw?, nil:
            return true
        }
    }

    /// The claim-checked closes of a batch of `complete` answers in one statement per 64; false
    /// when one of them does not hold (the caller rolls back and goes run by run).
    static func completeClaimed(_ c: MariaDBConnection, _ updates: [RunUpdate]) throws -> Bool {
        let claimed = updates.filter { $0.taskClaim != nil }
        var start = 0
        while start < claimed.count {
            let chunk = Array(claimed[start..<min(start + runsPerStatement, claimed.count)])
            let n = bucket(chunk.count)
            func caseOf(_ value: (RunUpdate) -> SQLValue) -> (String, [SQLValue]) {
                var values: [SQLValue] = []
                for u in chunk { values += [.text(u.run.runID), value(u)] }
                for _ in chunk.count..<n { values += [.text(chunk[chunk.count - 1].run.runID), .null] }
                return ("CASE run_id " + String(repeating: "WHEN ? THEN ? ", count: n) + "END", values)
            }
            let (status, statusValues) = caseOf { .int($0.run.status) }
            let (version, versionValues) = caseOf { .int($0.expectedVersion) }
            let (claim, claimValues) = caseOf { .int($0.taskClaim!.claim) }
            let (list, ids) = inList(chunk.map { .text($0.run.runID) })
            let r = try c.execute(
                """
                UPDATE workflow_tasks SET done_status = \(status), done_claim = claim, available_at = NULL, holder = NULL
                WHERE run_id IN \(list) AND version = \(version) AND claim = \(claim) AND available_at IS NOT NULL
                """, statusValues + ids + versionValues + claimValues)
            guard r.affectedRows == chunk.count else { return false }
            start += chunk.count
        }
        return true
    }

    // MARK: TaskStore

    public func claimTasks(
        workflow: String, status: Int, runIDs: [String], holder: String, now: Timestamp, deadline: Timestamp
    ) async throws -> [ClaimedTask] {
        guard !runIDs.isEmpty else { return [] }
        return try await writeOne("claim tasks") { c in
            var claimed: [ClaimedTask] = []
            var start = 0
            while start < runIDs.count {
                let chunk = Array(runIDs[start..<min(start + 256, runIDs.count)])
                let (list, values) = Self.inList(chunk.map { .text($0) })
                // free_since takes the old available_at (assignments run left to right).
                let r = try c.execute(
                    """
                    UPDATE workflow_tasks SET free_since = available_at, available_at = ?, holder = ?, claim = claim + 1
                    WHERE run_id IN \(list) AND workflow_name = ? AND status = ? AND available_at <= ?
                    """, [.timestamp(deadline), .text(holder)] + values + [.text(workflow), .int(status), .timestamp(now)])
                if r.affectedRows > 0 {
                    // The holder names this call alone: these are exactly the rows it claimed.
                    let rows = try c.query(
                        """
                        SELECT t.version, t.claim, t.attempt, t.available_at, t.free_since, \(Self.runColumns(of: "r"))
                        FROM workflow_tasks t JOIN workflow_records r ON r.run_id = t.run_id
                        WHERE t.run_id IN \(list) AND t.holder = ? AND t.available_at IS NOT NULL
                        """, values + [.text(holder)])
                    for row in rows {
                        let run = try Self.decodeRun(row, at: 5)
                        let claim = TaskClaim(runID: run.runID, version: try row.int(0), claim: try row.int(1))
                        guard run.version == claim.version, run.status == status, run.runState == .initiated || run.runState == .running
                        else {
                            // A task its run has left (opened for runs already waiting, just as
                            // the run moved on): close it instead of offering it.
                            try c.execute(
                                "UPDATE workflow_tasks SET available_at = NULL, holder = NULL WHERE run_id = ? AND version = ? AND claim = ?",
                                [.text(claim.runID), .int(claim.version), .int(claim.claim)])
                            continue
                        }
                        claimed.append(
                            ClaimedTask(
                                claim: claim, run: run, attempt: Int(try row.int(2)), deadline: try row.timestamp(3),
                                freeSince: try row.timestamp(4)))
                    }
                }
                start += chunk.count
            }
            return claimed.sorted { $0.freeSince < $1.freeSince }
        }
    }

    public func freeTasks(workflow: String, status: Int, now: Timestamp, limit: Int) async throws -> (
        runIDs: [String], next: Timestamp?
    ) {
        try await read("free tasks") { c in
            let due = try c.query(
                """
                SELECT run_id FROM workflow_tasks
                WHERE workflow_name = ? AND status = ? AND available_at IS NOT NULL AND available_at <= ?
                ORDER BY available_at LIMIT ?
                """, [.text(workflow), .int(status), .timestamp(now), .int(limit)]
            ).map { try $0.string(0) }
            let next = try c.query(
                """
                SELECT MIN(available_at) FROM workflow_tasks WHERE workflow_name = ? AND status = ? AND available_at > ?
                """, [.text(workflow), .int(status), .timestamp(now)]
            ).first?.optionalTimestamp(0)
            return (due, next)
        }
    }

    @discardableResult public func releaseTasks(_ claims: [TaskClaim], now: Timestamp) async throws -> Int {
        guard !claims.isEmpty else { return 0 }
        return try await writeOne("release tasks") { c in
            var freed = 0
            var start = 0
            while start < claims.count {
                let chunk = Array(claims[start..<min(start + 64, claims.count)])
                let n = Self.bucket(chunk.count)
                var cases: [SQLValue] = []
                for k in chunk { cases += [.text(k.runID), .int(k.version), .int(k.claim)] }
                for _ in chunk.count..<n { cases += [.text(chunk[chunk.count - 1].runID), .null, .null] }
                let tuples = Array(repeating: "(run_id = ? AND version = ? AND claim = ?)", count: n).joined(separator: " OR ")
                // Only held ones: a task whose worker failed it waits for its retry time.
                freed += try c.execute(
                    """
                    UPDATE workflow_tasks SET available_at = ?, holder = NULL
                    WHERE (\(tuples)) AND available_at IS NOT NULL AND holder IS NOT NULL
                    """, [.timestamp(now)] + cases
                ).affectedRows
                start += chunk.count
            }
            return freed
        }
    }

    public func extendTask(_ claim: TaskClaim, until deadline: Timestamp, now: Timestamp) async throws -> Bool {
        try await writeOne("extend task") { c in
            try c.execute(
                """
                UPDATE workflow_tasks SET available_at = ?
                WHERE run_id = ? AND version = ? AND claim = ? AND available_at IS NOT NULL AND holder IS NOT NULL
                """, [.timestamp(deadline), .text(claim.runID), .int(claim.version), .int(claim.claim)]
            ).affectedRows == 1
        }
    }

    public func task(runID: String, version: Int64) async throws -> TaskRecord? {
        try await read("task") { c in
            try c.query(
                "SELECT \(Self.taskColumns) FROM workflow_tasks WHERE run_id = ? AND version = ?",
                [.text(runID), .int(version)]
            ).first.map(Self.decodeTask)
        }
    }

    public func openMissingTasks(workflow: String, status: Int, now: Timestamp) async throws -> Int {
        try await writeOne("open missing tasks") { c in
            // idx_status finds the runs in the status; INSERT IGNORE leaves a task another
            // writer opened meanwhile (the primary key), so running it twice changes nothing.
            try c.execute(
                """
                INSERT IGNORE INTO workflow_tasks
                  (run_id, version, workflow_name, foreign_id, status, attempt, claim, available_at, free_since, created_at)
                SELECT r.run_id, r.version, r.workflow_name, r.foreign_id, r.status, 1, 0, ?, ?, ?
                FROM workflow_records r
                WHERE r.workflow_name = ? AND r.status = ? AND r.run_state IN (1, 2)
                  AND NOT EXISTS (SELECT 1 FROM workflow_tasks t WHERE t.run_id = r.run_id AND t.version = r.version)
                """, [.timestamp(now), .timestamp(now), .timestamp(now), .text(workflow), .int(status)]
            ).affectedRows
        }
    }

    public func taskCounts(workflow: String, status: Int, now: Timestamp) async throws -> TaskCount {
        try await read("task counts") { c in
            // Closed tasks have a NULL available_at and sort first in idx_tasks_free: this range
            // reads the open tasks of one status only, however many closed ones remain.
            let row = try c.query(
                """
                SELECT COALESCE(SUM(available_at <= ?), 0), COALESCE(SUM(available_at > ? AND holder IS NOT NULL), 0),
                  COALESCE(SUM(available_at > ? AND holder IS NULL), 0), MIN(IF(available_at <= ?, available_at, NULL))
                FROM workflow_tasks WHERE workflow_name = ? AND status = ? AND available_at IS NOT NULL
                """, [.timestamp(now), .timestamp(now), .timestamp(now), .timestamp(now), .text(workflow), .int(status)])[0]
            return TaskCount(
                workflow: workflow, status: status, waiting: Int(try row.int(0)), held: Int(try row.int(1)),
                scheduled: Int(try row.int(2)), oldestWaiting: try row.optionalTimestamp(3))
        }
    }
}

import WorkflowEngine

extension MariaDBWorkflowStore {
    public func create(_ new: NewRun) async throws -> CreateRunResult {
        try await create(batch: [new])[0]
    }

    /// One transaction for the whole batch: each run is inserted (or its unfinished namesake
    /// returned), then one outbox insert and one timeout insert cover every created run. A
    /// deadlock or lock wait re-runs the whole body (nothing of it committed).
    public func create(batch: [NewRun]) async throws -> [CreateRunResult] {
        try await create(batch: batch, route: .outbox).value
    }

    public func create(batch: [NewRun], route: EventRoute) async throws -> Written<[CreateRunResult]> {
        guard !batch.isEmpty else { return Written([]) }
        for n in batch { precondition(n.run.version == 1, "a new run starts at version 1") }
        let log = Self.logAppend(route)
        let results = try await write("create") { c in
            var results: [CreateRunResult] = []
            results.reserveCapacity(batch.count)
            var createdRuns: [Run] = []
            var opening: [(run: Run, held: TaskHold?)] = []
            var timeoutRows: [[SQLValue]] = []
            // Up to 64 runs (and 4 MiB) in one multi-row INSERT, in pieces whose sizes are
            // powers of two so few statements are prepared; if the unique key on unfinished runs
            // refuses one of them, that statement inserted nothing and its runs go in one by
            // one, each told whether it was created or which run it met.
            for piece in Self.pieces(batch.map { Self.runBytes($0.run) }, powersOfTwo: true) {
                let chunk = Array(batch[piece])
                let chunkResults: [CreateRunResult]
                if chunk.count > 1, try Self.insertRunsUnlessActive(c, chunk.map(\.run)) {
                    chunkResults = chunk.map { .created($0.run) }
                } else {
                    chunkResults = try chunk.map { try Self.insertRun(c, $0.run) }
                }
                for (new, result) in zip(chunk, chunkResults) {
                    if case .created(let run) = result {
                        createdRuns.append(run)
                        timeoutRows += new.timeouts.map { Self.timeoutRow(run, $0, now: run.createdAt) }
                        if new.opensTask { opening.append((run, nil)) }
                    }
                    results.append(result)
                }
            }
            if !timeoutRows.isEmpty {
                try Self.insertRows(c, prefix: Self.timeoutInsert, tuple: Self.timeoutTuple, rows: timeoutRows)
            }
            try Self.openTasks(c, opening)
            try Self.emit(c, createdRuns, log)
            return results
        }
        return Written(results, appended: log?.appended ?? [])
    }

    static func logAppend(_ route: EventRoute) -> LogAppend? {
        switch route {
        case .outbox: nil
        case .log(let turn): LogAppend(turn: turn)
        }
    }

    /// Inserts one run, or returns the unfinished run the unique key says already exists.
    static func insertRun(_ c: MariaDBConnection, _ run: Run) throws -> CreateRunResult {
        for _ in 0..<5 {
            if try insertRunsUnlessActive(c, [run]) { return .created(run) }
            // The database refused a second unfinished run for this foreign id (only that
            // statement failed; the transaction goes on): return that run.
            let rows = try c.query(
                "SELECT \(Self.runColumns) FROM workflow_records WHERE workflow_name = ? AND active_foreign_id = ?",
                [.text(run.workflow), .text(run.foreignID)])
            if let row = rows.first { return .existing(try Self.decodeRun(row)) }
            // It finished in between: try the insert again.
        }
        throw MariaDBError(kind: .retryableConflict, message: "foreign id kept changing state during create")
    }

    static func runRow(_ run: Run) -> [SQLValue] {
        [
            .text(run.workflow), .text(run.foreignID), .text(run.runID), .int(run.runState.rawValue),
            .int(run.status), .bytes(run.object), .timestamp(run.createdAt), .timestamp(run.updatedAt),
            .optionalBytes(run.meta), .int(run.version), .optionalText(run.reason),
        ]
    }

    /// All of `runs` in one statement (one run: the plain single-row insert); false, and nothing
    /// inserted, when the unique key on unfinished runs refused one of them.
    static func insertRunsUnlessActive(_ c: MariaDBConnection, _ runs: [Run]) throws(MariaDBError) -> Bool {
        let tuple = "(" + Array(repeating: "?", count: 11).joined(separator: ", ") + ")"
        do {
            try c.execute(
                "INSERT INTO workflow_records (\(Self.runColumns)) VALUES "
                    + Array(repeating: tuple, count: runs.count).joined(separator: ", "),
                Array(runs.map(runRow).joined()))
            return true
        } catch {
            if error.kind == .duplicateKey && error.message.contains("uniq_unfinished_run") { return false }
            throw error
        }
    }

    public func update(_ updates: [RunUpdate]) async throws -> [UpdateOutcome] {
        try await update(updates, route: .outbox).value
    }

    public func update(_ updates: [RunUpdate], route: EventRoute) async throws -> Written<[UpdateOutcome]> {
        if updates.isEmpty { return Written([]) }
        let log = Self.logAppend(route)
        do {
            if Self.fitsOneStatement(updates) {
                do {
                    let outcomes = try await pool.transaction { c in try Self.applyInOneStatement(c, updates, log) }
                    return Written(outcomes, appended: log?.appended ?? [])
                } catch let error as MariaDBError where error.kind == .batchConflict {
                    // Some run had moved on: the whole batch was rolled back; apply it run by
                    // run, which tells each caller its own outcome.
                }
            }
            do {
                let outcomes = try await pool.transaction { c in try Self.apply(c, updates, log) }
                return Written(outcomes, appended: log?.appended ?? [])
            } catch let error as MariaDBError where error.kind == .batchConflict && updates.count == 1 {
                return Written([.conflict])  // its task and its record disagreed: rolled back, refused
            }
        } catch let error as MariaDBError where updates.count > 1 && error.kind != .commitOutcomeUnknown {
            // Per-run fallback: one bad update must not fail the others. Each is its own
            // transaction (and, on the log route, appends its own event after the head).
            logger.debug("batch update failed; applying one by one", metadata: ["db.errno": "\(error.errno)"])
            var outcomes: [UpdateOutcome] = []
            var appended: [WorkflowEvent] = []
            var firstError: (any Error)?
            for u in updates {
                do {
                    let one = try await update([u], route: route)
                    outcomes.append(contentsOf: one.value)
                    appended += one.appended
                    // Committed: the next one appends after it (under the same turn).
                    if let last = one.appended.last { log?.turn.headMoved(to: last.seq) }
                } catch {
                    firstError = firstError ?? error
                    outcomes.append(.conflict)
                    log?.turn.headMoved(to: nil)
                }
            }
            if let firstError { throw firstError }
            return Written(outcomes, appended: appended)
        } catch {
            throw mapped(error, "update")
        }
    }

    /// Several runs, none completing a timeout or retrying a task (those need their own
    /// conditional statements first), each once: their record updates can be one statement.
    /// Workers' answers (`complete` under a claim) are checked with one statement too.
    static func fitsOneStatement(_ updates: [RunUpdate]) -> Bool {
        guard updates.count > 1,
            updates.allSatisfy({ u in
                guard u.completesTimeout == nil else { return false }
                if case .retry? = u.closesTask { return false }
                return true
            })
        else { return false }
        return Set(updates.map(\.run.runID)).count == updates.count
    }

    /// Runs per multi-row statement (`UPDATE` of a batch, `INSERT` of new runs), at most.
    static let runsPerStatement = 64
    /// Bytes of objects and meta per multi-row statement, at most (a single run may be larger):
    /// far below MariaDB's default `max_allowed_packet` (16 MiB), which a statement of 64
    /// one-MiB orders would pass.
    static let bytesPerStatement = 4 << 20

    static func runBytes(_ run: Run) -> Int { run.object.count + (run.meta?.count ?? 0) + 256 }

    /// Splits runs of the given sizes, in order, into pieces of at most `runsPerStatement` runs
    /// and `bytesPerStatement` bytes (a piece holds at least one run); with `powersOfTwo` each
    /// piece's length is a power of two (13 small runs: 8 + 4 + 1).
    static func pieces(_ sizes: [Int], powersOfTwo: Bool) -> [Range<Int>] {
        var result: [Range<Int>] = []
        var start = 0
        while start < sizes.count {
            var end = start
            var bytes = 0
            while end < sizes.count, end - start < runsPerStatement, end == start || bytes + sizes[end] <= bytesPerStatement {
                bytes += sizes[end]
                end += 1
            }
            if powersOfTwo {
                var n = 1
                while n * 2 <= end - start { n *= 2 }
                end = start + n
            }
            result.append(start..<end)
            start = end
        }
        return result
    }

    /// The body of a batch whose record updates are multi-row statements, one per 64 runs:
    /// `UPDATE … SET col = CASE run_id WHEN ? THEN ? … END, … WHERE run_id IN (…) AND version =
    /// CASE run_id WHEN ? THEN ? … END`. Every run must match (the connection counts matched
    /// rows); if one does not, `batchConflict` rolls the whole transaction back, and the caller
    /// applies the batch run by run.
    static func applyInOneStatement(_ c: MariaDBConnection, _ updates: [RunUpdate], _ log: LogAppend?) throws -> [UpdateOutcome] {
        for piece in pieces(updates.map { runBytes($0.run) }, powersOfTwo: false) {
            let chunk = Array(updates[piece])
            let n = bucket(chunk.count)
            // Padding repeats the last run id (an IN list and a CASE ignore repeats: the first
            // WHEN that matches wins), with NULL values, so it adds no bytes to the statement.
            let last = chunk[chunk.count - 1].run.runID
            func caseOf(_ value: (RunUpdate) -> SQLValue) -> (String, [SQLValue]) {
                var values: [SQLValue] = []
                values.reserveCapacity(2 * n)
                for u in chunk {
                    values.append(.text(u.run.runID))
                    values.append(value(u))
                }
                for _ in chunk.count..<n {
                    values.append(.text(last))
                    values.append(.null)
                }
                return ("CASE run_id " + String(repeating: "WHEN ? THEN ? ", count: n) + "END", values)
            }
            let columns: [(String, (RunUpdate) -> SQLValue)] = [
                ("run_state", { .int($0.run.runState.rawValue) }),
                ("status", { .int($0.run.status) }),
                ("object", { .bytes($0.run.object) }),
                ("reason", { .optionalText($0.run.reason) }),
                ("updated_at", { .timestamp($0.run.updatedAt) }),
                ("meta", { .optionalBytes($0.run.meta) }),
                ("version", { .int($0.run.version) }),
            ]
            var sets: [String] = []
            var values: [SQLValue] = []
            for (name, value) in columns {
                let (sql, v) = caseOf(value)
                sets.append("\(name) = \(sql)")
                values += v
            }
            let (list, ids) = inList(chunk.map { .text($0.run.runID) })
            let (expected, expectedValues) = caseOf { .int($0.expectedVersion) }
            let r = try c.execute(
                "UPDATE workflow_records SET \(sets.joined(separator: ", ")) WHERE run_id IN \(list) AND version = \(expected)",
                values + ids + expectedValues)
            guard r.affectedRows == chunk.count else {
                throw MariaDBError(kind: .batchConflict, message: "a run of the batch has moved on")
            }
        }
        guard try completeClaimed(c, updates) else {
            throw MariaDBError(kind: .batchConflict, message: "a task of the batch was offered again or closed")
        }
        try finishApplied(c, updates, log)
        return Array(repeating: .applied, count: updates.count)
    }

    /// The body of an update transaction: every statement is conditional, so re-running it after
    /// a deadlock retry is safe.
    static func apply(_ c: MariaDBConnection, _ updates: [RunUpdate], _ log: LogAppend?) throws -> [UpdateOutcome] {
        var outcomes: [UpdateOutcome] = []
        outcomes.reserveCapacity(updates.count)
        var applied: [RunUpdate] = []
        for u in updates {
            if let timeoutID = u.completesTimeout {
                let r = try c.execute(
                    "UPDATE workflow_timeouts SET completed = 1 WHERE id = ? AND completed = 0 AND cancelled = 0",
                    [.int(timeoutID)])
                if r.affectedRows == 0 {
                    outcomes.append(.conflict)  // already fired or cancelled: fire at most once
                    continue
                }
            }
            // A worker's answer counts only under the task's current claim (checked, and the task
            // closed, before the record: a refused answer then changes nothing).
            if u.taskClaim != nil, try !closeClaimed(c, u) {
                if let timeoutID = u.completesTimeout {
                    try c.execute("UPDATE workflow_timeouts SET completed = 0 WHERE id = ?", [.int(timeoutID)])
                }
                outcomes.append(.conflict)
                continue
            }
            let run = u.run
            let r = try c.execute(
                """
                UPDATE workflow_records SET run_state = ?, status = ?, object = ?, reason = ?, updated_at = ?,
                  meta = ?, version = ? WHERE run_id = ? AND version = ?
                """,
                [
                    .int(run.runState.rawValue), .int(run.status), .bytes(run.object), .optionalText(run.reason),
                    .timestamp(run.updatedAt), .optionalBytes(run.meta), .int(run.version), .text(run.runID),
                    .int(u.expectedVersion),
                ])
            if r.affectedRows == 0 {
                if u.taskClaim != nil {
                    // An open task under this claim means the run is at that version (every
                    // change of the run closes it in the same transaction): they disagree, so
                    // roll the whole transaction back rather than leave the task closed.
                    throw MariaDBError(kind: .batchConflict, message: "run \(run.runID) moved on under an open task")
                }
                if let timeoutID = u.completesTimeout {
                    // Undo the completion above: the run moved on, so this timeout did not fire.
                    try c.execute("UPDATE workflow_timeouts SET completed = 0 WHERE id = ?", [.int(timeoutID)])
                }
                outcomes.append(.conflict)
                continue
            }
            outcomes.append(.applied)
            applied.append(u)
        }
        try finishApplied(c, applied, log)
        return outcomes
    }

    /// The rest of a transaction once the records of `applied` are updated: their timeouts
    /// cancelled and created, their tasks withdrawn and opened (in that order: a withdrawal
    /// closes whatever task of the run is open), and their outbox rows written.
    static func finishApplied(_ c: MariaDBConnection, _ applied: [RunUpdate], _ log: LogAppend?) throws {
        var emitted: [Run] = []
        var cancelling: [String] = []
        var timeoutRows: [[SQLValue]] = []
        var withdrawing: [String] = []
        var opening: [(run: Run, held: TaskHold?)] = []
        for u in applied {
            let run = u.run
            if u.emitsEvent { emitted.append(run) }
            if u.cancelPendingTimeouts { cancelling.append(run.runID) }
            for t in u.newTimeouts { timeoutRows.append(timeoutRow(run, t, now: run.updatedAt)) }
            if u.closesTask == .withdraw { withdrawing.append(run.runID) }
            if u.opensTask { opening.append((run, u.opensHeld)) }
        }
        try withdrawTasks(c, runIDs: withdrawing)
        try openTasks(c, opening)
        if !cancelling.isEmpty {
            let (list, values) = inList(cancelling.map { .text($0) })
            try c.execute(
                "UPDATE workflow_timeouts SET cancelled = 1 WHERE run_id IN \(list) AND completed = 0 AND cancelled = 0",
                values)
        }
        if !timeoutRows.isEmpty {
            try insertRows(c, prefix: timeoutInsert, tuple: timeoutTuple, rows: timeoutRows)
        }
        try emit(c, emitted, log)
    }

    public func lookup(runID: String) async throws -> Run? {
        try await read("lookup") { c in
            try c.query("SELECT \(Self.runColumns) FROM workflow_records WHERE run_id = ?", [.text(runID)])
                .first.map(Self.decodeRun)
        }
    }

    public func lookup(runIDs: [String]) async throws -> [Run] {
        if runIDs.isEmpty { return [] }
        return try await read("lookup") { c in
            var runs: [Run] = []
            var start = 0
            while start < runIDs.count {
                let chunk = Array(runIDs[start..<min(start + 512, runIDs.count)])
                let (list, values) = Self.inList(chunk.map { .text($0) })
                runs += try c.query("SELECT \(Self.runColumns) FROM workflow_records WHERE run_id IN \(list)", values)
                    .map(Self.decodeRun)
                start += chunk.count
            }
            return runs
        }
    }

    public func latest(workflow: String, foreignID: String) async throws -> Run? {
        try await read("latest") { c in
            try c.query(
                """
                SELECT \(Self.runColumns) FROM workflow_records WHERE workflow_name = ? AND foreign_id = ?
                ORDER BY created_at DESC, run_id DESC LIMIT 1
                """, [.text(workflow), .text(foreignID)]
            ).first.map(Self.decodeRun)
        }
    }

    public func list(_ q: RunQuery) async throws -> RunPage {
        precondition(q.limit >= 1, "limit must be positive")
        var conditions: [String] = []
        var values: [SQLValue] = []
        if let w = q.workflow {
            conditions.append("workflow_name = ?")
            values.append(.text(w))
        }
        if !q.foreignIDs.isEmpty {
            let (list, v) = Self.inList(q.foreignIDs.map { .text($0) })
            conditions.append("foreign_id IN \(list)")
            values += v
        }
        if !q.statuses.isEmpty {
            let (list, v) = Self.inList(q.statuses.map { .int($0) })
            conditions.append("status IN \(list)")
            values += v
        }
        if !q.runStates.isEmpty {
            let (list, v) = Self.inList(q.runStates.map { .int($0.rawValue) })
            conditions.append("run_state IN \(list)")
            values += v
        }
        if let after = q.createdAfter {
            conditions.append("created_at >= ?")
            values.append(.timestamp(after))
        }
        if let before = q.createdBefore {
            conditions.append("created_at < ?")
            values.append(.timestamp(before))
        }
        let asc = q.order == .ascending
        if let cursor = q.after {
            let op = asc ? ">" : "<"
            conditions.append("(created_at \(op) ? OR (created_at = ? AND run_id \(op) ?))")
            values += [.timestamp(cursor.createdAt), .timestamp(cursor.createdAt), .text(cursor.runID)]
        }
        let direction = asc ? "ASC" : "DESC"
        let whereClause = conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
        let sql =
            "SELECT \(Self.runColumns) FROM workflow_records\(whereClause) ORDER BY created_at \(direction), run_id \(direction) LIMIT ?"
        values.append(.int(q.limit + 1))
        let params = values
        let limit = q.limit
        return try await read("list") { c in
            var runs = try c.query(sql, params).map(Self.decodeRun)
            var next: RunCursor? = nil
            if runs.count > limit {
                runs.removeLast(runs.count - limit)
                let last = runs[runs.count - 1]
                next = RunCursor(createdAt: last.createdAt, runID: last.runID)
            }
            return RunPage(runs: runs, next: next)
        }
    }
}

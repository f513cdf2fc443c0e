import WorkflowEngine

extension MariaDBWorkflowStore {
    public func outboxBatch(limit: Int) async throws -> [OutboxRow] {
        try await read("outbox") { c in
            try c.query(
                """
                SELECT id, workflow_name, foreign_id, run_id, status, run_state, version, created_at, reason
                FROM workflow_outbox ORDER BY id LIMIT ?
                """, [.int(limit)]
            ).map(Self.decodeOutboxRow)
        }
    }

    static func decodeOutboxRow(_ row: SQLRow) throws -> OutboxRow {
        let stateCode = Int(try row.int(5))
        guard let state = RunState(rawValue: stateCode) else {
            throw MariaDBError(kind: .badRow, message: "outbox row \(try row.int(0)) has unknown run_state \(stateCode)")
        }
        let at = try row.timestamp(7)
        return OutboxRow(
            id: try row.int(0),
            data: EventData(
                workflow: try row.string(1), foreignID: try row.string(2), runID: try row.string(3),
                status: Int(try row.int(4)), runState: state, version: try row.int(6), at: at,
                reason: try row.optionalString(8)),
            createdAt: at)
    }

    public func deleteOutbox(ids: [Int64]) async throws -> Int {
        if ids.isEmpty { return 0 }
        return try await write("delete outbox") { c in
            let (list, values) = Self.inList(ids.map { .int($0) })
            return try c.execute("DELETE FROM workflow_outbox WHERE id IN \(list)", values).affectedRows
        }
    }

    public func outboxStats() async throws -> OutboxStats {
        try await read("outbox stats") { c in
            let row = try c.query("SELECT COUNT(*), MIN(created_at) FROM workflow_outbox")[0]
            return OutboxStats(pending: Int(try row.int(0)), oldest: try row.optionalTimestamp(1))
        }
    }

    public func append(_ events: [EventData]) async throws -> [WorkflowEvent] {
        if events.isEmpty { return [] }
        return try await write("append") { c in
            let head = try Self.head(c)
            let stored = events.enumerated().map { WorkflowEvent(seq: head + Int64($0.offset) + 1, data: $0.element) }
            // The primary key on seq makes a concurrent appender that read the same head fail
            // with a duplicate key: at most one of them wins, and no seq is skipped.
            try Self.insertRows(
                c,
                prefix:
                    "INSERT INTO workflow_events (seq, workflow_name, foreign_id, run_id, status, run_state, version, at, reason)",
                tuple: "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows: stored.map { e in
                    [
                        .int(e.seq), .text(e.workflow), .text(e.foreignID), .text(e.runID), .int(e.status),
                        .int(e.runState.rawValue), .int(e.version), .timestamp(e.at), .optionalText(e.reason),
                    ]
                })
            return stored
        }
    }

    public func relay(limit: Int) async throws -> [WorkflowEvent] {
        try await write("relay") { c in
            // Lock the oldest outbox rows (READ COMMITTED: no gap locks, so writers appending
            // new rows are not blocked).
            let rows = try Self.lockOutbox(c, limit: limit)
            if rows.isEmpty { return [] }
            // The head, read after the lock was granted: a relay that waited for another one's
            // rows sees the events that one committed. (Read in the same statement as the
            // locking SELECT it could be older, and the insert would hit a duplicate seq.)
            return try Self.moveOutbox(c, rows, after: try Self.head(c))
        }
    }

    /// The oldest `limit` outbox rows, locked.
    static func lockOutbox(_ c: MariaDBConnection, limit: Int) throws -> [OutboxRow] {
        try c.query(
            """
            SELECT id, workflow_name, foreign_id, run_id, status, run_state, version, created_at, reason
            FROM workflow_outbox ORDER BY id LIMIT ? FOR UPDATE
            """, [.int(limit)]
        ).map(Self.decodeOutboxRow)
    }

    /// Moves locked outbox rows into the log as `head + 1`… in id order, and deletes them.
    static func moveOutbox(_ c: MariaDBConnection, _ rows: [OutboxRow], after head: Int64) throws -> [WorkflowEvent] {
        // Copy exactly the locked rows server-side, numbered in id order from head + 1:
        // FIELD gives each id's position in the ascending list. (No window function and no
        // ORDER BY, so MariaDB needs no temporary table; the IN list and the FIELD list are
        // padded to a power of two by repeating the last id, which neither one counts.)
        var start = 0
        while start < rows.count {
            let chunk = rows[start..<min(start + 256, rows.count)]
            let (list, ids) = Self.inList(chunk.map { .int($0.id) })
            let inserted = try c.execute(
                """
                INSERT INTO workflow_events (seq, workflow_name, foreign_id, run_id, status, run_state, version, at, reason)
                SELECT ? + FIELD(id, \(list.dropFirst().dropLast())), workflow_name, foreign_id, run_id, status,
                  run_state, version, created_at, reason
                FROM workflow_outbox WHERE id IN \(list)
                """, [.int(head + Int64(start))] + ids + ids)
            let deleted = try c.execute("DELETE FROM workflow_outbox WHERE id IN \(list)", ids)
            // The rows are locked, so both must touch every one of them.
            guard inserted.affectedRows == chunk.count, deleted.affectedRows == chunk.count else {
                throw MariaDBError(kind: .retryableConflict, message: "the outbox changed under the relay")
            }
            start += chunk.count
        }
        return rows.enumerated().map { WorkflowEvent(seq: head + Int64($0.offset) + 1, data: $0.element.data) }
    }

    /// The state of one `.log` write, shared with its transaction body (which may run again
    /// after a deadlock or a stale head). Used by one transaction at a time.
    final class LogAppend: @unchecked Sendable {
        let turn: LogTurn
        var appended: [WorkflowEvent] = []
        init(turn: LogTurn) { self.turn = turn }
    }

    /// Outbox rows still pending that may wait in one write's transaction; past this, the write
    /// uses the outbox too and the relay moves everything in order.
    static let pendingOutboxLimit = 256

    /// The events of `runs` (their changes are written in this transaction): into the outbox,
    /// or — `.log` — straight into the log after the pending outbox rows.
    static func emit(_ c: MariaDBConnection, _ runs: [Run], _ log: LogAppend?) throws {
        guard let log else {
            try writeOutbox(c, runIDs: runs.map(\.runID))
            return
        }
        log.appended = []
        guard !runs.isEmpty else { return }
        // The log writer's turn, taken now, after the write's other statements: other writes
        // run those meanwhile. (It may wait for the previous appender's commit.)
        guard let grant = log.turn.take() else {
            try writeOutbox(c, runIDs: runs.map(\.runID))  // the relay lease went meanwhile
            return
        }
        let pending = grant.outboxEmpty ? [] : try lockOutbox(c, limit: pendingOutboxLimit + 1)
        if pending.count > pendingOutboxLimit {
            try writeOutbox(c, runIDs: runs.map(\.runID))  // behind the others, in order
            return
        }
        var head = try grant.knownHead ?? Self.head(c)
        var out = try pending.isEmpty ? [] : moveOutbox(c, pending, after: head)
        head += Int64(pending.count)
        let events = runs.enumerated().map { WorkflowEvent(seq: head + Int64($0.offset) + 1, data: $0.element.event) }
        do {
            try insertRows(
                c, prefix: "INSERT INTO workflow_events (seq, workflow_name, foreign_id, run_id, status, run_state, version, at, reason)",
                tuple: "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows: events.map { e in
                    [
                        .int(e.seq), .text(e.workflow), .text(e.foreignID), .text(e.runID), .int(e.status),
                        .int(e.runState.rawValue), .int(e.version), .timestamp(e.at), .optionalText(e.reason),
                    ]
                })
        } catch let e as MariaDBError where e.kind == .duplicateKey {
            // Another appender moved the head (a relay whose lease just expired): read it again.
            log.turn.headMoved(to: nil)
            throw MariaDBError(kind: .retryableConflict, errno: e.errno, sqlState: e.sqlState, message: "the log head moved")
        }
        out += events
        log.appended = out
    }

    static func head(_ c: MariaDBConnection) throws -> Int64 {
        try c.query("SELECT COALESCE(MAX(seq), 0) FROM workflow_events")[0].int(0)
    }

    public func events(after: Int64, filter: EventFilter, limit: Int) async throws -> [WorkflowEvent] {
        var conditions = ["seq > ?"]
        var values: [SQLValue] = [.int(after)]
        if let w = filter.workflow {
            conditions.append("workflow_name = ?")
            values.append(.text(w))
        }
        if let f = filter.foreignID {
            conditions.append("foreign_id = ?")
            values.append(.text(f))
        }
        if let r = filter.runID {
            conditions.append("run_id = ?")
            values.append(.text(r))
        }
        if !filter.statuses.isEmpty {
            let (list, v) = Self.inList(filter.statuses.map { .int($0) })
            conditions.append("status IN \(list)")
            values += v
        }
        if !filter.runStates.isEmpty {
            let (list, v) = Self.inList(filter.runStates.map { .int($0.rawValue) })
            conditions.append("run_state IN \(list)")
            values += v
        }
        if let p = filter.partition {
            conditions.append("MOD(CRC32(run_id), ?) = ?")
            values += [.int(p.count), .int(p.index)]
        }
        values.append(.int(limit))
        let sql =
            "SELECT \(Self.eventColumns) FROM workflow_events WHERE \(conditions.joined(separator: " AND ")) ORDER BY seq LIMIT ?"
        let params = values
        return try await read("events") { c in try c.query(sql, params).map(Self.decodeEvent) }
    }

    public func history(runID: String) async throws -> [WorkflowEvent] {
        try await read("history") { c in
            try c.query(
                "SELECT \(Self.eventColumns) FROM workflow_events WHERE run_id = ? ORDER BY seq", [.text(runID)]
            ).map(Self.decodeEvent)
        }
    }

    public func head() async throws -> Int64 {
        try await read("head") { c in try Self.head(c) }
    }
}

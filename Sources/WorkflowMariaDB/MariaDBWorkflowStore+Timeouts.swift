import WorkflowEngine

extension MariaDBWorkflowStore {
    static let timeoutColumns =
        "id, workflow_name, foreign_id, run_id, kind, status, attempt, expire_at, created_at, completed, cancelled"

    static func decodeTimeout(_ row: SQLRow) throws -> TimeoutRecord {
        let kindCode = Int(try row.int(4))
        guard let kind = TimeoutKind(rawValue: kindCode) else {
            throw MariaDBError(kind: .badRow, message: "timeout \(try row.int(0)) has unknown kind \(kindCode)")
        }
        return TimeoutRecord(
            id: try row.int(0), workflow: try row.string(1), foreignID: try row.string(2), runID: try row.string(3),
            kind: kind, status: Int(try row.int(5)), attempt: Int(try row.int(6)), expireAt: try row.timestamp(7),
            createdAt: try row.timestamp(8), completed: try row.int(9) != 0, cancelled: try row.int(10) != 0)
    }

    public func createTimeout(for run: Run, _ timeout: NewTimeout, now: Timestamp) async throws -> Int64 {
        try await write("create timeout") { c in
            try c.execute(
                "\(Self.timeoutInsert) VALUES \(Self.timeoutTuple)", Self.timeoutRow(run, timeout, now: now)
            ).lastInsertID
        }
    }

    public func completeTimeout(id: Int64) async throws -> Bool {
        try await write("complete timeout") { c in
            try c.execute(
                "UPDATE workflow_timeouts SET completed = 1 WHERE id = ? AND completed = 0 AND cancelled = 0", [.int(id)]
            ).affectedRows == 1
        }
    }

    public func cancelTimeout(id: Int64) async throws -> Bool {
        try await write("cancel timeout") { c in
            try c.execute(
                "UPDATE workflow_timeouts SET cancelled = 1 WHERE id = ? AND completed = 0 AND cancelled = 0", [.int(id)]
            ).affectedRows == 1
        }
    }

    public func dueTimeouts(now: Timestamp, limit: Int) async throws -> [TimeoutRecord] {
        try await read("due timeouts") { c in
            try c.query(
                """
                SELECT \(Self.timeoutColumns) FROM workflow_timeouts
                WHERE completed = 0 AND cancelled = 0 AND expire_at <= ? ORDER BY id LIMIT ?
                """, [.timestamp(now), .int(limit)]
            ).map(Self.decodeTimeout)
        }
    }

    public func nextTimeout(after now: Timestamp) async throws -> Timestamp? {
        try await read("next timeout") { c in
            // idx_timeouts_due (completed, cancelled, expire_at): the first entry after `now`.
            try c.query(
                "SELECT MIN(expire_at) FROM workflow_timeouts WHERE completed = 0 AND cancelled = 0 AND expire_at > ?",
                [.timestamp(now)]
            ).first?.optionalTimestamp(0)
        }
    }

    public func timeouts(runID: String) async throws -> [TimeoutRecord] {
        try await read("timeouts") { c in
            try c.query(
                "SELECT \(Self.timeoutColumns) FROM workflow_timeouts WHERE run_id = ? ORDER BY id", [.text(runID)]
            ).map(Self.decodeTimeout)
        }
    }
}

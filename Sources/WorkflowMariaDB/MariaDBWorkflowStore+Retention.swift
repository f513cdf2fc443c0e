import WorkflowEngine

/// Retention: every statement walks an index range (`idx_records_finished`,
/// `idx_timeouts_run`, the tasks' primary key, the events' primary key, `idx_cursors_seq`) and every transaction is one
/// batch, so no lock is held for long and the hot paths keep running beside it.
extension MariaDBWorkflowStore {
    /// `(4, 5, 6)`: the codes of `RunState.prunable`, for SQL.
    static let prunableStates = "(" + RunState.prunable.map { String($0.rawValue) }.sorted().joined(separator: ", ") + ")"

    public func earliestSeq() async throws -> Int64? {
        try await read("earliest seq") { c in try Self.earliestSeq(c) }
    }

    static func earliestSeq(_ c: MariaDBConnection) throws -> Int64? {
        try c.query("SELECT MIN(seq) FROM workflow_events")[0].optionalInt(0)
    }

    /// The cutoff itself, or the oldest pending outbox row's time if that is earlier: an outbox
    /// row carries its run's `updated_at`, so a run that last changed before every pending row
    /// has nothing waiting for the relay.
    static func runCutoff(_ c: MariaDBConnection, _ cutoff: Timestamp) throws -> Timestamp {
        let oldest = try c.query("SELECT MIN(created_at) FROM workflow_outbox")[0].optionalTimestamp(0)
        if let oldest, oldest < cutoff { return oldest }
        return cutoff
    }

    public func prunableRuns(updatedBefore cutoff: Timestamp) async throws -> Int {
        try await read("prunable runs") { c in
            let cut = try Self.runCutoff(c, cutoff)
            return Int(
                try c.query(
                    "SELECT COUNT(*) FROM workflow_records WHERE run_state IN \(Self.prunableStates) AND updated_at < ?",
                    [.timestamp(cut)])[0].int(0))
        }
    }

    public func pruneRuns(updatedBefore cutoff: Timestamp, archivedAt: Timestamp?, limit: Int) async throws -> Int {
        try await write("prune runs") { c in
            let cut = try Self.runCutoff(c, cutoff)
            // Lock one batch (READ COMMITTED: only the matching rows, no gaps). A run changed
            // meanwhile (delete_data on a Completed run) no longer matches once its lock is ours.
            let ids = try c.query(
                """
                SELECT run_id FROM workflow_records WHERE run_state IN \(Self.prunableStates) AND updated_at < ?
                LIMIT ? FOR UPDATE
                """, [.timestamp(cut), .int(limit)]
            ).map { try $0.string(0) }
            var start = 0
            while start < ids.count {
                let chunk = ids[start..<min(start + 256, ids.count)]
                let (list, values) = Self.inList(chunk.map { .text($0) })
                if let archivedAt {
                    let copied = try c.execute(
                        """
                        INSERT INTO workflow_records_archive (\(Self.runColumns), archived_at)
                        SELECT \(Self.runColumns), ? FROM workflow_records WHERE run_id IN \(list)
                        """, [.timestamp(archivedAt)] + values)
                    guard copied.affectedRows == chunk.count else {
                        throw MariaDBError(kind: .retryableConflict, message: "runs changed under retention")
                    }
                }
                try c.execute("DELETE FROM workflow_timeouts WHERE run_id IN \(list)", values)
                try c.execute("DELETE FROM workflow_tasks WHERE run_id IN \(list)", values)
                let deleted = try c.execute("DELETE FROM workflow_records WHERE run_id IN \(list)", values)
                // The rows are locked, so the delete must find every one of them.
                guard deleted.affectedRows == chunk.count else {
                    throw MariaDBError(kind: .retryableConflict, message: "runs changed under retention")
                }
                start += chunk.count
            }
            return ids.count
        }
    }

    public func eventPruneBound(before cutoff: Timestamp) async throws -> EventPruneBound {
        try await read("event prune bound") { c in
            guard let earliest = try Self.earliestSeq(c) else {
                return EventPruneBound(earliest: nil, keepFrom: 0, reason: .newest)
            }
            var bound = EventPruneBound(earliest: earliest, keepFrom: try Self.head(c), reason: .newest)
            // Walks the primary key from the start of the log to the first event that is not
            // old enough; the rows it passes are the ones retention deletes next.
            if let young = try c.query(
                "SELECT seq FROM workflow_events WHERE seq >= ? AND at >= ? ORDER BY seq LIMIT 1",
                [.int(earliest), .timestamp(cutoff)]
            ).first.map({ try $0.int(0) }), young < bound.keepFrom {
                bound.keepFrom = young
                bound.reason = .age
            }
            if let lowest = try c.query("SELECT name, seq FROM workflow_cursors ORDER BY seq LIMIT 1").first {
                let next = try lowest.int(1) + 1
                if next < bound.keepFrom {
                    bound.keepFrom = next
                    bound.reason = .cursor(try lowest.string(0))
                }
            }
            bound.keepFrom = max(bound.keepFrom, earliest)
            return bound
        }
    }

    public func deleteEvents(below: Int64, limit: Int) async throws -> Int {
        // One statement in autocommit over a primary-key range: deleting the same range twice
        // is harmless, so it may be repeated after a lost connection.
        try await writeOne("delete events") { c in
            Int(try c.execute("DELETE FROM workflow_events WHERE seq < ? ORDER BY seq LIMIT ?", [.int(below), .int(limit)]).affectedRows)
        }
    }
}

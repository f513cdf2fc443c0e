import Logging
import Synchronization
import WorkflowEngine

/// The engine's stores on MariaDB: records, outbox and event log, timeouts, cursors, leases.
///
/// Blocking work runs on the pool's database threads. Errors leave as `WorkflowError`:
/// transient database trouble (unreachable, too many connections, deadlocks that kept failing)
/// as `UNAVAILABLE` (retryable, nothing changed); a COMMIT whose outcome is unknown and
/// anything unexpected as `INTERNAL` with a message that holds no SQL and no secrets — the
/// detail goes to the log.
public final class MariaDBWorkflowStore: WorkflowStore {
    public let pool: MariaDBPool
    let logger: Logger

    public init(pool: MariaDBPool, logger: Logger) {
        self.pool = pool
        self.logger = logger
    }

    // MARK: - Running SQL with error mapping

    func read<T: Sendable>(_ op: String, _ body: @escaping @Sendable (MariaDBConnection) throws -> T) async throws -> T {
        do {
            return try await pool.withConnection(body)
        } catch {
            throw mapped(error, op)
        }
    }

    /// A write of one idempotent statement, in autocommit mode: no START TRANSACTION / COMMIT
    /// round trips. Repeated on a fresh connection if the connection was lost, so only for
    /// statements that may safely apply twice.
    func writeOne<T: Sendable>(_ op: String, _ body: @escaping @Sendable (MariaDBConnection) throws -> T) async throws -> T {
        try await read(op, body)
    }

    func write<T: Sendable>(_ op: String, _ body: @escaping @Sendable (MariaDBConnection) throws -> T) async throws -> T {
        do {
            return try await pool.transaction(body)
        } catch {
            throw mapped(error, op)
        }
    }

    func mapped(_ error: any Error, _ op: String) -> any Error {
        if error is WorkflowError { return error }
        guard let e = error as? MariaDBError else {
            logger.error("store operation failed", metadata: ["op": "\(op)", "error": "\(error)"])
            return WorkflowError(.internalError, "internal error in \(op)", retryable: true)
        }
        switch e.kind {
        case .unavailable, .connectionLost, .retryableConflict, .shutdown:
            // Debug only: the engine logs an outage once per episode, and a client gets
            // UNAVAILABLE; a line per failed call would flood the log during an outage.
            logger.debug(
                "database unavailable",
                metadata: ["op": "\(op)", "db.errno": "\(e.errno)", "db.sqlstate": "\(e.sqlState)", "error": "\(e.message)"])
            return WorkflowError(
                .unavailable, "the database cannot be reached right now (MariaDB error \(e.errno)); nothing was changed",
                retryable: true)
        case .commitOutcomeUnknown:
            logger.error("commit outcome unknown", metadata: ["op": "\(op)", "db.errno": "\(e.errno)"])
            return WorkflowError(
                .outcomeUnknown, "the database connection was lost while committing; the change may or may not be applied",
                retryable: true)
        case .badRow:
            logger.error("row does not decode", metadata: ["op": "\(op)", "error": "\(e.message)"])
            return WorkflowError(.internalError, "a stored row does not decode: \(e.message)", retryable: false)
        default:
            logger.error(
                "database error",
                metadata: ["op": "\(op)", "db.errno": "\(e.errno)", "db.sqlstate": "\(e.sqlState)", "error": "\(e.message)"])
            return WorkflowError(.internalError, "database error \(e.errno) in \(op)", retryable: false)
        }
    }

    // MARK: - Shared SQL pieces

    static let runColumns =
        "workflow_name, foreign_id, run_id, run_state, status, object, created_at, updated_at, meta, version, reason"

    static func decodeRun(_ row: SQLRow) throws -> Run { try decodeRun(row, at: 0) }

    /// A run from `runColumns` starting at column `o`.
    static func decodeRun(_ row: SQLRow, at o: Int) throws -> Run {
        let runID = try row.string(o + 2)
        let stateCode = Int(try row.int(o + 3))
        guard let state = RunState(rawValue: stateCode) else {
            throw MariaDBError(kind: .badRow, message: "run \(runID) has unknown run_state \(stateCode)")
        }
        return Run(
            workflow: try row.string(o), foreignID: try row.string(o + 1), runID: runID, runState: state,
            status: Int(try row.int(o + 4)), version: try row.int(o + 9), object: try row.bytes(o + 5),
            reason: try row.optionalString(o + 10), createdAt: try row.timestamp(o + 6),
            updatedAt: try row.timestamp(o + 7), meta: try row.optionalBytes(o + 8))
    }

    /// `runColumns` of a table aliased `alias` (for joins).
    static func runColumns(of alias: String) -> String {
        runColumns.split(separator: ",").map { alias + "." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")
    }

    static let eventColumns = "seq, workflow_name, foreign_id, run_id, status, run_state, version, at, reason"

    static func decodeEvent(_ row: SQLRow) throws -> WorkflowEvent {
        let stateCode = Int(try row.int(5))
        guard let state = RunState(rawValue: stateCode) else {
            throw MariaDBError(kind: .badRow, message: "event \(try row.int(0)) has unknown run_state \(stateCode)")
        }
        return WorkflowEvent(
            seq: try row.int(0),
            data: EventData(
                workflow: try row.string(1), foreignID: try row.string(2), runID: try row.string(3),
                status: Int(try row.int(4)), runState: state, version: try row.int(6), at: try row.timestamp(7),
                reason: try row.optionalString(8)))
    }

    /// IN-list sizes are rounded up to these buckets (padding repeats the last value, which an IN
    /// list ignores), so a handful of prepared statements serve every list length.
    static func bucket(_ n: Int) -> Int {
        var b = 1
        while b < n { b <<= 1 }
        return b
    }

    /// `(?, ?, …)` for `count` values padded to its bucket, and the padded values.
    static func inList(_ values: [SQLValue]) -> (String, [SQLValue]) {
        precondition(!values.isEmpty)
        let n = bucket(values.count)
        var padded = values
        while padded.count < n { padded.append(values[values.count - 1]) }
        return ("(" + Array(repeating: "?", count: n).joined(separator: ", ") + ")", padded)
    }

    /// Inserts rows with multi-row INSERTs whose sizes are powers of two (13 rows = 8 + 4 + 1),
    /// so few statements are prepared and few round trips made.
    static func insertRows(_ c: MariaDBConnection, prefix: String, tuple: String, rows: [[SQLValue]]) throws {
        var start = 0
        while start < rows.count {
            var size = 1
            while size * 2 <= rows.count - start && size * 2 <= 256 { size *= 2 }
            let sql = prefix + " VALUES " + Array(repeating: tuple, count: size).joined(separator: ", ")
            try c.execute(sql, Array(rows[start..<(start + size)].joined()))
            start += size
        }
    }

    /// Writes the outbox rows announcing the current state of these runs, built from the rows
    /// themselves in one statement (the JSON in `data` is for readers of the table).
    static func writeOutbox(_ c: MariaDBConnection, runIDs: [String]) throws {
        guard !runIDs.isEmpty else { return }
        var start = 0
        while start < runIDs.count {
            let chunk = Array(runIDs[start..<min(start + 256, runIDs.count)])
            let (list, values) = inList(chunk.map { .text($0) })
            try c.execute(
                """
                INSERT INTO workflow_outbox
                  (workflow_name, data, created_at, foreign_id, run_id, status, run_state, version, reason)
                SELECT workflow_name,
                  JSON_OBJECT('workflow', workflow_name, 'foreign_id', foreign_id, 'run_id', run_id,
                    'status', status, 'run_state', run_state, 'version', version,
                    'at', DATE_FORMAT(updated_at, '%Y-%m-%dT%H:%i:%s.%fZ'), 'reason', reason),
                  updated_at, foreign_id, run_id, status, run_state, version, reason
                FROM workflow_records WHERE run_id IN \(list)
                """, values)
            start += chunk.count
        }
    }

    static let timeoutTuple = "(?, ?, ?, ?, ?, ?, ?, ?)"
    static let timeoutInsert =
        "INSERT INTO workflow_timeouts (workflow_name, foreign_id, run_id, status, kind, attempt, expire_at, created_at)"

    static func timeoutRow(_ run: Run, _ t: NewTimeout, now: Timestamp) -> [SQLValue] {
        [
            .text(run.workflow), .text(run.foreignID), .text(run.runID), .int(t.status), .int(t.kind.rawValue),
            .int(t.attempt), .timestamp(t.expireAt), .timestamp(now),
        ]
    }
}

extension MariaDBWorkflowStore {
    public var metricFamilies: [MetricFamily] {
        let r = pool.retries
        let samples: [(String, Int)] = [
            ("deadlock", r.deadlock.load(ordering: .relaxed)), ("certification", r.certification.load(ordering: .relaxed)),
            ("lock_wait", r.lockWait.load(ordering: .relaxed)), ("connection_lost", r.connectionLost.load(ordering: .relaxed)),
        ]
        return [
            MetricFamily(
                "workflowd_db_transaction_retries_total", .counter,
                help: "Transactions rolled back and tried again, by cause: deadlock (1213 from a statement), certification (1213 at COMMIT: on a Galera cluster another node committed a conflicting write first), lock_wait (1205), connection_lost (before COMMIT).",
                samples: samples.map { .init(labels: [.init("cause", $0.0)], value: Double($0.1)) }),
            MetricFamily(
                "workflowd_db_transaction_retries_exhausted_total", .counter,
                help: "Transactions that still failed with a retryable error on their last attempt (the caller sees the error).",
                samples: [.init(value: Double(r.exhausted.load(ordering: .relaxed)))]),
        ]
    }
}

import Foundation
import WorkflowEngine
import WorkflowMariaDB

#if canImport(Glibc)
import Glibc
#endif

/// The database's own ceiling for the order workload: per order, the same writes the store
/// issues (same SQL text, server-side prepared statements through the project's MariaDBPool),
/// with no engine, no socket and no JSON in between:
///
/// 1. txn: INSERT workflow_records + INSERT workflow_outbox … SELECT (the event built from the row)
/// 2–5. txn each: conditional UPDATE workflow_records … WHERE run_id = ? AND version = ?
///      + INSERT workflow_outbox … SELECT
///
/// and, on one more connection, the relay draining the outbox into workflow_events in batches
/// with the store's own `relay` (lock the oldest rows FOR UPDATE, read the head, copy, delete),
/// until every order's five events are in the log.
struct CeilingResult: Sendable {
    var connections: Int
    var orders: Int
    var seconds: Double
    var ordersPerSecond: Double
    var transactionsPerSecond: Double
    var events: Int
    var relayBatches: Int
    var db: DBCost?
    /// Orders whose transitions share one transaction (1 = one transaction per transition).
    var batch: Int = 1
}

enum Ceiling {
    static let runColumns =
        "workflow_name, foreign_id, run_id, run_state, status, object, created_at, updated_at, meta, version, reason"
    static let insertRecord = "INSERT INTO workflow_records (\(runColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    static let updateRecord = """
        UPDATE workflow_records SET run_state = ?, status = ?, object = ?, reason = ?, updated_at = ?,
          meta = ?, version = ? WHERE run_id = ? AND version = ?
        """
    static let writeOutbox = """
        INSERT INTO workflow_outbox
          (workflow_name, data, created_at, foreign_id, run_id, status, run_state, version, reason)
        SELECT workflow_name,
          JSON_OBJECT('workflow', workflow_name, 'foreign_id', foreign_id, 'run_id', run_id,
            'status', status, 'run_state', run_state, 'version', version,
            'at', DATE_FORMAT(updated_at, '%Y-%m-%dT%H:%i:%s.%fZ'), 'reason', reason),
          updated_at, foreign_id, run_id, status, run_state, version, reason
        FROM workflow_records WHERE run_id IN
        """

    static func list(_ n: Int) -> String { "(" + Array(repeating: "?", count: n).joined(separator: ", ") + ")" }

    static func now() -> Timestamp { Timestamp(milliseconds: Int64(wallMillis())) }

    /// (status, run_state) after each of the four updates: Validated, PaymentProcessed,
    /// Fulfilled (Running) and Completed.
    static let steps: [(Int, Int)] = [(2, 2), (3, 2), (4, 2), (5, 5)]

    static func run(
        database: BenchDatabase, prefix: String, orders: Int, connections: Int, batch: Int = 1, relayBatch: Int = 500
    ) async throws -> CeilingResult {
        let pool = MariaDBPool(
            configuration: database.configuration,
            pool: PoolConfiguration(maxOpen: connections, maxIdle: connections, maxLifetimeSeconds: 3600),
            logger: quietLogger)
        let relayPool = MariaDBPool(
            configuration: database.configuration, pool: PoolConfiguration(maxOpen: 1, maxIdle: 1, maxLifetimeSeconds: 3600),
            logger: quietLogger)
        defer {
            pool.shutdown()
            relayPool.shutdown()
        }
        // Open the connections (and prepare nothing yet) before the clock starts.
        try await withThrowingTaskGroup(of: Void.self) { g in
            for _ in 0..<connections { g.addTask { try await pool.withConnection { _ = try $0.queryText("SELECT 1") } } }
            try await g.waitForAll()
        }
        let object = Array(orderJSON("ceiling").utf8) + Array(#","payment_id":"pay_0123456789","tracking_id":"trk_0123456789"}"#.utf8)
        let next = Locked(0)
        let writersDone = Locked(false)
        let start = monoNanos()

        let relayStore = MariaDBWorkflowStore(pool: relayPool, logger: quietLogger)
        async let relayed: (Int, Int) = {
            var events = 0
            var batches = 0
            while true {
                let finished = writersDone.withLock { $0 }
                // The store's own relay: the same SQL the server runs.
                let n = try await relayStore.relay(limit: relayBatch).count
                events += n
                if n > 0 { batches += 1 }
                if n == 0 {
                    if finished { return (events, batches) }
                    try await Task.sleep(for: .milliseconds(1))
                }
            }
        }()

        try await withThrowingTaskGroup(of: Void.self) { g in
            for _ in 0..<connections {
                g.addTask {
                    while true {
                        if batch > 1 {
                            let first = next.withLock { v -> Int in
                                let f = v + 1
                                v += batch
                                return f
                            }
                            guard first <= orders else { return }
                            let ks = Array(first...min(orders, first + batch - 1))
                            try await batched(pool, prefix: prefix, ks: ks, object: object)
                            continue
                        }
                        let k = next.withLock { v -> Int in
                            v += 1
                            return v
                        }
                        guard k <= orders else { return }
                        let runID = "\(prefix)-run-\(k)"
                        let foreignID = "\(prefix)-order-\(k)"
                        try await pool.transaction { c in
                            let t = now()
                            try c.execute(
                                insertRecord,
                                [
                                    .text("order-processor"), .text(foreignID), .text(runID), .int(1), .int(1),
                                    .bytes(object), .timestamp(t), .timestamp(t), .null, .int(1), .null,
                                ])
                            try c.execute(writeOutbox + list(1), [.text(runID)])
                        }
                        for (i, step) in steps.enumerated() {
                            let version = Int64(i + 2)
                            try await pool.transaction { c in
                                let r = try c.execute(
                                    updateRecord,
                                    [
                                        .int(step.1), .int(step.0), .bytes(object), .null, .timestamp(now()), .null,
                                        .int(version), .text(runID), .int(version - 1),
                                    ])
                                guard r.affectedRows == 1 else {
                                    throw MariaDBError(kind: .badRow, message: "ceiling update matched \(r.affectedRows)")
                                }
                                try c.execute(writeOutbox + list(1), [.text(runID)])
                            }
                        }
                    }
                }
            }
            try await g.waitForAll()
        }
        writersDone.withLock { $0 = true }
        let (events, batches) = try await relayed
        let seconds = Double(monoNanos() - start) / 1e9
        let writeTransactions = batch > 1 ? ((orders + batch - 1) / batch) * 5 : orders * 5
        return CeilingResult(
            connections: connections, orders: orders, seconds: seconds, ordersPerSecond: Double(orders) / seconds,
            transactionsPerSecond: Double(writeTransactions + batches) / seconds, events: events, relayBatches: batches,
            batch: batch)
    }

    /// The same writes for several orders at once, as the store's batched `update` issues them:
    /// one transaction per step for the whole group — a multi-row INSERT of the records (the
    /// store inserts one per `create`; grouping them here is the best case), one conditional
    /// UPDATE per run, and one outbox INSERT … SELECT for the group.
    static func batched(_ pool: MariaDBPool, prefix: String, ks: [Int], object: [UInt8]) async throws {
        let runIDs = ks.map { "\(prefix)-run-\($0)" }
        let n = ks.count
        try await pool.transaction { c in
            let t = now()
            var values: [SQLValue] = []
            for k in ks {
                values += [
                    .text("order-processor"), .text("\(prefix)-order-\(k)"), .text("\(prefix)-run-\(k)"), .int(1), .int(1),
                    .bytes(object), .timestamp(t), .timestamp(t), .null, .int(1), .null,
                ]
            }
            let tuples = Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", count: n).joined(separator: ", ")
            try c.execute("INSERT INTO workflow_records (\(runColumns)) VALUES \(tuples)", values)
            try c.execute(writeOutbox + list(n), runIDs.map { .text($0) })
        }
        for (i, step) in steps.enumerated() {
            let version = Int64(i + 2)
            try await pool.transaction { c in
                let t = now()
                for runID in runIDs {
                    let r = try c.execute(
                        updateRecord,
                        [
                            .int(step.1), .int(step.0), .bytes(object), .null, .timestamp(t), .null, .int(version),
                            .text(runID), .int(version - 1),
                        ])
                    guard r.affectedRows == 1 else {
                        throw MariaDBError(kind: .badRow, message: "ceiling update matched \(r.affectedRows)")
                    }
                }
                try c.execute(writeOutbox + list(n), runIDs.map { .text($0) })
            }
        }
    }
}

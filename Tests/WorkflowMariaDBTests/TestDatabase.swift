import Foundation
import Logging
import Testing
import WorkflowEngine
@testable import WorkflowMariaDB

/// A real MariaDB for tests: `WORKFLOWD_TEST_DSN` if set (scripts/test.sh and CI set it),
/// otherwise a private server started once in /tmp/workflowd-tests-<uid> and left running for
/// the next `swift test` (stop it with `scripts/mariadb.sh stop /tmp/workflowd-tests-<uid>`).
/// Every test gets a database of its own, with the schema applied, dropped afterwards.
enum TestDatabase {
    static let base: Result<MariaDBConfiguration, any Error> = {
        do {
            if let dsn = ProcessInfo.processInfo.environment["WORKFLOWD_TEST_DSN"], !dsn.isEmpty {
                return .success(try MariaDBConfiguration(dsn: dsn))
            }
            let server = PrivateMariaDB(directory: "/tmp/workflowd-tests-\(getuid())")
            _ = try server.start()
            return .success(try MariaDBConfiguration(dsn: server.dsn))
        } catch {
            return .failure(error)
        }
    }()

    static let logger: Logger = {
        var l = Logger(label: "test")
        l.logLevel = .warning
        return l
    }()

    /// Runs `body` with a fresh database; drops it afterwards (also when `body` throws).
    static func with<T: Sendable>(
        pool poolConfiguration: PoolConfiguration = PoolConfiguration(),
        _ body: (MariaDBWorkflowStore, MariaDBPool) async throws -> T
    ) async throws -> T {
        let baseConfig = try base.get()
        let name = "wft_\(UInt64.random(in: 0...UInt64.max) % 1_000_000_000_000)"
        let admin = MariaDBPool(configuration: baseConfig, pool: PoolConfiguration(maxOpen: 1, maxIdle: 1, maxLifetimeSeconds: 60), logger: logger)
        defer { admin.shutdown() }
        try await admin.withConnection { try $0.executeText("CREATE DATABASE \(name)") }
        var config = baseConfig
        config.database = name
        let pool = MariaDBPool(configuration: config, pool: poolConfiguration, logger: logger)
        do {
            try await SchemaMigrator(pool: pool, logger: logger).migrate()
            let result = try await body(MariaDBWorkflowStore(pool: pool, logger: logger), pool)
            pool.shutdown()
            try await admin.withConnection { try $0.executeText("DROP DATABASE \(name)") }
            return result
        } catch {
            pool.shutdown()
            try? await admin.withConnection { try $0.executeText("DROP DATABASE \(name)") }
            throw error
        }
    }
}

/// Builds runs for tests.
enum Fixtures {
    static let t0 = Timestamp(milliseconds: 1_764_050_400_123)  // 2025-11-25T06:00:00.123Z

    static func run(
        workflow: String = "order-processor", foreignID: String, runID: String = newRunID(), status: Int = 1,
        state: RunState = .initiated, at: Timestamp = t0, object: String = #"{"id":"x","total":1359.97}"#
    ) -> Run {
        Run(
            workflow: workflow, foreignID: foreignID, runID: runID, runState: state, status: status, version: 1,
            object: Array(object.utf8), reason: nil, createdAt: at, updatedAt: at)
    }

    static func newRunID() -> String { UUID().uuidString.lowercased() }

    /// The run moved to `status`, one version on.
    static func next(_ r: Run, status: Int, state: RunState = .running, at: Timestamp? = nil) -> RunUpdate {
        var n = r
        n.status = status
        n.runState = state
        n.version = r.version + 1
        n.updatedAt = at ?? r.updatedAt.adding(milliseconds: 1)
        return RunUpdate(run: n, expectedVersion: r.version, cancelPendingTimeouts: true)
    }
}

// MARK: - Helpers for tests that look at the rows themselves

extension TestDatabase {
    /// The server-level configuration (no database): for admin work such as `KILL`.
    static func serverConfiguration() throws -> MariaDBConfiguration { try base.get() }

    /// A one-connection pool on the server, without a database, for admin statements.
    static func adminPool() throws -> MariaDBPool {
        MariaDBPool(
            configuration: try base.get(), pool: PoolConfiguration(maxOpen: 1, maxIdle: 1, maxLifetimeSeconds: 600),
            logger: logger)
    }

    /// The first column of the first row as an integer.
    static func scalar(_ pool: MariaDBPool, _ sql: String, _ params: [SQLValue] = []) async throws -> Int64 {
        try await pool.withConnection { c in try c.query(sql, params)[0].int(0) }
    }

    /// Every row as text (text protocol; NULL as nil), for statements with no input.
    static func text(_ pool: MariaDBPool, _ sql: String) async throws -> [[String?]] {
        try await pool.withConnection { c in try c.queryText(sql) }
    }
}

/// A thread-safe box for counters and logs shared by concurrent tasks and pool threads.
// @unchecked Sendable: `stored` is read and written only while `lock` is held.
/// Runs blocking work (starting or stopping mariadbd, a command-line client) on a thread of
/// its own and awaits it: never on the cooperative pool, which has only as many threads as
/// cores (2 in CI) and which every other test running in parallel needs.
@discardableResult
func offThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            do { continuation.resume(returning: try work()) } catch { continuation.resume(throwing: error) }
        }.start()
    }
}

final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&stored)
    }
    var value: Value { withLock { $0 } }
}

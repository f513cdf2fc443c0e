import Foundation
import Logging
import Testing
import WorkflowEngine
import WorkflowMariaDB
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// A fresh database on the test MariaDB (`WORKFLOWD_TEST_DSN`, or a private server started once
/// in /tmp/workflowd-tests-<uid>), dropped by `drop()`.
public struct IntegrationDatabase: Sendable {
    public static let base: Result<MariaDBConfiguration, any Error> = {
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

    public static let logger: Logger = {
        var l = Logger(label: "integration")
        l.logLevel = .warning
        return l
    }()

    public let configuration: MariaDBConfiguration

    public init(configuration: MariaDBConfiguration) { self.configuration = configuration }

    /// The DSN of this database in the Go form workflowd accepts.
    public var dsn: String {
        guard case .unix(let path) = configuration.endpoint else {
            if case .tcp(let host, let port) = configuration.endpoint {
                let auth = configuration.password.map { "\(configuration.user):\($0)" } ?? configuration.user
                // Timeouts other than the defaults travel as DSN parameters.
                var parameters: [String] = []
                if configuration.connectTimeout != 10 { parameters.append("timeout=\(configuration.connectTimeout)s") }
                if configuration.readTimeout != 30 { parameters.append("readTimeout=\(configuration.readTimeout)s") }
                if configuration.writeTimeout != 30 { parameters.append("writeTimeout=\(configuration.writeTimeout)s") }
                let query = parameters.isEmpty ? "" : "?" + parameters.joined(separator: "&")
                return "\(auth)@tcp(\(host):\(port))/\(configuration.database)\(query)"
            }
            return ""
        }
        let auth = configuration.password.map { "\(configuration.user):\($0)" } ?? configuration.user
        return "\(auth)@unix(\(path))/\(configuration.database)"
    }

    public static func create() async throws -> IntegrationDatabase {
        try await create(on: try base.get())
    }

    /// A fresh database, migrated, on the server `server` names (its database part is ignored).
    public static func create(on server: MariaDBConfiguration) async throws -> IntegrationDatabase {
        var config = server
        let name = "wfit_\(UInt64.random(in: 0...UInt64.max) % 1_000_000_000_000)"
        let admin = MariaDBPool(configuration: config, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: logger)
        defer { admin.shutdown() }
        try await admin.withConnection { try $0.executeText("CREATE DATABASE \(name)") }
        config.database = name
        let pool = MariaDBPool(configuration: config, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: logger)
        defer { pool.shutdown() }
        try await SchemaMigrator(pool: pool, logger: logger).migrate()
        return IntegrationDatabase(configuration: config)
    }

    /// Runs text SQL (no input) and returns rows as strings.
    public func query(_ sql: String) async throws -> [[String?]] {
        let pool = MariaDBPool(configuration: configuration, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: Self.logger)
        defer { pool.shutdown() }
        return try await pool.withConnection { try $0.queryText(sql) }
    }

    public func drop() async {
        var config = configuration
        let name = config.database
        config.database = ""
        let admin = MariaDBPool(configuration: config, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: Self.logger)
        defer { admin.shutdown() }
        try? await admin.withConnection { try $0.executeText("DROP DATABASE IF EXISTS \(name)") }
    }
}

/// A real `workflowd serve` process on a temporary socket.
public final class ServerProcess: @unchecked Sendable {  // used from one test task at a time
    public let process: Process
    public let socketPath: String
    public let logPath: String
    public let directory: String

    /// The built `workflowd` next to this test bundle (or `WORKFLOWD_BIN`).
    public static var binary: String {
        if let bin = ProcessInfo.processInfo.environment["WORKFLOWD_BIN"], !bin.isEmpty { return bin }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("workflowd").path
    }

    /// Zero simulated latency and no random failures unless `env` says otherwise.
    public static let quietEnvironment = [
        "WORKFLOWD_PAYMENT_LATENCY_MS": "0", "WORKFLOWD_FULFILLMENT_LATENCY_MS": "0",
        "WORKFLOWD_PAYMENT_DECLINE_RATE": "0", "WORKFLOWD_FULFILLMENT_FAILURE_RATE": "0",
        "WORKFLOWD_LOG_LEVEL": "warning",
    ]

    public init(database: IntegrationDatabase, env: [String: String] = [:], arguments: [String] = [], socketPath: String? = nil) throws {
        directory = NSTemporaryDirectory() + "wfit-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.socketPath = socketPath ?? directory + "/s.sock"
        logPath = directory + "/server.log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        // A small pool: many servers run at once in the test process, on one MariaDB.
        process.arguments =
            ["serve", "--dsn", database.dsn, "--socket", self.socketPath, "--data-dir", directory]
            + (arguments.contains("--pool-max-open") ? [] : ["--pool-max-open", "8"]) + arguments
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "WORKFLOWD_DSN")
        environment.removeValue(forKey: "WORKFLOWD_SOCKET")
        for (k, v) in Self.quietEnvironment { environment[k] = v }
        for (k, v) in env { environment[k] = v }
        process.environment = environment
        let log = FileHandle(forWritingAtPath: logPath)!
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    /// Waits until the socket answers `ping`.
    public func waitReady(timeout: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard process.isRunning else { throw TestError("workflowd exited early:\n\(log)") }
            if let c = try? LineClient(path: socketPath), let r = try? c.call(#"{"op":"ping"}"#, timeout: 5), r["ok"] == .bool(true) {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestError("workflowd did not become ready:\n\(log)")
    }

    public static func start(database: IntegrationDatabase, env: [String: String] = [:], arguments: [String] = []) async throws -> ServerProcess {
        let s = try ServerProcess(database: database, env: env, arguments: arguments)
        do {
            try await s.waitReady()
        } catch {
            s.kill()
            throw error
        }
        return s
    }

    /// A test that fails or throws half-way must not leave a server behind.
    deinit {
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    public func client() throws -> LineClient { try LineClient(path: socketPath) }

    /// SIGKILL, no goodbye.
    public func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// SIGTERM and wait; returns the exit status.
    @discardableResult
    public func terminate(timeout: Double = 60) async throws -> Int32 {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            guard Date() < deadline else {
                kill()
                throw TestError("workflowd did not stop within \(timeout) s after SIGTERM:\n\(log)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }
}

extension IntegrationDatabase {
    /// Polls `sql` (one integer) until it equals `value`.
    public func waitFor(_ sql: String, equals value: Int, timeout: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last = -1
        while Date() < deadline {
            last = Int(try await query(sql).first?.first??.description ?? "") ?? -1
            if last == value { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestError("\(sql) stayed at \(last), expected \(value)")
    }

    public func int(_ sql: String) async throws -> Int {
        Int(try await query(sql).first?.first??.description ?? "") ?? -1
    }
}

extension IntegrationDatabase {
    /// Exactly once and in order: each run's events carry versions 1…N once each (N = the
    /// record's version), in `seq` order; the event log is 1…head without a gap.
    public func expectEveryTransitionOnceAndLogGapFree(sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let bad = try await query(
            """
            SELECT r.run_id FROM workflow_records r JOIN
              (SELECT run_id, COUNT(*) n, COUNT(DISTINCT version) d, MIN(version) lo, MAX(version) hi
               FROM workflow_events GROUP BY run_id) e ON e.run_id = r.run_id
            WHERE e.n <> e.d OR e.lo <> 1 OR e.hi <> r.version OR e.n <> r.version
            """)
        #expect(bad.isEmpty, "runs with missing or repeated versions: \(bad.prefix(5))", sourceLocation: sourceLocation)
        let withoutEvents = try await int(
            "SELECT COUNT(*) FROM workflow_records r WHERE NOT EXISTS (SELECT 1 FROM workflow_events e WHERE e.run_id = r.run_id)")
        #expect(withoutEvents == 0, "runs without events", sourceLocation: sourceLocation)
        let disorder = try await int(
            """
            SELECT COUNT(*) FROM workflow_events a JOIN workflow_events b
              ON a.run_id = b.run_id AND a.seq < b.seq AND a.version > b.version
            """)
        #expect(disorder == 0, "events of one run out of version order", sourceLocation: sourceLocation)
        let log = try await query("SELECT COUNT(*), MIN(seq), MAX(seq) FROM workflow_events")
        #expect(log[0][0] == log[0][2] && log[0][1] == "1", "event log not 1…head: \(log)", sourceLocation: sourceLocation)
    }

    /// Which runs are unfinished and why, to explain a failed wait.
    public func stuckRunsReport() async throws -> String {
        let stuck = try await query(
            """
            SELECT r.foreign_id, r.status, r.run_state, r.version, r.reason, CAST(r.meta AS CHAR),
              (SELECT COUNT(*) FROM workflow_timeouts t WHERE t.run_id = r.run_id AND t.completed = 0 AND t.cancelled = 0),
              (SELECT MAX(version) FROM workflow_events e WHERE e.run_id = r.run_id)
            FROM workflow_records r WHERE r.run_state <> 5 LIMIT 10
            """)
        let cursors = try await query("SELECT name, seq FROM workflow_cursors ORDER BY name")
        let head = try await query("SELECT MAX(seq), (SELECT COUNT(*) FROM workflow_outbox) FROM workflow_events")
        return "stuck runs (foreign_id, status, run_state, version, reason, meta, pending timeouts, last event version): \(stuck); cursors: \(cursors); head/outbox: \(head)"
    }
}

/// An order as a client sends it.
public func orderJSON(_ id: String, name: String = "Ann Example", email: String = "ann@example.com") -> String {
    #"{"id":"\#(id)","customer_name":"\#(name)","email":"\#(email)","items":[{"product_id":"p1","name":"Laptop","quantity":1,"price":1299.99},{"product_id":"p2","name":"Mouse","quantity":2,"price":29.99}],"total":1359.97}"#
}

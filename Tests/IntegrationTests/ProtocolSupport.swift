import Foundation
import Logging
import Testing
import WorkflowMariaDB
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

// Helpers of the Protocol* end-to-end suites: exact-line assertions, raw bytes, threads,
// RSS, socat, and a private MariaDB that a test may stop and start.

/// One parent suite so the protocol suites run one after another: several of them load the
/// machine on purpose (1,000 orders, 500 connections) and share 2 cores with everything else.
@Suite("Protocol", .serialized, .timeLimit(.minutes(3)))
struct ProtocolE2E {}

/// The status and run-state names of the contract, with codes 1….
let contractStatuses = [
    "OrderCreated", "OrderValidated", "PaymentProcessed", "OrderFulfilled", "OrderCompleted", "OrderRejected",
    "PaymentFailed", "FulfillmentFailed",
]
let terminalStatuses: Set = ["OrderCompleted", "OrderRejected", "PaymentFailed", "FulfillmentFailed"]
let runFields: Set = [
    "workflow", "foreign_id", "run_id", "run_state", "status", "status_code", "version", "object", "reason",
    "created_at", "updated_at",
]
let eventFields: Set = ["seq", "workflow", "foreign_id", "run_id", "status", "status_code", "run_state", "version", "at", "reason"]

/// Full backtraces of every thread if a server crashes (the log is kept in its temp folder).
let crashReportEnvironment = ["SWIFT_BACKTRACE": "enable=yes,interactive=no,preset=full,limit=64,threads=all,demangle=yes"]

/// Server environment with a slow payment step: a run stays in OrderValidated/Running for 5 s.
let slowPaymentEnvironment = ["WORKFLOWD_PAYMENT_LATENCY_MS": "5000"]

extension JSON {
    /// Member names of an object, in order; [] for anything else.
    var keys: [String] {
        guard case .object(let members) = self else { return [] }
        return members.map(\.key)
    }
    var keySet: Set<String> { Set(keys) }
    var arrayValue: [JSON]? {
        if case .array(let a) = self { return a }
        return nil
    }
    var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }
    var isNull: Bool { self == .null }
}

/// Parses a reply line; a line that is not JSON fails the test and yields `.null`.
func parsed(_ line: String?, sourceLocation: SourceLocation = #_sourceLocation) -> JSON {
    guard let line else {
        Issue.record("expected a line, got end of stream", sourceLocation: sourceLocation)
        return .null
    }
    do {
        return try JSONParser.parse(line)
    } catch {
        Issue.record("not JSON: \(line)", sourceLocation: sourceLocation)
        return .null
    }
}

/// RFC 3339 UTC with milliseconds, as the contract writes times.
func isContractTime(_ value: JSON?) -> Bool {
    guard let s = value?.stringValue else { return false }
    return s.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil
}

/// Checks an error reply: exactly `id?, ok:false, error:{code, message, retryable (, run)}`.
@discardableResult
func expectError(
    _ reply: JSON, code: String, retryable: Bool, id: JSON? = nil, withRun: Bool = false,
    messagePrefix: String? = nil, sourceLocation: SourceLocation = #_sourceLocation
) -> JSON? {
    #expect(reply.keys == (id == nil ? ["ok", "error"] : ["id", "ok", "error"]), "\(reply)", sourceLocation: sourceLocation)
    #expect(reply["id"] == id, "\(reply)", sourceLocation: sourceLocation)
    #expect(reply["ok"] == .bool(false), "\(reply)", sourceLocation: sourceLocation)
    let error = reply["error"] ?? .null
    #expect(error["code"] == .string(code), "\(reply)", sourceLocation: sourceLocation)
    #expect(error["retryable"] == .bool(retryable), "\(reply)", sourceLocation: sourceLocation)
    #expect(error["message"]?.stringValue?.isEmpty == false, "\(reply)", sourceLocation: sourceLocation)
    let expectedKeys: Set = withRun ? ["code", "message", "retryable", "run"] : ["code", "message", "retryable"]
    #expect(error.keySet == expectedKeys, "\(reply)", sourceLocation: sourceLocation)
    if let messagePrefix {
        #expect(error["message"]?.stringValue?.hasPrefix(messagePrefix) == true, "\(reply)", sourceLocation: sourceLocation)
    }
    if withRun { expectRun(error["run"]) }
    return error["run"]
}

/// Checks a run object: exactly the contract's fields, names and times in form.
func expectRun(_ run: JSON?, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let run else {
        Issue.record("no run", sourceLocation: sourceLocation)
        return
    }
    #expect(run.keySet == runFields, "\(run)", sourceLocation: sourceLocation)
    #expect(run["workflow"] == .string("order-processor"), "\(run)", sourceLocation: sourceLocation)
    if let status = run["status"]?.stringValue, let i = contractStatuses.firstIndex(of: status) {
        #expect(run["status_code"]?.int64Value == Int64(i + 1), "\(run)", sourceLocation: sourceLocation)
    } else {
        Issue.record("status not a contract name: \(run)", sourceLocation: sourceLocation)
    }
    #expect(
        ["Initiated", "Running", "Paused", "Cancelled", "Completed", "DataDeleted", "RequestedDataDeleted"].contains(
            run["run_state"]?.stringValue ?? ""), "\(run)", sourceLocation: sourceLocation)
    #expect((run["version"]?.int64Value ?? 0) >= 1, "\(run)", sourceLocation: sourceLocation)
    #expect(isContractTime(run["created_at"]) && isContractTime(run["updated_at"]), "\(run)", sourceLocation: sourceLocation)
    #expect(run["reason"] == .null || run["reason"]?.stringValue != nil, "\(run)", sourceLocation: sourceLocation)
}

/// Checks an event object: exactly the contract's fields.
func expectEvent(_ event: JSON?, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let event else {
        Issue.record("no event", sourceLocation: sourceLocation)
        return
    }
    #expect(event.keySet == eventFields, "\(event)", sourceLocation: sourceLocation)
    #expect((event["seq"]?.int64Value ?? 0) >= 1, "\(event)", sourceLocation: sourceLocation)
    #expect(isContractTime(event["at"]), "\(event)", sourceLocation: sourceLocation)
    if let status = event["status"]?.stringValue, let i = contractStatuses.firstIndex(of: status) {
        #expect(event["status_code"]?.int64Value == Int64(i + 1), "\(event)", sourceLocation: sourceLocation)
    } else {
        Issue.record("status not a contract name: \(event)", sourceLocation: sourceLocation)
    }
}

extension ServerProcess {
    var pid: Int32 { process.processIdentifier }

    /// VmRSS of the server process in KiB (nil once it is gone).
    var rssKiB: Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "")
        }
        return nil
    }

    /// Waits until `stats.connections` equals `count` (this probe's own connection included).
    func waitForConnections(_ count: Int, timeout: Double = 20) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last: JSON = .null
        while Date() < deadline {
            let c = try client()
            last = try c.call(#"{"op":"stats"}"#)
            if last["connections"]?.int64Value == Int64(count) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestError("connections stayed at \(last["connections"] ?? .null), expected \(count)")
    }
}

/// A fresh database and a started server for `body`; afterwards the server gets SIGTERM (and
/// must exit 0) and the database is dropped, also when `body` throws.
func withServer<T>(
    env: [String: String] = [:], arguments: [String] = [],
    _ body: (ServerProcess, IntegrationDatabase) async throws -> T
) async throws -> T {
    signal(SIGPIPE, SIG_IGN)  // a write to a connection the server closed must not kill the tests
    let db = try await IntegrationDatabase.create()
    let server: ServerProcess
    do {
        server = try await ServerProcess.start(database: db, env: crashReportEnvironment.merging(env) { $1 }, arguments: arguments)
    } catch {
        await db.drop()
        throw error
    }
    let result: T
    do {
        result = try await body(server, db)
    } catch {
        server.kill()
        await db.drop()
        throw error
    }
    let status = try await server.terminate()
    #expect(status == 0, "exit status \(status) (log kept in \(server.logPath)):\n\(server.log.suffix(3000))")
    await db.drop()
    return result
}

/// Submits an order and returns its run id.
@discardableResult
func submitOrder(_ c: LineClient, _ id: String, email: String = "ann@example.com") throws -> String {
    let r = try c.call(#"{"op":"submit","order":\#(orderJSON(id, email: email))}"#)
    guard r["ok"] == .bool(true), let runID = r["run_id"]?.stringValue else { throw TestError("submit \(id): \(r)") }
    return runID
}

/// Awaits a terminal status of `foreignID` and returns the run.
@discardableResult
func awaitFinished(_ c: LineClient, _ foreignID: String, timeout: Int = 60_000) throws -> JSON {
    let r = try c.call(#"{"op":"await","foreign_id":"\#(foreignID)","timeout_ms":\#(timeout)}"#, timeout: Double(timeout) / 1000 + 10)
    guard r["ok"] == .bool(true), let run = r["run"] else { throw TestError("await \(foreignID): \(r)") }
    return run
}

/// The repository root (Tests/IntegrationTests/<this file> → three levels up).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// Runs a program with stdin text and a deadline; returns (exit status, stdout, seconds taken),
/// or a nil status when it had to be killed.
func runProgram(_ path: String, _ arguments: [String], stdin: String?, deadline: Double) async throws -> (
    status: Int32?, stdout: String, stderr: String, seconds: Double
) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = input
    let started = Date()
    try p.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    let outBox = Unchecked(Data())
    let errBox = Unchecked(Data())
    let readers = DispatchGroup()
    let outHandle = out.fileHandleForReading
    let errHandle = err.fileHandleForReading
    DispatchQueue.global().async(group: readers) { outBox.value = outHandle.readDataToEndOfFile() }
    DispatchQueue.global().async(group: readers) { errBox.value = errHandle.readDataToEndOfFile() }
    let end = started.addingTimeInterval(deadline)
    while p.isRunning && Date() < end { try await Task.sleep(for: .milliseconds(10)) }
    var killed = false
    if p.isRunning {
        killed = true
        Glibc.kill(p.processIdentifier, SIGKILL)
    }
    p.waitUntilExit()
    let seconds = Date().timeIntervalSince(started)
    let status: Int32? = killed ? nil : p.terminationStatus
    _ = readers.wait(timeout: .now() + 5)
    return (status, String(decoding: outBox.value, as: UTF8.self), String(decoding: errBox.value, as: UTF8.self), seconds)
}

/// A MariaDB of this test alone (`PrivateMariaDB` in a short /tmp folder), so the test may stop
/// and start it under a running workflowd. Starting and stopping block for seconds, so they run
/// on a thread of their own, never on the cooperative pool.
struct StoppableMariaDB: Sendable {
    let server: PrivateMariaDB
    var directory: String { server.directory }
    var socket: String { server.socketPath }

    init() {
        var configuration = PrivateMariaDB.Configuration()
        configuration.innoDBBufferPoolSize = "64M"
        server = PrivateMariaDB(directory: "/tmp/wfp\(UInt32.random(in: 0...UInt32.max) % 100_000)", configuration: configuration)
    }

    func start() async throws {
        let server = self.server
        _ = try await onThread { try server.start() }
    }

    func stop() async throws {
        let server = self.server
        try await onThread { try server.stop() }
    }

    /// A fresh database on this server (workflowd applies the schema when it starts).
    func createDatabase() async throws -> IntegrationDatabase {
        var config = try MariaDBConfiguration(dsn: server.dsn)
        let name = "wfpu"
        let logger = IntegrationDatabase.logger
        let admin = MariaDBPool(configuration: config, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: logger)
        defer { admin.shutdown() }
        try await admin.withConnection { try $0.executeText("CREATE DATABASE IF NOT EXISTS \(name)") }
        config.database = name
        return IntegrationDatabase(configuration: config)
    }

    /// Stops the server (if it runs) and deletes its folder.
    func remove() async {
        try? await stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// A server on a MariaDB of the test's own, which `body` may stop and start. `prepare` may make
/// the database the server is given (say, with another user); by default it is the server's
/// root database. Afterwards the server gets SIGTERM and must exit 0; the MariaDB is stopped and
/// its folder removed — also when `body` throws (the server is killed then).
func withStoppableServer<T>(
    env: [String: String] = [:], arguments: [String] = [],
    prepare: (IntegrationDatabase) async throws -> IntegrationDatabase = { $0 },
    _ body: (ServerProcess, StoppableMariaDB, IntegrationDatabase) async throws -> T
) async throws -> T {
    signal(SIGPIPE, SIG_IGN)
    let mdb = StoppableMariaDB()
    var server: ServerProcess? = nil
    do {
        try await mdb.start()
        let root = try await mdb.createDatabase()
        let s = try await ServerProcess.start(
            database: try await prepare(root), env: crashReportEnvironment.merging(env) { $1 }, arguments: arguments)
        server = s
        let result = try await body(s, mdb, root)
        #expect(try await s.terminate() == 0, "\(s.log.suffix(2000))")
        server = nil
        await mdb.remove()
        return result
    } catch {
        server?.kill()
        await mdb.remove()
        throw error
    }
}

/// Samples a server's VmRSS every 50 ms on a thread of its own until stopped.
final class RSSSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var samples: [Int] = []
    private var running = true
    private var thread: Thread?

    init(server: ServerProcess) {
        let t = Thread { [self] in
            while self.isRunning {
                if let kib = server.rssKiB {
                    self.lock.withLock { self.samples.append(kib) }
                }
                usleep(50_000)
            }
        }
        thread = t
        t.start()
    }

    var isRunning: Bool { lock.withLock { running } }
    var peak: Int { lock.withLock { samples.max() ?? 0 } }
    var count: Int { lock.withLock { samples.count } }
    func stop() { lock.withLock { running = false } }
}

/// Holds `LOCK TABLES <table> WRITE` on a connection of its own until `release()`, so that
/// server requests touching the table stay in flight.
final class TableLock: @unchecked Sendable {
    private let pool: MariaDBPool
    private let released = DispatchSemaphore(value: 0)
    private var task: Task<Void, any Error>?

    init(_ db: IntegrationDatabase, table: String) async throws {
        pool = MariaDBPool(
            configuration: db.configuration, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 600),
            logger: IntegrationDatabase.logger)
        let locked = DispatchSemaphore(value: 0)
        let released = self.released
        let pool = self.pool
        task = Task {
            try await pool.withConnection { conn in
                try conn.executeText("LOCK TABLES \(table) WRITE")
                locked.signal()
                released.wait()
                try conn.executeText("UNLOCK TABLES")
            }
        }
        let ok = try await onThread { locked.wait(timeout: .now() + 30) == .success }
        guard ok else { throw TestError("LOCK TABLES \(table) did not succeed") }
    }

    func release() async {
        released.signal()
        _ = try? await task?.value
        task = nil
        pool.shutdown()
    }
}

/// A server's log after a database outage, read the way an operator would: the engine's
/// "calls are failing" warnings and "succeed again" notices, the store's one error per COMMIT an
/// outage cut off, and any other warning or error.
struct OutageLog {
    let lines: [Substring]
    let failing: [Substring]
    let recovered: [Substring]
    let lostCommits: [Substring]
    let others: [Substring]

    /// Waits for the recovery line (it comes once no call has failed for a few seconds).
    init(_ server: ServerProcess) async throws {
        lines = try await server.waitForLog("database calls succeed again", timeout: 30).split(separator: "\n")
        failing = lines.filter { $0.contains("database calls are failing") }
        recovered = lines.filter { $0.contains("database calls succeed again") }
        lostCommits = lines.filter { $0.contains("commit outcome unknown") }
        others = lines.filter {
            ($0.contains(" warning ") || $0.contains(" error ")) && !$0.contains("database calls are failing")
                && !$0.contains("commit outcome unknown")
        }
    }

    var summary: String {
        "\(failing.count) outage warning(s), \(recovered.count) recovery line(s), \(lostCommits.count) lost commit(s), \(others.count) other warnings; \(lines.count) lines in all"
    }
}

import Foundation
import Testing
import WorkflowMariaDB
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// docs/operations.md, "Backup and restore", end to end with the real `mariadb-dump` and
/// `mariadb` clients: a dump taken while runs are in flight, restored into a fresh database,
/// where a new `workflowd` finishes every unfinished run exactly once and continues the event log
/// from the restored head.
@Suite("Backup and restore", .timeLimit(.minutes(5)))
struct BackupRestoreTests {
    static let orders = Int(ProcessInfo.processInfo.environment["WORKFLOWD_BACKUP_ORDERS"] ?? "") ?? 300

    /// The original server's payment gateway takes ten minutes, so at the dump every order is still
    /// in flight however slow the machine (runs wait at OrderCreated or in their payment step);
    /// no deadline may pass. The restored server's gateways answer at once: it must finish every
    /// run OrderCompleted, so a lost or repeated step would show.
    static let slowEnvironment = [
        "WORKFLOWD_PAYMENT_LATENCY_MS": "600000", "WORKFLOWD_PAYMENT_TIMEOUT_MS": "7200000",
        "WORKFLOWD_LEASE_TTL_MS": "2000",
    ]
    static let environment = ["WORKFLOWD_PAYMENT_TIMEOUT_MS": "7200000", "WORKFLOWD_LEASE_TTL_MS": "2000"]

    @Test func dumpWhileRunsAreInFlightRestoreAndFinish() async throws {
        let dumpPath = NSTemporaryDirectory() + "wfbackup-\(UInt32.random(in: 0...UInt32.max)).sql"
        defer { try? FileManager.default.removeItem(atPath: dumpPath) }

        // 1. The original server takes orders; the dump runs while their steps are in flight.
        let source = try await IntegrationDatabase.create()
        let original = try await ServerProcess.start(database: source, env: crashReportEnvironment.merging(Self.slowEnvironment) { $1 })
        let dumped: (acknowledged: [String], unfinished: Int)
        do {
            dumped = try await Self.submitAndDump(server: original, db: source, to: dumpPath)
        } catch {
            original.kill()
            await source.drop()
            throw error
        }
        // Its payments would take ten minutes: stopped hard (a drain would wait for them in vain).
        original.kill()
        await source.drop()
        let (acknowledged, sourceAtDump) = dumped
        let dumpBytes = (try? FileManager.default.attributesOfItem(atPath: dumpPath)[.size] as? Int) ?? 0
        print("BACKUP: \(acknowledged.count) submits acknowledged, then mariadb-dump --single-transaction (\(dumpBytes) bytes) "
            + "while runs were in flight (\(sourceAtDump) unfinished in the source just after the dump)")

        // 2. Restore into a fresh, empty database with the real client, as the doc says.
        var config = try IntegrationDatabase.base.get()
        config.database = "wfbk_\(UInt64.random(in: 0...UInt64.max) % 1_000_000_000_000)"
        let restored = IntegrationDatabase(configuration: config)
        do {
            try await restoreAndFinish(dumpPath: dumpPath, into: restored, acknowledged: acknowledged)
        } catch {
            await restored.drop()
            throw error
        }
        await restored.drop()
    }

    /// Submits the orders (acknowledged = stored), then dumps the workflow tables.
    static func submitAndDump(server: ServerProcess, db: IntegrationDatabase, to dumpPath: String) async throws -> ([String], Int) {
        let path = server.socketPath
        let orders = Self.orders
        let acknowledged = try await onThread { () -> [String] in
            let clients = try (0..<4).map { _ in try LineClient(path: path) }
            for i in 0..<orders {
                try clients[i % clients.count].send(#"{"op":"submit","order":\#(orderJSON("backup-\(i)"))}"#)
            }
            var ids: [String] = []
            for i in 0..<orders {
                guard let line = try clients[i % clients.count].readLine(timeout: 60) else { throw TestError("connection closed") }
                let reply = try JSONParser.parse(line)
                guard reply["ok"] == .bool(true), let id = reply["foreign_id"]?.stringValue else { throw TestError("submit: \(line)") }
                ids.append(id)
            }
            return ids
        }
        let dump = try await MariaDBClients.run(
            "mariadb-dump", MariaDBClients.dumpArguments + MariaDBClients.connection(db.configuration)
                + [db.configuration.database] + MariaDBClients.tables, stdoutPath: dumpPath)
        #expect(dump.status == 0, "mariadb-dump: \(dump.stderr)")
        // The source moves on after the snapshot; this is only for the printed comparison.
        let unfinished = try await db.int("SELECT COUNT(*) FROM workflow_records WHERE run_state IN (1, 2, 3)")
        return (acknowledged, unfinished)
    }

    func restoreAndFinish(dumpPath: String, into restored: IntegrationDatabase, acknowledged: [String]) async throws {
        let config = restored.configuration
        let create = try await MariaDBClients.run(
            "mariadb", ["--no-defaults"] + MariaDBClients.connection(config)
                + ["-e", "CREATE DATABASE \(config.database) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"])
        #expect(create.status == 0, "CREATE DATABASE: \(create.stderr)")
        let load = try await MariaDBClients.run(
            "mariadb", ["--no-defaults"] + MariaDBClients.connection(config) + [config.database], stdinPath: dumpPath)
        #expect(load.status == 0, "mariadb < dump: \(load.stderr)")
        let leases = try await MariaDBClients.run(
            "mariadb", ["--no-defaults"] + MariaDBClients.connection(config) + [config.database, "-e", MariaDBClients.expireLeases])
        #expect(leases.status == 0, "expire leases: \(leases.stderr)")

        // What the dump holds: it must catch work in flight, or the test proves nothing.
        let tables = Set(try await restored.query("SHOW TABLES").compactMap { $0[0] })
        #expect(tables == Set(MariaDBClients.tables), "restored tables: \(tables)")
        #expect(try await restored.int("SELECT MAX(version) FROM workflow_schema_version") == SchemaMigrator.currentVersion)
        let runs = try await restored.int("SELECT COUNT(*) FROM workflow_records")
        let unfinishedIDs = try await restored.query("SELECT run_id FROM workflow_records WHERE run_state IN (1, 2, 3)").compactMap { $0[0] }
        let outbox = try await restored.int("SELECT COUNT(*) FROM workflow_outbox")
        let outboxRunIDs = try await restored.query("SELECT DISTINCT run_id FROM workflow_outbox").compactMap { $0[0] }
        let head = try await restored.int("SELECT COALESCE(MAX(seq), 0) FROM workflow_events")
        let restoredEvents = try await restored.int("SELECT COUNT(*) FROM workflow_events")
        let cursors = try await restored.query("SELECT name, seq FROM workflow_cursors ORDER BY name")
        let pendingTimeouts = try await restored.int("SELECT COUNT(*) FROM workflow_timeouts WHERE completed = 0 AND cancelled = 0")
        let fingerprint = Self.fingerprintSQL(upTo: head)
        let restoredFingerprint = try await restored.query(fingerprint)
        print("BACKUP: restored \(runs) runs, \(unfinishedIDs.count) unfinished, \(outbox) outbox rows, event log 1…\(head) "
            + "(\(restoredEvents) events), \(cursors.count) cursors (lowest \(cursors.compactMap { Int($0[1] ?? "") }.min() ?? 0)), "
            + "\(pendingTimeouts) pending timeouts")
        #expect(runs == acknowledged.count, "every acknowledged submit is in the dump")
        let stored = Set(try await restored.query("SELECT foreign_id FROM workflow_records").compactMap { $0[0] })
        #expect(Set(acknowledged).subtracting(stored).isEmpty, "acknowledged but not in the dump")
        #expect(!unfinishedIDs.isEmpty || outbox > 0, "the dump caught no work in flight")
        #expect(!unfinishedIDs.isEmpty, "the dump holds no unfinished run")
        #expect(restoredEvents == head, "restored log 1…head")

        // 3. A new workflowd on the restored database finishes what was in flight.
        let server = try await ServerProcess.start(database: restored, env: crashReportEnvironment.merging(Self.environment) { $1 })
        do {
            try await restored.waitFor("SELECT COUNT(*) FROM workflow_records WHERE run_state <> 5", equals: 0, timeout: 180)
            try await restored.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0)
        } catch {
            Issue.record("\(try await restored.stuckRunsReport()); server log tail: \(server.log.suffix(3000))")
            server.kill()
            throw error
        }
        #expect(try await restored.int("SELECT COUNT(*) FROM workflow_records") == runs, "no run added or lost")
        #expect(try await restored.int("SELECT COUNT(*) FROM workflow_records WHERE status = 5") == runs, "every order OrderCompleted")
        try await restored.expectEveryTransitionOnceAndLogGapFree()
        // The restored events are untouched; the new ones continue the log after the restored head.
        #expect(try await restored.query(fingerprint) == restoredFingerprint, "restored events changed")
        let newHead = try await restored.int("SELECT MAX(seq) FROM workflow_events")
        let firstNew = try await restored.int("SELECT COALESCE(MIN(seq), 0) FROM workflow_events WHERE seq > \(head)")
        let newEvents = try await restored.int("SELECT COUNT(*) FROM workflow_events WHERE seq > \(head)")
        #expect(newEvents == newHead - head && (newEvents == 0 || firstNew == head + 1), "log continues at \(head + 1)")
        #expect(newEvents > 0, "the restored unfinished runs made progress")
        // The new events belong to runs unfinished in the dump or with outbox rows in it, no others.
        let newOwners = Set(try await restored.query("SELECT DISTINCT run_id FROM workflow_events WHERE seq > \(head)").compactMap { $0[0] })
        #expect(newOwners.isSubset(of: Set(unfinishedIDs + outboxRunIDs)), "a run finished and relayed in the dump got new events")
        let sumVersions = try await restored.int("SELECT SUM(version) FROM workflow_records")
        #expect(sumVersions == newHead, "one event per version of every run")
        #expect(try await server.terminate() == 0, "exit status (log kept in \(server.logPath))")
        print("BACKUP: new workflowd finished all \(unfinishedIDs.count) restored unfinished runs once (versions 1…N each); "
            + "outbox drained; log continued \(head + 1)…\(newHead) (\(newEvents) new events), gap-free 1…\(newHead)")
    }

    /// Count and checksum of the events up to `head`, to show that a restore keeps them as they were.
    static func fingerprintSQL(upTo head: Int) -> String {
        """
        SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('|', seq, run_id, status, run_state, version, at))), 0)
        FROM workflow_events WHERE seq <= \(head)
        """
    }
}

/// The MariaDB command-line clients, run as child processes on threads of their own (they block
/// for as long as they run; the cooperative pool has only as many threads as cores).
enum MariaDBClients {
    /// All nine tables of the schema, in the order of `schema.sql`.
    static let tables = [
        "workflow_records", "workflow_outbox", "workflow_timeouts", "workflow_events", "workflow_cursors",
        "workflow_leases", "workflow_schema_version", "workflow_records_archive", "workflow_tasks",
    ]

    /// The options of docs/operations.md's backup command.
    static let dumpArguments = [
        "--no-defaults", "--single-transaction", "--quick", "--hex-blob", "--default-character-set=utf8mb4",
    ]

    /// docs/operations.md's statement that expires restored leases (as a release does).
    static let expireLeases = "UPDATE workflow_leases SET expires_at = '1970-01-01 00:00:00.000'"

    /// `-S socket` or `-h host -P port`, and the user (and password) of `config`.
    static func connection(_ config: MariaDBConfiguration) -> [String] {
        var args: [String]
        switch config.endpoint {
        case .unix(let path): args = ["--protocol=socket", "-S", path]
        case .tcp(let host, let port): args = ["--protocol=tcp", "-h", host, "-P", "\(port)"]
        }
        args += ["-u", config.user]
        if let password = config.password { args.append("--password=\(password)") }
        return args
    }

    /// The program's path on `PATH`.
    static func find(_ program: String) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw TestError("\(program) is not on PATH (install mariadb-client: scripts/install-deps.sh)")
    }

    /// Runs `program` with standard input and output from and to files; returns its exit status
    /// and standard error.
    static func run(
        _ program: String, _ arguments: [String], stdinPath: String? = nil, stdoutPath: String? = nil
    ) async throws -> (status: Int32, stderr: String) {
        let executable = try find(program)
        return try await onThread {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: executable)
            p.arguments = arguments
            let errPath = NSTemporaryDirectory() + "wfclient-\(UInt32.random(in: 0...UInt32.max)).err"
            FileManager.default.createFile(atPath: errPath, contents: nil)
            defer { try? FileManager.default.removeItem(atPath: errPath) }
            let err = FileHandle(forWritingAtPath: errPath)!
            defer { try? err.close() }
            p.standardError = err
            if let stdinPath {
                guard let input = FileHandle(forReadingAtPath: stdinPath) else { throw TestError("cannot read \(stdinPath)") }
                p.standardInput = input
            } else {
                p.standardInput = FileHandle.nullDevice
            }
            if let stdoutPath {
                FileManager.default.createFile(atPath: stdoutPath, contents: nil)
                p.standardOutput = FileHandle(forWritingAtPath: stdoutPath)!
            } else {
                p.standardOutput = FileHandle.nullDevice
            }
            try p.run()
            p.waitUntilExit()
            let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            return (p.terminationStatus, stderr)
        }
    }
}

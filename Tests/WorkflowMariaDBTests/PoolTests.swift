import Foundation
import Testing
import WorkflowEngine
@testable import WorkflowMariaDB

#if canImport(Glibc)
import Glibc
#endif

/// The pool: dedicated threads, bounds, idle shrinking, lifetime, reconnects, retries, errors.
@Suite("MariaDB pool", .serialized, .timeLimit(.minutes(2)))
struct PoolTests {
    /// The calling thread as seen from synchronous code.
    static func currentThread() -> (id: pthread_t, name: String) {
        // The kernel's name for this thread (what `top -H` and a debugger show).
        let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
        return (pthread_self(), comm.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Connections the server has open to this test's database, seen from another connection.
    static func serverConnections(_ admin: MariaDBPool, database: String) async throws -> Int64 {
        try await TestDatabase.scalar(
            admin, "SELECT COUNT(*) FROM information_schema.processlist WHERE db = ?", [.text(database)])
    }

    @Test func bodiesRunOnDatabaseThreadsNeverOnTheCaller() async throws {
        try await TestDatabase.with { _, pool async throws in
            for _ in 0..<10 {
                let caller = Self.currentThread()
                let inRead = try await pool.withConnection { _ in Self.currentThread() }
                let inTransaction = try await pool.transaction { _ in Self.currentThread() }
                for body in [inRead, inTransaction] {
                    #expect(body.name == "workflowd-db")
                    #expect(pthread_equal(body.id, caller.id) == 0, "the body ran on the caller's thread")
                    #expect(caller.name != "workflowd-db")
                }
            }
        }
    }

    @Test func neverMoreThanMaxOpenConnectionsAndEveryJobCompletes() async throws {
        var config = PoolConfiguration(maxOpen: 3, maxIdle: 3, maxLifetimeSeconds: 300)
        config.idleLingerSeconds = 5
        try await TestDatabase.with(pool: config) { _, pool async throws in
            let admin = try TestDatabase.adminPool()
            defer { admin.shutdown() }
            let database = pool.configuration.database
            let inside = Locked((now: 0, peak: 0, connectionIDs: Set<Int64>()))
            let sampling = Locked(true)
            // Sample the server's view of our connections while the jobs run.
            let sampler = Task {
                var peak: Int64 = 0
                var peakStatistics = 0
                while sampling.value {
                    peak = max(peak, try await Self.serverConnections(admin, database: database))
                    peakStatistics = max(peakStatistics, pool.statistics.openConnections)
                    try await Task.sleep(for: .milliseconds(10))
                }
                return (peak, peakStatistics)
            }
            let results = try await withThrowingTaskGroup(of: Int64.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        try await pool.withConnection { c in
                            let id = try c.query("SELECT CONNECTION_ID()")[0].int(0)
                            inside.withLock {
                                $0.now += 1
                                $0.peak = max($0.peak, $0.now)
                                $0.connectionIDs.insert(id)
                            }
                            defer { inside.withLock { $0.now -= 1 } }
                            return try c.query("SELECT SLEEP(0.05)")[0].int(0)
                        }
                    }
                }
                var all: [Int64] = []
                for try await r in group { all.append(r) }
                return all
            }
            sampling.withLock { $0 = false }
            let (serverPeak, statisticsPeak) = try await sampler.value
            #expect(results == Array(repeating: 0, count: 20), "every SLEEP completes (returns 0)")
            #expect(inside.value.peak <= 3, "more than 3 bodies ran at once")
            #expect(inside.value.peak >= 2, "the jobs never overlapped: the pool did not use its connections")
            #expect(inside.value.connectionIDs.count <= 3)
            #expect(serverPeak <= 3, "the server saw \(serverPeak) connections")
            #expect(statisticsPeak <= 3)
            #expect(pool.statistics.threads <= 3)
            #expect(pool.statistics.queued == 0, "no job is waiting once all have completed")
        }
    }

    @Test func idleConnectionsShrinkToMaxIdleAfterTheLinger() async throws {
        var config = PoolConfiguration(maxOpen: 8, maxIdle: 2, maxLifetimeSeconds: 300)
        config.idleLingerSeconds = 0.2
        try await TestDatabase.with(pool: config) { _, pool async throws in
            let admin = try TestDatabase.adminPool()
            defer { admin.shutdown() }
            let database = pool.configuration.database
            // A barrier holds all 8 bodies at once, so 8 connections are really open.
            let arrived = Locked(0)
            let seenByServer = Locked<Int64>(0)
            let counted = Locked(0)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        try await pool.withConnection { c in
                            _ = try c.query("SELECT 1")
                            arrived.withLock { $0 += 1 }
                            let deadline = Date(timeIntervalSinceNow: 30)
                            while arrived.value < 8 && Date() < deadline { usleep(2_000) }
                            // All 8 are inside the barrier: count them as the server sees them
                            // now (after the barrier the linger may already close some).
                            let n = try c.query(
                                "SELECT COUNT(*) FROM information_schema.processlist WHERE db = ?",
                                [.text(database)])[0].int(0)
                            seenByServer.withLock { $0 = max($0, n) }
                            // A second barrier: nobody leaves before every body has counted.
                            counted.withLock { $0 += 1 }
                            while counted.value < 8 && Date() < deadline { usleep(2_000) }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(arrived.value == 8)
            #expect(seenByServer.value == 8)
            // Wait (bounded) for the surplus to close; the check is on the end state, not the time.
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                if pool.statistics.openConnections == 2,
                    try await Self.serverConnections(admin, database: database) == 2
                {
                    break
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(pool.statistics.threads == 2)
            #expect(pool.statistics.openConnections == 2)
            #expect(try await Self.serverConnections(admin, database: database) == 2)
            // And the pool still works afterwards.
            #expect(try await pool.withConnection { c in try c.query("SELECT 41 + 1")[0].int(0) } == 42)
        }
    }

    @Test func maxLifetimeRecyclesTheConnection() async throws {
        try await TestDatabase.with(pool: PoolConfiguration(maxOpen: 1, maxIdle: 1, maxLifetimeSeconds: 1.5)) { _, pool async throws in
            let admin = try TestDatabase.adminPool()
            defer { admin.shutdown() }
            let opened = ContinuousClock.now
            let first = try await TestDatabase.scalar(pool, "SELECT CONNECTION_ID()")
            let again = try await TestDatabase.scalar(pool, "SELECT CONNECTION_ID()")
            // Young: reused. (Only checkable if the machine answered both within the lifetime;
            // CI once took longer than an earlier 0.3 s lifetime.)
            if opened.duration(to: .now) < .milliseconds(1_200) { #expect(again == first, "young: reused") }
            try await Task.sleep(for: .milliseconds(1_700))
            let second = try await TestDatabase.scalar(pool, "SELECT CONNECTION_ID()")
            #expect(second != first, "a connection older than maxLifetime was reused")
            // The server ends a closed connection's thread on its own time (COM_QUIT is not
            // answered), so give the processlist a few seconds to catch up.
            var stillThere: Int64 = 1
            for _ in 0..<50 {
                stillThere = try await TestDatabase.scalar(
                    admin, "SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?", [.int(first)])
                if stillThere == 0 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(stillThere == 0, "the recycled connection was not closed")
            #expect(pool.statistics.openConnections == 1)
        }
    }

    @Test func aConnectionKilledByTheServerIsReplacedOnNextUse() async throws {
        try await TestDatabase.with(pool: PoolConfiguration(maxOpen: 1, maxIdle: 1, maxLifetimeSeconds: 300)) { _, pool async throws in
            let admin = try TestDatabase.adminPool()
            defer { admin.shutdown() }
            // withConnection after a kill.
            let first = try await TestDatabase.scalar(pool, "SELECT CONNECTION_ID()")
            try await admin.withConnection { c in try c.executeText("KILL \(first)") }
            let second = try await TestDatabase.scalar(pool, "SELECT CONNECTION_ID()")
            #expect(second != first)
            // transaction after a kill: the write lands exactly once.
            try await admin.withConnection { c in try c.executeText("KILL \(second)") }
            let third = try await pool.transaction { c in
                try c.execute(
                    "INSERT INTO workflow_cursors (name, seq, updated_at) VALUES (?, ?, ?)",
                    [.text("after-kill"), .int(7), .timestamp(Fixtures.t0)])
                return try c.query("SELECT CONNECTION_ID()")[0].int(0)
            }
            #expect(third != second)
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_cursors WHERE name = 'after-kill'") == 1)
            #expect(try await TestDatabase.scalar(pool, "SELECT seq FROM workflow_cursors WHERE name = 'after-kill'") == 7)
        }
    }

    @Test func aTransactionKilledBeforeCommitIsRetriedAndAppliedOnce() async throws {
        try await TestDatabase.with(pool: PoolConfiguration(maxOpen: 2, maxIdle: 2, maxLifetimeSeconds: 300)) { _, pool async throws in
            let killer = try MariaDBConnection(configuration: TestDatabase.serverConfiguration())
            let attempts = Locked(0)
            let survived = Locked(false)
            // @unchecked Sendable: `killer` is used only by the one body attempt that kills.
            struct Killer: @unchecked Sendable { let c: MariaDBConnection }
            let k = Killer(c: killer)
            let connectionIDs = try await pool.transaction { c -> [Int64] in
                let attempt = attempts.withLock { $0 += 1; return $0 }
                try c.execute(
                    "INSERT INTO workflow_cursors (name, seq, updated_at) VALUES (?, ?, ?)",
                    [.text("once"), .int(Int64(attempt)), .timestamp(Fixtures.t0)])
                let id = try c.query("SELECT CONNECTION_ID()")[0].int(0)
                if attempt == 1 {
                    // The server kills our connection mid-transaction: the insert is rolled back
                    // and the next statement fails with a lost connection.
                    try k.c.executeText("KILL \(id)")
                    _ = try c.query("SELECT COUNT(*) FROM workflow_cursors")
                    survived.withLock { $0 = true }
                }
                return [id]
            }
            killer.close()
            #expect(survived.value == false, "a statement on a killed connection succeeded")
            #expect(attempts.value == 2, "the transaction should run twice: killed, then retried")
            #expect(connectionIDs.count == 1)
            let rows = try await pool.withConnection { c in
                try c.query("SELECT seq FROM workflow_cursors WHERE name = 'once'").map { try $0.int(0) }
            }
            #expect(rows == [2], "exactly one row, written by the second attempt")
        }
    }

    @Test func errorsKeepErrnoAndSQLState() async throws {
        try await TestDatabase.with { _, pool async throws in
            let syntax = await #expect(throws: MariaDBError.self) {
                try await pool.withConnection { c in try c.executeText("SELEC 1") }
            }
            #expect(syntax?.errno == 1064)
            #expect(syntax?.sqlState == "42000")
            #expect(syntax?.kind == .other)
            #expect(syntax?.message.contains("SELEC") == true)
            let prepared = await #expect(throws: MariaDBError.self) {
                try await pool.withConnection { c in _ = try c.query("SELEC * FROM workflow_cursors WHERE name = ?", [.text("x")]) }
            }
            #expect(prepared?.errno == 1064)
            #expect(prepared?.sqlState == "42000")
            let missing = await #expect(throws: MariaDBError.self) {
                try await pool.withConnection { c in _ = try c.query("SELECT * FROM no_such_table WHERE x = ?", [.int(1)]) }
            }
            #expect(missing?.errno == 1146)
            #expect(missing?.sqlState == "42S02")
            try await pool.transaction { c in
                try c.execute(
                    "INSERT INTO workflow_cursors (name, seq, updated_at) VALUES (?, ?, ?)",
                    [.text("dup"), .int(1), .timestamp(Fixtures.t0)])
            }
            let duplicate = await #expect(throws: MariaDBError.self) {
                try await pool.transaction { c in
                    try c.execute(
                        "INSERT INTO workflow_cursors (name, seq, updated_at) VALUES (?, ?, ?)",
                        [.text("dup"), .int(2), .timestamp(Fixtures.t0)])
                }
            }
            #expect(duplicate?.kind == .duplicateKey)
            #expect(duplicate?.errno == 1062)
            #expect(duplicate?.sqlState == "23000")
            // The failed transaction changed nothing and the connection is still good.
            #expect(try await TestDatabase.scalar(pool, "SELECT seq FROM workflow_cursors WHERE name = 'dup'") == 1)
        }
    }

    /// When `shutdown()` returns every connection is closed: the process may exit right after,
    /// and a database thread still closing its connection while exit handlers run corrupted the
    /// heap once (`workflowd prune` aborted in malloc_consolidate).
    @Test func shutdownReturnsOnlyOnceEveryConnectionIsClosed() async throws {
        let config = try TestDatabase.serverConfiguration()
        for _ in 0..<20 {
            let pool = MariaDBPool(
                configuration: config, pool: PoolConfiguration(maxOpen: 8, maxIdle: 8, maxLifetimeSeconds: 300),
                logger: TestDatabase.logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask { _ = try await pool.withConnection { c in try c.query("SELECT SLEEP(0.01)") } }
                }
                try await group.waitForAll()
            }
            #expect(pool.statistics.openConnections > 0)
            try await offThread { pool.shutdown() }
            #expect(pool.statistics.openConnections == 0, "shutdown returned with connections still open")
            #expect(pool.statistics.threads == 0)
        }
    }

    @Test func aSocketWithNoServerIsUnavailableWithAClearMessage() async throws {
        let folder = "/tmp/wf-pooltests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let socket = folder + "/nobody-listens.sock"
        let config = try MariaDBConfiguration(dsn: "app:Zq7-Secr3t-Pw@unix(\(socket))/orders")
        var poolConfig = PoolConfiguration(maxOpen: 1, maxIdle: 1, maxLifetimeSeconds: 300)
        poolConfig.connectAttempts = 2
        let pool = MariaDBPool(configuration: config, pool: poolConfig, logger: TestDatabase.logger)
        defer { pool.shutdown() }
        do {
            _ = try await pool.withConnection { c in try c.query("SELECT 1") }
            Issue.record("connected to a socket with no server")
        } catch let e as MariaDBError {
            #expect(e.kind == .unavailable)
            #expect(e.errno == 2002)
            #expect(e.message.contains(socket), "the message should name the socket: \(e.message)")
            #expect(e.message.contains("Can't connect"), "\(e.message)")
            #expect(!e.description.contains("Zq7-Secr3t-Pw"))
        }
        #expect(pool.statistics.openConnections == 0)
    }

    @Test func tlsRequiredAgainstAServerWithoutTLSFailsClearly() async throws {
        let admin = try TestDatabase.adminPool()
        let have = try await TestDatabase.text(admin, "SELECT @@have_ssl")[0][0]
        admin.shutdown()
        try #require(have != "YES", "this test needs a server without TLS; this one has it")
        var config = try TestDatabase.serverConfiguration()
        config.password = "Zq7-Secr3t-Pw"
        config.tls = .verify
        for mode in [MariaDBConfiguration.TLSMode.verify, .skipVerify] {
            config.tls = mode
            var poolConfig = PoolConfiguration(maxOpen: 1, maxIdle: 1, maxLifetimeSeconds: 300)
            poolConfig.connectAttempts = 1
            let pool = MariaDBPool(configuration: config, pool: poolConfig, logger: TestDatabase.logger)
            defer { pool.shutdown() }
            do {
                let cipher = try await pool.withConnection { c in try c.queryText("SHOW SESSION STATUS LIKE 'Ssl_cipher'") }
                Issue.record("tls=\(mode.rawValue) connected to a server without TLS (Ssl_cipher: \(cipher))")
            } catch let e as MariaDBError {
                #expect(e.kind == .unavailable, "\(e)")
                #expect(e.message.localizedCaseInsensitiveContains("ssl") || e.message.localizedCaseInsensitiveContains("tls"),
                    "the message should say TLS/SSL is the problem: \(e.message)")
                #expect(!e.description.contains("Zq7-Secr3t-Pw"))
                #expect(!e.message.contains("Zq7-Secr3t-Pw"))
            }
        }
    }
}

/// A private server that is stopped and started again under a live pool.
@Suite("MariaDB pool across a server restart", .timeLimit(.minutes(2)))
struct PoolRestartTests {
    @Test func thePoolReconnectsAfterTheServerRestartsAndNothingIsLost() async throws {
        let folder = "/tmp/wf-poolrestart-\(getpid())"
        var serverConfig = PrivateMariaDB.Configuration()
        serverConfig.maxConnections = 40
        serverConfig.innoDBBufferPoolSize = "32M"
        let server = PrivateMariaDB(directory: folder, configuration: serverConfig)
        defer {
            try? server.stop()
            try? FileManager.default.removeItem(atPath: folder)
        }
        try await offThread { try server.start() }
        var config = try MariaDBConfiguration(dsn: server.dsn)
        let admin = MariaDBPool(configuration: config, pool: PoolConfiguration(maxOpen: 1, maxIdle: 1, maxLifetimeSeconds: 60), logger: TestDatabase.logger)
        try await admin.withConnection { c in try c.executeText("CREATE DATABASE IF NOT EXISTS restart_test") }
        admin.shutdown()
        config.database = "restart_test"
        var poolConfig = PoolConfiguration(maxOpen: 2, maxIdle: 2, maxLifetimeSeconds: 300)
        poolConfig.connectAttempts = 1
        let pool = MariaDBPool(configuration: config, pool: poolConfig, logger: TestDatabase.logger)
        defer { pool.shutdown() }
        try await SchemaMigrator(pool: pool, logger: TestDatabase.logger).migrate()
        let store = MariaDBWorkflowStore(pool: pool, logger: TestDatabase.logger)
        let r = Fixtures.run(foreignID: "order-restart")
        #expect(try await store.create(NewRun(run: r)) == .created(r))

        try await offThread { try server.stop() }
        // Server gone: a clear, retryable error; nothing hangs.
        let down = await #expect(throws: MariaDBError.self) {
            try await pool.withConnection { c in try c.query("SELECT 1") }
        }
        #expect(down?.kind == .unavailable || down?.kind == .connectionLost, "\(String(describing: down))")
        let storeDown = await #expect(throws: WorkflowError.self) {
            try await store.update([Fixtures.next(r, status: 2)])
        }
        #expect(storeDown?.code == .unavailable)
        #expect(storeDown?.retryable == true)

        try await offThread { try server.start() }
        // Back: the same pool works again, on a new connection, and the data is all there.
        #expect(try await TestDatabase.scalar(pool, "SELECT 1 + 1") == 2)
        #expect(try await store.lookup(runID: r.runID) == r)
        let u = Fixtures.next(r, status: 2)
        #expect(try await store.update([u]) == [.applied])
        #expect(try await store.lookup(runID: r.runID) == u.run)
        #expect(try await store.outboxBatch(limit: 10).map(\.data.version) == [1, 2], "the refused update wrote nothing")
    }
}

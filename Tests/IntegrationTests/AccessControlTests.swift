import Foundation
import Testing
import WorkflowMariaDB
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// Who may use a server and with which database rights, with real `workflowd` processes, the
/// real socket and a real MariaDB: the peer allow-list (`--allow-uid` / `--allow-gid`), the DSN's
/// password never reaching output, and `serve` running with a user that may only read and write
/// the tables (README, "Least privilege"). Socket file permissions are covered by
/// `ServerSocketTests.listenerRefusesLiveServerRemovesStaleSocketSetsMode`.
@Suite("Access control", .serialized, .timeLimit(.minutes(5)))
struct AccessControlTests {
    /// A uid (and gid) that is not the test's own.
    static var otherID: UInt32 { getuid() == 65534 ? 65533 : 65534 }

    // MARK: - Peer allow-list

    @Test func allowListRefusesOtherUsersWithOneForbiddenLineAndServesListedOnes() async throws {
        signal(SIGPIPE, SIG_IGN)
        let db = try await IntegrationDatabase.create()
        do {
            let me = getuid()
            // The flag wins over the variable: the variable lists this user, the flag does not.
            let refusing = try ServerProcess(
                database: db, env: ["WORKFLOWD_ALLOW_UIDS": "\(me)"], arguments: ["--allow-uid", "\(Self.otherID)"])
            // The first connection that gets through is the one under test (any other would be
            // refused and logged too).
            let client = Unchecked(try await refusing.connectWhenListening())
            let lines = try await onThread { () -> [String] in
                try? client.value.send(#"{"op":"ping","id":1}"#)  // may already meet a closed socket
                return try client.value.readUntilClosed(timeout: 30)
            }
            #expect(lines.count == 1, "\(lines)")
            expectError(parsed(lines.first), code: "FORBIDDEN", retryable: false)
            #expect(parsed(lines.first)["error"]?["message"]?.stringValue?.contains("uid \(me)") == true, "\(lines)")
            // One log line naming the peer (uid, gid, pid), and nothing served.
            let log = try await refusing.waitForLog("connection refused: peer not in the allow-list")
            let refusals = log.split(separator: "\n").filter { $0.contains("connection refused") }
            #expect(refusals.count == 1, "\(log)")
            #expect(refusals.first?.contains("peer.uid=\(me)") == true, "\(log)")
            #expect(refusals.first?.contains("peer.gid=\(getgid())") == true, "\(log)")
            #expect(refusals.first?.contains("peer.pid=\(getpid())") == true, "\(log)")
            // workflowctl shows the reason (whether its request got out before the close or not).
            for command in [["ping"], ["get", "acl-1"]] {
                let ctl = try await CommandLineTests.run("workflowctl", command + ["--socket", refusing.socketPath])
                #expect(ctl.status == 1, "\(ctl)")
                #expect(ctl.stderr.contains("FORBIDDEN"), "\(ctl)")
            }
            // A peer that keeps retrying is refused every time but warned about once a minute.
            let path = refusing.socketPath
            let answers = try await onThread { () -> [[String]] in
                try (0..<20).map { _ in
                    let c = try LineClient(path: path)
                    return try c.readUntilClosed(timeout: 30)
                }
            }
            #expect(answers.allSatisfy { $0.count == 1 && $0[0].contains("FORBIDDEN") }, "\(answers)")
            let warnings = refusing.log.split(separator: "\n").filter { $0.contains("connection refused") }
            #expect(warnings.count == 1, "\(refusing.log)")
            #expect(try await db.int("SELECT COUNT(*) FROM workflow_records") == 0)
            #expect(try await refusing.terminate() == 0, "\(refusing.log)")

            // Admitted by group: the uid list names someone else, the gid list this process's group.
            let byGroup = try await ServerProcess.start(
                database: db, env: ["WORKFLOWD_ALLOW_UIDS": "\(Self.otherID)"], arguments: ["--allow-gid", "\(getgid())"])
            let bpath = byGroup.socketPath
            let run = try await onThread { () -> JSON in
                let c = try LineClient(path: bpath)
                try submitOrder(c, "acl-1")
                return try awaitFinished(c, "acl-1")
            }
            #expect(run["status"] == .string("OrderCompleted"), "\(run)")
            #expect(!byGroup.log.contains("connection refused"), "\(byGroup.log)")
            #expect(try await byGroup.terminate() == 0, "\(byGroup.log)")

            // Admitted by user id, from the variable; --socket-mode reaches the socket file
            // (the modes themselves: ServerSocketTests).
            let byUser = try await ServerProcess.start(
                database: db, env: ["WORKFLOWD_ALLOW_UIDS": "\(Self.otherID), \(me)"], arguments: ["--socket-mode", "0600"])
            let upath = byUser.socketPath
            var st = stat()
            #expect(lstat(upath, &st) == 0 && st.st_mode & 0o777 == 0o600)
            let got = try await onThread { try LineClient(path: upath).call(#"{"op":"get","foreign_id":"acl-1"}"#) }
            #expect(got["run"]?["status"] == .string("OrderCompleted"), "\(got)")
            #expect(try await byUser.terminate() == 0, "\(byUser.log)")
        } catch {
            await db.drop()
            throw error
        }
        await db.drop()
    }

    @Test(arguments: [
        (["--allow-uid", "abc"], [String: String](), "--allow-uid: 'abc' is not a numeric id"),
        (["--allow-uid", ""], [:], "--allow-uid: the list is empty"),
        (["--allow-gid", "1000,"], [:], "--allow-gid: '1000,' has an empty item"),
        ([], ["WORKFLOWD_ALLOW_GIDS": "-1"], "WORKFLOWD_ALLOW_GIDS: '-1' is not a numeric id"),
        ([], ["WORKFLOWD_ALLOW_UIDS": "0,4294967295"], "WORKFLOWD_ALLOW_UIDS: '4294967295' is not a numeric id"),
        (["--socket-mode", "0999"], [:], "--socket-mode: '0999' is not an octal file mode"),
        ([], ["WORKFLOWD_SOCKET_MODE": "rw-rw----"], "WORKFLOWD_SOCKET_MODE: 'rw-rw----' is not an octal file mode"),
    ])
    func badAccessSettingsStopTheStartWithAClearError(arguments: [String], env: [String: String], message: String) async throws {
        let dir = NSTemporaryDirectory() + "wfacl-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A DSN that would fail differently: these settings are checked before any connection.
        let r = try await CommandLineTests.run(
            "workflowd",
            ["serve", "--dsn", "u@unix(/nonexistent/mysqld.sock)/db", "--data-dir", dir, "--socket", dir + "/s.sock"] + arguments,
            env: env)
        #expect(r.status != 0, "\(r)")
        #expect(r.stderr.contains(message), "\(r)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/s.sock"))
    }

    // MARK: - The DSN's password never in output

    @Test func theDSNPasswordNeverAppearsInOutputOrErrors() async throws {
        signal(SIGPIPE, SIG_IGN)
        let port = Int.random(in: 33_001...43_000)
        var config = PrivateMariaDB.Configuration()
        config.extraServerArguments = ["--skip-networking=0", "--bind-address=127.0.0.1", "--port=\(port)"]
        let dir = "/tmp/wf-pw-\(getpid())-\(port)"
        let mariadb = PrivateMariaDB(directory: dir, configuration: config)
        _ = try await onThread { try mariadb.start() }
        do {
            try await Self.passwordScenario(mariadb: mariadb, port: port)
        } catch {
            _ = try? await onThread { try mariadb.stop() }
            try? FileManager.default.removeItem(atPath: dir)
            throw error
        }
        _ = try? await onThread { try mariadb.stop() }
        try? FileManager.default.removeItem(atPath: dir)
    }

    static func passwordScenario(mariadb: PrivateMariaDB, port: Int) async throws {
        let password = "Pw-\(UInt64.random(in: 1...UInt64.max))-Secret"
        let wrong = "Wrong-\(UInt64.random(in: 1...UInt64.max))-Guess"
        let admin = MariaDBPool(
            configuration: try MariaDBConfiguration(dsn: mariadb.dsn),
            pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: IntegrationDatabase.logger)
        try await admin.withConnection { c in
            try c.executeText("CREATE DATABASE workflow_db")
            try c.executeText("CREATE USER 'wf_user'@'127.0.0.1' IDENTIFIED BY '\(password)'")
            try c.executeText("GRANT ALL ON workflow_db.* TO 'wf_user'@'127.0.0.1'")
        }
        _ = try? await onThread { admin.shutdown() }
        let dsn = "wf_user:\(password)@tcp(127.0.0.1:\(port))/workflow_db?parseTime=true&charset=utf8mb4&timeout=5s"
        var output = ""  // everything every process printed
        let scratch = NSTemporaryDirectory() + "wfpw-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let serveArguments = ["serve", "--data-dir", scratch, "--socket", scratch + "/s.sock", "--log-level", "trace"]

        let migrated = try await CommandLineTests.run("workflowd", ["migrate", "--dsn", dsn, "--log-level", "trace"])
        output += migrated.stdout + migrated.stderr
        #expect(migrated.status == 0, "\(migrated)")

        // A working server at trace level: submit, await, and a few errors.
        let server = try await ServerProcess.start(
            database: IntegrationDatabase(configuration: try MariaDBConfiguration(dsn: dsn)), env: ["WORKFLOWD_LOG_LEVEL": "trace"])
        let path = server.socketPath
        let replies = try await onThread { () -> [JSON] in
            let c = try LineClient(path: path)
            var replies: [JSON] = []
            for i in 1...3 { try submitOrder(c, "pw-\(i)") }
            for i in 1...3 { replies.append(try awaitFinished(c, "pw-\(i)")) }
            replies.append(try c.call(#"{"op":"get","foreign_id":"no-such-order"}"#))
            replies.append(try c.call(#"{"op":"submit","order":{"id":""}}"#))
            replies.append(try c.call("{not json"))
            replies.append(try c.call(#"{"op":"health"}"#))
            return replies
        }
        #expect(replies.prefix(3).allSatisfy { $0["status"] == .string("OrderCompleted") }, "\(replies)")
        #expect(replies[3]["error"]?["code"] == .string("NOT_FOUND"), "\(replies)")
        #expect(replies[4]["ok"] == .bool(false), "\(replies)")
        #expect(replies[5]["error"]?["code"] == .string("BAD_JSON"), "\(replies)")
        #expect(try await server.terminate() == 0, "\(server.log)")
        output += server.log
        // The log did name the database, with the password masked: the scan below means something.
        #expect(server.log.contains("wf_user:***@"), "\(server.log)")
        #expect(server.log.contains("trace"), "trace lines were logged")

        // A wrong password, from the flag and from the variable: a clear failure.
        let wrongDSN = "wf_user:\(wrong)@tcp(127.0.0.1:\(port))/workflow_db?timeout=5s"
        for (arguments, env) in [(serveArguments + ["--dsn", wrongDSN], [String: String]()), (serveArguments, ["WORKFLOWD_DSN": wrongDSN])] {
            let r = try await CommandLineTests.run("workflowd", arguments, env: env)
            output += r.stdout + r.stderr
            #expect(r.status != 0, "\(r)")
            #expect(r.stderr.contains("1045") && r.stderr.contains("Access denied"), "\(r)")
        }
        // Nothing listens on the port after MariaDB's: cannot connect, still no password.
        let closedPort = port == 43_000 ? port - 1 : port + 1
        let unreachable = try await CommandLineTests.run(
            "workflowd", serveArguments + ["--dsn", "wf_user:\(password)@tcp(127.0.0.1:\(closedPort))/workflow_db?timeout=2s"])
        output += unreachable.stdout + unreachable.stderr
        #expect(unreachable.status != 0, "\(unreachable)")
        #expect(unreachable.stderr.contains("2002") || unreachable.stderr.contains("2003"), "\(unreachable)")

        // DSNs that do not parse: each error names the DSN setting, never its password.
        let malformed = [
            "wf_user:\(password)@tcp(127.0.0.1:\(port)/workflow_db",
            "wf_user:\(password)@tcp(127.0.0.1:99999)/workflow_db",
            "wf_user:\(password)@tcp(127.0.0.1:\(port))",
            "wf_user:\(password)@127.0.0.1/workflow_db",
            "wf_user:\(password)%zz@tcp(127.0.0.1:\(port))/workflow_db",
            "wf_user:\(password)@tcp(127.0.0.1:\(port))/workflow_db?password=\(password)",
            "mariadb://wf_user:\(password)@127.0.0.1:\(port)/workflow_db?tls=maybe",
            "mariadb://wf_user:\(password)@127.0.0.1:x\(password)/workflow_db",
            "mysql://wf_user:\(password)@/workflow_db",
            "postgres://wf_user:\(password)@127.0.0.1/workflow_db",
        ]
        for bad in malformed {
            let r = try await CommandLineTests.run("workflowd", serveArguments + ["--dsn", bad])
            output += r.stdout + r.stderr
            #expect(r.status != 0, "\(bad): \(r)")
            #expect(r.stderr.contains("WORKFLOWD_DSN / --dsn"), "\(bad): \(r)")
        }

        #expect(!output.contains(password), "the password appears in the output")
        #expect(!output.contains(wrong), "the wrong password appears in the output")
        #expect(!output.contains("Secret") && !output.contains("Guess"), "a piece of a password appears in the output")
    }

    // MARK: - Least privilege

    @Test func serveRunsWithAUserThatMayOnlyReadAndWriteTheTables() async throws {
        signal(SIGPIPE, SIG_IGN)
        let base = try IntegrationDatabase.base.get()
        guard case .unix(let socket) = base.endpoint else {
            Issue.record("this test needs WORKFLOWD_TEST_DSN over a Unix socket (a 'localhost' user)")
            return
        }
        let suffix = UInt64.random(in: 0...UInt64.max) % 1_000_000_000_000
        let name = "wfit_lp_\(suffix)"
        let user = "wf_app_\(suffix)"
        let password = "App-\(UInt64.random(in: 1...UInt64.max))-pw"
        let admin = MariaDBPool(
            configuration: base, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60),
            logger: IntegrationDatabase.logger)
        try await admin.withConnection { c in
            try c.executeText("CREATE DATABASE \(name)")
            try c.executeText("CREATE USER '\(user)'@'localhost' IDENTIFIED BY '\(password)'")
            try c.executeText("GRANT SELECT, INSERT, UPDATE, DELETE ON \(name).* TO '\(user)'@'localhost'")
        }
        var adminConfiguration = base
        adminConfiguration.database = name
        let adminDB = IntegrationDatabase(configuration: adminConfiguration)
        let appDSN = "\(user):\(password)@unix(\(socket))/\(name)"
        do {
            try await Self.leastPrivilegeScenario(adminDB: adminDB, appDSN: appDSN, user: user, password: password)
        } catch {
            await Self.dropUser(user, database: name, admin: admin)
            throw error
        }
        await Self.dropUser(user, database: name, admin: admin)
    }

    static func dropUser(_ user: String, database: String, admin: MariaDBPool) async {
        try? await admin.withConnection { c in
            try c.executeText("DROP USER IF EXISTS '\(user)'@'localhost'")
            try c.executeText("DROP DATABASE IF EXISTS \(database)")
        }
        _ = try? await onThread { admin.shutdown() }
    }

    static func leastPrivilegeScenario(adminDB: IntegrationDatabase, appDSN: String, user: String, password: String) async throws {
        let name = adminDB.configuration.database
        var output = ""
        let scratch = NSTemporaryDirectory() + "wflp-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let serve = ["serve", "--dsn", appDSN, "--data-dir", scratch, "--socket", scratch + "/s.sock"]
        let tables = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '\(name)'"

        // The grants are those docs/operations.md gives the application user, and they really
        // exclude DDL.
        let operations = try String(contentsOfFile: repositoryRoot + "/docs/operations.md", encoding: .utf8)
        #expect(operations.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON workflow_db.* TO 'workflow_app'@'localhost';"))
        let grants = try await adminDB.query("SHOW GRANTS FOR '\(user)'@'localhost'").compactMap { $0.first ?? nil }
        #expect(grants.contains { $0.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON `\(name)`.*") }, "\(grants)")
        #expect(!grants.contains { $0.contains("ALL PRIVILEGES") || $0.contains("CREATE") }, "\(grants)")
        let app = IntegrationDatabase(configuration: try MariaDBConfiguration(dsn: appDSN))
        do {
            _ = try await app.query("CREATE TABLE probe (id INT)")
            Issue.record("the application user may create tables")
        } catch let e as MariaDBError {
            #expect(e.errno == 1142, "\(e)")
        }

        // No schema yet: serve (with and without --no-migrate) stops with what to do, creates nothing.
        for extra in [[], ["--no-migrate"]] {
            let r = try await CommandLineTests.run("workflowd", serve + extra)
            output += r.stdout + r.stderr
            #expect(r.status != 0, "\(extra): \(r)")
            #expect(r.stderr.contains("has no workflowd schema"), "\(extra): \(r)")
            #expect(r.stderr.contains("run `workflowd migrate` with an admin user"), "\(extra): \(r)")
            #expect(!FileManager.default.fileExists(atPath: scratch + "/s.sock"))
        }
        #expect(try await adminDB.int(tables) == 0)

        // The admin migrates; the application user then serves: writes, reads, leases, health.
        let migrated = try await CommandLineTests.run("workflowd", ["migrate", "--dsn", adminDB.dsn])
        #expect(migrated.status == 0, "\(migrated)")
        #expect(migrated.stdout.contains("schema migrated from version 0 to \(SchemaMigrator.currentVersion)"), "\(migrated)")
        let server = try await ServerProcess.start(database: app)
        let path = server.socketPath
        let replies = try await onThread { () -> [JSON] in
            let c = try LineClient(path: path)
            var replies: [JSON] = []
            for i in 1...3 { try submitOrder(c, "lp-\(i)") }
            for i in 1...3 { replies.append(try awaitFinished(c, "lp-\(i)")) }
            replies.append(try c.call(#"{"op":"history","foreign_id":"lp-1"}"#))
            replies.append(try c.call(#"{"op":"health"}"#))
            return replies
        }
        #expect(replies.prefix(3).allSatisfy { $0["status"] == .string("OrderCompleted") }, "\(replies)")
        #expect(replies[3]["events"]?.arrayValue?.count == 5, "\(replies[3])")
        #expect(replies[4]["healthy"] == .bool(true), "\(replies[4])")
        #expect(try await server.terminate() == 0, "\(server.log)")
        output += server.log
        #expect(!server.log.contains("denied"), "\(server.log)")
        #expect(try await adminDB.int("SELECT COUNT(*) FROM workflow_records WHERE status = 5") == 3)

        // Retention needs no more rights than serve: `prune --archive` as the application user.
        try await adminDB.execute("UPDATE workflow_records SET updated_at = updated_at - INTERVAL 40 DAY")
        try await adminDB.execute("UPDATE workflow_events SET at = at - INTERVAL 10 DAY")
        let pruned = try await CommandLineTests.run(
            "workflowd", ["prune", "--dsn", appDSN, "--runs-older-than", "30d", "--events-older-than", "7d", "--archive"])
        output += pruned.stdout + pruned.stderr
        #expect(pruned.status == 0, "\(pruned)")
        #expect(pruned.stdout.contains("runs: deleted 3 finished run(s), archived"), "\(pruned)")
        #expect(pruned.stdout.contains("events: deleted 14 event(s)"), "\(pruned)")
        #expect(try await adminDB.int("SELECT COUNT(*) FROM workflow_records_archive") == 3)
        #expect(try await adminDB.int("SELECT COUNT(*) FROM workflow_records") == 0)

        // An older schema (version row gone): the same clear refusal; the data is left alone.
        try await adminDB.execute("DELETE FROM workflow_schema_version")
        let older = try await CommandLineTests.run("workflowd", serve)
        output += older.stdout + older.stderr
        #expect(older.status != 0, "\(older)")
        #expect(older.stderr.contains("CREATE command denied"), "\(older)")
        #expect(older.stderr.contains("run `workflowd migrate` with an admin user"), "\(older)")
        #expect(try await adminDB.int("SELECT COUNT(*) FROM workflow_records_archive") == 3)
        // prune refuses an older schema too, without touching anything.
        let oldPrune = try await CommandLineTests.run("workflowd", ["prune", "--dsn", appDSN, "--events-older-than", "1d"])
        output += oldPrune.stdout + oldPrune.stderr
        #expect(oldPrune.status != 0, "\(oldPrune)")
        #expect(oldPrune.stderr.contains("run `workflowd migrate` with an admin user"), "\(oldPrune)")
        #expect(try await adminDB.int("SELECT COUNT(*) FROM workflow_events") == 1)

        #expect(!output.contains(password), "the application user's password appears in the output")
    }
}

extension IntegrationDatabase {
    func execute(_ sql: String) async throws {
        let pool = MariaDBPool(
            configuration: configuration, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: Self.logger)
        defer { pool.shutdown() }
        try await pool.withConnection { try $0.executeText(sql) }
    }
}

extension ServerProcess {
    /// The first connection the socket accepts (for a server that may refuse this process, so
    /// `waitReady`'s ping cannot tell when it is ready).
    func connectWhenListening(timeout: Double = 60) async throws -> LineClient {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard process.isRunning else { throw TestError("workflowd exited early:\n\(log)") }
            if let c = try? LineClient(path: socketPath) { return c }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestError("workflowd did not listen:\n\(log)")
    }

    /// Waits until the log contains `text`; returns the log.
    func waitForLog(_ text: String, timeout: Double = 20) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let current = log
            if current.contains(text) { return current }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestError("the log never showed '\(text)':\n\(log)")
    }
}

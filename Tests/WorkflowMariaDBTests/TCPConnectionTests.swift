import Foundation
import Logging
import Testing
import WorkflowEngine
@testable import WorkflowMariaDB

/// The TCP path of a connection, against a real server: a private MariaDB that also listens on
/// 127.0.0.1, a user with a password, and the seed's Go-style `tcp(...)` DSN.
@Suite("MariaDB over TCP", .timeLimit(.minutes(2)))
struct TCPConnectionTests {
    @Test func goStyleTCPDSNWithAPasswordWorksAndAWrongPasswordIsAClearError() async throws {
        let port = Int.random(in: 23_000...33_000)
        var config = PrivateMariaDB.Configuration()
        config.extraServerArguments = ["--skip-networking=0", "--bind-address=127.0.0.1", "--port=\(port)"]
        let dir = "/tmp/wf-tcp-\(getpid())-\(port)"
        let server = PrivateMariaDB(directory: dir, configuration: config)
        _ = try await offThread { try server.start() }
        defer {
            try? server.stop()  // (a defer cannot await; stopping takes well under a second)
            try? FileManager.default.removeItem(atPath: dir)
        }
        let admin = MariaDBPool(
            configuration: try MariaDBConfiguration(dsn: server.dsn),
            pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: TestDatabase.logger)
        try await admin.withConnection { c in
            try c.executeText("CREATE DATABASE workflow_db")
            try c.executeText("CREATE USER 'workflow_user'@'127.0.0.1' IDENTIFIED BY 'Pa55-word-x'")
            try c.executeText("GRANT ALL ON workflow_db.* TO 'workflow_user'@'127.0.0.1'")
        }
        admin.shutdown()

        let dsn = "workflow_user:Pa55-word-x@tcp(127.0.0.1:\(port))/workflow_db?parseTime=true&charset=utf8mb4&collation=utf8mb4_unicode_ci&timeout=5s"
        let pool = MariaDBPool(configuration: try MariaDBConfiguration(dsn: dsn), logger: TestDatabase.logger)
        try await SchemaMigrator(pool: pool, logger: TestDatabase.logger).migrate()
        let info = try await pool.withConnection { c in
            try c.queryText("SELECT CURRENT_USER(), @@character_set_connection, @@collation_connection, @@time_zone, @@tx_isolation")
        }
        #expect(info[0] == ["workflow_user@127.0.0.1", "utf8mb4", "utf8mb4_unicode_ci", "+00:00", "READ-COMMITTED"])
        // Over TCP, not the socket: a TCP client's host is "name:port", a socket client's has no
        // port (and this user exists only for 127.0.0.1, so CURRENT_USER above says it too).
        let host = try await pool.withConnection { c in
            try c.queryText("SELECT HOST FROM information_schema.processlist WHERE ID = CONNECTION_ID()")
        }
        #expect(host[0][0]?.hasSuffix(":\(port)") == false && host[0][0]?.contains(":") == true, "\(host)")
        let store = MariaDBWorkflowStore(pool: pool, logger: TestDatabase.logger)
        let r = Fixtures.run(foreignID: "order-tcp")
        #expect(try await store.create(NewRun(run: r)) == .created(r))
        #expect(try await store.lookup(runID: r.runID) == r)
        pool.shutdown()

        // A wrong password: a clear configuration error, without the password in it.
        let bad = MariaDBPool(
            configuration: try MariaDBConfiguration(dsn: "workflow_user:Wr0ng-Secret@tcp(127.0.0.1:\(port))/workflow_db"),
            logger: TestDatabase.logger)
        defer { bad.shutdown() }
        do {
            _ = try await bad.withConnection { try $0.queryText("SELECT 1") }
            Issue.record("a wrong password connected")
        } catch let e as MariaDBError {
            #expect(e.errno == 1045)
            #expect(e.kind == .configuration)
            #expect(!e.description.contains("Wr0ng-Secret"))
        }
    }
}

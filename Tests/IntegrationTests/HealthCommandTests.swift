import Foundation
import Testing
import WorkflowMariaDB
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// `workflowd health` as a container or systemd probe runs it: a real process asking a real
/// server over its socket. Exit 0 healthy, 1 unhealthy (naming the failing check), 3 no server.
@Suite("workflowd health", .timeLimit(.minutes(4)))
struct HealthCommandTests {
    func health(_ arguments: [String], env: [String: String] = [:]) async throws -> CommandLineTests.Result {
        try await CommandLineTests.run("workflowd", ["health"] + arguments, env: env)
    }

    /// Polls until `health` exits 0: a server answers `ping` before its engine has taken the
    /// relay and poller leases, and until then `leases` is rightly unhealthy.
    func waitHealthy(_ socket: String, timeout: Double = 60) async throws -> CommandLineTests.Result {
        let deadline = Date().addingTimeInterval(timeout)
        var last = try await health(["--socket", socket, "--timeout", "60s"])
        while last.status != 0, Date() < deadline {
            try await Task.sleep(for: .milliseconds(200))
            last = try await health(["--socket", socket, "--timeout", "60s"])
        }
        return last
    }

    /// Healthy: one line per check, `healthy` last, exit 0; `--json` is the raw reply; the socket
    /// is found the way `serve` finds it. Then the server is killed: exit 3.
    @Test func healthyServerThenNoServer() async throws {
        let db = try await IntegrationDatabase.create()
        let dir = NSTemporaryDirectory() + "wfhealth-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try ServerProcess(database: db, env: crashReportEnvironment, socketPath: dir + "/workflowd.sock")
        do {
            try await server.waitReady()
            let text = try await waitHealthy(server.socketPath)
            print("HEALTH-OK: exit \(text.status)\n\(text.stdout)")
            #expect(text.status == 0, "\(text)")
            let lines = text.stdout.split(separator: "\n").map(String.init)
            #expect(lines.last == "healthy", "\(lines)")
            for name in ["database", "schema", "leases", "lag", "relay", "outbox", "engine"] {
                let line = lines.first { $0.hasPrefix(name + " ") }
                #expect(line?.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first == "ok", "\(name): \(lines)")
            }
            #expect(lines.contains { $0.hasPrefix("schema ") && $0.hasSuffix("version \(SchemaMigrator.currentVersion)") }, "\(lines)")
            #expect(lines.contains { $0.hasPrefix("outbox ") && $0.contains("(limit 10000)") }, "\(lines)")
            #expect(text.stderr.isEmpty, "\(text.stderr)")

            let json = try await health(["--socket", server.socketPath, "--json"])
            #expect(json.status == 0, "\(json)")
            let reply = try JSONParser.parse(json.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(reply["ok"] == .bool(true) && reply["healthy"] == .bool(true), "\(json.stdout)")
            #expect(reply["checks"]?["database"]?["ok"] == .bool(true), "\(json.stdout)")

            // The socket as `serve` resolves it: WORKFLOWD_SOCKET, else <data dir>/workflowd.sock.
            #expect(try await health([], env: ["WORKFLOWD_SOCKET": server.socketPath]).status == 0)
            #expect(try await health(["--data-dir", dir]).status == 0)
            #expect(try await health([], env: ["WORKFLOWD_DATA_DIR": dir]).status == 0)

            // SIGKILL leaves the socket file behind with nobody listening: exit 3.
            server.kill()
            let gone = try await health(["--socket", server.socketPath])
            print("HEALTH-NO-SERVER: exit \(gone.status): \(gone.stderr)")
            #expect(gone.status == 3, "\(gone)")
            #expect(gone.stderr.contains("cannot connect to \(server.socketPath)"), "\(gone)")
            #expect(gone.stdout.isEmpty, "\(gone)")
            let never = try await health(["--socket", dir + "/no-such.sock"])
            #expect(never.status == 3, "\(never)")
        } catch {
            server.kill()
            await db.drop()
            throw error
        }
        await db.drop()
    }

    /// The database stops under a running server: exit 1 with `database` failing; once it is
    /// back, exit 0 again.
    @Test func databaseStoppedIsUnhealthy() async throws {
        try await withStoppableServer { s, mdb, _ in
            let up = try await waitHealthy(s.socketPath)
            #expect(up.status == 0, "\(up)")

            try await mdb.stop()
            let down = try await health(["--socket", s.socketPath, "--timeout", "60s"])
            print("HEALTH-DB-DOWN: exit \(down.status)\n\(down.stdout)")
            #expect(down.status == 1, "\(down)")
            let lines = down.stdout.split(separator: "\n").map(String.init)
            let database = lines.first { $0.hasPrefix("database ") }
            #expect(database?.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first == "FAIL", "\(lines)")
            #expect(lines.last == "UNHEALTHY: database", "\(lines)")
            let json = try await health(["--socket", s.socketPath, "--timeout", "60s", "--json"])
            #expect(json.status == 1, "\(json)")
            let reply = try JSONParser.parse(json.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(reply["healthy"] == .bool(false) && reply["checks"]?["database"]?["ok"] == .bool(false), "\(json.stdout)")
            #expect(s.process.isRunning)

            try await mdb.start()
            let back = try await waitHealthy(s.socketPath)
            #expect(back.status == 0, "\(back)")
        }
    }
}

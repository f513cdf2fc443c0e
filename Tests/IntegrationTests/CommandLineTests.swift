import Foundation
import Testing
import WorkflowTestSupport
import WorkflowWire

/// The command-line tools as a user runs them: `workflowctl` against a real server (output and
/// exit codes scripts rely on) and `workflowd demo` (the README's run command).
@Suite("Command line", .timeLimit(.minutes(3)))
struct CommandLineTests {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func binary(_ name: String) -> String {
        URL(fileURLWithPath: ServerProcess.binary).deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// Runs a tool to completion (with a deadline) and captures its output.
    static func run(_ tool: String, _ arguments: [String], env: [String: String] = [:], stdin: String? = nil, timeout: Double = 60) async throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary(tool))
        p.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "WORKFLOWD_SOCKET")
        environment.removeValue(forKey: "WORKFLOWD_DSN")
        for (k, v) in env { environment[k] = v }
        p.environment = environment
        let dir = NSTemporaryDirectory() + "wfcli-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: dir + "/out")!
        p.standardError = FileHandle(forWritingAtPath: dir + "/err")!
        let input = Pipe()
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning {
            if Date() > deadline {
                p.terminate()
                throw TestError("\(tool) \(arguments) did not finish in \(timeout) s")
            }
            try await Task.sleep(for: .milliseconds(20))  // never block a cooperative thread
        }
        return Result(
            status: p.terminationStatus,
            stdout: (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")
    }

    @Test func workflowctlCommandsAndExitCodes() async throws {
        let db = try await IntegrationDatabase.create()
        let server = try await ServerProcess.start(database: db)
        let s = ["--socket", server.socketPath]
        func ctl(_ args: [String], stdin: String? = nil) async throws -> Result { try await Self.run("workflowctl", args + s, stdin: stdin) }

        // submit from flags: the total is the exact sum of the items.
        let submitted = try await ctl(["submit", "--id", "cli-1", "--customer-name", "Ann", "--email", "ann@example.com",
                                 "--item", "p1:Laptop:1:1299.99", "--item", "p2:Mouse:2:29.99", "--json"])
        #expect(submitted.status == 0, "\(submitted)")
        let reply = try JSONParser.parse(submitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(reply["created"] == .bool(true))
        // submit from stdin.
        let fromStdin = try await ctl(["submit", "-", "--json"], stdin: orderJSON("cli-2"))
        #expect(fromStdin.status == 0, "\(fromStdin)")
        // await: completes (exit 0) and prints the run.
        let done = try await ctl(["await", "cli-1", "--json"])
        #expect(done.status == 0, "\(done)")
        let run = try JSONParser.parse(done.stdout.trimmingCharacters(in: .whitespacesAndNewlines))["run"]
        #expect(run?["status"] == .string("OrderCompleted"))
        #expect(run?["object"]?["total"] == .number("1359.97"), "the exact sum of the items")
        #expect(try await ctl(["await", "cli-2"]).status == 0)
        // UNREACHABLE → 5: a finished run never reaches OrderRejected.
        let unreachable = try await ctl(["await", "cli-1", "--status", "OrderRejected"])
        #expect(unreachable.status == 5, "\(unreachable)")
        // A server error → 1, with the code on stderr.
        let missing = try await ctl(["get", "no-such-order"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("NOT_FOUND"), "\(missing)")
        // Tables and lines a human reads.
        let list = try await ctl(["list"])
        #expect(list.status == 0)
        #expect(list.stdout.contains("cli-1") && list.stdout.contains("OrderCompleted"), "\(list.stdout)")
        let history = try await ctl(["history", "cli-1"])
        #expect(history.stdout.split(separator: "\n").filter { $0.contains("Order") || $0.contains("Payment") }.count == 5, "\(history.stdout)")
        #expect(try await ctl(["graph"]).stdout.contains("stateDiagram-v2"))
        #expect(try await ctl(["stats"]).status == 0)
        #expect(try await ctl(["ping"]).status == 0)
        // Usage error → 2; no server → 3.
        #expect(try await ctl(["await", "cli-1", "--timeout-ms", "-5"]).status == 2)
        let noServer = try await Self.run("workflowctl", ["ping", "--socket", server.socketPath + ".nobody"])
        #expect(noServer.status == 3, "\(noServer)")

        #expect(try await server.terminate() == 0)
        await db.drop()
    }

    @Test func awaitTimeoutExitsFour() async throws {
        let db = try await IntegrationDatabase.create()
        let server = try await ServerProcess.start(database: db, env: ["WORKFLOWD_PAYMENT_LATENCY_MS": "600000"])
        let s = ["--socket", server.socketPath]
        #expect(try await Self.run("workflowctl", ["submit", "-"] + s, stdin: orderJSON("slow-1")).status == 0)
        let r = try await Self.run("workflowctl", ["await", "slow-1", "--timeout-ms", "300"] + s)
        #expect(r.status == 4, "\(r)")
        server.kill()
        await db.drop()
    }

    @Test func demoRunsTheSeedWalkthrough() async throws {
        let db = try await IntegrationDatabase.create()
        let dir = NSTemporaryDirectory() + "wfdemo-\(UInt32.random(in: 0...UInt32.max))"
        let r = try await Self.run(
            "workflowd", ["demo", "--dsn", db.dsn, "--data-dir", dir, "--socket", dir + "/d.sock"],
            env: ServerProcess.quietEnvironment, timeout: 120)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        for id in ["order-1001", "order-1002", "order-1003", "order-1005"] {
            #expect(r.stdout.contains("\(id)  OrderCompleted"), "\(id) in:\n\(r.stdout)")
        }
        #expect(r.stdout.contains("order-1004  OrderRejected (customer name is missing)"), "\(r.stdout)")
        #expect(r.stdout.contains("Outbox backlog: 0 row(s) pending; event log head seq 22"), "\(r.stdout)")
        #expect(r.stdout.contains("SELECT workflow_name, foreign_id, run_id, run_state, status, created_at FROM workflow_records"))
        // Every state change was printed live: 4 × 5 + 2 lines with "seq".
        #expect(r.stdout.split(separator: "\n").filter { $0.contains("Z  seq ") }.count == 22, "\(r.stdout)")
        #expect(try await db.int("SELECT COUNT(*) FROM workflow_events") == 22)
        try? FileManager.default.removeItem(atPath: dir)
        await db.drop()
    }

    /// The same walkthrough with payment and fulfilment done by the two example worker processes
    /// (Python) over the socket; they stop when the demo ends.
    @Test func demoWithExternalWorkers() async throws {
        let db = try await IntegrationDatabase.create()
        let dir = NSTemporaryDirectory() + "wfdemo-\(UInt32.random(in: 0...UInt32.max))"
        let r = try await Self.run(
            "workflowd",
            ["demo", "--external-workers", "--dsn", db.dsn, "--data-dir", dir, "--socket", dir + "/d.sock",
             "--workers-dir", repositoryRoot + "/clients/python/examples"],
            env: ServerProcess.quietEnvironment, timeout: 120)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        for id in ["order-1001", "order-1002", "order-1003", "order-1005"] {
            #expect(r.stdout.contains("\(id)  OrderCompleted"), "\(id) in:\n\(r.stdout)")
            #expect(r.stdout.contains("[payment] \(id)"), "the payment worker did \(id):\n\(r.stdout)")
            #expect(r.stdout.contains("[shipping] \(id)"), "the shipping worker did \(id):\n\(r.stdout)")
        }
        #expect(r.stdout.contains("order-1004  OrderRejected (customer name is missing)"), "\(r.stdout)")
        #expect(r.stdout.contains("Outbox backlog: 0 row(s) pending; event log head seq 22"), "\(r.stdout)")
        // Done by the workers: every payment and fulfilment is an answered task.
        #expect(try await db.int("SELECT COUNT(*) FROM workflow_tasks WHERE done_claim IS NOT NULL") == 8)
        #expect(try await db.int("SELECT COUNT(*) FROM workflow_records WHERE JSON_VALUE(object, '$.payment_id') LIKE 'pay\\_%'") == 4)
        #expect(!r.stdout.contains("still running"), "\(r.stdout)")
        try? FileManager.default.removeItem(atPath: dir)
        await db.drop()
    }
}

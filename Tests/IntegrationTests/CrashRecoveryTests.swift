import Foundation
import Testing
import WorkflowTestSupport
import WorkflowWire

/// Guarantees 2, 4, 6 and 7 against real processes: acknowledged submits are durable, a server
/// killed with SIGKILL mid-load is restarted and every run finishes exactly once, the log stays
/// gap-free and the outbox drains.
@Suite("Crash recovery", .timeLimit(.minutes(5)))
struct CrashRecoveryTests {
    static let orders = Int(ProcessInfo.processInfo.environment["WORKFLOWD_CRASH_ORDERS"] ?? "") ?? 1000

    @Test func sigkillInTheMiddleThenRestart() async throws {
        let db = try await IntegrationDatabase.create()
        let env = ["WORKFLOWD_LEASE_TTL_MS": "2000"]
        let first = try await ServerProcess.start(database: db, env: env)
        // Pipeline every submit over ten connections (together they outrun the engine) and kill
        // the server while submissions are still being answered: under load, mid-stream.
        let clients = try (0..<10).map { _ in try first.client() }
        for i in 0..<Self.orders {
            try clients[i % clients.count].send(#"{"op":"submit","id":\#(i),"order":\#(orderJSON("crash-\(i)"))}"#)
        }
        var acknowledged: [String] = []
        reading: while true {
            for c in clients {
                guard let line = try c.readLine(timeout: 60) else { break reading }
                let reply = try JSONParser.parse(line)
                if reply["ok"] == .bool(true), let id = reply["foreign_id"]?.stringValue { acknowledged.append(id) }
                if acknowledged.count >= Self.orders / 2 { break reading }
            }
        }
        first.kill()
        let doneAtKill = try await db.int("SELECT COUNT(*) FROM workflow_records WHERE run_state = 5")
        let runsAtKill = try await db.int("SELECT COUNT(*) FROM workflow_records")
        print("CRASH: SIGKILL with \(acknowledged.count) of \(Self.orders) submits acknowledged, \(runsAtKill) runs stored, \(doneAtKill) completed")
        #expect(acknowledged.count >= Self.orders / 2)
        #expect(doneAtKill < runsAtKill, "the kill came too late to test anything")

        // Restart on the same socket path: the stale socket file is replaced.
        let second = try ServerProcess(database: db, env: env, socketPath: first.socketPath)
        try await second.waitReady()
        // The client then sends what never reached the database (an unacknowledged order that
        // is stored is not sent twice: it would be a second order), while recovery runs.
        let storedAtRestart = Set(try await db.query("SELECT foreign_id FROM workflow_records").compactMap { $0[0] })
        let missing = (0..<Self.orders).map { "crash-\($0)" }.filter { !storedAtRestart.contains($0) }
        let socketPath = second.socketPath
        let resubmitted = try await onThread { () -> Int in
            let resubmitter = try LineClient(path: socketPath)
            for id in missing { try resubmitter.send(#"{"op":"submit","order":\#(orderJSON(id))}"#) }
            var ok = 0
            for _ in missing {
                guard let line = try resubmitter.readLine(timeout: 60) else { break }
                if try JSONParser.parse(line)["created"] == .bool(true) { ok += 1 }
            }
            return ok
        }
        #expect(resubmitted == missing.count, "every order missing at the restart is created once")
        print("CRASH: restarted; \(missing.count) orders that never reached the database submitted again")
        do {
            try await db.waitFor(
                "SELECT COUNT(*) FROM workflow_records WHERE run_state <> 5", equals: 0, timeout: 180)
        } catch {
            Issue.record("\(try await db.stuckRunsReport()); server log tail: \(second.log.suffix(3000))")
            second.kill()
            throw error
        }
        try await db.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0)

        // Durability: every acknowledged order exists, and every run (acknowledged or not) completed.
        let runs = try await db.int("SELECT COUNT(*) FROM workflow_records")
        #expect(runs == Self.orders, "one run per order, all \(Self.orders) of them")
        #expect(try await db.int("SELECT COUNT(*) FROM workflow_records WHERE status = 5") == runs)
        let stored = Set(try await db.query("SELECT foreign_id FROM workflow_records").compactMap { $0[0] })
        #expect(Set(acknowledged).subtracting(storedAtRestart).isEmpty, "acknowledged but lost")
        #expect(stored.count == Self.orders)
        #expect(try await db.int("SELECT COUNT(DISTINCT run_id) FROM workflow_events") == runs)
        try await db.expectEveryTransitionOnceAndLogGapFree()
        #expect(try await second.terminate() == 0)
        await db.drop()
    }
}

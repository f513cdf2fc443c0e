import ArgumentParser
import Foundation
import Logging
import OrderWorkflow
import Synchronization
import WorkflowEngine

/// The seed's walkthrough as one command.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the database and the server, run the seed's five sample orders live, show the results.",
        discussion: """
            Uses the embedded MariaDB unless WORKFLOWD_DSN is set. The gateways are simulated with the \
            seed's latencies and failure rates (WORKFLOWD_PAYMENT_* / WORKFLOWD_FULFILLMENT_*); set \
            WORKFLOWD_RANDOM_SEED for a repeatable run.
            """)

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var server: ServerOptions

    @Flag(name: .customLong("keep-running"), help: "Keep serving on the socket after the walkthrough, until Ctrl-C.")
    var keepRunning = false

    @Option(name: .customLong("timeout"), help: "Seconds to wait for the orders to finish (default 120).")
    var timeoutSeconds: Int = 120

    func run() async throws {
        var env = ProcessInfo.processInfo.environment
        if env["WORKFLOWD_LOG_LEVEL"] == nil && database.logLevel == nil { env["WORKFLOWD_LOG_LEVEL"] = "warning" }
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let out = Output()
        out.line("workflowd demo — the order processor of the seed example, live")
        out.line("")
        out.line("1. Starting the database and the server …")
        let service = try await Service(database: database, server: server, env: env)
        do {
            try service.start()
        } catch {
            await service.stop()
            throw error
        }
        out.line("   database : \(service.db.configuration)")
        out.line("   socket   : \(service.socketPath)")
        out.line("   (try it:  echo '{\"op\":\"stats\"}' | socat - UNIX-CONNECT:\(service.socketPath))")
        out.line("")

        let engine = service.engine
        let names = Dictionary(uniqueKeysWithValues: engine.workflows.flatMap { w in w.statuses.map { ($0.code, $0.name) } })
        let terminal = Set(engine.workflows.flatMap { w in w.statuses.filter(\.terminal).map(\.code) })
        let watched = Mutex<Set<String>>([])
        let finished = Mutex<[String: String]>([:])
        let allDone = AsyncStream<Void>.makeStream()
        let orders = SampleOrders.all
        let listener = engine.addEventListener { events in
            for e in events {
                guard watched.withLock({ $0.contains(e.runID) }) else { continue }
                let status = names[e.status] ?? "\(e.status)"
                let reason = e.reason.map { "  — \($0)" } ?? ""
                out.line(
                    "   \(e.at.rfc3339)  seq \(String(e.seq).leftPad(4))  \(e.foreignID.rightPad(11)) v\(e.version)  \(status.rightPad(18)) \(e.runState.name)\(reason)")
                if terminal.contains(e.status) {
                    let done = finished.withLock { f -> Int in
                        f[e.foreignID] = status
                        return f.count
                    }
                    if done == orders.count { allDone.continuation.yield() }
                }
            }
        }
        defer { engine.removeEventListener(listener) }

        out.line("2. Submitting the five sample orders; every state change is printed as the relay commits it:")
        for order in orders {
            let result = try await engine.trigger(
                workflow: OrderWorkflow.name, foreignID: order.id, object: try SampleOrders.json(order))
            watched.withLock { _ = $0.insert(result.run.runID) }
            if case .existing(let run) = result {
                out.line("   \(order.id) already had an unfinished run \(run.runID); following it")
            }
        }
        let timedOut = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await _ in allDone.stream { return false }
                return false
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(timeoutSeconds))
                return true
            }
            let first = await group.next()!
            group.cancelAll()
            allDone.continuation.finish()
            return first
        }
        out.line("")
        if timedOut { out.line("   (stopped waiting after \(timeoutSeconds) s; some orders are still running)") }

        out.line("3. Results")
        for order in orders {
            let run = try await engine.latestRun(workflow: OrderWorkflow.name, foreignID: order.id)
            let status = run.map { names[$0.status] ?? "\($0.status)" } ?? "?"
            let reason = run?.reason.map { " (\($0))" } ?? ""
            out.line("   \(order.id.rightPad(11)) \(status)\(reason)")
        }
        // The relay deletes outbox rows right after it commits; give it a moment to finish.
        var stats = try await engine.stats()
        for _ in 0..<50 where stats.outbox.pending > 0 {
            try await Task.sleep(for: .milliseconds(100))
            stats = try await engine.stats()
        }
        out.line("")
        out.line("   Runs by status (all runs in this database):")
        for (workflow, counts) in stats.byStatus.sorted(by: { $0.key < $1.key }) {
            for (code, count) in counts.sorted(by: { $0.key < $1.key }) {
                out.line("     \(workflow)  \(String(code).leftPad(2)) \((names[code] ?? "?").rightPad(18)) \(count)")
            }
        }
        out.line("   Outbox backlog: \(stats.outbox.pending) row(s) pending; event log head seq \(stats.head)")
        out.line("")
        out.line("4. Look at the tables yourself:")
        out.line("     \(service.db.sqlHint)")
        out.line("     SELECT workflow_name, foreign_id, run_id, run_state, status, created_at FROM workflow_records ORDER BY created_at DESC;")
        out.line("     SELECT id, workflow_name, created_at FROM workflow_outbox ORDER BY created_at DESC;")
        out.line("     SELECT seq, foreign_id, status, run_state, version, at, reason FROM workflow_events ORDER BY seq;")
        out.line("")
        if keepRunning {
            out.line("Serving on \(service.socketPath) until Ctrl-C …")
            _ = await Signals.wait()
        }
        await service.stop()
        out.line(timedOut ? "Done (with orders still running)." : "Done.")
        if timedOut { throw ExitCode(1) }
    }
}

/// Prints whole lines to standard output from any thread.
final class Output: Sendable {
    private let lock = Mutex(())
    func line(_ s: String) {
        lock.withLock { _ in FileHandle.standardOutput.write(Data((s + "\n").utf8)) }
    }
}

extension String {
    func rightPad(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

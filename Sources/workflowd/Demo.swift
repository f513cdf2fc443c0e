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
            WORKFLOWD_RANDOM_SEED for a repeatable run. With --external-workers, payment and \
            fulfilment are done by two worker processes on the socket (the examples in \
            clients/python/examples), with the same rates and latencies.
            """)

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var server: ServerOptions

    @Flag(name: .customLong("keep-running"), help: "Keep serving on the socket after the walkthrough, until Ctrl-C.")
    var keepRunning = false

    @Option(name: .customLong("timeout"), help: "Seconds to wait for the orders to finish (default 120).")
    var timeoutSeconds: Int = 120

    @Flag(
        name: .customLong("external-workers"),
        help: "Payment and fulfilment done by the two example worker processes (clients/python/examples, python3) over the socket, not by the simulation.")
    var externalWorkers = false

    @Option(name: .customLong("workers-dir"), help: "Where payment_service.py and shipping_service.py are (default clients/python/examples, found from the current folder or the executable's checkout).")
    var workersDirectory: String?

    func run() async throws {
        var env = ProcessInfo.processInfo.environment
        if env["WORKFLOWD_LOG_LEVEL"] == nil && database.logLevel == nil { env["WORKFLOWD_LOG_LEVEL"] = "warning" }
        var serverOptions = server
        var examples: String?
        if externalWorkers {
            examples = try ExampleWorkers.directory(workersDirectory)
            serverOptions.externalSteps = "OrderValidated,PaymentProcessed"
        }
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let out = Output()
        out.line("workflowd demo — the order processor of the seed example, live")
        out.line("")
        out.line("1. Starting the database and the server …")
        let service = try await Service(database: database, server: serverOptions, env: env)
        do {
            try service.start()
        } catch {
            await service.stop()
            throw error
        }
        out.line("   database : \(service.db.configuration)")
        out.line("   socket   : \(service.socketPath)")
        out.line("   (try it:  echo '{\"op\":\"stats\"}' | socat - UNIX-CONNECT:\(service.socketPath))")
        var workers: ExampleWorkers?
        if let examples {
            do {
                let w = try ExampleWorkers(directory: examples, socket: service.socketPath, env: env, out: out)
                workers = w
                out.line("   workers  : payment_service.py (pid \(w.payment.processIdentifier)) works on OrderValidated,")
                out.line("              shipping_service.py (pid \(w.shipping.processIdentifier)) on PaymentProcessed;")
                out.line("              their lines start with [payment] / [shipping]")
                try await w.waitUntilWorking(service.engine)
            } catch {
                workers?.stop()
                await service.stop()
                throw error
            }
        }
        out.line("")

        let engine = service.engine
        let names = Dictionary(uniqueKeysWithValues: engine.workflows.flatMap { w in w.statuses.map { ($0.code, $0.name) } })
        let terminal = Set(engine.workflows.flatMap { w in w.statuses.filter(\.terminal).map(\.code) })
        // By order id: a run's first event can arrive before `trigger` returns its run id.
        let watched = Set(SampleOrders.all.map(\.id))
        let finished = Mutex<[String: String]>([:])
        let allDone = AsyncStream<Void>.makeStream()
        let orders = SampleOrders.all
        let listener = engine.addEventListener { events in
            for e in events {
                guard watched.contains(e.foreignID) else { continue }
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
        workers?.stop()
        await service.stop()
        out.line(timedOut ? "Done (with orders still running)." : "Done.")
        if timedOut { throw ExitCode(1) }
    }
}

/// The two example worker processes of `demo --external-workers`: started with the simulation's
/// rates and latencies (the WORKFLOWD_* variables), their output prefixed line by line, stopped
/// with SIGTERM (each finishes the task in hand and unworks).
final class ExampleWorkers: Sendable {
    let payment: Process
    let shipping: Process

    /// The folder of the examples: the option, else clients/python/examples under the current
    /// folder, else under the checkout the executable was built in (.build/<config>/workflowd).
    static func directory(_ option: String?) throws -> String {
        var candidates: [String] = []
        if let option { candidates.append(option) }
        candidates.append(FileManager.default.currentDirectoryPath + "/clients/python/examples")
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        for _ in 0..<4 {
            candidates.append(dir.path + "/clients/python/examples")
            dir = dir.deletingLastPathComponent()
        }
        for c in candidates where FileManager.default.fileExists(atPath: c + "/payment_service.py") { return c }
        throw SettingsError(
            message: "--external-workers: payment_service.py not found in \(option ?? "clients/python/examples") (run from the repository, or give --workers-dir)")
    }

    init(directory: String, socket: String, env: [String: String], out: Output) throws {
        func rate(_ key: String, _ fallback: String) -> String { env[key].flatMap { $0.isEmpty ? nil : $0 } ?? fallback }
        var common = ["--socket", socket, "--max-in-flight", "8"]
        if let seed = env["WORKFLOWD_RANDOM_SEED"], !seed.isEmpty { common += ["--seed", seed] }
        payment = try Self.start(
            directory + "/payment_service.py",
            common + [
                "--decline-rate", rate("WORKFLOWD_PAYMENT_DECLINE_RATE", "0.10"),
                "--latency-ms", rate("WORKFLOWD_PAYMENT_LATENCY_MS", "50"),
            ], prefix: "[payment] ", out: out)
        do {
            shipping = try Self.start(
                directory + "/shipping_service.py",
                common + [
                    "--failure-rate", rate("WORKFLOWD_FULFILLMENT_FAILURE_RATE", "0.05"),
                    "--latency-ms", rate("WORKFLOWD_FULFILLMENT_LATENCY_MS", "50"),
                ], prefix: "[shipping] ", out: out)
        } catch {
            payment.terminate()
            throw error
        }
    }

    private static func start(_ script: String, _ arguments: [String], prefix: String, out: Output) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-u", script] + arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        let handle = pipe.fileHandleForReading
        Thread.detachNewThread {
            var pending = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let nl = pending.firstIndex(of: 0x0A) {
                    out.line("   " + prefix + String(decoding: pending[pending.startIndex..<nl], as: UTF8.self))
                    pending.removeSubrange(pending.startIndex...nl)
                }
            }
        }
        do {
            try Self.runWithSignalsUnblocked(p)
        } catch {
            throw SettingsError(message: "--external-workers: cannot start python3 \(script): \(error.localizedDescription)")
        }
        return p
    }

    /// Starts `p` from a thread of its own whose signal mask is empty. A child inherits the mask
    /// of the thread that starts it, and Swift's task threads block every signal: started from
    /// one, a worker could never be told to stop with SIGTERM.
    private static func runWithSignalsUnblocked(_ p: Process) throws {
        final class Outcome: @unchecked Sendable {  // written by the starting thread before `done` is signalled
            var error: (any Error)?
            let done = DispatchSemaphore(value: 0)
        }
        let outcome = Outcome()
        nonisolated(unsafe) let process = p
        Thread.detachNewThread {
            var all = sigset_t()
            sigfillset(&all)
            pthread_sigmask(SIG_UNBLOCK, &all, nil)
            do { try process.run() } catch { outcome.error = error }
            outcome.done.signal()
        }
        outcome.done.wait()
        if let error = outcome.error { throw error }
    }

    /// Returns once both workers are connected (so the first orders wait for nobody).
    func waitUntilWorking(_ engine: WorkflowEngine) async throws {
        for _ in 0..<200 {
            let stats = try await engine.externalStats()
            if stats.count == 2, stats.allSatisfy({ $0.workers >= 1 }) { return }
            if !payment.isRunning || !shipping.isRunning {
                throw SettingsError(message: "--external-workers: a worker process exited at start (its output is above)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw SettingsError(message: "--external-workers: the worker processes did not connect within 10 s")
    }

    func stop() {
        for p in [payment, shipping] where p.isRunning { p.terminate() }
        for p in [payment, shipping] { p.waitUntilExit() }
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

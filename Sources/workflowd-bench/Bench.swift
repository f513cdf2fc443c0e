import ArgumentParser
import Foundation
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

@main
struct WorkflowdBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workflowd-bench",
        abstract: "Measure workflowd end to end against MariaDB's own ceiling (see docs/benchmarks.md).")

    @Option(help: "MariaDB DSN (no database needed; fresh databases are created and dropped). Default: WORKFLOWD_TEST_DSN, else a private MariaDB in /tmp/wfbench-<uid>.")
    var dsn: String?

    @Option(help: "The workflowd binary (default: the one next to this binary).")
    var workflowd: String?

    @Option(help: "Orders per zero-latency scenario and for the ceiling (default 4000; --quick 300).")
    var orders: Int?

    @Option(help: "Concurrent orders per scenario, comma separated; the largest is 'saturation'.")
    var concurrency: String = "1,20,200"

    @Option(help: "Most client connections (one thread each) for the order scenarios; with fewer connections than concurrent orders, each connection pipelines several submit/await pairs.")
    var maxConnections: Int = 200

    @Option(help: "The server's --pool-max-open; the ceiling uses min(concurrency, this) connections.")
    var poolMaxOpen: Int = 25

    @Option(help: "Also measure a batched ceiling: this many orders' transitions per transaction (0 = skip).")
    var ceilingBatch: Int = 16

    @Option(help: "Seconds per ping measurement (default 5; --quick 1).")
    var pingSeconds: Double?

    @Option(help: "Subscribers in the fan-out scenario.")
    var subscribers: Int = 100

    @Option(help: "Orders submitted during fan-out (default 400; --quick 60), paced at --fanout-rate per second.")
    var fanoutOrders: Int?

    @Option(help: "Orders per second submitted during the fan-out measurement.")
    var fanoutRate: Double = 100

    @Option(help: "Write the results as JSON here.")
    var json: String?

    @Flag(help: "Short run for CI smoke (under a minute).")
    var quick = false

    @Option(help: "Simulated gateway latencies in ms, comma separated (0 = none; 50 = the seed's gateways).")
    var gatewayLatencies: String = "0,50"

    @Option(help: "Which measurements to run, comma separated: idle, ping, orders, external, ceiling, fanout.")
    var scenarios: String = "idle,ping,orders,external,ceiling,fanout"

    @Option(help: "Seconds of the idle measurement (default 20; --quick 5).")
    var idleSeconds: Double?

    mutating func run() async throws {
        let concurrencies = concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            .filter { $0 > 0 }
        guard !concurrencies.isEmpty else { throw ValidationError("--concurrency needs at least one positive number") }
        let orders = self.orders ?? (quick ? 300 : 4000)
        let pingSeconds = self.pingSeconds ?? (quick ? 1 : 5)
        let fanoutOrders = self.fanoutOrders ?? (quick ? 60 : 400)
        let binary = workflowd ?? Self.defaultWorkflowd()
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ValidationError("no workflowd at \(binary); build it with `swift build -c release --scratch-path .build-bench --product workflowd` or pass --workflowd")
        }
        let runTag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3)
            .joined(separator: " ") ?? "?"
        progress("workflowd: \(binary)")
        progress("cores: \(ProcessInfo.processInfo.activeProcessorCount), load average before the run: \(load)")

        let dbServer = try BenchDatabaseServer.open(dsn: dsn)
        defer { dbServer.close() }
        let report = Report(quick: quick, loadBefore: load, binary: binary)
        report.poolMaxOpen = poolMaxOpen

        let selected = Set(scenarios.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        // (0) idle: a server with nothing to do, measured after it has settled.
        if selected.contains("idle") { try await withServer(dbServer, binary: binary, tag: "idle", gatewayMs: 0) { server, _ in
            let seconds = idleSeconds ?? (quick ? 5 : 20)
            progress("idle: no runs, no clients, \(seconds) s after a 2 s settle")
            try await Task.sleep(for: .seconds(2))
            let before = ProcSample.read(pid: server.pid)
            let statusBefore = await dbServer.globalStatus()
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            let after = ProcSample.read(pid: server.pid)
            let statusAfter = await dbServer.globalStatus()
            let cpu = (after?.cpuSeconds ?? .nan) - (before?.cpuSeconds ?? .nan)
            let statements = Double((statusAfter["Questions"] ?? 0) - (statusBefore["Questions"] ?? 0)) / seconds
            report.idleCPUPercent = cpu / seconds * 100
            report.idleStatementsPerSecond = statements
            progress(String(format: "  %.2f %% of a core, %.1f statements/s%@", cpu / seconds * 100, statements, dbServer.started == nil ? " (shared server: includes other clients)" : ""))
        } }
        // (a) ping
        if selected.contains("ping") { try await withServer(dbServer, binary: binary, tag: "ping", gatewayMs: 0) { server, _ in
            progress("ping: pipelined on 1 connection, 200 in flight, \(pingSeconds) s")
            let (pipe, replies) = try pingPipelined(socket: server.socketPath, window: 200, seconds: pingSeconds)
            progress(String(format: "  %.0f pings/s (%d replies)", pipe, replies))
            progress("ping: request/reply on 16 connections, \(pingSeconds) s")
            let (rr, samples) = try pingRequestReply(socket: server.socketPath, connections: 16, seconds: pingSeconds)
            let p = Percentiles(samples)
            progress(String(format: "  %.0f pings/s, round trip p50 %.0f µs p99 %.0f µs", rr, p.p50, p.p99))
            report.ping = PingResult(
                pipelinedPerSecond: pipe, pipelinedReplies: replies, requestReplyPerSecond: rr, requestReplyConnections: 16,
                requestReplyP50us: p.p50, requestReplyP99us: p.p99)
        } }

        // (b) + (e) orders
        let gatewayLatencies = self.gatewayLatencies.split(separator: ",").compactMap { Int($0) }
        for gw in selected.contains("orders") ? gatewayLatencies : [] {
            for c in concurrencies {
                // One at a time is latency, not throughput: fewer orders do.
                let n = c == 1 ? min(orders, quick ? 100 : 500) : gw == 0 ? orders : min(orders, max(c * 5, min(orders / 2, c * 15)))
                let label = "orders gw=\(gw)ms c=\(c)"
                try await withServer(dbServer, binary: binary, tag: "o\(gw)c\(c)", gatewayMs: gw) { server, db in
                    report.orders.append(
                        try await measureOrders(
                            server, db, dbServer, label: label, total: n, concurrency: c, gatewayMs: gw, runTag: runTag))
                }
            }
        }

        // (b') external steps: the bench's workers do payment and fulfilment over the socket.
        for c in selected.contains("external") ? concurrencies.filter({ $0 > 1 }) : [] {
            let label = "external c=\(c)"
            try await withServer(
                dbServer, binary: binary, tag: "x\(c)", gatewayMs: 0,
                extraEnv: ["WORKFLOWD_EXTERNAL_STEPS": "OrderValidated,PaymentProcessed"]
            ) { server, db in
                let workers = try BenchWorkers(socket: server.socketPath, maxInFlight: max(16, c))
                var result = try await measureOrders(
                    server, db, dbServer, label: label, total: orders, concurrency: c, gatewayMs: 0, runTag: runTag)
                workers.stop()
                let dispatch = Percentiles(workers.dispatchMs.withLock { $0 })
                let hop = Percentiles(workers.hopMs.withLock { $0 })
                let e = workers.errors.withLock { $0 }
                result.taskDispatchMs = dispatch
                result.taskHopMs = hop
                result.errors += e.count
                result.firstError = result.firstError ?? e.first
                progress(
                    String(
                        format: "  task dispatch (complete's reply → next task) p50 %.2f ms p99 %.2f ms over %d tasks; hop (complete sent → next task) p50 %.2f ms p99 %.2f ms; worker errors %d",
                        dispatch.p50, dispatch.p99, dispatch.count, hop.p50, hop.p99, e.count))
                report.external.append(result)
            }
        }

        // (c) ceiling
        let ceilingConnections = Array(Set(concurrencies.map { min($0, poolMaxOpen) })).sorted()
        let ceilingRuns = ceilingConnections.flatMap { c in ([1] + (ceilingBatch > 1 ? [ceilingBatch] : [])).map { (c, $0) } }
        for (conns, batch) in selected.contains("ceiling") ? ceilingRuns : [] {
            let db = try await dbServer.createDatabase(tag: "ceil")
            do {
                progress(
                    "ceiling: \(orders) orders straight to MariaDB on \(conns) connections + 1 relay, "
                        + (batch == 1 ? "one transaction per transition" : "\(batch) orders per transaction"))
                let warm = try await Ceiling.run(database: db, prefix: "w", orders: min(200, max(orders / 10, conns)), connections: conns, batch: batch)
                _ = warm
                let statusBefore = await dbServer.globalStatus()
                let dbCPUBefore = dbServer.privatePid.flatMap { ProcSample.read(pid: $0) }
                var r = try await Ceiling.run(database: db, prefix: "m", orders: orders, connections: conns, batch: batch)
                let dbCPUAfter = dbServer.privatePid.flatMap { ProcSample.read(pid: $0) }
                let statusAfter = await dbServer.globalStatus()
                r.db = DBCost(
                    before: statusBefore, after: statusAfter,
                    cpuSeconds: dbCPUAfter.flatMap { a in dbCPUBefore.map { a.cpuSeconds - $0.cpuSeconds } },
                    orders: orders, shared: dbServer.started == nil)
                progress(
                    String(
                        format: "  %.0f orders/s (%.0f transactions/s, %d events in %d relay batches)", r.ordersPerSecond,
                        r.transactionsPerSecond, r.events, r.relayBatches))
                if let d = r.db {
                    progress(
                        String(
                            format: "  MariaDB per order: %.1f statements, %.1f commits, %.1f InnoDB fsyncs, %.2f temp tables (%.2f on disk), CPU %@ ms", d.statementsPerOrder,
                            d.commitsPerOrder, d.logFsyncsPerOrder, d.tmpTablesPerOrder, d.diskTmpTablesPerOrder, d.cpuMsPerOrder.map { String(format: "%.2f", $0) } ?? "?"))
                }
                report.ceilings.append(r)
            } catch {
                await db.drop()
                throw error
            }
            await db.drop()
        }

        // (d) fan-out
        if selected.contains("fanout") { try await withServer(dbServer, binary: binary, tag: "fan", gatewayMs: 0) { server, _ in
            progress("fan-out baseline: 1 subscriber, \(fanoutOrders / 2) orders at \(fanoutRate)/s")
            let base = try runFanout(
                socket: server.socketPath, prefix: "g\(runTag)", subscribers: 1, orders: fanoutOrders / 2,
                rate: fanoutRate, threads: 1)
            progress(
                String(
                    format: "  at→delivery p50 %.1f ms p99 %.1f ms; frames %d, missing %d", base.atToDeliveryMs.p50,
                    base.atToDeliveryMs.p99, base.framesReceived, base.missing))
            report.fanoutBaseline = base
            progress("fan-out: \(subscribers) subscribers, \(fanoutOrders) orders at \(fanoutRate)/s")
            let cpuBefore = ProcSample.read(pid: server.pid)
            let r = try runFanout(
                socket: server.socketPath, prefix: "f\(runTag)", subscribers: subscribers, orders: fanoutOrders,
                rate: fanoutRate, threads: 2)
            progress(
                String(
                    format: "  at→delivery p50 %.1f ms p99 %.1f ms; fan-out spread p99 %.1f ms; frames %d, missing %d",
                    r.atToDeliveryMs.p50, r.atToDeliveryMs.p99, r.spreadMs.p99, r.framesReceived, r.missing))
            report.fanout = r
            let s = ProcSample.read(pid: server.pid)
            report.fanoutServerRSSMB = s?.hwmMB
            if let s, let b = cpuBefore {
                report.fanoutServerCPUus = (s.cpuSeconds - b.cpuSeconds) * 1e6 / Double(max(1, r.framesReceived))
                progress(String(format: "  server CPU %.1f µs per delivered frame (incl. the orders themselves)", report.fanoutServerCPUus!))
            }
        } }

        let loadAfter = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3)
            .joined(separator: " ") ?? "?"
        report.loadAfter = loadAfter
        print(report.table())
        if let json {
            try report.json().write(toFile: json, atomically: true, encoding: .utf8)
            progress("wrote \(json)")
        }
    }

    /// Warm-up, then `total` orders in a closed loop of `concurrency`: orders/s, latency, the
    /// server's and MariaDB's cost per order.
    func measureOrders(
        _ server: ServerChild, _ db: BenchDatabase, _ dbServer: BenchDatabaseServer, label: String, total n: Int,
        concurrency c: Int, gatewayMs gw: Int, runTag: String
    ) async throws -> OrdersResult {
        let conns = min(c, maxConnections)
        let warm = min(max(c, 50), max(n / 10, c))
        progress("\(label): warm-up \(warm) orders")
        let w = try runOrders(
            socket: server.socketPath, prefix: "w\(runTag)", total: warm, concurrency: c, connections: conns)
        if w.errors > 0 { progress("  warm-up errors: \(w.errors) first: \(w.firstError ?? "")") }
        let statusBefore = await dbServer.globalStatus()
        let dbCPUBefore = dbServer.privatePid.flatMap { ProcSample.read(pid: $0) }
        let before = ProcSample.read(pid: server.pid)
        let benchBefore = selfCPUSeconds()
        let routesBefore = WriteRoutes.read(socket: server.socketPath)
        progress("\(label): \(n) orders, \(c) in flight on \(conns) connections")
        let r = try runOrders(
            socket: server.socketPath, prefix: "b\(runTag)", total: n, concurrency: c, connections: conns)
        let after = ProcSample.read(pid: server.pid)
        let benchCPU = selfCPUSeconds() - benchBefore
        let dbCPUAfter = dbServer.privatePid.flatMap { ProcSample.read(pid: $0) }
        let statusAfter = await dbServer.globalStatus()
        let result = OrdersResult(
            label: label, concurrency: c, connections: conns, gatewayLatencyMs: gw, completed: r.completed,
            failed: r.failed, errors: r.errors, seconds: r.seconds,
            ordersPerSecond: Double(r.completed + r.failed) / r.seconds, latencyMs: Percentiles(r.latenciesMs),
            serverCPUSeconds: (after?.cpuSeconds ?? .nan) - (before?.cpuSeconds ?? .nan),
            serverPeakRSSMB: after?.hwmMB ?? .nan, serverRSSStartMB: before?.rssMB ?? .nan,
            benchCPUSeconds: benchCPU, firstError: r.firstError, serverDied: !server.process.isRunning,
            db: DBCost(
                before: statusBefore, after: statusAfter,
                cpuSeconds: dbCPUAfter.flatMap { a in dbCPUBefore.map { a.cpuSeconds - $0.cpuSeconds } },
                orders: r.completed + r.failed, shared: dbServer.started == nil))
        progress(
            String(
                format: "  %.0f orders/s, p50 %.1f ms, p99 %.1f ms, server CPU %.2f ms/order, peak RSS %.0f MB, errors %d",
                result.ordersPerSecond, result.latencyMs.p50, result.latencyMs.p99, result.cpuMsPerOrder,
                result.serverPeakRSSMB, result.errors))
        if let d = result.db {
            progress(
                String(
                    format: "  MariaDB per order: %.1f statements, %.1f prepared executes, %.1f commits, %.1f InnoDB fsyncs, %.2f temp tables (%.2f on disk), CPU %@ ms%@",
                    d.statementsPerOrder, d.preparedExecutesPerOrder, d.commitsPerOrder, d.logFsyncsPerOrder,
                    d.tmpTablesPerOrder, d.diskTmpTablesPerOrder,
                    d.cpuMsPerOrder.map { String(format: "%.2f", $0) } ?? "?", d.shared ? " (shared server: includes other clients)" : ""))
        }
        if let b = routesBefore, let a = WriteRoutes.read(socket: server.socketPath) {
            progress("  " + a.since(b).summary(orders: r.completed + r.failed))
        }
        if let e = r.firstError { progress("  first error: \(e.prefix(300))") }
        let events = try await db.scalar("SELECT COUNT(*) FROM workflow_events")
        progress("  event log rows: \(events)")
        return result
    }

    /// A fresh database and a fresh `workflowd serve` for one scenario; both removed afterwards.
    func withServer(
        _ dbServer: BenchDatabaseServer, binary: String, tag: String, gatewayMs: Int, extraEnv: [String: String] = [:],
        _ body: (ServerChild, BenchDatabase) async throws -> Void
    ) async throws {
        let db = try await dbServer.createDatabase(tag: tag)
        var server: ServerChild?
        do {
            let env = [
                "WORKFLOWD_PAYMENT_LATENCY_MS": "\(gatewayMs)", "WORKFLOWD_FULFILLMENT_LATENCY_MS": "\(gatewayMs)",
                "WORKFLOWD_PAYMENT_DECLINE_RATE": "0", "WORKFLOWD_FULFILLMENT_FAILURE_RATE": "0",
            ].merging(extraEnv) { $1 }
            server = try ServerChild(
                binary: binary, database: db, env: env, extraArguments: ["--pool-max-open", "\(poolMaxOpen)"])
            try server!.waitReady()
            try await body(server!, db)
        } catch {
            server?.stop()
            await db.drop()
            throw error
        }
        server?.stop()
        await db.drop()
    }

    static func defaultWorkflowd() -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("workflowd").path
    }
}

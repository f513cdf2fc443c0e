import Foundation
import Logging
import Synchronization
import Testing
import WorkflowEngine
import WorkflowMariaDB
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// The three nodes of the test cluster (`scripts/galera.sh start`, then `eval "$(scripts/galera.sh
/// env)"`): WORKFLOWD_GALERA_DSNS holds one DSN per node, space separated.
enum Cluster {
    static let dsns: [String] =
        (ProcessInfo.processInfo.environment["WORKFLOWD_GALERA_DSNS"] ?? "").split(separator: " ").map(String.init)

    static var available: Bool { dsns.count == 3 }

    static func node(_ i: Int) throws -> MariaDBConfiguration { try MariaDBConfiguration(dsn: dsns[i]) }

    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// `scripts/galera.sh ARGS…` (the same cluster folder: WORKFLOWD_GALERA_DIR or its default).
    static func script(_ arguments: String...) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [repositoryRoot.appendingPathComponent("scripts/galera.sh").path] + arguments
        p.standardInput = FileHandle.nullDevice
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw TestError("galera.sh \(arguments.joined(separator: " ")) exited \(p.terminationStatus): \(text.suffix(2000))")
        }
    }

    /// One database for a test, created through node 1 (DDL replicates), migrated unless `migrate`
    /// is false; `on(i)` names it on node i.
    struct Database: Sendable {
        let name: String
        let first: IntegrationDatabase

        static func create(migrate: Bool = true) async throws -> Database {
            if migrate {
                let db = try await IntegrationDatabase.create(on: try Cluster.node(0))
                return Database(name: db.configuration.database, first: db)
            }
            var c = try Cluster.node(0)
            let name = "wfgal_\(UInt64.random(in: 0...UInt64.max) % 1_000_000_000_000)"
            c.database = ""
            let admin = MariaDBPool(configuration: c, pool: PoolConfiguration(maxOpen: 1, maxIdle: 0, maxLifetimeSeconds: 60), logger: IntegrationDatabase.logger)
            defer { admin.shutdown() }
            try await admin.withConnection { try $0.executeText("CREATE DATABASE \(name)") }
            c.database = name
            return Database(name: name, first: IntegrationDatabase(configuration: c))
        }

        func on(_ i: Int) throws -> IntegrationDatabase {
            var c = try Cluster.node(i)
            c.database = name
            return IntegrationDatabase(configuration: c)
        }

        func drop() async { await first.drop() }
    }
}

final class Flag: Sendable {
    let value = Atomic<Bool>(false)
}

/// workflowd on a real 3-node Galera cluster: one instance per node, load spread over the three
/// sockets, a node killed under load, instances starting at once, read-your-writes across nodes,
/// two relays on different nodes.
@Suite("Galera", .serialized, .enabled(if: Cluster.available, "needs WORKFLOWD_GALERA_DSNS (scripts/galera.sh)"), .timeLimit(.minutes(10)))
struct GaleraTests {
    static let env = ["WORKFLOWD_LEASE_TTL_MS": "10000"]

    /// A counter of an instance's `metrics`, summed over its samples that match `labels`.
    static func metric(_ server: ServerProcess, _ name: String, labels: String = "") throws -> Double {
        let reply = try server.client().call(#"{"op":"metrics"}"#)
        guard let text = reply["metrics"]?.stringValue else { throw TestError("metrics: \(reply)") }
        var total = 0.0
        for line in text.split(separator: "\n") where line.hasPrefix(name) && !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, parts[0] == name || parts[0].hasPrefix(name + "{") else { continue }
            if !labels.isEmpty && !parts[0].contains(labels) { continue }
            total += Double(parts[1]) ?? 0
        }
        return total
    }

    /// Submits `n` orders per server, pipelined, and returns the foreign ids acknowledged.
    static func submit(_ servers: [ServerProcess], perServer n: Int, prefix: String) async throws -> [String] {
        try await withThrowingTaskGroup(of: [String].self) { group in
            for (k, s) in servers.enumerated() {
                let client = Unchecked(try s.client())
                group.addTask {
                    try await onThread {
                        let c = client.value
                        for i in 0..<n { try c.send(#"{"op":"submit","order":\#(orderJSON("\(prefix)-\(k)-\(i)"))}"#) }
                        var ok: [String] = []
                        for _ in 0..<n {
                            guard let line = try? c.readLine(timeout: 120), let r = try? JSONParser.parse(line) else { break }
                            if r["ok"] == .bool(true), let id = r["foreign_id"]?.stringValue { ok.append(id) }
                        }
                        return ok
                    }
                }
            }
            var all: [String] = []
            for try await ids in group { all += ids }
            return all
        }
    }

    @Test func threeInstancesStartAtOnceOnAFreshDatabase() async throws {
        let db = try await Cluster.Database.create(migrate: false)
        // Started together, each on its own node: each migrates (GET_LOCK is node-local), the
        // DDL is ordered by the cluster, and all three come up on the same schema.
        let servers = try (0..<3).map { try ServerProcess(database: try db.on($0), env: Self.env) }
        for s in servers { try await s.waitReady(timeout: 120) }
        for i in 0..<3 {
            let node = try db.on(i)
            #expect(try await node.int("SELECT MAX(version) FROM workflow_schema_version") == SchemaMigrator.currentVersion)
            #expect(
                try await node.int("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()") == 9)
            #expect(
                try await node.int(
                    "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND index_name = 'uniq_unfinished_run'") == 3)
        }
        for s in servers {
            #expect(s.log.contains("MariaDB is a node of a Galera cluster"), "\(s.log.suffix(1500))")
            #expect(try await s.terminate() == 0)
        }
        await db.drop()
    }

    @Test func loadSpreadOverThreeNodes() async throws {
        let db = try await Cluster.Database.create()
        let servers = try await withThrowingTaskGroup(of: ServerProcess.self) { group in
            for i in 0..<3 { group.addTask { try await ServerProcess.start(database: try db.on(i), env: Self.env) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let perServer = 200
        let acknowledged = try await Self.submit(servers, perServer: perServer, prefix: "load")
        #expect(acknowledged.count == 3 * perServer)
        let node1 = try db.on(0)
        do {
            try await node1.waitFor("SELECT COUNT(*) FROM workflow_records WHERE run_state <> 5", equals: 0, timeout: 180)
        } catch {
            Issue.record("\(try await node1.stuckRunsReport())")
            throw error
        }
        try await node1.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0, timeout: 60)
        #expect(try await node1.int("SELECT COUNT(*) FROM workflow_records WHERE status = 5") == 3 * perServer)
        #expect(try await node1.int("SELECT COUNT(*) FROM workflow_events") == 3 * perServer * 5)
        try await node1.expectEveryTransitionOnceAndLogGapFree()
        var certification = 0.0
        for s in servers {
            #expect(try Self.metric(s, "workflowd_db_transaction_retries_exhausted_total") == 0)
            certification += try Self.metric(s, "workflowd_db_transaction_retries_total", labels: #"cause="certification""#)
        }
        print("GALERA-LOAD: \(3 * perServer) orders on three nodes, \(Int(certification)) certification retries (\(String(format: "%.2f", certification * 100 / Double(3 * perServer))) per 100 orders)")
        for s in servers { #expect(try await s.terminate() == 0) }
        await db.drop()
    }

    @Test func submitOnOneNodeThenGetOnAnother() async throws {
        let db = try await Cluster.Database.create()
        let a = try await ServerProcess.start(database: try db.on(1), env: Self.env)
        let b = try await ServerProcess.start(database: try db.on(2), env: Self.env)
        let (found, tries) = try await onThread { () -> (Int, Int) in
            let ca = try a.client()
            let cb = try b.client()
            var found = 0
            for i in 0..<300 {
                let r = try ca.call(#"{"op":"submit","order":\#(orderJSON("ryw-\(i)"))}"#)
                guard let run = r["run_id"]?.stringValue else { throw TestError("submit: \(r)") }
                let g = try cb.call(#"{"op":"get","run_id":"\#(run)"}"#)
                if g["ok"] == .bool(true) { found += 1 }
            }
            return (found, 300)
        }
        print("GALERA-READ-YOUR-WRITES: \(found) of \(tries) found at once on the other node")
        #expect(found == tries)
        #expect(try await a.terminate() == 0)
        #expect(try await b.terminate() == 0)
        await db.drop()
    }

    /// SIGKILL of node 3's mariadbd under load: the instances on nodes 1 and 2 finish every run,
    /// the node rejoins, its instance resumes, and the nodes' tables end up identical.
    @Test func aNodeKilledUnderLoadRejoins() async throws {
        let db = try await Cluster.Database.create()
        let servers = try await withThrowingTaskGroup(of: (Int, ServerProcess).self) { group in
            for i in 0..<3 { group.addTask { (i, try await ServerProcess.start(database: try db.on(i), env: Self.env)) } }
            return try await group.reduce(into: []) { $0.append($1) }.sorted { $0.0 < $1.0 }.map(\.1)
        }
        let loading = Task { try await Self.submit(Array(servers.prefix(2)), perServer: 300, prefix: "kill") }
        try await Task.sleep(for: .milliseconds(300))
        try Cluster.script("kill", "3")
        let killedAt = Date()
        let acknowledged = try await loading.value
        print("GALERA-KILL: node 3 killed; \(acknowledged.count) of 600 submits on nodes 1 and 2 acknowledged")
        #expect(acknowledged.count == 600)
        let node1 = try db.on(0)
        do {
            try await node1.waitFor(
                "SELECT COUNT(*) FROM workflow_records WHERE run_state <> 5", equals: 0, timeout: 240)
        } catch {
            Issue.record("\(try await node1.stuckRunsReport()); node 1's log: \(servers[0].log.suffix(2000))")
            throw error
        }
        print("GALERA-KILL: every run finished \(Int(Date().timeIntervalSince(killedAt))) s after the kill")
        try Cluster.script("restart", "3")
        // Node 3's instance survived its database's death; it resumes once the node is back.
        let third = servers[2]
        #expect(third.process.isRunning, "\(third.log.suffix(2000))")
        let resumed = try await onThread { () -> JSON in
            let c = try third.client()
            let deadline = Date().addingTimeInterval(120)
            while true {
                let r = try c.call(#"{"op":"submit","order":\#(orderJSON("after-rejoin"))}"#, timeout: 60)
                if r["ok"] == .bool(true) || Date() > deadline { return r }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
        #expect(resumed["ok"] == .bool(true), "\(resumed)")
        try await node1.waitFor("SELECT COUNT(*) FROM workflow_records WHERE run_state <> 5", equals: 0, timeout: 120)
        try await node1.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0, timeout: 60)
        try await node1.expectEveryTransitionOnceAndLogGapFree()
        // The three nodes hold the same rows.
        let tables = ["workflow_records", "workflow_events", "workflow_timeouts", "workflow_cursors", "workflow_outbox"]
        var sums: [[String?]] = []
        let settle = Date().addingTimeInterval(60)
        repeat {
            sums = []
            for i in 0..<3 {
                sums.append(try await db.on(i).query("CHECKSUM TABLE \(tables.joined(separator: ", "))").map { $0.last ?? nil })
            }
            if sums[0] == sums[1] && sums[1] == sums[2] { break }
            try await Task.sleep(for: .milliseconds(500))
        } while Date() < settle
        #expect(sums[0] == sums[1] && sums[1] == sums[2], "checksums differ: \(sums)")
        for s in servers {
            #expect(try Self.metric(s, "workflowd_db_transaction_retries_exhausted_total") == 0)
            #expect(try await s.terminate() == 0)
        }
        await db.drop()
    }

    /// Two relays at once on different nodes (as when a lease expired under a stalled holder):
    /// certification and the `seq` key let one of each conflicting pair commit, so no `seq` is
    /// assigned twice, none is skipped, and every change is logged once.
    @Test func twoRelaysOnDifferentNodesNeverAssignOneSeqTwice() async throws {
        let db = try await Cluster.Database.create()
        let logger = IntegrationDatabase.logger
        let pools = try (0..<2).map {
            MariaDBPool(configuration: try db.on($0).configuration, pool: PoolConfiguration(maxOpen: 4, maxIdle: 4, maxLifetimeSeconds: 300), logger: logger)
        }
        let stores = pools.map { MariaDBWorkflowStore(pool: $0, logger: logger) }
        let perNode = 400
        let writersDone = Flag()
        let moved = try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask {
                try await withThrowingTaskGroup(of: Void.self) { writers in
                    for (k, store) in stores.enumerated() {
                        writers.addTask {
                            for i in 0..<perNode {
                                let now = Timestamp(milliseconds: 1_764_050_400_000 + Int64(i))
                                let run = Run(
                                    workflow: "order-processor", foreignID: "relay-\(k)-\(i)", runID: UUID().uuidString.lowercased(),
                                    runState: .initiated, status: 1, version: 1, object: Array("{}".utf8), reason: nil,
                                    createdAt: now, updatedAt: now)
                                _ = try await store.create(NewRun(run: run))
                            }
                        }
                    }
                    try await writers.waitForAll()
                }
                writersDone.value.store(true, ordering: .sequentiallyConsistent)
                return 0
            }
            for store in stores {
                group.addTask {
                    var n = 0
                    while true {
                        let done = writersDone.value.load(ordering: .sequentiallyConsistent)
                        do {
                            let events = try await store.relay(limit: 50)
                            n += events.count
                            if events.isEmpty {
                                if done { return n }
                                try await Task.sleep(for: .milliseconds(2))
                            }
                        } catch {
                            // A conflict that used every attempt: the other relay won this round.
                        }
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        let node1 = try db.on(0)
        // Whatever the relays left (if they stopped early) is moved now, then everything is checked.
        while try await stores[0].relay(limit: 500).count > 0 {}
        #expect(try await node1.int("SELECT COUNT(*) FROM workflow_outbox") == 0)
        #expect(try await node1.int("SELECT COUNT(*) FROM workflow_events") == 2 * perNode)
        #expect(try await node1.int("SELECT COUNT(DISTINCT run_id, version) FROM workflow_events") == 2 * perNode)
        try await node1.expectEveryTransitionOnceAndLogGapFree()
        let conflicts = pools.map { $0.retries.certification.load(ordering: .relaxed) + $0.retries.deadlock.load(ordering: .relaxed) }
        print("GALERA-RELAYS: two relays moved \(moved) of \(2 * perNode) events; conflicts retried per node: \(conflicts)")
        for p in pools { p.shutdown() }
        await db.drop()
    }
}

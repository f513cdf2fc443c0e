import Foundation
import Testing
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// A slow subscriber under 5,000 events with the server's memory watched, 500 connections, and
/// the SIGTERM drain — all on a real process.
extension ProtocolE2E {
    @Suite("Protocol load", .timeLimit(.minutes(3)))
    struct Load {
        @Test func slowSubscriberGetsEveryEventWhileMemoryStaysBounded() async throws {
            try await withServer { server, db in
                let w = try server.client()
                // Warm-up, so the baseline includes pools, caches and the engine at work.
                for i in 0..<20 { try submitOrder(w, "warm-\(i)") }
                for i in 0..<20 { try awaitFinished(w, "warm-\(i)") }
                try await db.waitFor("SELECT COUNT(*) FROM workflow_events", equals: 100)

                // Two subscribers that stop reading: everything, and completions only.
                let all = try server.client()
                let subAll = try all.call(#"{"op":"subscribe","id":"all"}"#)
                let completed = try server.client()
                let subDone = try completed.call(#"{"op":"subscribe","id":"done","status":["OrderCompleted"]}"#)
                let head = try #require(subAll["head"]?.int64Value)
                #expect(head == 100 && subDone["head"]?.int64Value == 100, "\(subAll) \(subDone)")
                try await Task.sleep(for: .milliseconds(300))
                let baseline = try #require(server.rssKiB)
                let sampler = RSSSampler(server: server)
                defer { sampler.stop() }

                // 1,000 orders (5,000 events) from four pipelining writers.
                let t0 = Date()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for k in 0..<4 {
                        let client = Unchecked(try server.client())
                        group.addTask {
                            try await onThread {
                                let c = client.value
                                for batch in 0..<5 {
                                    for j in 0..<50 { try c.send(#"{"op":"submit","order":\#(orderJSON("SL-\(k)-\(batch * 50 + j)"))}"#) }
                                    for _ in 0..<50 {
                                        let r = try c.readJSON(timeout: 60)
                                        guard r["created"] == .bool(true) else { throw TestError("submit: \(r)") }
                                    }
                                }
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                try await db.waitFor("SELECT COUNT(*) FROM workflow_events", equals: 5100, timeout: 150)
                let produced = Date().timeIntervalSince(t0)
                let peakWhileBlocked = sampler.peak

                // Now read everything.
                var seqs: [Int64] = []
                var bytes = 0
                var versions: [String: [Int64]] = [:]
                let subID = subAll["sub"] ?? .null
                while seqs.count < 5000 {
                    guard let line = try all.readLine(timeout: 30) else { throw TestError("subscriber closed after \(seqs.count) events") }
                    bytes += line.utf8.count + 1
                    let f = parsed(line)
                    #expect(f["sub"] == subID, "\(line)")
                    guard let e = f["event"], let seq = e["seq"]?.int64Value, let run = e["run_id"]?.stringValue else {
                        Issue.record("not a frame: \(line)")
                        continue
                    }
                    seqs.append(seq)
                    versions[run, default: []].append(e["version"]?.int64Value ?? 0)
                }
                #expect(seqs == Array((head + 1)...(head + 5000)), "gap, repeat or disorder: first mismatch at \(zip(seqs, (head + 1)...).first { $0 != $1 } as Any)")
                #expect(versions.count == 1000 && versions.values.allSatisfy { $0 == [1, 2, 3, 4, 5] })
                #expect(try all.callLine(#"{"op":"ping","id":"end"}"#) == #"{"id":"end","ok":true}"#, "nothing after the 5,000th event")

                var done: [Int64] = []
                while done.count < 1000 {
                    let f = try completed.readJSON(timeout: 30)
                    guard let seq = f["event"]?["seq"]?.int64Value else { throw TestError("not a frame: \(f)") }
                    #expect(f["event"]?["status"] == .string("OrderCompleted"))
                    done.append(seq)
                }
                #expect(done == done.sorted() && Set(done).count == 1000 && done.allSatisfy { $0 > head })
                #expect(try completed.callLine(#"{"op":"ping"}"#) == #"{"ok":true}"#)
                sampler.stop()

                // Bound: the server's own buffers are ≤ 1 MiB per connection (write high-water) plus
                // 4,096 recent events (~2 MB) plus 8 pooled MariaDB connections; 64 MB over the
                // baseline leaves room for allocator slack of 1,000 orders' work while still failing
                // a server that keeps a copy of every unsent event per subscriber over a longer run.
                let peak = sampler.peak
                print(
                    "PROTOCOL-RSS: baseline \(baseline / 1024) MB (\(baseline) KiB), peak while the subscribers were blocked \(peakWhileBlocked / 1024) MB, "
                        + "peak overall \(peak / 1024) MB (\(peak) KiB), growth \((peak - baseline) / 1024) MB; \(sampler.count) samples; "
                        + "5,000 events (\(bytes) bytes of frames) produced in \(String(format: "%.1f", produced)) s")
                #expect(peak < baseline + 64 * 1024, "RSS baseline \(baseline) KiB, peak \(peak) KiB")
            }
        }

        /// Orders close to the 1 MiB line limit, several at once: their batches stay below
        /// MariaDB's packet limit, and every one completes with its object intact.
        @Test func bigOrdersInBatchesAllComplete() async throws {
            try await withServer { server, db in
                let name = String(repeating: "N", count: 900_000)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    // Kept small (8 orders, ~36 MB of row writes in all): the other suites share
                    // the database and the machine, and the fuzzer waits for its replies.
                    for k in 0..<2 {
                        let client = Unchecked(try server.client())
                        group.addTask {
                            try await onThread {
                                let c = client.value
                                // Pipelined: each connection's four submits reach the server together.
                                for j in 0..<4 { try c.send(#"{"op":"submit","order":\#(orderJSON("BIG-\(k)-\(j)", name: name))}"#) }
                                for _ in 0..<4 {
                                    let r = try c.readJSON(timeout: 60)
                                    guard r["created"] == .bool(true) else { throw TestError("submit: \(r)") }
                                }
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                try await db.waitFor("SELECT COUNT(*) FROM workflow_records WHERE run_state = 5", equals: 8, timeout: 120)
                #expect(try await db.int("SELECT COUNT(*) FROM workflow_records WHERE status = 5") == 8)
                #expect(try await db.int("SELECT MIN(LENGTH(object)) FROM workflow_records") > 900_000)
                #expect(!server.log.contains(" error "), "\(server.log.suffix(2_000))")
            }
        }

        /// With one or two database connections, writes that would wait for the log writer's
        /// turn on a database thread take it before their transaction instead, so the turn's
        /// holder (the relay moving the other instance's outbox rows, a per-run fallback) always
        /// finds a thread: nothing deadlocks. Two instances, so the relay has rows to move.
        @Test(arguments: ["1", "2"])
        func aTinyPoolStillFinishesEverything(maxOpen: String) async throws {
            signal(SIGPIPE, SIG_IGN)
            let db = try await IntegrationDatabase.create()
            let args = ["--pool-max-open", maxOpen]
            let a = try await ServerProcess.start(database: db, arguments: args)
            let b = try await ServerProcess.start(database: db, arguments: args)
            let clients = try (0..<4).map { i in try (i % 2 == 0 ? a : b).client() }
            for i in 0..<80 { try clients[i % 4].send(#"{"op":"submit","order":\#(orderJSON("tiny-\(i)"))}"#) }
            for i in 0..<80 {
                let r = try clients[i % 4].readJSON(timeout: 60)
                #expect(r["ok"] == .bool(true), "\(r)")
            }
            // Slow on a busy machine (two connections serve everything), but it finishes.
            try await db.waitFor("SELECT COUNT(*) FROM workflow_records WHERE status = 5", equals: 80, timeout: 120)
            // The relay keeps up (a deadlocked one would leave the other instance's rows here
            // until its lease ran out, 10 s).
            try await db.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0, timeout: 5)
            try await db.expectEveryTransitionOnceAndLogGapFree()
            #expect(try await a.terminate() == 0)
            #expect(try await b.terminate() == 0)
            await db.drop()
        }

        @Test func fiveHundredConcurrentConnections() async throws {
            try await withServer { server, _ in
                let t0 = Date()
                // 10 threads open 50 connections each, sending as they go (every 10th a submit).
                let groups: [[Unchecked<LineClient>]] = try await withThrowingTaskGroup(of: [Unchecked<LineClient>].self) { group in
                    for t in 0..<10 {
                        let path = server.socketPath
                        group.addTask {
                            try await onThread {
                                var mine: [Unchecked<LineClient>] = []
                                for i in 0..<50 {
                                    let n = t * 50 + i
                                    let c = try LineClient(path: path)
                                    if n % 10 == 0 {
                                        try c.send(#"{"op":"submit","id":\#(n),"order":\#(orderJSON("CC-\(n)"))}"#)
                                    } else {
                                        try c.send(#"{"op":"ping","id":\#(n)}"#)
                                    }
                                    mine.append(Unchecked(c))
                                }
                                return mine
                            }
                        }
                    }
                    var all: [[Unchecked<LineClient>]] = []
                    for try await g in group { all.append(g) }
                    return all
                }
                let clients = groups.flatMap { $0 }
                #expect(clients.count == 500)
                let answered = try await withThrowingTaskGroup(of: Int.self) { group in
                    for g in groups {
                        group.addTask {
                            try await onThread {
                                var ok = 0
                                for c in g {
                                    let r = try c.value.readJSON(timeout: 60)
                                    if r["ok"] == .bool(true), let id = r["id"]?.int64Value {
                                        if id % 10 == 0 { ok += r["created"] == .bool(true) ? 1 : 0 } else { ok += r.description == #"{"id":\#(id),"ok":true}"# ? 1 : 0 }
                                    } else {
                                        Issue.record("\(r)")
                                    }
                                }
                                return ok
                            }
                        }
                    }
                    return try await group.reduce(0, +)
                }
                #expect(answered == 500)
                print("PROTOCOL-CONNECTIONS: 500 connections opened and answered in \(Date().timeIntervalSince(t0)) s")
                let probe = try server.client()
                let stats = try probe.call(#"{"op":"stats"}"#)
                #expect(stats["connections"] == .number("501"), "\(stats)")
                // Every connection is still usable.
                for c in clients.prefix(500) where Int.random(in: 0..<5) == 0 {
                    #expect(try c.value.callLine(#"{"op":"ping"}"#) == #"{"ok":true}"#)
                }
                for n in stride(from: 0, to: 500, by: 10) { try awaitFinished(probe, "CC-\(n)") }
                withExtendedLifetime(clients) {}
                #expect(server.process.isRunning)
            }
        }

        /// SIGTERM with an await in flight and a subscriber connected: the await is answered,
        /// sessions are closed, the process exits 0 and removes its socket file.
        @Test func sigtermDrain() async throws {
            signal(SIGPIPE, SIG_IGN)
            let db = try await IntegrationDatabase.create()
            let server = try await ServerProcess.start(database: db, env: slowPaymentEnvironment.merging(crashReportEnvironment) { $1 })
            do {
                let w = try server.client()
                try submitOrder(w, "D-1")
                let a = try server.client()
                try a.send(#"{"op":"await","id":"inflight","foreign_id":"D-1","status":["OrderCompleted"],"timeout_ms":60000}"#)
                #expect(try a.callLine(#"{"op":"ping","id":"p"}"#) == #"{"id":"p","ok":true}"#)
                let s = try server.client()
                let sub = try s.call(#"{"op":"subscribe","from":"earliest"}"#)
                #expect(sub["ok"] == .bool(true))
                let idle = try server.client()
                #expect(try idle.callLine(#"{"op":"ping"}"#) == #"{"ok":true}"#)

                let t0 = Date()
                Glibc.kill(server.pid, SIGTERM)
                let aLines = try a.readUntilClosed(timeout: 20)
                #expect(aLines.count == 1, "\(aLines)")
                let reply = parsed(aLines.first)
                if reply["ok"] == .bool(true) {
                    #expect(reply["id"] == .string("inflight") && reply["run"]?["status"] == .string("OrderCompleted"), "\(reply)")
                } else {
                    expectError(reply, code: "DRAINING", retryable: true, id: .string("inflight"))
                }
                let sLines = try s.readUntilClosed(timeout: 20)
                #expect(sLines.allSatisfy { parsed($0)["sub"] == sub["sub"] }, "\(sLines)")
                #expect(try idle.readUntilClosed(timeout: 20) == [])
                let status = try await server.terminate(timeout: 30)
                let took = Date().timeIntervalSince(t0)
                print("PROTOCOL-DRAIN: await answered \(reply["error"]?["code"] ?? reply["ok"] ?? .null), exit \(status) after \(took) s")
                #expect(status == 0, "\(server.log.suffix(2000))")
                #expect(took < 15, "drain timeout is 10 s")
                #expect(!FileManager.default.fileExists(atPath: server.socketPath), "socket file left behind")
                #expect(throws: (any Error).self) { try server.client() }
            } catch {
                server.kill()
                await db.drop()
                throw error
            }
            await db.drop()
        }
    }
}

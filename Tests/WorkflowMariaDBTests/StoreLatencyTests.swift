import Foundation
import Testing
import WorkflowEngine
@testable import WorkflowMariaDB

/// Measures conditional update + outbox commits on one connection, and checks every update
/// landed with its outbox row. Timings are printed (grep "STORE-LATENCY:"), never asserted.
@Suite("Store latency", .timeLimit(.minutes(2)))
struct StoreLatencyTests {
    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
    }

    static func report(_ label: String, commits: [Double], updatesPerCommit: Int) {
        let sorted = commits.sorted()
        let total = commits.reduce(0, +)
        let line = String(
            format: "STORE-LATENCY: %@: %d commits x %d updates, p50 %.2f ms, p99 %.2f ms per commit, %.0f updates/s",
            label, commits.count, updatesPerCommit, percentile(sorted, 0.5) * 1000, percentile(sorted, 0.99) * 1000,
            Double(commits.count * updatesPerCommit) / total)
        print(line)
    }

    @Test func conditionalUpdatesWithOutboxOnOneConnection() async throws {
        try await TestDatabase.with(pool: PoolConfiguration(maxOpen: 1, maxIdle: 1, maxLifetimeSeconds: 600)) { store, pool async throws in
            let runCount = 200
            var runs: [Run] = []
            for i in 0..<runCount {
                let r = Fixtures.run(foreignID: "order-\(i)", at: Fixtures.t0.adding(milliseconds: Int64(i)))
                #expect(try await store.create(NewRun(run: r)) == .created(r))
                runs.append(r)
            }
            try await pool.transaction { c in try c.execute("DELETE FROM workflow_outbox") }
            let clock = ContinuousClock()
            func seconds(_ d: Duration) -> Double {
                Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
            }

            // 2,000 single updates, one transaction each.
            var single: [Double] = []
            var notApplied = 0
            for k in 0..<2000 {
                let i = k % runCount
                let u = Fixtures.next(runs[i], status: runs[i].status % 8 + 1)
                var outcome: [UpdateOutcome] = []
                let d = try await clock.measure { outcome = try await store.update([u]) }
                if outcome != [.applied] { notApplied += 1 }
                runs[i] = u.run
                single.append(seconds(d))
            }
            #expect(notApplied == 0, "\(notApplied) single updates did not apply")
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_outbox") == 2000)

            // 500 transactions of 20 updates each (20 different runs per batch).
            var batched: [Double] = []
            var batchNotApplied = 0
            for b in 0..<500 {
                let indices = (0..<20).map { (b * 20 + $0) % runCount }
                let updates = indices.map { Fixtures.next(runs[$0], status: runs[$0].status % 8 + 1) }
                var outcome: [UpdateOutcome] = []
                let d = try await clock.measure { outcome = try await store.update(updates) }
                batchNotApplied += outcome.filter { $0 != .applied }.count
                #expect(outcome.count == 20)
                for (i, u) in zip(indices, updates) { runs[i] = u.run }
                batched.append(seconds(d))
            }
            #expect(batchNotApplied == 0, "\(batchNotApplied) batched updates did not apply")

            // Every run is at the version we expect, and the outbox holds exactly one row per
            // update: versions 2...final for each run, once each.
            let stored = try await pool.withConnection { c in
                try c.query("SELECT run_id, version, status FROM workflow_records").map {
                    (try $0.string(0), try $0.int(1), try $0.int(2))
                }
            }
            let expected = Dictionary(uniqueKeysWithValues: runs.map { ($0.runID, ($0.version, Int64($0.status))) })
            #expect(stored.count == runCount)
            for (id, version, status) in stored {
                #expect(expected[id]?.0 == version && expected[id]?.1 == status, "run \(id) at version \(version)")
            }
            let outbox = try await pool.withConnection { c in
                try c.query("SELECT run_id, COUNT(*), COUNT(DISTINCT version), MIN(version), MAX(version) FROM workflow_outbox GROUP BY run_id")
                    .map { (try $0.string(0), try $0.int(1), try $0.int(2), try $0.int(3), try $0.int(4)) }
            }
            #expect(outbox.count == runCount)
            for (id, count, distinct, minV, maxV) in outbox {
                let final = expected[id]?.0 ?? -1
                #expect(count == final - 1 && distinct == count && minV == 2 && maxV == final, "outbox of run \(id)")
            }
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_outbox") == 2000 + 500 * 20)
            #expect(pool.statistics.openConnections == 1)

            Self.report("single conditional update + outbox row", commits: single, updatesPerCommit: 1)
            Self.report("batch of 20 conditional updates + outbox rows", commits: batched, updatesPerCommit: 20)
        }
    }
}

import Testing
import WorkflowEngine

@testable import WorkflowMariaDB

/// `update` of several runs: their record updates are multi-row statements (64 runs each), and a
/// run that has moved on sends the whole batch down the run-by-run path, so every caller still
/// gets its own outcome.
@Suite("MariaDB batched update")
struct BatchUpdateTests {
    /// Each run of the batch gets its own values, including NULL and non-NULL reason and meta.
    static func moved(_ r: Run, _ i: Int) -> RunUpdate {
        var n = r
        n.status = 2 + i % 3
        n.runState = i % 4 == 0 ? .paused : .running
        n.version = r.version + 1
        n.object = Array(#"{"i":\#(i),"note":"ünïcode \#(i)"}"#.utf8)
        n.reason = i % 2 == 0 ? "reason \(i)" : nil
        n.meta = i % 5 == 0 ? Array("meta-\(i)".utf8) : nil
        n.updatedAt = r.updatedAt.adding(milliseconds: Int64(1 + i))
        return RunUpdate(run: n, expectedVersion: r.version)
    }

    @Test func manyRunsAreUpdatedEachWithItsOwnValues() async throws {
        try await TestDatabase.with { store, _ async throws in
            // 70 runs: a statement of 64 and one of 6 (padded to 8).
            let runs = (0..<70).map { Fixtures.run(foreignID: "bu-\($0)") }
            _ = try await store.create(batch: runs.map { NewRun(run: $0) })
            let updates = runs.enumerated().map { Self.moved($0.element, $0.offset) }
            #expect(MariaDBWorkflowStore.fitsOneStatement(updates))
            #expect(try await store.update(updates) == Array(repeating: .applied, count: 70))
            for u in updates {
                #expect(try await store.lookup(runID: u.run.runID) == u.run)
            }
            // One outbox row per create and per update, each with its own run's new status.
            let outbox = try await store.outboxBatch(limit: 1_000)
            #expect(outbox.count == 140)
            let latest = Dictionary(outbox.map { ($0.data.runID, $0.data) }, uniquingKeysWith: { a, b in a.version > b.version ? a : b })
            for u in updates {
                #expect(latest[u.run.runID]?.status == u.run.status)
                #expect(latest[u.run.runID]?.version == 2)
            }
        }
    }

    @Test func aRunThatMovedOnIsRefusedAloneAndTheOthersApply() async throws {
        try await TestDatabase.with { store, _ async throws in
            let runs = (0..<5).map { Fixtures.run(foreignID: "bc-\($0)") }
            _ = try await store.create(batch: runs.map { NewRun(run: $0) })
            // Run 2 moves on first (another writer).
            #expect(try await store.update([Fixtures.next(runs[2], status: 3)]) == [.applied])
            let updates = runs.enumerated().map { Self.moved($0.element, $0.offset) }
            #expect(try await store.update(updates) == [.applied, .applied, .conflict, .applied, .applied])
            for (i, u) in updates.enumerated() {
                let stored = try await store.lookup(runID: u.run.runID)
                if i == 2 {
                    #expect(stored?.status == 3, "the other writer's change stays")
                } else {
                    #expect(stored == u.run)
                }
            }
            // 5 creates, the other writer's change, and 4 of the batch.
            #expect(try await store.outboxBatch(limit: 100).count == 10)
        }
    }

    @Test func timeoutsAreCancelledAndCreatedForEveryRunOfTheBatch() async throws {
        try await TestDatabase.with { store, _ async throws in
            let deadline = NewTimeout(kind: .timeout, status: 1, expireAt: Fixtures.t0.adding(milliseconds: 30_000))
            let runs = (0..<3).map { Fixtures.run(foreignID: "bt-\($0)") }
            _ = try await store.create(batch: runs.map { NewRun(run: $0, timeouts: [deadline]) })
            let next = NewTimeout(kind: .timeout, status: 2, expireAt: Fixtures.t0.adding(milliseconds: 60_000))
            let updates = runs.map { r -> RunUpdate in
                var u = Fixtures.next(r, status: 2)
                u.newTimeouts = [next]
                return u
            }
            #expect(MariaDBWorkflowStore.fitsOneStatement(updates))
            #expect(try await store.update(updates) == [.applied, .applied, .applied])
            for r in runs {
                let timeouts = try await store.timeouts(runID: r.runID)
                #expect(timeouts.count == 2)
                #expect(timeouts.first { $0.status == 1 }?.cancelled == true)
                #expect(timeouts.first { $0.status == 2 }.map { !$0.cancelled && !$0.completed } == true)
            }
        }
    }
}

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

/// Multi-row statements stay far below MariaDB's `max_allowed_packet` (16 MiB by default): a batch
/// of big runs is split by bytes as well as by count.
@Suite("MariaDB batched statements, big runs")
struct BatchBigRunsTests {
    @Test func piecesAreBoundedByRunsAndBytes() {
        let mib = 1 << 20
        typealias S = MariaDBWorkflowStore
        #expect(S.pieces(Array(repeating: 300, count: 13), powersOfTwo: true) == [0..<8, 8..<12, 12..<13])
        #expect(S.pieces(Array(repeating: 300, count: 130), powersOfTwo: false) == [0..<64, 64..<128, 128..<130])
        // 1 MiB runs: three fit in 4 MiB (with their 256 bytes of overhead, four do not).
        let big = Array(repeating: mib + 256, count: 7)
        #expect(S.pieces(big, powersOfTwo: false) == [0..<3, 3..<6, 6..<7])
        #expect(S.pieces(big, powersOfTwo: true) == [0..<2, 2..<4, 4..<6, 6..<7])
        // A run larger than the limit goes alone.
        #expect(S.pieces([100, 5 * mib, 100], powersOfTwo: false) == [0..<1, 1..<2, 2..<3])
        #expect(S.pieces([], powersOfTwo: true).isEmpty)
    }

    /// 20 runs of 1 MiB objects (20 MiB in all): created and updated in one call each, every run
    /// with its own object, in statements the server accepts.
    @Test func twentyOneMiBRunsAreCreatedAndUpdatedInBatches() async throws {
        try await TestDatabase.with { store, pool async throws in
            let mib = 1 << 20
            let runs = (0..<20).map { i in
                Fixtures.run(foreignID: "big-\(i)", object: "{\"pad\":\"" + String(repeating: Character(UnicodeScalar(UInt8(65 + i))), count: mib) + "\"}")
            }
            let created = try await store.create(batch: runs.map { NewRun(run: $0) })
            #expect(created == runs.map { .created($0) })
            let updates = runs.map { r -> RunUpdate in
                var u = Fixtures.next(r, status: 2)
                u.run.object = Array(r.object.reversed())
                return u
            }
            // The multi-row path itself, so that a statement over the packet limit would fail here.
            let outcomes = try await pool.transaction { c in try MariaDBWorkflowStore.applyInOneStatement(c, updates, nil) }
            #expect(outcomes == Array(repeating: .applied, count: 20))
            for u in updates {
                #expect(try await store.lookup(runID: u.run.runID)?.object == u.run.object)
            }
        }
    }
}

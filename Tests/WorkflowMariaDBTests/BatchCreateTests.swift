import Testing
import WorkflowEngine

@testable import WorkflowMariaDB

/// `create(batch:)`: many new runs in one transaction, with the unique key on unfinished runs
/// deciding per run.
@Suite("MariaDB batched create")
struct BatchCreateTests {
    @Test func aBatchCreatesEachRunOnceAndReturnsUnfinishedNamesakes() async throws {
        try await TestDatabase.with { store, _ async throws in
            // An unfinished run for "dup-old" exists before the batch.
            let old = Fixtures.run(foreignID: "dup-old")
            #expect(try await store.create(NewRun(run: old)) == .created(old))

            let a = Fixtures.run(foreignID: "a")
            let b1 = Fixtures.run(foreignID: "b")
            let b2 = Fixtures.run(foreignID: "b")  // same foreign id inside the batch
            let again = Fixtures.run(foreignID: "dup-old")
            let deadline = NewTimeout(kind: .timeout, status: 1, expireAt: Timestamp(milliseconds: Fixtures.t0.milliseconds + 30_000))
            let results = try await store.create(batch: [
                NewRun(run: a, timeouts: [deadline]), NewRun(run: b1), NewRun(run: b2), NewRun(run: again),
            ])
            #expect(results == [.created(a), .created(b1), .existing(b1), .existing(old)])

            // One outbox row per created run, none for the namesakes.
            let outbox = try await store.outboxBatch(limit: 100)
            #expect(Set(outbox.map(\.data.runID)) == [old.runID, a.runID, b1.runID])
            #expect(outbox.count == 3)
            // The timeout of the created run, with its run.
            let timeouts = try await store.timeouts(runID: a.runID)
            #expect(timeouts.map(\.expireAt) == [deadline.expireAt])
            #expect(try await store.timeouts(runID: b2.runID).isEmpty)
            #expect(try await store.lookup(runID: b2.runID) == nil)
            #expect(try await store.lookup(runID: again.runID) == nil)
        }
    }

    @Test func aBatchThatFailsLeavesNothingBehind() async throws {
        try await TestDatabase.with { store, _ async throws in
            let good = Fixtures.run(foreignID: "good")
            // A foreign id longer than the column: the database refuses that row (strict mode).
            let bad = Fixtures.run(foreignID: String(repeating: "x", count: 300))
            await #expect(throws: (any Error).self) { try await store.create(batch: [NewRun(run: good), NewRun(run: bad)]) }
            #expect(try await store.lookup(runID: good.runID) == nil, "the good run was rolled back with the batch")
            #expect(try await store.outboxBatch(limit: 10).isEmpty)
            // On its own the good run goes in.
            #expect(try await store.create(batch: [NewRun(run: good)]) == [.created(good)])
        }
    }
}

@Suite("MariaDB batched create, multi-row")
struct BatchCreateMultiRowTests {
    /// 77 new runs (statements of 64, 8, 4 and 1 runs), one of them meeting an unfinished run
    /// in the 8-run statement: that statement falls back to one insert per run, the others stay
    /// multi-row, and every caller gets its own answer.
    @Test func manyRunsGoInTogetherAndARefusedOneIsAnsweredAlone() async throws {
        try await TestDatabase.with { store, _ async throws in
            let old = Fixtures.run(foreignID: "mr-66")
            #expect(try await store.create(NewRun(run: old)) == .created(old))
            let runs = (0..<77).map { Fixtures.run(foreignID: "mr-\($0)", object: #"{"n":\#($0)}"#) }
            let results = try await store.create(batch: runs.map { NewRun(run: $0) })
            #expect(results.count == 77)
            for (i, (run, result)) in zip(runs, results).enumerated() {
                #expect(result == (i == 66 ? .existing(old) : .created(run)), "run \(i)")
            }
            for (i, run) in runs.enumerated() where i != 66 {
                #expect(try await store.lookup(runID: run.runID) == run)
            }
            #expect(try await store.lookup(runID: runs[66].runID) == nil)
            #expect(try await store.outboxBatch(limit: 1_000).count == 77)  // old + 76 created
        }
    }
}

import Foundation
import Testing
import WorkflowEngine
@testable import WorkflowMariaDB

/// Retention in the stores: which runs go (only finished, old enough, nothing pending in the
/// outbox), what goes with them (timeouts; never outbox rows), the archive copy, and how far the
/// event log may be cut (a prefix, never the newest event, never past a consumer's cursor).
/// Each case runs on the real MariaDB and on the in-memory fake, which must agree.
@Suite("Retention store", .serialized, .timeLimit(.minutes(2)))
struct RetentionStoreTests {
    static let day: Int64 = 86_400_000

    /// Runs `body` on a fresh MariaDB database, then on an in-memory store whose clock is t0.
    static func onBothStores(_ body: (any WorkflowStore, MariaDBPool?) async throws -> Void) async throws {
        try await TestDatabase.with { store, pool in try await body(store, pool) }
        try await body(InMemoryWorkflowStore(clock: ManualClock(Fixtures.t0)), nil)
    }

    static func relayAll(_ store: any WorkflowStore) async throws {
        while try await !store.relay(limit: 100).isEmpty {}
    }

    @Test func onlyFinishedRunsOlderThanTheCutoffGoWithTheirTimeouts() async throws {
        try await Self.onBothStores { store, pool in
            let old = Fixtures.t0
            let young = Fixtures.t0.adding(milliseconds: 40 * Self.day)
            let cutoff = Fixtures.t0.adding(milliseconds: 30 * Self.day)
            func make(_ id: String, _ state: RunState, _ at: Timestamp, timeout: Bool = false) async throws -> Run {
                let run = Fixtures.run(foreignID: id, status: state.isFinished ? 5 : 2, state: state, at: at)
                let timeouts = timeout ? [NewTimeout(kind: .timeout, status: run.status, expireAt: at.adding(milliseconds: 1000))] : []
                _ = try await store.create(NewRun(run: run, timeouts: timeouts))
                return run
            }
            let completed = try await make("completed", .completed, old, timeout: true)
            let cancelled = try await make("cancelled", .cancelled, old)
            let erased = try await make("erased", .dataDeleted, old)
            let erasing = try await make("erasing", .requestedDataDeleted, old)
            let running = try await make("running", .running, old, timeout: true)
            let initiated = try await make("initiated", .initiated, old)
            let paused = try await make("paused", .paused, old)
            let recent = try await make("recent", .completed, young)
            try await Self.relayAll(store)

            #expect(try await store.prunableRuns(updatedBefore: cutoff) == 3)
            // Small batches: 2, then 1, then nothing.
            #expect(try await store.pruneRuns(updatedBefore: cutoff, archivedAt: nil, limit: 2) == 2)
            #expect(try await store.pruneRuns(updatedBefore: cutoff, archivedAt: nil, limit: 2) == 1)
            #expect(try await store.pruneRuns(updatedBefore: cutoff, archivedAt: nil, limit: 2) == 0)
            for gone in [completed, cancelled, erased] {
                #expect(try await store.lookup(runID: gone.runID) == nil, "\(gone.foreignID) was kept")
                #expect(try await store.timeouts(runID: gone.runID).isEmpty)
                #expect(try await store.latest(workflow: gone.workflow, foreignID: gone.foreignID) == nil)
            }
            for kept in [erasing, running, initiated, paused, recent] {
                #expect(try await store.lookup(runID: kept.runID) != nil, "\(kept.foreignID) was deleted")
            }
            #expect(try await store.timeouts(runID: running.runID).count == 1, "an unfinished run keeps its timeouts")
            // The events of deleted runs are the event retention's business, not this one's.
            #expect(try await store.history(runID: completed.runID).count == 1)
            if let pool {
                #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_records") == 5)
                #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_timeouts") == 1)
                #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_records_archive") == 0)
            }
        }
    }

    @Test func archivingCopiesEveryColumnInTheSameTransaction() async throws {
        try await Self.onBothStores { store, pool in
            var run = Fixtures.run(foreignID: "order-9", status: 6, state: .completed, at: Fixtures.t0)
            run.reason = "customer name is missing"
            run.meta = [1, 2, 3]
            _ = try await store.create(NewRun(run: run))
            try await Self.relayAll(store)
            let archivedAt = Fixtures.t0.adding(milliseconds: 31 * Self.day)
            #expect(try await store.pruneRuns(updatedBefore: Fixtures.t0.adding(milliseconds: 1), archivedAt: archivedAt, limit: 500) == 1)
            #expect(try await store.lookup(runID: run.runID) == nil)
            if let pool {
                let rows = try await TestDatabase.text(
                    pool,
                    """
                    SELECT workflow_name, foreign_id, run_id, run_state, status, CAST(object AS CHAR), created_at, updated_at,
                      HEX(meta), version, reason, archived_at FROM workflow_records_archive
                    """)
                #expect(
                    rows == [[
                        "order-processor", "order-9", run.runID, "5", "6", #"{"id":"x","total":1359.97}"#,
                        "2025-11-25 06:00:00.123", "2025-11-25 06:00:00.123", "010203", "1", "customer name is missing",
                        "2025-12-26 06:00:00.123",
                    ]])
                #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_records") == 0)
            } else if let memory = store as? InMemoryWorkflowStore {
                #expect(memory.archivedRuns.map(\.runID) == [run.runID])
            }
        }
    }

    /// A finished run whose change is still in the outbox is kept until the relay has logged it;
    /// retention never deletes outbox rows.
    @Test func aRunWithOutboxRowsPendingIsKeptAndTheOutboxIsNeverTouched() async throws {
        try await Self.onBothStores { store, pool in
            let run = Fixtures.run(foreignID: "order-1", status: 5, state: .completed, at: Fixtures.t0)
            _ = try await store.create(NewRun(run: run))
            let cutoff = Fixtures.t0.adding(milliseconds: 30 * Self.day)
            #expect(try await store.outboxStats().pending == 1)
            #expect(try await store.prunableRuns(updatedBefore: cutoff) == 0)
            #expect(try await store.pruneRuns(updatedBefore: cutoff, archivedAt: cutoff, limit: 500) == 0)
            #expect(try await store.lookup(runID: run.runID) != nil)
            #expect(try await store.outboxStats().pending == 1, "retention deleted an outbox row")
            // Once relayed, the run goes, and its event stays in the log.
            #expect(try await store.relay(limit: 10).count == 1)
            #expect(try await store.pruneRuns(updatedBefore: cutoff, archivedAt: nil, limit: 500) == 1)
            #expect(try await store.lookup(runID: run.runID) == nil)
            #expect(try await store.head() == 1)
            if let pool {
                #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_events") == 1)
            }
        }
    }

    static func event(_ i: Int, at: Timestamp) -> EventData {
        EventData(
            workflow: "order-processor", foreignID: "order-\(i)", runID: "run-\(i)", status: 1, runState: .initiated,
            version: 1, at: at, reason: nil)
    }

    @Test func eventsGoFromTheStartOfTheLogButNeverTheNewest() async throws {
        try await Self.onBothStores { store, pool in
            #expect(try await store.earliestSeq() == nil)
            #expect(try await store.eventPruneBound(before: Fixtures.t0).deletable == 0)
            // Events 1…10 at t0 + 1 s … t0 + 10 s.
            _ = try await store.append((1...10).map { Self.event($0, at: Fixtures.t0.adding(milliseconds: Int64($0) * 1000)) })
            let bound = try await store.eventPruneBound(before: Fixtures.t0.adding(milliseconds: 5500))
            #expect(bound == EventPruneBound(earliest: 1, keepFrom: 6, reason: .age))
            #expect(bound.deletable == 5)
            #expect(try await store.deleteEvents(below: bound.keepFrom, limit: 2) == 2)
            #expect(try await store.deleteEvents(below: bound.keepFrom, limit: 2) == 2)
            #expect(try await store.deleteEvents(below: bound.keepFrom, limit: 2) == 1)
            #expect(try await store.deleteEvents(below: bound.keepFrom, limit: 2) == 0)
            #expect(try await store.earliestSeq() == 6)
            #expect(try await store.events(after: 0, filter: EventFilter(), limit: 100).map(\.seq) == Array(6...10))

            // Everything is old: the newest event stays, so the relay numbers on after it.
            let all = try await store.eventPruneBound(before: Fixtures.t0.adding(milliseconds: 365 * Self.day))
            #expect(all == EventPruneBound(earliest: 6, keepFrom: 10, reason: .newest))
            #expect(try await store.deleteEvents(below: all.keepFrom, limit: 500) == 4)
            #expect(try await store.earliestSeq() == 10)
            #expect(try await store.head() == 10)
            _ = try await store.create(NewRun(run: Fixtures.run(foreignID: "order-11", at: Fixtures.t0)))
            #expect(try await store.relay(limit: 10).map(\.seq) == [11])
            #expect(try await store.events(after: 9, filter: EventFilter(), limit: 100).map(\.seq) == [10, 11])
            if let pool {
                #expect(try await TestDatabase.text(pool, "SELECT MIN(seq), MAX(seq), COUNT(*) FROM workflow_events") == [["10", "11", "2"]])
            }
        }
    }

    /// A consumer that has not finished events keeps them, whatever their age.
    @Test func eventsAConsumerHasNotFinishedAreKept() async throws {
        try await Self.onBothStores { store, _ in
            _ = try await store.append((1...10).map { Self.event($0, at: Fixtures.t0) })
            try await store.setCursor("consumer/order-processor/2/0of4", to: 9)
            try await store.setCursor("consumer/order-processor/1/3of4", to: 4)
            let bound = try await store.eventPruneBound(before: Fixtures.t0.adding(milliseconds: Self.day))
            #expect(bound == EventPruneBound(earliest: 1, keepFrom: 5, reason: .cursor("consumer/order-processor/1/3of4")))
            #expect(try await store.deleteEvents(below: bound.keepFrom, limit: 500) == 4)
            #expect(try await store.earliestSeq() == 5)
            // A cursor at the head does not hold anything back beyond the newest-event rule.
            try await store.setCursor("consumer/order-processor/1/3of4", to: 10)
            #expect(try await store.eventPruneBound(before: Fixtures.t0.adding(milliseconds: Self.day)).keepFrom == 10)
        }
    }
}

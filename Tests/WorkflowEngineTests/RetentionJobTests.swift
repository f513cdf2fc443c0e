import Synchronization
import Testing

@testable import WorkflowEngine

/// The leased retention job and the `GONE` answers, on the in-memory store with an injected
/// clock: time moves only when the test says so.
@Suite struct RetentionJobTests {
    static let day: Int64 = 86_400_000

    static func policy() -> RetentionPolicy {
        RetentionPolicy(
            runsOlderThanMilliseconds: 30 * day, eventsOlderThanMilliseconds: 7 * day, archive: true, batchSize: 2,
            intervalMilliseconds: 5)
    }

    static func make(
        _ flow: TestFlow, store: InMemoryWorkflowStore, clock: ManualClock, instance: String = "engine-1",
        retention: RetentionPolicy? = policy()
    ) throws -> WorkflowEngine {
        var c = testConfiguration(instance: instance)
        c.retention = retention
        // Leases outlive the test's jumps of a month, so the jumps do not also move the leases
        // (a consumer that loses its lease re-reads from its cursor, another story).
        c.leaseTTLMilliseconds = 365 * day
        return try WorkflowEngine(store: store, definitions: [flow.definition()], configuration: c, clock: clock)
    }

    static func trigger(_ engine: WorkflowEngine, _ foreignID: String) async throws -> Run {
        try await engine.trigger(workflow: TestFlow.name, foreignID: foreignID, object: Array("o".utf8)).run
    }

    @Test(.timeLimit(.minutes(1)))
    func theJobDeletesOnlyFinishedRunsOnceTheyAreOldAndKeepsTheLogUnbroken() async throws {
        let clock = ManualClock()
        let store = InMemoryWorkflowStore(clock: clock)
        let flow = TestFlow()
        let engine = try Self.make(flow, store: store, clock: clock)
        try await running(engine) {
            var done: [Run] = []
            for i in 0..<5 { done.append(try await Self.trigger(engine, "order-\(i)")) }
            let gated = try await Self.trigger(engine, "gate-1")
            try await eventually("five runs completed, one waiting at B") {
                let runs = store.allRuns
                return runs.filter { $0.runState == .completed }.count == 5
                    && runs.contains { $0.runID == gated.runID && $0.status == TestFlow.b }
            }
            // Young data: passes run and delete nothing.
            let passes = engine.retention.passes.load(ordering: .relaxed)
            try await eventually("two more passes") { engine.retention.passes.load(ordering: .relaxed) >= passes + 2 }
            #expect(store.allRuns.count == 6)
            #expect(try await store.earliestSeq() == 1)

            // 31 days later: the finished runs go (archived), the unfinished one stays; events go
            // up to what the B consumer holding the gated run has not finished.
            clock.advance(milliseconds: 31 * Self.day)
            try await eventually("the finished runs are deleted") { store.allRuns.count == 1 }
            #expect(store.allRuns.map(\.runID) == [gated.runID])
            #expect(Set(store.archivedRuns.map(\.runID)) == Set(done.map(\.runID)))
            #expect(store.archivedRuns.allSatisfy { $0.runState == .completed })
            let gatedB = try #require(try await store.history(runID: gated.runID).first { $0.status == TestFlow.b })
            try await eventually("the gated run's first event is deleted") {
                try await store.history(runID: gated.runID).map(\.version) == [2]
            }
            // More passes go no further than what the B consumer holding the run has finished.
            let passesNow = engine.retention.passes.load(ordering: .relaxed)
            try await eventually("two more passes") { engine.retention.passes.load(ordering: .relaxed) >= passesNow + 2 }
            let earliest = try #require(try await store.earliestSeq())
            #expect(earliest <= gatedB.seq, "an event a consumer has not finished was deleted")
            #expect(try await store.history(runID: gated.runID).map(\.version) == [2])
            // Its first event was old enough to go: its history says so instead of answering half.
            let partial = await #expect(throws: WorkflowError.self) { _ = try await engine.history(runID: gated.runID) }
            #expect(partial?.code == .gone && partial?.earliestSeq == earliest)

            // The gate opens, the run completes; a month later everything old is gone but the
            // newest event, and numbering goes on after it.
            flow.openGate()
            _ = try await eventually("the gated run completes") {
                try await store.lookup(runID: gated.runID)?.runState == .completed
            }
            try await eventually("its last event is logged and delivered") {
                let head = try await store.head()
                return try await store.outboxStats().pending == 0 && engine.deliveredHead == head
            }
            clock.advance(milliseconds: 31 * Self.day)
            let head = try await store.head()
            try await eventually("everything old is deleted") {
                let earliest = try await store.earliestSeq()
                return store.allRuns.isEmpty && earliest == head
            }
            #expect(try await store.head() == head)
            // Asking for what retention removed is answered GONE with the earliest seq kept.
            let gone = await #expect(throws: WorkflowError.self) {
                _ = try await engine.events(after: 0, filter: EventFilter(), limit: 10)
            }
            #expect(gone?.code == .gone && gone?.earliestSeq == head)
            #expect(gone?.message.contains("earliest seq still kept is \(head)") == true, "\(String(describing: gone))")
            #expect(try await engine.events(after: head - 1, filter: EventFilter(), limit: 10).map(\.seq) == [head])
            let metrics = try await engine.metrics()
            let deleted = try #require(metrics.first { $0.name == "workflowd_retention_deleted_total" })
            #expect(deleted.samples.first { $0.labels.first?.value == "runs" }?.value == 6)
            #expect(deleted.samples.first { $0.labels.first?.value == "events" }?.value == Double(head - 1))
            // The next event is numbered after the kept head.
            let next = try await Self.trigger(engine, "order-after")
            try await eventually("the next run's event follows the old head") {
                try await store.history(runID: next.runID).first?.seq == head + 1
            }
        }
    }

    /// Two instances with retention share one store: only the lease holder prunes. An instance
    /// without retention never takes the lease.
    @Test(.timeLimit(.minutes(1)))
    func oneInstanceHoldsTheRetentionLease() async throws {
        let clock = ManualClock()
        let store = InMemoryWorkflowStore(clock: clock)
        let flow = TestFlow()
        let a = try Self.make(flow, store: store, clock: clock, instance: "a")
        let b = try Self.make(flow, store: store, clock: clock, instance: "b")
        let c = try Self.make(flow, store: store, clock: clock, instance: "c", retention: nil)
        try await running([a, b, c]) {
            try await eventually("one instance holds the retention lease") {
                [a, b].filter { $0.heldLeases.contains("retention") }.count == 1
            }
            try await eventually("its job ran") {
                a.retention.passes.load(ordering: .relaxed) + b.retention.passes.load(ordering: .relaxed) >= 2
            }
            let holder = a.heldLeases.contains("retention") ? a : b
            let other = holder === a ? b : a
            #expect(other.retention.passes.load(ordering: .relaxed) == 0, "the instance without the lease pruned")
            #expect(!c.heldLeases.contains("retention"))
            #expect(try await store.lease("retention")?.holder == holder.instanceID)
        }
        #expect(c.retention.passes.load(ordering: .relaxed) == 0)
    }

    /// A run whose first events were deleted answers `history` with GONE rather than part of it.
    @Test(.timeLimit(.minutes(1)))
    func historyOfARunThatLostItsStartIsGone() async throws {
        let clock = ManualClock()
        let store = InMemoryWorkflowStore(clock: clock)
        let flow = TestFlow()
        let engine = try Self.make(flow, store: store, clock: clock, retention: nil)
        let (run, head) = try await running(engine) {
            let run = try await Self.trigger(engine, "order-1")
            _ = try await eventually("completed") { try await store.lookup(runID: run.runID)?.runState == .completed }
            try await eventually("logged") { try await store.history(runID: run.runID).count == 3 }
            return (run, try await store.head())
        }
        #expect(try await engine.history(runID: run.runID).map(\.version) == [1, 2, 3])
        #expect(try await store.deleteEvents(below: 2, limit: 10) == 1)
        do {
            _ = try await engine.history(runID: run.runID)
            Issue.record("a partial history was returned")
        } catch let e as WorkflowError {
            #expect(e.code == .gone && e.earliestSeq == 2, "\(e)")
        }
        #expect(try await engine.events(after: 1, filter: EventFilter(), limit: 10).count == Int(head) - 1)
        #expect(try await engine.earliestSeq() == 2)
    }
}

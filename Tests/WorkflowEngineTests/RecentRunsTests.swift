import Testing

@testable import WorkflowEngine

@Suite("Recent runs")
struct RecentRunsTests {
    let clock = ManualClock()

    static func run(_ id: String, version: Int64, object: String = "") -> Run {
        Run(
            workflow: "w", foreignID: "f-\(id)", runID: id, runState: .running, status: 1, version: version,
            object: Array(object.utf8), createdAt: Timestamp(milliseconds: 0), updatedAt: Timestamp(milliseconds: version))
    }

    @Test func answersOnlyForTheExactVersionItWasGiven() {
        let recent = RecentRuns(capacity: 8)
        recent.put([Self.run("a", version: 2, object: "two")])
        #expect(recent.run("a", version: 2)?.object == Array("two".utf8))
        #expect(recent.run("a", version: 1) == nil)
        #expect(recent.run("a", version: 3) == nil)
        #expect(recent.run("b", version: 2) == nil)
        // A newer version replaces the older one; an older one never replaces a newer one.
        recent.put([Self.run("a", version: 3, object: "three")])
        recent.put([Self.run("a", version: 2, object: "two")])
        #expect(recent.run("a", version: 2) == nil)
        #expect(recent.run("a", version: 3)?.object == Array("three".utf8))
        #expect(recent.count == 1)
    }

    @Test func forgetsTheOldestRunsBeyondItsCapacity() {
        let recent = RecentRuns(capacity: 3)
        recent.put((1...5).map { Self.run("r\($0)", version: 1) })
        #expect(recent.count == 3)
        #expect(recent.run("r1", version: 1) == nil)
        #expect(recent.run("r2", version: 1) == nil)
        #expect(recent.run("r5", version: 1) != nil)
        let off = RecentRuns(capacity: 0)
        off.put([Self.run("a", version: 1)])
        #expect(off.run("a", version: 1) == nil && off.count == 0)
    }

    @Test func staysWithinItsByteBudgetAndKeepsNoHugeRun() {
        // 256 bytes per run besides the object: runs of 744-byte objects cost 1,000 bytes each,
        // exactly the largest a 16,000-byte budget keeps.
        let recent = RecentRuns(capacity: 100, maxBytes: 16_000)
        recent.put((1...10).map { Self.run("r\($0)", version: 1, object: String(repeating: "x", count: 744)) })
        #expect(recent.usage == (10, 10_000))
        // Seven more (17,000 bytes): the oldest goes so that the total fits again.
        recent.put((11...17).map { Self.run("r\($0)", version: 1, object: String(repeating: "x", count: 744)) })
        #expect(recent.usage.bytes <= 16_000)
        #expect(recent.usage.runs == 16)
        #expect(recent.run("r1", version: 1) == nil && recent.run("r2", version: 1) != nil)
        // A run larger than a sixteenth of the budget is not kept, and a kept run that grows
        // that large is forgotten.
        recent.put([Self.run("huge", version: 1, object: String(repeating: "x", count: 2_000))])
        #expect(recent.run("huge", version: 1) == nil)
        recent.put([Self.run("r16", version: 2, object: String(repeating: "x", count: 2_000))])
        #expect(recent.run("r16", version: 2) == nil && recent.run("r16", version: 1) == nil)
        #expect(recent.usage.bytes == recent.usage.runs * 1_000)
    }

    /// Every run this engine created and moved was committed by it, so its consumers never read
    /// a run back; with the cache off each batch of events costs a read.
    @Test(.timeLimit(.minutes(1)), arguments: [4_096, 0])
    func consumersTakeRunsThisInstanceCommittedFromMemory(capacity: Int) async throws {
        let flow = TestFlow()
        let store = InMemoryWorkflowStore(clock: clock)
        var config = testConfiguration()
        config.recentRunsCapacity = capacity
        let engine = try WorkflowEngine(store: store, definitions: [flow.definition()], configuration: config, clock: clock)
        try await running(engine) {
            for i in 0..<20 { _ = try await engine.trigger(workflow: TestFlow.name, foreignID: "rr-\(i)", object: []) }
            try await eventually("all finished") { store.allRuns.count == 20 && store.allRuns.allSatisfy { $0.runState.isFinished } }
            // Each step saw the object its predecessor wrote.
            #expect(store.allRuns.allSatisfy { $0.object == Array("+a+b".utf8) && $0.version == 3 })
            let metrics = try await engine.metrics()
            let fromMemory = metrics.first { $0.name == "workflowd_runs_from_memory_total" }?.samples[0].value ?? 0
            let atOnce = metrics.first { $0.name == "workflowd_steps_started_at_once_total" }?.samples[0].value ?? 0
            // Two steps per run, each started from the commit before it (at once) or, when its
            // event came first, from memory. (The relay may, rarely, log an event in the instant
            // between a commit and its run being remembered; that step then reads the run.)
            if capacity > 0 {
                #expect(atOnce + fromMemory >= 36, "\(atOnce) at once + \(fromMemory) from memory of 40")
                #expect(store.roundTrips.lookups <= 4)
            } else {
                // Without the cache, an event that comes before the step started at once (the
                // log writer delivers it right after the commit) costs a read.
                #expect(fromMemory == 0)
                #expect(store.roundTrips.lookups > 0)
            }
            // The await path: the engine answers for the versions it committed, nothing else.
            for run in store.allRuns {
                #expect((engine.recentRun(id: run.runID, version: run.version) == run) == (capacity > 0))
                #expect(engine.recentRun(id: run.runID, version: run.version - 1) == nil)
            }
        }
    }

    /// delete_data replaces the cached copy with the erased run: no copy of the personal data
    /// stays in this cache.
    @Test(.timeLimit(.minutes(1)))
    func deleteDataLeavesOnlyTheErasedRunInMemory() async throws {
        let flow = TestFlow()
        let store = InMemoryWorkflowStore(clock: clock)
        let engine = try WorkflowEngine(store: store, definitions: [flow.definition()], configuration: testConfiguration(), clock: clock)
        try await running(engine) {
            let run = try await engine.trigger(workflow: TestFlow.name, foreignID: "pii-1", object: Array("secret".utf8)).run
            try await eventually("finished") { store.allRuns.first?.runState == .completed }
            let done = try #require(store.allRuns.first)
            #expect(engine.recentRun(id: run.runID, version: done.version)?.object == Array("secret+a+b".utf8))
            let erased = try await engine.control(.deleteData, runID: run.runID, reason: "GDPR request")
            #expect(erased.runState == .dataDeleted)
            #expect(engine.recentRun(id: run.runID, version: done.version) == nil)
            #expect(engine.recentRun(id: run.runID, version: erased.version)?.object == Array("{}".utf8))
        }
    }
}

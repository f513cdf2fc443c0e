import Synchronization
import Testing

@testable import WorkflowEngine

@Suite struct WorkflowEngineTests {
    let clock = ManualClock()

    func make(
        _ flow: TestFlow, store: InMemoryWorkflowStore? = nil, timeoutOnB: Int64? = nil, instance: String = "engine-1",
        random: Double = 0.5
    ) throws -> (WorkflowEngine, InMemoryWorkflowStore) {
        let store = store ?? InMemoryWorkflowStore(clock: clock)
        let engine = try WorkflowEngine(
            store: store, definitions: [flow.definition(timeoutOnB: timeoutOnB)],
            configuration: testConfiguration(instance: instance, random: random), clock: clock)
        return (engine, store)
    }

    func trigger(_ engine: WorkflowEngine, _ foreignID: String) async throws -> Run {
        try await engine.trigger(workflow: TestFlow.name, foreignID: foreignID, object: Array("o".utf8)).run
    }

    func waitFor(
        _ engine: WorkflowEngine, _ runID: String, sourceLocation: SourceLocation = #_sourceLocation,
        _ condition: @escaping (Run) -> Bool
    ) async throws -> Run {
        try await eventually("run \(runID)", sourceLocation: sourceLocation) {
            guard let r = try await engine.run(id: runID) else { return false }
            return condition(r)
        }
        return try await engine.run(id: runID)!
    }

    /// Waits until the relay has moved everything and every consumer is idle at the head.
    func settled(_ engine: WorkflowEngine, _ store: InMemoryWorkflowStore) async throws {
        try await eventually("engine settled") {
            guard try await store.outboxStats().pending == 0 else { return false }
            let head = try await store.head()
            return engine.deliveredHead == head
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func triggerIsIdempotentWhileTheRunIsUnfinished() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow)
        let first = try await engine.trigger(workflow: TestFlow.name, foreignID: "order-1", object: [1])
        let again = try await engine.trigger(workflow: TestFlow.name, foreignID: "order-1", object: [2])
        guard case .created(let run) = first, case .existing(let same) = again else {
            Issue.record("expected created then existing, got \(first), \(again)")
            return
        }
        #expect(same.runID == run.runID && same.object == [1])
        #expect(run.version == 1 && run.runState == .initiated && run.status == TestFlow.a)
        #expect(try await store.outboxStats().pending == 1, "only the first trigger wrote an outbox row")
        try await running(engine) {
            _ = try await waitFor(engine, run.runID) { $0.runState == .completed }
            let next = try await engine.trigger(workflow: TestFlow.name, foreignID: "order-1", object: [3])
            guard case .created(let newer) = next else {
                Issue.record("a finished run lets a new one start")
                return
            }
            #expect(newer.runID != run.runID)
        }
        await #expect(throws: WorkflowError(.draining, "the engine is stopping", retryable: true)) {
            _ = try await engine.trigger(workflow: TestFlow.name, foreignID: "order-2", object: [])
        }
        await #expect(throws: WorkflowError.self) {
            _ = try await engine.trigger(workflow: "nope", foreignID: "x", object: [])
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aRunMovesThroughItsStatusesWithOneEventPerChange() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow)
        try await running(engine) {
            let run = try await trigger(engine, "happy")
            let done = try await waitFor(engine, run.runID) { $0.runState == .completed }
            #expect(done.status == TestFlow.done && done.version == 3)
            #expect(done.object == Array("o+a+b".utf8))
            try await settled(engine, store)
            let history = try await engine.history(runID: run.runID)
            #expect(history.map(\.version) == [1, 2, 3])
            #expect(history.map(\.status) == [TestFlow.a, TestFlow.b, TestFlow.done])
            #expect(history.map(\.runState) == [.initiated, .running, .completed])
            #expect(flow.callCount("happy", TestFlow.a) == 1 && flow.callCount("happy", TestFlow.b) == 1)
            try await eventually("completed hook") { flow.hookCalls.withLock { $0 } == ["completed:happy"] }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aFailureStatusIsReachedWithItsReason() async throws {
        let flow = TestFlow()
        let (engine, _) = try make(flow)
        try await running(engine) {
            let run = try await trigger(engine, "reject-1")
            let done = try await waitFor(engine, run.runID) { $0.runState == .completed }
            #expect(done.status == TestFlow.failed && done.reason == "rejected" && done.version == 2)
            #expect(flow.callCount("reject-1", TestFlow.a) == 1, "a failure status is not retried")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func retriesBackOffDurablyThenPauseAfterFiveFailures() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow)
        try await running(engine) {
            let run = try await trigger(engine, "fail-always-1")
            // Each failure schedules the next retry in the timeout store: 1 s, 2 s, 4 s, 8 s (jitter fixed at 0).
            for (attempt, delay) in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 8_000)] {
                try await eventually("retry \(attempt) scheduled") {
                    try await store.timeouts(runID: run.runID).contains { $0.kind == .retry && $0.attempt == attempt }
                }
                let retry = try await store.timeouts(runID: run.runID).first { $0.attempt == attempt }!
                #expect(retry.expireAt.milliseconds - clock.now().milliseconds == Int64(delay))
                #expect(!retry.completed && !retry.cancelled)
                #expect(flow.callCount("fail-always-1", TestFlow.a) == attempt)
                // Not due yet: nothing runs.
                clock.advance(milliseconds: Int64(delay) - 1)
                try await Task.sleep(for: .milliseconds(30))
                #expect(flow.callCount("fail-always-1", TestFlow.a) == attempt, "a retry never fires early")
                clock.advance(milliseconds: 1)
            }
            let paused = try await waitFor(engine, run.runID) { $0.runState == .paused }
            #expect(flow.callCount("fail-always-1", TestFlow.a) == 5)
            #expect(paused.reason == "step failed 5 times; last error: gateway down for fail-always-1")
            #expect(paused.version == 2, "retry bookkeeping keeps the version; the pause raises it")
            let timeouts = try await store.timeouts(runID: run.runID)
            #expect(timeouts.count == 4 && timeouts.allSatisfy(\.completed))
            try await settled(engine, store)
            let history = try await engine.history(runID: run.runID)
            #expect(history.map(\.runState) == [.initiated, .paused], "retries write no events; the pause does")
            #expect(history.map(\.version) == [1, 2], "event versions are the run's versions, without gaps")
            try await eventually("paused hook") { flow.hookCalls.withLock { $0 } == ["paused:fail-always-1"] }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func jitterIsAppliedToTheScheduledRetry() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow, random: 0)
        try await running(engine) {
            let run = try await trigger(engine, "fail-always-2")
            try await eventually("retry scheduled") { try await !store.timeouts(runID: run.runID).isEmpty }
            let retry = try await store.timeouts(runID: run.runID)[0]
            #expect(retry.expireAt.milliseconds - clock.now().milliseconds == 800)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aRunThatRecoversContinuesAfterItsRetries() async throws {
        let flow = TestFlow()
        let (engine, _) = try make(flow)
        try await running(engine) {
            let run = try await trigger(engine, "fail-2-x")
            try await eventually("first failure") { flow.callCount("fail-2-x", TestFlow.a) == 1 }
            clock.advance(milliseconds: 1_000)
            try await eventually("second failure") { flow.callCount("fail-2-x", TestFlow.a) == 2 }
            clock.advance(milliseconds: 2_000)
            let done = try await waitFor(engine, run.runID) { $0.runState == .completed }
            #expect(done.status == TestFlow.done && done.meta == nil)
            #expect(flow.callCount("fail-2-x", TestFlow.a) == 3)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aFailingRunDoesNotBlockOthers() async throws {
        let flow = TestFlow()
        let (engine, _) = try make(flow)
        try await running(engine) {
            // Same partition or not, the failing run waits in the timeout store, not in a consumer.
            let failing = try await trigger(engine, "fail-always-3")
            var others: [Run] = []
            for i in 0..<40 { others.append(try await trigger(engine, "ok-\(i)")) }
            for r in others { _ = try await waitFor(engine, r.runID) { $0.runState == .completed } }
            let f = try await engine.run(id: failing.runID)!
            #expect(f.status == TestFlow.a && f.runState == .initiated)
            #expect(flow.callCount("fail-always-3", TestFlow.a) == 1)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aDefinitionErrorPausesAtOnce() async throws {
        let flow = TestFlow()
        let (engine, _) = try make(flow)
        try await running(engine) {
            let run = try await trigger(engine, "bad-1")
            let paused = try await waitFor(engine, run.runID) { $0.runState == .paused }
            #expect(paused.reason?.hasPrefix("definition error:") == true)
            #expect(flow.callCount("bad-1", TestFlow.a) == 1, "not retried")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aTimeoutFiresOnceWhileTheRunStaysInItsStatus() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow, timeoutOnB: 5_000)
        try await running(engine) {
            let run = try await trigger(engine, "gate-1")
            _ = try await waitFor(engine, run.runID) { $0.status == TestFlow.b }
            try await eventually("step B started") { flow.callCount("gate-1", TestFlow.b) == 1 }
            let pending = try await store.timeouts(runID: run.runID)
            #expect(pending.count == 1 && pending[0].kind == .timeout && pending[0].status == TestFlow.b)
            clock.advance(milliseconds: 5_000)
            let failed = try await waitFor(engine, run.runID) { $0.runState == .completed }
            #expect(failed.status == TestFlow.failed && failed.reason == "timed out" && failed.version == 3)
            // The step finishes late: its transition is refused by the version check.
            flow.openGate()
            clock.advance(milliseconds: 60_000)
            try await settled(engine, store)
            try await eventually("late step's commit refused") { engine.core.counters.conflicts.load(ordering: .relaxed) >= 1 }
            #expect(try await engine.run(id: run.runID)?.status == TestFlow.failed)
            let timeouts = try await store.timeouts(runID: run.runID)
            #expect(timeouts.count == 1 && timeouts[0].completed && !timeouts[0].cancelled)
            #expect(try await engine.history(runID: run.runID).map(\.version) == [1, 2, 3])
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func leavingAStatusCancelsItsTimeout() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow, timeoutOnB: 5_000)
        try await running(engine) {
            let run = try await trigger(engine, "quick")
            _ = try await waitFor(engine, run.runID) { $0.runState == .completed }
            let timeouts = try await store.timeouts(runID: run.runID)
            #expect(timeouts.count == 1 && timeouts[0].cancelled && !timeouts[0].completed)
            clock.advance(milliseconds: 10_000)
            try await settled(engine, store)
            let after = try await engine.run(id: run.runID)!
            #expect(after.status == TestFlow.done && after.version == 3)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func pauseResumeCancelAndDeleteData() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow, timeoutOnB: 5_000)
        // No loops running: control works on the store alone, and the run stays where it is.
        let run = try await trigger(engine, "manual")
        let paused = try await engine.control(.pause, runID: run.runID, reason: "customer asked")
        #expect(paused.runState == .paused && paused.version == 2 && paused.reason == "customer asked")
        await #expect(throws: WorkflowError(.invalidState, "cannot pause a run that is Paused; allowed only when it is Initiated, Running")) {
            _ = try await engine.control(.pause, runID: run.runID, reason: nil)
        }
        let resumed = try await engine.control(.resume, runID: run.runID, reason: nil)
        #expect(resumed.runState == .running && resumed.version == 3 && resumed.reason == nil)
        #expect(resumed.status == TestFlow.a && resumed.object == run.object, "only the run state and reason change")
        let cancelled = try await engine.control(.cancel, runID: run.runID, reason: nil)
        #expect(cancelled.runState == .cancelled && cancelled.version == 4 && cancelled.reason == "cancelled on request")
        for command in [RunCommand.pause, .resume, .cancel] {
            do {
                _ = try await engine.control(command, runID: run.runID, reason: nil)
                Issue.record("\(command) of a cancelled run must be refused")
            } catch let e as WorkflowError {
                #expect(e.code == .invalidState)
            }
        }
        let deleted = try await engine.control(.deleteData, runID: run.runID, reason: "GDPR request")
        #expect(deleted.runState == .dataDeleted && deleted.version == 6 && deleted.object == Array("{}".utf8))
        await #expect(throws: WorkflowError.self) { _ = try await engine.control(.deleteData, runID: run.runID, reason: nil) }
        await #expect(throws: WorkflowError(.notFound, "no run nope")) { _ = try await engine.control(.pause, runID: "nope", reason: nil) }
        _ = try await store.relay(limit: 100)
        let history = try await engine.history(runID: run.runID)
        #expect(history.map(\.runState) == [.initiated, .paused, .running, .cancelled, .requestedDataDeleted, .dataDeleted])
        #expect(history.map(\.version) == [1, 2, 3, 4, 5, 6])
        #expect(history[4].reason == "GDPR request")
    }

    @Test(.timeLimit(.minutes(1)))
    func pauseCancelsDeadlinesAndResumeRestartsThem() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow, timeoutOnB: 5_000)
        try await running(engine) {
            let run = try await trigger(engine, "gate-2")
            _ = try await waitFor(engine, run.runID) { $0.status == TestFlow.b }
            _ = try await engine.control(.pause, runID: run.runID, reason: nil)
            #expect(try await store.timeouts(runID: run.runID).allSatisfy(\.cancelled))
            clock.advance(milliseconds: 6_000)
            try await settled(engine, store)
            #expect(try await engine.run(id: run.runID)?.runState == .paused, "a paused run's deadline does not fire")
            flow.openGate()
            _ = try await engine.control(.resume, runID: run.runID, reason: nil)
            let done = try await waitFor(engine, run.runID) { $0.runState == .completed }
            #expect(done.status == TestFlow.done)
            let timeouts = try await store.timeouts(runID: run.runID)
            #expect(timeouts.count == 2 && timeouts.allSatisfy(\.cancelled))
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func resumeAfterAutoPauseRunsTheStepAgain() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow)
        try await running(engine) {
            let run = try await trigger(engine, "fail-5-y")
            for (attempt, delay) in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 8_000)] {
                try await eventually("retry \(attempt) scheduled") {
                    try await store.timeouts(runID: run.runID).contains { $0.attempt == attempt }
                }
                clock.advance(milliseconds: Int64(delay))
            }
            _ = try await waitFor(engine, run.runID) { $0.runState == .paused }
            let done = try await engine.control(.resume, runID: run.runID, reason: nil)
            #expect(done.meta == nil)
            let finished = try await waitFor(engine, run.runID) { $0.runState == .completed }
            #expect(finished.status == TestFlow.done)
            #expect(flow.callCount("fail-5-y", TestFlow.a) == 6)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func duplicateEventsAreSkipped() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow)
        try await running(engine) {
            var runs: [Run] = []
            for i in 0..<10 { runs.append(try await trigger(engine, "dup-\(i)")) }
            for r in runs { _ = try await waitFor(engine, r.runID) { $0.runState == .completed } }
            let before = flow.totalCalls
            // Deliver every run's first two events again, as a crashed relay or a replay would.
            let replay = try await allEvents(store).filter { $0.version <= 2 }.map(\.data)
            _ = try await store.append(replay)
            // The relay notices the appended events with its next batch and fills the gap.
            let last = try await trigger(engine, "dup-last")
            _ = try await waitFor(engine, last.runID) { $0.runState == .completed }
            try await settled(engine, store)
            try await eventually("consumers past the duplicates") {
                let head = try await store.head()
                let stats = try await engine.stats()
                return stats.consumers.allSatisfy { $0.cursor == head }
            }
            #expect(flow.totalCalls == before + 2, "no step ran again (only dup-last's two)")
            for r in runs { #expect(try await engine.run(id: r.runID)?.version == 3) }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func listenersGetEveryEventOnceInOrder() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow)
        let seen = Mutex<[Int64]>([])
        let token = engine.addEventListener { events in seen.withLock { $0 += events.map(\.seq) } }
        try await running(engine) {
            var runs: [Run] = []
            for i in 0..<60 { runs.append(try await trigger(engine, "l-\(i)")) }
            for r in runs { _ = try await waitFor(engine, r.runID) { $0.runState == .completed } }
            try await settled(engine, store)
        }
        engine.removeEventListener(token)
        let head = try await store.head()
        #expect(head == 180)
        #expect(seen.withLock { $0 } == Array(1...head))
    }

    @Test(.timeLimit(.minutes(1)))
    func twoEnginesOnOneStoreApplyEveryTransitionOnce() async throws {
        let flow = TestFlow()
        let store = InMemoryWorkflowStore(clock: clock)
        let (one, _) = try make(flow, store: store, instance: "engine-1")
        let (two, _) = try make(flow, store: store, instance: "engine-2")
        let count = 300
        try await running([one, two]) {
            try await eventually("both engines hold partitions") {
                one.heldLeases.contains { $0.hasPrefix("consumer/") } && two.heldLeases.contains { $0.hasPrefix("consumer/") }
            }
            let mine = Set(one.heldLeases.filter { $0.hasPrefix("consumer/") })
            let theirs = Set(two.heldLeases.filter { $0.hasPrefix("consumer/") })
            #expect(mine.isDisjoint(with: theirs))
            for i in 0..<count {
                _ = try await (i % 2 == 0 ? one : two).trigger(workflow: TestFlow.name, foreignID: "two-\(i)", object: [])
            }
            try await eventually("all complete") {
                store.allRuns.filter { $0.runState == .completed }.count == count
            }
            try await settled(one, store)
            try await eventually("engine-2 caught up") { try await two.deliveredHead == store.head() }
        }
        let events = try await allEvents(store)
        #expect(events.map(\.seq) == Array(1...Int64(events.count)), "seq is gap-free")
        #expect(events.count == count * 3)
        var versions: [String: [Int64]] = [:]
        for e in events { versions[e.runID, default: []].append(e.version) }
        #expect(versions.values.allSatisfy { $0 == [1, 2, 3] }, "every transition exactly once, in version order")
        #expect(flow.totalCalls == count * 2, "each step ran once")
        #expect(try await store.lease("relay").map { $0.expiresAt <= clock.now() } == true, "leases released at stop")
    }

    @Test(.timeLimit(.minutes(1)))
    func gracefulStopFinishesInFlightSteps() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow)
        let run = try await trigger(engine, "gate-3")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await engine.run() }
            try await eventually("step B in flight") { flow.callCount("gate-3", TestFlow.b) == 1 }
            group.cancelAll()  // graceful stop: step B is still waiting
            try await Task.sleep(for: .milliseconds(20))
            flow.openGate()
            try await group.waitForAll()
        }
        let r = try await engine.run(id: run.runID)!
        #expect(r.status == TestFlow.done && r.runState == .completed, "the in-flight step committed")
        #expect(try await store.outboxStats().pending == 0, "the relay drained the outbox before stopping")
        for name in engine.consumerNames + ["relay", "poller"] {
            if let lease = try await store.lease(name) { #expect(lease.expiresAt <= clock.now(), "\(name) released") }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func statsAndHealth() async throws {
        let flow = TestFlow()
        let (engine, store) = try make(flow)
        try await running(engine) {
            let a = try await trigger(engine, "s-1")
            let b = try await trigger(engine, "reject-2")
            _ = try await waitFor(engine, a.runID) { $0.runState == .completed }
            _ = try await waitFor(engine, b.runID) { $0.runState == .completed }
            try await settled(engine, store)
            let stats = try await engine.stats()
            #expect(stats.byStatus[TestFlow.name] == [TestFlow.done: 1, TestFlow.failed: 1])
            #expect(stats.byRunState[TestFlow.name] == [.completed: 2])
            #expect(stats.head == 5 && stats.outbox.pending == 0)
            #expect(stats.consumers.count == 2 * 4)
            let health = await engine.health()
            #expect(health.healthy, "\(health.checks)")
            #expect(Set(health.checks.keys) == ["engine", "database", "leases", "lag", "relay", "outbox"])
        }
        let after = await engine.health()
        #expect(!after.healthy)
    }

    /// Nobody relays (the engine is not running), so triggers stay in the outbox: `outbox` turns
    /// unhealthy past `healthMaxOutboxPending` rows, `relay` once the oldest row is older than
    /// `healthMaxOutboxAgeMilliseconds`; each detail names its limit.
    @Test(.timeLimit(.minutes(1)))
    func outboxBacklogAndRelayLagHaveLimits() async throws {
        let flow = TestFlow()
        var config = testConfiguration()
        config.healthMaxOutboxPending = 2
        config.healthMaxOutboxAgeMilliseconds = 5_000
        let engine = try WorkflowEngine(
            store: InMemoryWorkflowStore(clock: clock), definitions: [flow.definition()], configuration: config, clock: clock)
        _ = try await trigger(engine, "o-1")
        _ = try await trigger(engine, "o-2")
        var health = await engine.health()
        #expect(health.checks["outbox"] == HealthCheck(ok: true, detail: "2 pending (limit 2)"))
        #expect(health.checks["relay"] == HealthCheck(ok: true, detail: "oldest unrelayed change 0 ms old (limit 5000 ms)"))
        _ = try await trigger(engine, "o-3")
        clock.advance(milliseconds: 5_001)
        health = await engine.health()
        #expect(health.checks["outbox"] == HealthCheck(ok: false, detail: "3 pending (limit 2)"))
        #expect(health.checks["relay"] == HealthCheck(ok: false, detail: "oldest unrelayed change 5001 ms old (limit 5000 ms)"))
        #expect(health.checks["database"]?.ok == true)
        #expect(!health.healthy)
    }
}

/// A consumer that loses its lease while a step runs and takes it back reads that step's event
/// again. The event must stay unfinished until the step is: if the cursor passed it and the
/// process then died, the step would be lost and the run stuck for ever (seen in CI: a backup
/// taken from a server whose leases flapped under load held runs no restart would move).
@Suite struct LeaseFlapTests {
    let clock = ManualClock()

    @Test(.timeLimit(.minutes(1)))
    func theCursorWaitsForAStepBegunBeforeTheLeaseWasLost() async throws {
        let flow = TestFlow()
        let store = InMemoryWorkflowStore(clock: clock)
        let engine = try WorkflowEngine(
            store: store, definitions: [flow.definition()], configuration: testConfiguration(), clock: clock)
        try await running(engine) {
            let run = try await engine.trigger(workflow: TestFlow.name, foreignID: "gate-1", object: []).run
            try await eventually("B's step waits at the gate") { flow.callCount("gate-1", TestFlow.b) == 1 }
            let events = try await allEvents(store)
            let inB = try #require(events.first { $0.runID == run.runID && $0.version == 2 })
            let bConsumers = engine.consumerNames.filter { $0.hasPrefix("consumer/\(TestFlow.name)/\(TestFlow.b)/") }
            #expect(bConsumers.count == 4)

            // Every lease of B's consumers expires and another holder takes them...
            clock.advance(milliseconds: 60_000)
            for name in bConsumers {
                _ = try await store.acquireLease(name, holder: "thief", now: clock.now(), ttlMilliseconds: 10_000)
            }
            try await eventually("B's consumers stood down") {
                engine.consumers.filter { bConsumers.contains($0.name) }.allSatisfy { !$0.snapshot.active }
            }
            // ...and lets them expire: this engine takes them back and reads B's events again.
            clock.advance(milliseconds: 20_000)
            try await eventually("B's consumers back") {
                engine.consumers.filter { bConsumers.contains($0.name) }.allSatisfy { $0.snapshot.active }
            }
            // Other runs keep the log moving, so a cursor would have every reason to advance.
            for i in 0..<5 { _ = try await engine.trigger(workflow: TestFlow.name, foreignID: "n-\(i)", object: []) }
            try await eventually("the other runs done") {
                store.allRuns.filter { $0.foreignID.hasPrefix("n-") && $0.runState == .completed }.count == 5
            }
            // The partition that owns gate-1 (the others never see its events).
            let owner = "consumer/\(TestFlow.name)/\(TestFlow.b)/\(CRC32.checksum(run.runID.utf8) % 4)of4"
            #expect(bConsumers.contains(owner))
            // Cursor writes are throttled: wait until another partition has written one past the
            // event, so the owner has had the same chances to move.
            let other = bConsumers.first { $0 != owner }!
            try await eventually("the other partitions moved on") { try await store.cursor(other) > inB.seq }
            try await Task.sleep(for: .milliseconds(300))  // and the owner a few more flushes
            let cursor = try await store.cursor(owner)
            #expect(cursor < inB.seq, "\(owner) at \(cursor) passed seq \(inB.seq), whose step has not finished")
            flow.openGate()
            try await eventually("gate-1 completes") { store.allRuns.first { $0.runID == run.runID }?.runState == .completed }
            try await eventually("its cursor passes the event now") { try await store.cursor(owner) >= inB.seq }
        }
    }
}

import Synchronization
import Testing

@testable import WorkflowEngine

/// External steps on the engine with the in-memory store and a manual clock: offers, answers,
/// deadlines, retries, callbacks, and the run-state commands around them.
@Suite(.timeLimit(.minutes(1))) struct ExternalStepTests {
    let clock = ManualClock()

    /// Tasks offered to one worker, in order.
    final class Inbox: Sendable {
        let tasks = Mutex<[ExternalTask]>([])
        func offer(_ t: [ExternalTask]) { tasks.withLock { $0 += t } }
        var all: [ExternalTask] { tasks.withLock { $0 } }

        func next(_ count: Int = 1, sourceLocation: SourceLocation = #_sourceLocation) async throws -> [ExternalTask] {
            try await eventually("\(count) task(s) offered", sourceLocation: sourceLocation) { all.count >= count }
            return Array(all.prefix(count))
        }
    }

    func make(timeoutOnB: Int64? = nil, maxAttempts: Int = 3) throws -> (WorkflowEngine, InMemoryWorkflowStore) {
        let store = InMemoryWorkflowStore(clock: clock)
        var c = testConfiguration()
        c.retry = RetryPolicy(maxAttempts: maxAttempts, baseDelayMilliseconds: 1_000, jitter: 0)
        c.taskScanMilliseconds = 50
        let engine = try WorkflowEngine(
            store: store, definitions: [TestFlow().definition(timeoutOnB: timeoutOnB, externalB: true)],
            configuration: c, clock: clock)
        return (engine, store)
    }

    func worker(_ engine: WorkflowEngine, maxInFlight: Int = 1, lease: Int64 = 30_000) throws -> (WorkerToken, Inbox) {
        let inbox = Inbox()
        let token = try engine.addWorker(
            WorkerSpec(workflow: TestFlow.name, status: TestFlow.b, maxInFlight: maxInFlight, leaseMilliseconds: lease)
        ) { inbox.offer($0) }
        engine.setWorkerReady(token, true)
        return (token, inbox)
    }

    func trigger(_ engine: WorkflowEngine, _ id: String) async throws -> Run {
        try await engine.trigger(workflow: TestFlow.name, foreignID: id, object: Array("o".utf8)).run
    }

    func run(_ engine: WorkflowEngine, _ id: String) async throws -> Run { try #require(try await engine.run(id: id)) }

    func conflict(_ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async {
        do {
            try await body()
            Issue.record("expected CONFLICT", sourceLocation: sourceLocation)
        } catch let e as WorkflowError {
            #expect(e.code == .conflict, "\(e)", sourceLocation: sourceLocation)
            #expect(e.run != nil, sourceLocation: sourceLocation)
        } catch {
            Issue.record("expected CONFLICT, got \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func aWorkerDoesTheStepAndItsAnswerIsAppliedOnce() async throws {
        let (engine, store) = try make()
        try await running(engine) {
            let (_, inbox) = try worker(engine)
            let r = try await trigger(engine, "order-1")
            let t = try await inbox.next()[0]
            #expect(t.run.runID == r.runID && t.run.status == TestFlow.b && t.claim.version == 2 && t.attempt == 1)
            #expect(t.idempotencyKey == "\(r.runID):2")
            #expect(t.deadline == clock.now().adding(milliseconds: 30_000))
            let done = try await engine.complete(task: t.claim.text, status: TestFlow.done, object: Array("paid".utf8), reason: nil)
            #expect(done.status == TestFlow.done && done.runState == .completed && done.version == 3 && done.object == Array("paid".utf8))
            // The same answer again: ok, the run as it is; a different one: CONFLICT.
            #expect(try await engine.complete(task: t.claim.text, status: TestFlow.done, object: nil, reason: nil) == done)
            await conflict { _ = try await engine.complete(task: t.claim.text, status: TestFlow.failed, object: nil, reason: nil) }
            try await eventually("three events") { try await allEvents(store).count == 3 }
            let events = try await allEvents(store).map { ($0.version, $0.status) }
            #expect(events.map(\.0) == [1, 2, 3] && events.map(\.1) == [TestFlow.a, TestFlow.b, TestFlow.done])
            #expect(inbox.all.count == 1, "offered once")
        }
    }

    @Test func answersAreCheckedBeforeAnythingIsStored() async throws {
        let (engine, store) = try make()
        try await running(engine) {
            let (_, inbox) = try worker(engine)
            _ = try await trigger(engine, "order-1")
            let t = try await inbox.next()[0]
            await #expect(throws: WorkflowError.self) {
                _ = try await engine.complete(task: t.claim.text, status: TestFlow.a, object: nil, reason: nil)
            }
            do {
                _ = try await engine.complete(task: t.claim.text, status: TestFlow.done, object: Array("!x".utf8), reason: nil)
                Issue.record("a refused object was accepted")
            } catch let e as WorkflowError {
                #expect(e.code == .badRequest && e.message.hasPrefix("object: "), "\(e)")
            }
            for bad in ["nope", "\(t.claim.runID)/2/9", "missing/2/1"] {
                do {
                    _ = try await engine.complete(task: bad, status: TestFlow.done, object: nil, reason: nil)
                    Issue.record("\(bad) was accepted")
                } catch let e as WorkflowError {
                    #expect(e.code == .notFound, "\(bad): \(e)")
                }
            }
            #expect(try await run(engine, t.claim.runID).version == 2, "nothing stored")
            #expect(try await store.task(runID: t.claim.runID, version: 2)?.isOpen == true)
        }
    }

    @Test func twoWorkersShareTheWorkAndNoTaskIsHeldTwice() async throws {
        let (engine, _) = try make()
        try await running(engine) {
            let (_, a) = try worker(engine, maxInFlight: 2)
            let (_, b) = try worker(engine, maxInFlight: 2)
            var runs: [Run] = []
            for i in 0..<20 { runs.append(try await trigger(engine, "order-\(i)")) }
            // Answer whatever arrives until every run is done.
            var answered = Set<String>()
            try await eventually("all done") {
                for t in a.all + b.all where !answered.contains(t.claim.text) {
                    answered.insert(t.claim.text)
                    _ = try await engine.complete(task: t.claim.text, status: TestFlow.done, object: nil, reason: nil)
                }
                for r in runs where try await engine.run(id: r.runID)?.status != TestFlow.done { return false }
                return true
            }
            #expect(!a.all.isEmpty && !b.all.isEmpty, "both got work")
            let runIDs = (a.all + b.all).map(\.claim.runID)
            #expect(runIDs.count == 20 && Set(runIDs).count == 20, "each run offered once")
        }
    }

    @Test func aDeadlinePassesTheTaskGoesToAnotherWorkerAndTheLateAnswerIsAConflict() async throws {
        let (engine, _) = try make()
        try await running(engine) {
            let (_, slow) = try worker(engine, lease: 5_000)
            let r = try await trigger(engine, "order-1")
            let first = try await slow.next()[0]
            let (_, other) = try worker(engine, lease: 5_000)
            clock.advance(milliseconds: 5_001)
            engine.core.tasks.wake()
            let second = try await other.next()[0]
            #expect(second.claim.runID == r.runID && second.claim.claim == first.claim.claim + 1)
            #expect(second.idempotencyKey == first.idempotencyKey && second.attempt == 1)
            await conflict { _ = try await engine.complete(task: first.claim.text, status: TestFlow.done, object: nil, reason: nil) }
            let done = try await engine.complete(task: second.claim.text, status: TestFlow.done, object: nil, reason: nil)
            #expect(done.status == TestFlow.done)
            let m = try await engine.metrics()
            #expect(m.first { $0.name == "workflowd_tasks_expired_total" }?.samples.first?.value == 1)
            #expect(m.first { $0.name == "workflowd_tasks_offered_total" }?.samples.first?.value == 2)
        }
    }

    @Test func extendMovesTheDeadline() async throws {
        let (engine, store) = try make()
        try await running(engine) {
            let (_, inbox) = try worker(engine, lease: 5_000)
            _ = try await trigger(engine, "order-1")
            let t = try await inbox.next()[0]
            let (_, other) = try worker(engine, lease: 5_000)
            let deadline = try await engine.extend(task: t.claim.text, leaseMilliseconds: 20_000)
            #expect(deadline == clock.now().adding(milliseconds: 20_000))
            #expect(try await store.task(runID: t.claim.runID, version: 2)?.availableAt == deadline)
            clock.advance(milliseconds: 6_000)
            engine.core.tasks.wake()
            _ = try await engine.stats()  // a round trip of the loop's store
            #expect(other.all.isEmpty, "not offered again before the new deadline")
            _ = try await engine.complete(task: t.claim.text, status: TestFlow.done, object: nil, reason: nil)
        }
    }

    @Test func failRetriesWithBackOffThenPausesWithTheErrorAsReason() async throws {
        let (engine, store) = try make(maxAttempts: 3)
        try await running(engine) {
            let (_, inbox) = try worker(engine)
            let r = try await trigger(engine, "order-1")
            let t1 = try await inbox.next()[0]
            let start = clock.now()
            guard case .retry(let at1) = try await engine.fail(task: t1.claim.text, error: "card network down") else {
                Issue.record("expected a retry")
                return
            }
            #expect(at1 == start.adding(milliseconds: 1_000))
            // A repeated fail does not count twice.
            #expect(try await engine.fail(task: t1.claim.text, error: "card network down") == .retry(at: at1))
            engine.core.tasks.wake()
            _ = try await engine.stats()
            #expect(inbox.all.count == 1, "not before the retry time")
            clock.advance(milliseconds: 1_000)
            engine.core.tasks.wake()
            let t2 = try await inbox.next(2)[1]
            #expect(t2.attempt == 2 && t2.claim.version == 2 && t2.idempotencyKey == t1.idempotencyKey)
            guard case .retry(let at2) = try await engine.fail(task: t2.claim.text, error: "still down") else {
                Issue.record("expected a retry")
                return
            }
            #expect(at2 == clock.now().adding(milliseconds: 2_000), "doubled")
            clock.advance(milliseconds: 2_000)
            engine.core.tasks.wake()
            let t3 = try await inbox.next(3)[2]
            #expect(t3.attempt == 3)
            guard case .paused(let paused) = try await engine.fail(task: t3.claim.text, error: "gave up") else {
                Issue.record("expected a pause")
                return
            }
            #expect(paused.runState == .paused && paused.reason == "gave up" && paused.version == 3)
            #expect(try await run(engine, r.runID) == paused)
            #expect(try await engine.fail(task: t3.claim.text, error: "gave up") == .paused(paused), "repeated")
            #expect(try await store.task(runID: r.runID, version: 2)?.isOpen == false)
            // Resumed: a fresh task for the new version, attempt 1.
            let resumed = try await engine.control(.resume, runID: r.runID, reason: nil)
            let t4 = try await inbox.next(4)[3]
            #expect(t4.claim.version == resumed.version && t4.attempt == 1)
        }
    }

    @Test func aLeavingWorkersTaskIsOfferedAgainAtOnce() async throws {
        let (engine, _) = try make()
        try await running(engine) {
            let (leaving, a) = try worker(engine)
            _ = try await trigger(engine, "order-1")
            let t = try await a.next()[0]
            let (_, b) = try worker(engine)
            engine.removeWorker(leaving)
            let again = try await b.next()[0]
            #expect(again.claim.runID == t.claim.runID && again.claim.claim == t.claim.claim + 1)
            _ = try await engine.complete(task: again.claim.text, status: TestFlow.done, object: nil, reason: nil)
        }
    }

    @Test func aCallbackMovesAWaitingRunAndTheHolderCanNoLongerAnswer() async throws {
        let (engine, _) = try make()
        try await running(engine) {
            let (_, inbox) = try worker(engine)
            let r = try await trigger(engine, "order-1")
            let t = try await inbox.next()[0]
            // A is not external, and B may not go to A: BAD_REQUEST naming the field.
            for (status, next, field) in [(TestFlow.a, TestFlow.b, "status: "), (TestFlow.b, TestFlow.a, "next: ")] {
                do {
                    _ = try await engine.callback(runID: r.runID, status: status, next: next, object: nil, reason: nil)
                    Issue.record("accepted a callback \(status) → \(next)")
                } catch let e as WorkflowError {
                    #expect(e.code == .badRequest && e.message.hasPrefix(field), "\(e)")
                }
            }
            let moved = try await engine.callback(
                runID: r.runID, status: TestFlow.b, next: TestFlow.failed, object: nil, reason: "provider said no")
            #expect(moved.status == TestFlow.failed && moved.reason == "provider said no")
            await conflict { _ = try await engine.complete(task: t.claim.text, status: TestFlow.done, object: nil, reason: nil) }
            await conflict { _ = try await engine.callback(runID: r.runID, status: TestFlow.b, next: TestFlow.done, object: nil, reason: nil) }
        }
    }

    @Test func theStatussTimeoutStillFiresAndClosesTheTask() async throws {
        let (engine, store) = try make(timeoutOnB: 10_000)
        try await running(engine) {
            let (_, inbox) = try worker(engine, lease: 60_000)
            let r = try await trigger(engine, "order-1")
            let t = try await inbox.next()[0]
            clock.advance(milliseconds: 10_001)
            try await eventually("timed out") { try await engine.run(id: r.runID)?.status == TestFlow.failed }
            #expect(try await run(engine, r.runID).reason == "timed out")
            #expect(try await store.task(runID: r.runID, version: 2)?.isOpen == false)
            await conflict { _ = try await engine.complete(task: t.claim.text, status: TestFlow.done, object: nil, reason: nil) }
        }
    }

    @Test func pauseWithdrawsTheTaskAndResumeOffersANewOne() async throws {
        let (engine, _) = try make()
        try await running(engine) {
            let (_, inbox) = try worker(engine, maxInFlight: 2)
            let r = try await trigger(engine, "order-1")
            let t = try await inbox.next()[0]
            _ = try await engine.control(.pause, runID: r.runID, reason: "hold on")
            await conflict { _ = try await engine.complete(task: t.claim.text, status: TestFlow.done, object: nil, reason: nil) }
            let resumed = try await engine.control(.resume, runID: r.runID, reason: nil)
            let again = try await inbox.next(2)[1]
            #expect(again.claim.version == resumed.version && again.claim.version == 4)
            #expect(again.idempotencyKey != t.idempotencyKey, "a new step: a new key")
            _ = try await engine.complete(task: again.claim.text, status: TestFlow.done, object: nil, reason: nil)
            #expect(try await run(engine, r.runID).status == TestFlow.done)
        }
    }

    @Test func runsAlreadyWaitingWhenTheStatusBecameExternalAreOffered() async throws {
        let (engine, store) = try make()
        // Written before B was external (as a built-in step's engine would have left it): no task.
        let now = clock.now()
        let waiting = Run(
            workflow: TestFlow.name, foreignID: "order-old", runID: "old-1", runState: .running, status: TestFlow.b,
            version: 1, object: [1], createdAt: now, updatedAt: now)
        _ = try await store.create(NewRun(run: waiting))
        #expect(try await store.task(runID: "old-1", version: 1) == nil)
        try await running(engine) {
            let (_, inbox) = try worker(engine)
            let t = try await inbox.next()[0]
            #expect(t.claim == TaskClaim(runID: "old-1", version: 1, claim: 1))
            _ = try await engine.complete(task: t.claim.text, status: TestFlow.done, object: nil, reason: nil)
        }
    }

    @Test func aWorkerOfAStatusThatIsNotExternalIsABadRequest() async throws {
        let (engine, _) = try make()
        do {
            _ = try engine.addWorker(WorkerSpec(workflow: TestFlow.name, status: TestFlow.a, maxInFlight: 1, leaseMilliseconds: 1_000)) { _ in }
            Issue.record("accepted a worker of a built-in step")
        } catch let e as WorkflowError {
            #expect(e.code == .badRequest && e.message.hasPrefix("status: A is not an external status"), "\(e)")
        }
    }
}

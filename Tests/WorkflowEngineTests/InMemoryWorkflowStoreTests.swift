import Testing

@testable import WorkflowEngine

@Suite struct InMemoryWorkflowStoreTests {
    let clock = ManualClock()

    func run(_ id: String, foreign: String = "f", state: RunState = .initiated, version: Int64 = 1) -> Run {
        Run(
            workflow: "w", foreignID: foreign, runID: id, runState: state, status: 1, version: version, object: [],
            createdAt: clock.now(), updatedAt: clock.now())
    }

    @Test(.timeLimit(.minutes(1)))
    func oneUnfinishedRunPerForeignID() async throws {
        let store = InMemoryWorkflowStore(clock: clock)
        #expect(try await store.create(NewRun(run: run("r1"))) == .created(run("r1")))
        #expect(try await store.create(NewRun(run: run("r2"))) == .existing(run("r1")))
        var done = run("r1", state: .completed, version: 2)
        done.status = 2
        #expect(try await store.update([RunUpdate(run: done, expectedVersion: 1)]) == [.applied])
        #expect(try await store.create(NewRun(run: run("r3"))).run.runID == "r3")
        #expect(try await store.latest(workflow: "w", foreignID: "f")?.runID == "r3")
    }

    @Test(.timeLimit(.minutes(1)))
    func updatesAreVersionChecked() async throws {
        let store = InMemoryWorkflowStore(clock: clock)
        _ = try await store.create(NewRun(run: run("r1")))
        let v2 = run("r1", state: .running, version: 2)
        #expect(try await store.update([RunUpdate(run: v2, expectedVersion: 1)]) == [.applied])
        #expect(try await store.update([RunUpdate(run: v2, expectedVersion: 1)]) == [.conflict])
        #expect(try await store.lookup(runID: "r1")?.version == 2)
        #expect(try await store.outboxStats().pending == 2)
    }

    @Test(.timeLimit(.minutes(1)))
    func aTimeoutCompletesAtMostOnce() async throws {
        let store = InMemoryWorkflowStore(clock: clock)
        _ = try await store.create(
            NewRun(run: run("r1"), timeouts: [NewTimeout(kind: .timeout, status: 1, expireAt: clock.now())]))
        let due = try await store.dueTimeouts(now: clock.now(), limit: 10)
        #expect(due.count == 1)
        let v2 = run("r1", state: .running, version: 2)
        let v3 = run("r1", state: .running, version: 3)
        #expect(try await store.update([RunUpdate(run: v2, expectedVersion: 1, completesTimeout: due[0].id)]) == [.applied])
        #expect(try await store.update([RunUpdate(run: v3, expectedVersion: 2, completesTimeout: due[0].id)]) == [.conflict])
        #expect(try await store.dueTimeouts(now: clock.now(), limit: 10).isEmpty)
    }

    @Test(.timeLimit(.minutes(1)))
    func relayAssignsGapFreeSeqInOutboxOrder() async throws {
        let store = InMemoryWorkflowStore(clock: clock)
        for i in 1...5 { _ = try await store.create(NewRun(run: run("r\(i)", foreign: "f\(i)"))) }
        let first = try await store.relay(limit: 3)
        let second = try await store.relay(limit: 3)
        #expect((first + second).map(\.seq) == [1, 2, 3, 4, 5])
        #expect((first + second).map(\.runID) == ["r1", "r2", "r3", "r4", "r5"])
        #expect(try await store.outboxStats().pending == 0)
        #expect(try await store.events(after: 2, filter: EventFilter(), limit: 2).map(\.seq) == [3, 4])
    }

    @Test(.timeLimit(.minutes(1)))
    func leasesExpireByTheClock() async throws {
        let store = InMemoryWorkflowStore(clock: clock)
        let a = try await store.acquireLease("relay", holder: "a", now: clock.now(), ttlMilliseconds: 1_000)
        #expect(a?.generation == 1)
        #expect(try await store.acquireLease("relay", holder: "b", now: clock.now(), ttlMilliseconds: 1_000) == nil)
        clock.advance(milliseconds: 1_000)
        let b = try await store.acquireLease("relay", holder: "b", now: clock.now(), ttlMilliseconds: 1_000)
        #expect(b?.holder == "b" && b?.generation == 2)
        #expect(try await store.releaseLease("relay", holder: "a") == false)
        #expect(try await store.releaseLease("relay", holder: "b") == true)
        #expect(try await store.acquireLease("relay", holder: "a", now: clock.now(), ttlMilliseconds: 1_000)?.generation == 3)
    }

    @Test(.timeLimit(.minutes(1)))
    func listingIsKeysetPaged() async throws {
        let store = InMemoryWorkflowStore(clock: clock)
        for i in 1...7 {
            clock.advance(milliseconds: 1)
            _ = try await store.create(NewRun(run: run("r\(i)", foreign: "f\(i)")))
        }
        var seen: [String] = []
        var after: RunCursor?
        repeat {
            let page = try await store.list(RunQuery(workflow: "w", limit: 3, after: after))
            seen += page.runs.map(\.runID)
            after = page.next
        } while after != nil
        #expect(seen == (1...7).map { "r\($0)" })
    }
}

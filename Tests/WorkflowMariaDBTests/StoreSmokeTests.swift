import Testing
import WorkflowEngine
@testable import WorkflowMariaDB

@Suite("MariaDB store basics", .timeLimit(.minutes(2)))
struct StoreSmokeTests {
    @Test func createLookupUpdateRelay() async throws {
        try await TestDatabase.with { store, _ in
            let r = Fixtures.run(foreignID: "order-1001")
            #expect(try await store.create(NewRun(run: r)) == .created(r))
            let found = try await store.lookup(runID: r.runID)
            #expect(found == r)
            #expect(try await store.latest(workflow: r.workflow, foreignID: "order-1001") == r)
            let u = Fixtures.next(r, status: 2)
            #expect(try await store.update([u]) == [.applied])
            #expect(try await store.update([u]) == [.conflict])
            #expect(try await store.lookup(runID: r.runID) == u.run)
            let moved = try await store.relay(limit: 100)
            #expect(moved.map(\.seq) == [1, 2])
            #expect(moved.map(\.version) == [1, 2])
            #expect(moved.map(\.status) == [1, 2])
            #expect(try await store.outboxStats().pending == 0)
            #expect(try await store.head() == 2)
            #expect(try await store.history(runID: r.runID) == moved)
        }
    }
}

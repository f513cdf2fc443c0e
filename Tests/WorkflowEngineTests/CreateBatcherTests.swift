import Synchronization
import Testing

@testable import WorkflowEngine

@Suite struct CreateBatcherTests {
    static func newRun(_ foreignID: String) -> NewRun {
        let t = Timestamp(milliseconds: 1_000)
        return NewRun(run: Run(
            workflow: "w", foreignID: foreignID, runID: "id-\(foreignID)", runState: .initiated, status: 1, version: 1,
            object: [], createdAt: t, updatedAt: t))
    }

    @Test(.timeLimit(.minutes(1)))
    func createsThatArriveDuringAWriteShareTheNextOne() async throws {
        let batches = Mutex<[[String]]>([])
        let gate = OneShot()
        let batcher = CreateBatcher(maxBatch: 256, maxInFlight: 1) { runs in
            batches.withLock { $0.append(runs.map(\.run.foreignID)) }
            await gate.wait()
            return runs.map { .created($0.run) }
        }
        try await withThrowingTaskGroup(of: CreateRunResult.self) { group in
            group.addTask { try await batcher.create(Self.newRun("first")) }
            try await eventually("the first write started") { batches.withLock { $0.count } == 1 }
            for i in 0..<10 { group.addTask { try await batcher.create(Self.newRun("r\(i)")) } }
            try await eventually("ten waiting") { batcher.pendingCount == 10 }
            gate.fire()
            var results: [CreateRunResult] = []
            for try await r in group { results.append(r) }
            #expect(results.count == 11)
            #expect(results.allSatisfy { if case .created = $0 { true } else { false } })
        }
        let seen = batches.withLock { $0 }
        #expect(seen.map(\.count) == [1, 10], "\(seen)")
        #expect(Set(seen[1]) == Set((0..<10).map { "r\($0)" }))
    }

    @Test func aBatchRefusedForOneBadRunIsRetriedOneByOne() async throws {
        let calls = Mutex<[[String]]>([])
        let gate = OneShot()
        let batcher = CreateBatcher(maxBatch: 256, maxInFlight: 1) { runs in
            calls.withLock { $0.append(runs.map(\.run.foreignID)) }
            if runs.count == 1 && runs[0].run.foreignID == "first" { await gate.wait() }
            if runs.contains(where: { $0.run.foreignID == "bad" }) {
                throw WorkflowError(.badRequest, "the database refused the row", retryable: false)
            }
            return runs.map { .created($0.run) }
        }
        let outcomes = await withTaskGroup(of: (String, Bool).self) { group in
            group.addTask { (try? await batcher.create(Self.newRun("first"))) != nil ? ("first", true) : ("first", false) }
            try? await eventually("the first write started") { calls.withLock { $0.count } == 1 }
            for id in ["a", "bad", "b"] {
                group.addTask { ((try? await batcher.create(Self.newRun(id))) != nil) ? (id, true) : (id, false) }
            }
            try? await eventually("three waiting") { batcher.pendingCount == 3 }
            gate.fire()
            var out: [String: Bool] = [:]
            for await (id, ok) in group { out[id] = ok }
            return out
        }
        #expect(outcomes == ["first": true, "a": true, "bad": false, "b": true])
        let c = calls.withLock { $0 }
        #expect(c.count == 5, "first, the batch of 3, then 3 single retries: \(c)")
        #expect(c.dropFirst(2).allSatisfy { $0.count == 1 })
    }

    @Test func aRetryableFailureGoesToEveryCallerWithoutRetries() async throws {
        let calls = Mutex(0)
        let batcher = CreateBatcher(maxBatch: 256, maxInFlight: 2) { _ in
            calls.withLock { $0 += 1 }
            throw WorkflowError(.unavailable, "down", retryable: true)
        }
        let errors = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<5 {
                group.addTask {
                    do {
                        _ = try await batcher.create(Self.newRun("x\(i)"))
                        return false
                    } catch let e as WorkflowError {
                        return e.code == .unavailable
                    } catch { return false }
                }
            }
            var n = 0
            for await e in group where e { n += 1 }
            return n
        }
        #expect(errors == 5)
        #expect(calls.withLock { $0 } <= 5)
    }
}

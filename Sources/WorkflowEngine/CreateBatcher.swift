import Synchronization

/// Group commit for new runs: triggers that arrive while a create transaction is in flight
/// wait for the next one and go in together (one transaction, one outbox insert), so a burst
/// of submits costs a few commits instead of one each. A lone trigger is not delayed: with
/// nothing in flight it is written at once. If a batch is refused for one bad run, its runs are
/// created one by one, so each caller gets its own result or error.
final class CreateBatcher: Sendable {
    private struct Waiter: Sendable {
        var new: NewRun
        var continuation: CheckedContinuation<CreateRunResult, any Error>
    }
    private struct State {
        var pending: [Waiter] = []
        var inFlight = 0
    }

    typealias CreateBatch = @Sendable ([NewRun]) async throws -> [CreateRunResult]

    private let state = Mutex(State())
    private let createBatch: CreateBatch
    private let maxBatch: Int
    private let maxInFlight: Int

    init(maxBatch: Int, maxInFlight: Int, createBatch: @escaping CreateBatch) {
        self.createBatch = createBatch
        self.maxBatch = max(1, maxBatch)
        self.maxInFlight = max(1, maxInFlight)
    }

    func create(_ new: NewRun) async throws -> CreateRunResult {
        // Nothing waits and nothing is being written: write it right here, in the caller's task
        // (no hand-over). Otherwise it waits for the next batch.
        let alone = state.withLock { s -> Bool in
            guard s.pending.isEmpty, s.inFlight == 0 else { return false }
            s.inFlight += 1
            return true
        }
        if alone {
            defer { finishedInline() }
            return try await createBatch([new])[0]
        }
        return try await withCheckedThrowingContinuation { continuation in
            let start = state.withLock { s -> Bool in
                s.pending.append(Waiter(new: new, continuation: continuation))
                guard s.inFlight < maxInFlight else { return false }
                s.inFlight += 1
                return true
            }
            if start { Task { await self.drain() } }
        }
    }

    /// An inline write ended: if triggers piled up meanwhile, a drainer takes them.
    private func finishedInline() {
        let start = state.withLock { s -> Bool in
            s.inFlight -= 1
            guard !s.pending.isEmpty, s.inFlight < maxInFlight else { return false }
            s.inFlight += 1
            return true
        }
        if start { Task { await self.drain() } }
    }

    /// Creates waiting for a batch (for tests).
    var pendingCount: Int { state.withLock { $0.pending.count } }

    /// Writes batches until nothing is pending.
    private func drain() async {
        while true {
            let batch = state.withLock { s -> [Waiter] in
                guard !s.pending.isEmpty else {
                    s.inFlight -= 1
                    return []
                }
                let n = min(maxBatch, s.pending.count)
                let b = Array(s.pending.prefix(n))
                s.pending.removeFirst(n)
                return b
            }
            if batch.isEmpty { return }
            do {
                let results = try await createBatch(batch.map(\.new))
                for (w, r) in zip(batch, results) { w.continuation.resume(returning: r) }
            } catch let error as WorkflowError where batch.count > 1 && !error.retryable {
                // A refusal that is not about the database's state (one run the database will
                // not take): nothing of the batch committed, so one by one, each caller gets
                // its own answer. Retryable errors (unreachable, commit outcome unknown) go to
                // every caller as they are.
                for w in batch {
                    do {
                        w.continuation.resume(returning: try await createBatch([w.new])[0])
                    } catch {
                        w.continuation.resume(throwing: error)
                    }
                }
            } catch {
                for w in batch { w.continuation.resume(throwing: error) }
            }
        }
    }
}

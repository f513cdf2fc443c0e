import Synchronization

/// A change waiting to be committed, and what to do once its fate is known.
struct PendingCommit: Sendable {
    var update: RunUpdate
    var previousRunState: RunState
    /// The consumer whose step produced it (its cursor may advance after the commit).
    var consumer: StepConsumer? = nil
    /// Called once with the outcome, or nil if the engine was forced to stop before committing.
    var done: @Sendable (UpdateOutcome?) -> Void
    /// For a client's request (a worker's answer): when the commit fails it is not retried here
    /// but reported, so the client hears `UNAVAILABLE` instead of waiting out an outage.
    var failed: (@Sendable (any Error) -> Void)? = nil
}

/// Group commit: steps finish one by one, their updates are committed together in one
/// `store.update` call per batch (one transaction, not one per step). One queue serves every
/// step consumer of the engine, so the transitions of all statuses and partitions share
/// transactions, and up to `maxInFlight` batches commit at once: while they commit, the next
/// batch gathers. (Batches never share a run: a run has at most one step in flight.)
final class CommitQueue: Sendable {
    private struct State {
        var pending: [PendingCommit] = []
        var closed = false
        var inFlight = 0
        /// Failed commits in a row (for the back-off).
        var failures = 0
    }

    private let state = Mutex(State())
    private let wakeup = Wakeup()
    private let core: EngineCore
    private let maxInFlight: Int
    /// `run`'s after-batch work, for commits made inline (a class: see `EngineCore.Hooks`).
    private final class AfterBatch: Sendable {
        let body: @Sendable ([PendingCommit]) async -> Void
        init(_ body: @escaping @Sendable ([PendingCommit]) async -> Void) { self.body = body }
    }
    private let afterBatch = Mutex<AfterBatch?>(nil)

    init(core: EngineCore, maxInFlight: Int = 1) {
        self.core = core
        self.maxInFlight = max(1, maxInFlight)
    }

    func submit(_ commit: PendingCommit) {
        state.withLock { $0.pending.append(commit) }
        wakeup.signal()
    }

    /// Like `submit`, but when nothing waits and nothing commits the update is committed
    /// right here, in the caller's task: at low load a step's result costs no hand-over to the
    /// queue's task (two thread switches per transition). Under load it joins the next batch.
    func submitInline(_ commit: PendingCommit) async {
        let now = state.withLock { s -> Bool in
            // Only when the queue is idle: with a commit in flight, the next batch gathers.
            guard !s.closed, s.pending.isEmpty, s.inFlight == 0 else {
                s.pending.append(commit)
                return false
            }
            s.inFlight += 1
            return true
        }
        guard now else {
            wakeup.signal()
            return
        }
        await self.commit([commit], afterBatch: afterBatch.withLock { $0 }?.body ?? { _ in })
        state.withLock { $0.inFlight -= 1 }
        wakeup.signal()
    }

    /// Commits one update for a client and waits for its outcome. Throws `DRAINING` once the
    /// queue is closed (the engine is stopping) and the store's error if the commit fails.
    func commit(_ update: RunUpdate, previousRunState: RunState) async throws -> UpdateOutcome {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<UpdateOutcome, any Error>) in
            let pending = PendingCommit(
                update: update, previousRunState: previousRunState,
                done: { outcome in
                    if let outcome {
                        c.resume(returning: outcome)
                    } else {
                        c.resume(throwing: WorkflowError(.draining, "the engine is stopping", retryable: true))
                    }
                }, failed: { c.resume(throwing: $0) })
            let open = state.withLock { s -> Bool in
                guard !s.closed else { return false }
                s.pending.append(pending)
                return true
            }
            if open {
                wakeup.signal()
            } else {
                c.resume(throwing: WorkflowError(.draining, "the engine is stopping", retryable: true))
            }
        }
    }

    /// Whether the queue still takes commits (not closed).
    var isOpen: Bool { state.withLock { !$0.closed } }

    /// No more submissions: `run` returns once everything pending is committed.
    func close() {
        state.withLock { $0.closed = true }
        wakeup.signal()
    }

    /// Commits until closed and empty. `afterBatch` runs after every batch (cursor writes).
    func run(afterBatch: @escaping @Sendable ([PendingCommit]) async -> Void) async {
        self.afterBatch.withLock { $0 = AfterBatch(afterBatch) }
        let limit = core.configuration.commitBatchSize
        let maxInFlight = self.maxInFlight
        await withDiscardingTaskGroup { group in
            while true {
                let (batch, finished) = state.withLock { s -> ([PendingCommit], Bool) in
                    guard s.inFlight < maxInFlight, !s.pending.isEmpty else {
                        return ([], s.closed && s.pending.isEmpty && s.inFlight == 0)
                    }
                    let n = min(limit, s.pending.count)
                    let b = Array(s.pending.prefix(n))
                    s.pending.removeFirst(n)
                    s.inFlight += 1
                    return (b, false)
                }
                if finished { return }
                if batch.isEmpty {
                    if Task.isCancelled {
                        await Task.yield()
                        continue
                    }
                    await wakeup.wait()  // submit, close and each finished batch signal
                    continue
                }
                group.addTask {
                    await self.commit(batch, afterBatch: afterBatch)
                    self.state.withLock { $0.inFlight -= 1 }
                    self.wakeup.signal()
                }
            }
        }
    }

    private func commit(_ batch: [PendingCommit], afterBatch: @Sendable ([PendingCommit]) async -> Void) async {
        let started = ContinuousClock.now
        // Tasks these updates open go to this instance's workers in the same transaction.
        var updates = batch.map(\.update)
        let reserved = core.tasks.reserve(&updates)
        do {
            let outcomes = try await core.write { [updates] route in
                try await core.store.update(updates, route: route)
            } committed: { outcomes in
                core.tasks.settle(reserved) { outcomes[$0] == .applied }
                let applied = zip(updates, outcomes).filter { $0.1 == .applied }.map(\.0)
                core.recentRuns.put(applied.lazy.map(\.run))
                core.committed(applied)
            }
            core.stepAtOnce(zip(updates, outcomes).compactMap { $0.1 == .applied && $0.0.emitsEvent ? $0.0.run : nil })
            state.withLock { $0.failures = 0 }
            for outcome in outcomes {
                if outcome == .applied {
                    core.counters.applied.add(1, ordering: .relaxed)
                } else {
                    core.counters.conflicts.add(1, ordering: .relaxed)
                }
            }
            for (c, outcome) in zip(batch, outcomes) {
                if outcome == .applied { await core.runHooks(previous: c.previousRunState, run: c.update.run) }
                c.done(outcome)
            }
            await afterBatch(batch)
        } catch {
            core.tasks.settle(reserved) { _ in false }
            if Task.isCancelled {
                for c in batch { c.done(nil) }
                return
            }
            // Nothing is known to have committed; the version check makes a repeat harmless.
            let failures = state.withLock { s -> Int in
                s.failures += 1
                return s.failures
            }
            core.storeHealth.failed("commit", error, started: started)
            // Clients' requests hear the error now; the engine's own steps are tried again.
            for c in batch { c.failed?(error) }
            let retried = batch.filter { $0.failed == nil }
            guard !retried.isEmpty else { return }
            try? await Task.sleep(for: .milliseconds(min(50 << min(failures, 6), 2_000)))
            state.withLock { $0.pending.insert(contentsOf: retried, at: 0) }
        }
    }
}

import Synchronization

/// A change waiting to be committed, and what to do once its fate is known.
struct PendingCommit: Sendable {
    var update: RunUpdate
    var previousRunState: RunState
    /// Called once with the outcome, or nil if the engine was forced to stop before committing.
    var done: @Sendable (UpdateOutcome?) -> Void
}

/// Group commit: steps finish one by one, their updates are committed together in one
/// `store.update` call per batch (one transaction, not one per step). While a batch commits,
/// the next one gathers.
final class CommitQueue: Sendable {
    private struct State {
        var pending: [PendingCommit] = []
        var closed = false
    }

    private let state = Mutex(State())
    private let wakeup = Wakeup()
    private let core: EngineCore

    init(core: EngineCore) { self.core = core }

    func submit(_ commit: PendingCommit) {
        state.withLock { $0.pending.append(commit) }
        wakeup.signal()
    }

    /// No more submissions: `run` returns once everything pending is committed.
    func close() {
        state.withLock { $0.closed = true }
        wakeup.signal()
    }

    var isIdle: Bool { state.withLock { $0.pending.isEmpty } }

    /// Commits until closed and empty. `afterBatch` runs after every batch (cursor writes).
    func run(afterBatch: @Sendable () async -> Void) async {
        let limit = core.configuration.commitBatchSize
        var failures = 0
        while true {
            let (batch, closed) = state.withLock { s -> ([PendingCommit], Bool) in
                let n = min(limit, s.pending.count)
                let b = Array(s.pending.prefix(n))
                s.pending.removeFirst(n)
                return (b, s.closed)
            }
            if batch.isEmpty {
                if closed { return }
                if Task.isCancelled {
                    await Task.yield()
                    continue
                }
                await wakeup.wait(milliseconds: 1_000)
                continue
            }
            do {
                let outcomes = try await core.store.update(batch.map(\.update))
                failures = 0
                var wroteEvents = false
                for (c, outcome) in zip(batch, outcomes) {
                    if outcome == .applied {
                        core.counters.applied.add(1, ordering: .relaxed)
                        wroteEvents = wroteEvents || c.update.emitsEvent
                    } else {
                        core.counters.conflicts.add(1, ordering: .relaxed)
                    }
                }
                if wroteEvents { core.relayWakeup.signal() }
                for (c, outcome) in zip(batch, outcomes) {
                    if outcome == .applied { await core.runHooks(previous: c.previousRunState, run: c.update.run) }
                    c.done(outcome)
                }
                await afterBatch()
            } catch {
                if Task.isCancelled {
                    for c in batch { c.done(nil) }
                    continue
                }
                // Nothing is known to have committed; the version check makes a repeat harmless.
                failures += 1
                core.logger.warning("commit failed; retrying", metadata: ["error": "\(EngineCore.describe(error))"])
                state.withLock { $0.pending.insert(contentsOf: batch, at: 0) }
                try? await Task.sleep(for: .milliseconds(min(50 << min(failures, 6), 2_000)))
            }
        }
    }
}

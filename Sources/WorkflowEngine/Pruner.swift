/// Runs a `RetentionPolicy` against a store: finished runs first, then events, each in batches
/// of `batchSize`, one short transaction (or statement) per batch. Shared by `workflowd prune`
/// and the engine's retention job.
public struct Pruner: Sendable {
    /// What a pass did (or, for `plan`, would do).
    public struct Report: Sendable, Equatable {
        public var runs: Int = 0
        public var events: Int64 = 0
        /// The lowest `seq` kept after the pass (nil: the log is empty).
        public var earliestKept: Int64?
        /// Why events from `earliestKept` on were kept (nil when events were not pruned).
        public var eventsKeptBecause: EventPruneBound.Reason?
        public init() {}
    }

    public enum Phase: String, Sendable { case runs, events }

    public let store: any RetentionStore
    public let policy: RetentionPolicy

    public init(store: any RetentionStore, policy: RetentionPolicy) {
        self.store = store
        self.policy = policy
    }

    /// The counts a pass at `now` would delete, deleting nothing.
    public func plan(now: Timestamp) async throws -> Report {
        var report = Report()
        if let age = policy.runsOlderThanMilliseconds {
            report.runs = try await store.prunableRuns(updatedBefore: now.adding(milliseconds: -age))
        }
        if let age = policy.eventsOlderThanMilliseconds {
            let bound = try await store.eventPruneBound(before: now.adding(milliseconds: -age))
            report.events = bound.deletable
            report.earliestKept = bound.earliest.map { _ in bound.keepFrom }
            report.eventsKeptBecause = bound.reason
        } else {
            report.earliestKept = try await store.earliestSeq()
        }
        return report
    }

    /// One pass at `now`. `progress` is called after every batch with the phase, the total so
    /// far and the total expected; `shouldContinue` is asked before every batch (the engine's
    /// job stops when it loses its lease or the engine stops).
    public func prune(
        now: Timestamp,
        progress: @Sendable (Phase, _ done: Int64, _ total: Int64) -> Void = { _, _, _ in },
        shouldContinue: @Sendable () -> Bool = { true }
    ) async throws -> Report {
        let batch = max(1, policy.batchSize)
        var report = Report()
        if let age = policy.runsOlderThanMilliseconds {
            let cutoff = now.adding(milliseconds: -age)
            let total = Int64(try await store.prunableRuns(updatedBefore: cutoff))
            while shouldContinue() {
                let n = try await store.pruneRuns(
                    updatedBefore: cutoff, archivedAt: policy.archive ? now : nil, limit: batch)
                report.runs += n
                if n > 0 { progress(.runs, Int64(report.runs), max(total, Int64(report.runs))) }
                if n < batch { break }
            }
        }
        if let age = policy.eventsOlderThanMilliseconds {
            // The bound is fixed for the pass: events below it stay deletable (the log only grows
            // at its end), so the batches need not look at times or cursors again.
            let bound = try await store.eventPruneBound(before: now.adding(milliseconds: -age))
            let total = bound.deletable
            while total > 0, shouldContinue() {
                let n = Int64(try await store.deleteEvents(below: bound.keepFrom, limit: batch))
                report.events += n
                if n > 0 { progress(.events, report.events, max(total, report.events)) }
                if n < batch { break }
            }
            report.eventsKeptBecause = bound.reason
        }
        report.earliestKept = try await store.earliestSeq()
        return report
    }
}

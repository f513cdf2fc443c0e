import Synchronization
import WorkflowEngine

/// An in-memory `WorkflowService` for socket tests: runs, an event log with gap-free `seq`,
/// listeners called in `seq` order, optional delays, and counters the tests assert on.
final class FakeWorkflowService: WorkflowService {
    struct State {
        var runs: [String: Run] = [:]
        var order: [String] = []
        var events: [WorkflowEvent] = []
        var listeners: [Int: @Sendable ([WorkflowEvent]) -> Void] = [:]
        var nextListener = 1
        var nextRun = 1
        var catchUpReads = 0
        /// Catch-up reads that need a `seq` below this fail with GONE, as if retention had run
        /// after the subscribe (which still sees the whole log).
        var goneBelowForReads: Int64?
        var getCalls = 0
        var now: Int64 = 1_795_586_400_000
    }

    let state = Mutex(State())
    /// Delay of `run(id:)` / `latestRun`, for ordering and drain tests.
    let lookupDelay: Duration

    init(lookupDelay: Duration = .zero) {
        self.lookupDelay = lookupDelay
    }

    static let order = WorkflowDescription(
        name: "order-processor",
        statuses: [
            .init(name: "OrderCreated", code: 1, terminal: false), .init(name: "OrderValidated", code: 2, terminal: false),
            .init(name: "PaymentProcessed", code: 3, terminal: false), .init(name: "OrderFulfilled", code: 4, terminal: false),
            .init(name: "OrderCompleted", code: 5, terminal: true), .init(name: "OrderRejected", code: 6, terminal: true),
            .init(name: "PaymentFailed", code: 7, terminal: true), .init(name: "FulfillmentFailed", code: 8, terminal: true),
        ],
        transitions: [1: [2, 6], 2: [3, 7], 3: [4, 8], 4: [5]], initialStatus: 1)

    var workflows: [WorkflowDescription] { [Self.order] }

    /// Appends an event for `run` (under the lock, so listeners see `seq` order).
    private func record(_ s: inout State, _ run: Run) {
        let e = WorkflowEvent(seq: Int64(s.events.count + 1), data: run.event)
        s.events.append(e)
        for l in s.listeners.values { l([e]) }
    }

    func trigger(workflow: String, foreignID: String, object: [UInt8]) async throws -> CreateRunResult {
        state.withLock { s in
            if let existing = s.order.reversed().compactMap({ s.runs[$0] }).first(where: {
                $0.workflow == workflow && $0.foreignID == foreignID && !$0.runState.isFinished
            }) {
                return .existing(existing)
            }
            s.now += 1
            let id = "run-\(s.nextRun)"
            s.nextRun += 1
            let run = Run(
                workflow: workflow, foreignID: foreignID, runID: id, runState: .initiated, status: 1, version: 1,
                object: object, createdAt: Timestamp(milliseconds: s.now), updatedAt: Timestamp(milliseconds: s.now))
            s.runs[id] = run
            s.order.append(id)
            record(&s, run)
            return .created(run)
        }
    }

    /// Moves a run to `status` (and `runState`), writing its event. Test helper.
    @discardableResult
    func advance(_ runID: String, to status: Int, runState: RunState = .running, reason: String? = nil) -> Run {
        state.withLock { s in
            var run = s.runs[runID]!
            s.now += 1
            run.status = status
            run.runState = runState
            run.version += 1
            run.reason = reason
            run.updatedAt = Timestamp(milliseconds: s.now)
            s.runs[runID] = run
            record(&s, run)
            return run
        }
    }

    func run(id: String) async throws -> Run? {
        state.withLock { $0.getCalls += 1 }
        if lookupDelay > .zero { try await Task.sleep(for: lookupDelay) }
        return state.withLock { $0.runs[id] }
    }

    func latestRun(workflow: String, foreignID: String) async throws -> Run? {
        if lookupDelay > .zero { try await Task.sleep(for: lookupDelay) }
        return state.withLock { s in
            s.order.reversed().compactMap { s.runs[$0] }.first { $0.workflow == workflow && $0.foreignID == foreignID }
        }
    }

    func list(_ query: RunQuery) async throws -> RunPage {
        state.withLock { s in
            var runs = s.order.compactMap { s.runs[$0] }.filter { r in
                (query.workflow == nil || r.workflow == query.workflow)
                    && (query.statuses.isEmpty || query.statuses.contains(r.status))
                    && (query.runStates.isEmpty || query.runStates.contains(r.runState))
                    && (query.foreignIDs.isEmpty || query.foreignIDs.contains(r.foreignID))
            }
            if let after = query.after {
                runs = runs.filter { ($0.createdAt, $0.runID) > (after.createdAt, after.runID) }
            }
            let page = Array(runs.prefix(query.limit))
            let next = runs.count > query.limit ? page.last.map { RunCursor(createdAt: $0.createdAt, runID: $0.runID) } : nil
            return RunPage(runs: page, next: next)
        }
    }

    func history(runID: String) async throws -> [WorkflowEvent] {
        state.withLock { s in s.events.filter { $0.runID == runID } }
    }

    func control(_ command: RunCommand, runID: String, reason: String?) async throws -> Run {
        let current = state.withLock { $0.runs[runID] }
        guard let run = current else { throw WorkflowError(.notFound, "no run '\(runID)'") }
        switch command {
        case .pause:
            guard run.runState == .initiated || run.runState == .running else {
                throw WorkflowError(.invalidState, "cannot pause a \(run.runState.name) run")
            }
            return advance(runID, to: run.status, runState: .paused, reason: reason)
        case .resume:
            guard run.runState == .paused else { throw WorkflowError(.invalidState, "cannot resume a \(run.runState.name) run") }
            return advance(runID, to: run.status, runState: .running, reason: nil)
        case .cancel:
            guard !run.runState.isFinished else { throw WorkflowError(.invalidState, "cannot cancel a \(run.runState.name) run") }
            return advance(runID, to: run.status, runState: .cancelled, reason: reason)
        case .deleteData:
            guard run.runState == .completed || run.runState == .cancelled else {
                throw WorkflowError(.invalidState, "cannot delete data of a \(run.runState.name) run")
            }
            return advance(runID, to: run.status, runState: .dataDeleted, reason: reason)
        }
    }

    func events(after seq: Int64, filter: EventFilter, limit: Int) async throws -> [WorkflowEvent] {
        try state.withLock { s in
            s.catchUpReads += 1
            if let gone = s.goneBelowForReads, seq + 1 < gone {
                throw WorkflowError.gone(earliest: gone, "removed by retention; the earliest seq still kept is \(gone)")
            }
            return Array(s.events.lazy.filter { $0.seq > seq && filter.matches($0.data) }.prefix(limit))
        }
    }

    func head() async throws -> Int64 { state.withLock { Int64($0.events.count) } }

    func addEventListener(_ listener: @escaping @Sendable ([WorkflowEvent]) -> Void) -> EventListenerToken {
        state.withLock { s in
            let id = s.nextListener
            s.nextListener += 1
            s.listeners[id] = listener
            return EventListenerToken(id: id)
        }
    }

    func removeEventListener(_ token: EventListenerToken) {
        _ = state.withLock { $0.listeners.removeValue(forKey: token.id) }
    }

    func stats() async throws -> EngineStats {
        state.withLock { s in
            var byStatus: [Int: Int] = [:]
            var byRunState: [RunState: Int] = [:]
            for r in s.runs.values {
                byStatus[r.status, default: 0] += 1
                byRunState[r.runState, default: 0] += 1
            }
            return EngineStats(
                byStatus: ["order-processor": byStatus], byRunState: ["order-processor": byRunState],
                outbox: OutboxStats(pending: 0, oldest: nil), head: Int64(s.events.count),
                consumers: [ConsumerLag(name: "OrderCreated", cursor: Int64(s.events.count), lag: 0)])
        }
    }

    func health() async -> HealthReport {
        HealthReport(checks: ["database": HealthCheck(ok: true, detail: "in memory")])
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import Synchronization

/// What every part of one engine shares: the store, the clock, the definitions, the
/// configuration, and the signals that start and stop work. Immutable apart from its Mutex and
/// Atomic members.
final class EngineCore: Sendable {
    let store: any WorkflowStore
    let clock: any WorkflowClock
    let ids: any RunIDGenerator
    let configuration: WorkflowEngine.Configuration
    let definitions: [String: WorkflowDefinition]
    let logger: Logger
    /// Wakes the relay: a local transaction just wrote outbox rows.
    let relayWakeup = Wakeup()
    /// Wakes the timeout poller: a local commit scheduled a timeout or retry earlier than it
    /// planned to look, or leases moved.
    let pollerWakeup = Wakeup()
    /// The earliest time the poller means to look next (nil: when signalled).
    let pollerNextLook = Mutex<Timestamp?>(nil)
    let retentionWakeup = Wakeup()
    /// One writer of the log at a time (see `LogWriter`).
    let logWriter = LogWriter()
    /// Set once by the engine, before it runs: what the core calls back into.
    let hooks = Mutex<Hooks?>(nil)

    /// The parts of the engine the core calls back into. A class, set once: a closure kept
    /// directly in a `Mutex` would be re-wrapped in a reabstraction thunk on every `withLock`,
    /// each call a little slower than the one before (seen in a profile: thunk chains dozens
    /// deep on every write).
    final class Hooks: Sendable {
        /// Hands runs this instance just committed to their next step at once.
        let stepNow: @Sendable ([Run]) -> Void
        /// Whether this instance holds the `relay` lease, and whether others share the database.
        let isRelay: @Sendable () -> Bool
        let othersLive: @Sendable () -> Bool
        /// Where events this instance appended itself go (the dispatcher, in `seq` order).
        let deliver: @Sendable ([WorkflowEvent]) async -> Void

        init(
            stepNow: @escaping @Sendable ([Run]) -> Void, isRelay: @escaping @Sendable () -> Bool,
            othersLive: @escaping @Sendable () -> Bool, deliver: @escaping @Sendable ([WorkflowEvent]) async -> Void
        ) {
            self.stepNow = stepNow
            self.isRelay = isRelay
            self.othersLive = othersLive
            self.deliver = deliver
        }
    }
    /// Fired when a graceful stop begins.
    let stopRequested = OneShot()
    let counters = Counters()
    /// Runs this instance committed recently, by (run id, version).
    let recentRuns: RecentRuns
    /// Background store failures, logged once per episode.
    let storeHealth: StoreHealth
    /// Offers the tasks of external steps to this instance's workers.
    let tasks: TaskBroker
    let taskCounters = TaskBroker.Counters()
    /// Writes that went straight into the log (for `Configuration.killAfterDirectWrites`).
    private let directWrites = Atomic<Int>(0)

    /// Cheap counters for metrics and tests; updated from any thread.
    final class Counters: Sendable {
        let stepsRun = Atomic<Int>(0)
        let stepFailures = Atomic<Int>(0)
        let applied = Atomic<Int>(0)
        let conflicts = Atomic<Int>(0)
        /// Runs a consumer took from `recentRuns` instead of reading them.
        let runsFromMemory = Atomic<Int>(0)
        /// Steps started right after the commit that put their run in the status, before its
        /// event was logged.
        let stepsAtOnce = Atomic<Int>(0)
        let timeoutsFired = Atomic<Int>(0)
        /// Writes of this instance by where their events went (`WriteRoute` order).
        let writesByRoute = CounterVector(count: WriteRoute.allCases.count)
        /// Failed calls to the store in the engine's loops (each is retried).
        let storeErrors = Atomic<Int>(0)
        /// Events a step consumer did not act on, by reason (`SkipReason` order).
        let skipped = CounterVector(count: SkipReason.allCases.count)
        /// Events delivered to this instance, by the run state they record (`RunState` order).
        let eventsByRunState = CounterVector(count: RunState.allCases.count)
        /// Time a step took, from its start to its result (not the commit).
        let stepLatency = LatencyHistogram()

        func skip(_ reason: SkipReason, _ n: Int = 1) {
            if n > 0 { skipped.add(reason.index, n) }
        }
    }

    /// Where a write's events went.
    enum WriteRoute: String, CaseIterable {
        /// Straight into the log, in the write's transaction.
        case log
        /// Into the outbox: this instance does not hold the relay lease.
        case notRelay = "outbox_not_relay"
        /// Into the outbox: too many rows were pending to move in the write's transaction.
        case backlog = "outbox_backlog"

        var index: Int { Self.allCases.firstIndex(of: self)! }
    }

    /// Why a step consumer passes over an event.
    enum SkipReason: String, CaseIterable {
        /// A newer event of the same run is in the same batch, or the run is already being stepped.
        case superseded
        /// The run no longer exists.
        case runMissing = "run_missing"
        /// The run has moved on since the event (its version is newer).
        case staleVersion = "stale_version"
        /// The run is paused, cancelled or finished.
        case notRunnable = "not_runnable"

        var index: Int { Self.allCases.firstIndex(of: self)! }
    }

    init(
        store: any WorkflowStore, clock: any WorkflowClock, ids: any RunIDGenerator,
        configuration: WorkflowEngine.Configuration, definitions: [WorkflowDefinition], logger: Logger
    ) {
        self.store = store
        self.clock = clock
        self.ids = ids
        self.configuration = configuration
        self.definitions = Dictionary(definitions.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.logger = logger
        self.recentRuns = RecentRuns(capacity: configuration.recentRunsCapacity, maxBytes: configuration.recentRunsMaxBytes)
        let counters = self.counters
        let storeHealth = StoreHealth(logger: logger) { counters.storeErrors.add(1, ordering: .relaxed) }
        self.storeHealth = storeHealth
        self.tasks = TaskBroker(
            store: store, clock: clock, instanceID: configuration.instanceID,
            scanIntervalMilliseconds: Int64(configuration.taskScanMilliseconds), counters: taskCounters,
            storeHealth: storeHealth, logger: logger)
    }

    /// Updates this instance just committed (after the commit, before anyone is answered):
    /// the task broker learns which tasks they closed and opened.
    func committed(_ updates: [RunUpdate]) {
        scheduled(updates.lazy.flatMap(\.newTimeouts).map(\.expireAt).min())
        guard updates.contains(where: { $0.closesTask != nil || $0.opensTask }) else { return }
        tasks.committed(updates)
    }

    /// Runs this instance just committed go to their next step at once (after the write has
    /// released the log writer, so that step's own write finds it free).
    func stepAtOnce(_ runs: [Run]) {
        guard !runs.isEmpty, let hooks = hooks.withLock({ $0 }) else { return }
        hooks.stepNow(runs)
    }

    /// A commit of this instance created a timeout or retry due at `at`: the poller looks then,
    /// if it meant to look later.
    func scheduled(_ at: Timestamp?) {
        guard let at else { return }
        let earlier = pollerNextLook.withLock { next -> Bool in
            guard next.map({ at < $0 }) ?? true else { return false }
            next = at
            return true
        }
        if earlier { pollerWakeup.signal() }
    }

    func isExternal(workflow: String, status: Int) -> Bool { definitions[workflow]?.isExternal(status) ?? false }

    var isStopping: Bool { stopRequested.isFired }

    /// Runs a write of runs' changes: straight into the log when this instance holds the relay
    /// lease (the store takes the log writer's turn inside the transaction, after the write's
    /// other statements, so writes overlap until their append; the events are delivered before
    /// the turn is given back, so they arrive in `seq` order), through the outbox otherwise.
    /// `committed` runs once the write has committed and before its events are delivered (so
    /// what reacts to an event — a consumer, an `await` — finds the run in memory).
    func write<T: Sendable>(
        _ body: (EventRoute) async throws -> Written<T>, committed: (T) -> Void = { _ in }
    ) async throws -> T {
        guard let a = hooks.withLock({ $0 }), a.isRelay() else {
            let value = try await body(.outbox).value
            counters.writesByRoute.add(WriteRoute.notRelay.index, 1)
            committed(value)
            logWriter.wroteOutbox()
            relayWakeup.signal()
            return value
        }
        let turn = WriterTurn(core: self, hooks: a)
        // Past the limit of writes that may wait on a database thread, take the turn first.
        let inTransaction = logWriter.enterTransaction(limit: configuration.maxWritesWaitingInTransaction)
        if !inTransaction { _ = await turn.route.takeAsync() }
        do {
            let written: Written<T>
            do {
                defer { if inTransaction { logWriter.leaveTransaction() } }
                written = try await body(.log(turn.route))
            }
            guard let ticket = turn.ticket else {
                committed(written.value)
                // Refused (the lease went while the write waited): its events went to the
                // outbox. Never taken: the write had no event to append.
                if turn.route.taken {
                    counters.writesByRoute.add(WriteRoute.notRelay.index, 1)
                    logWriter.wroteOutbox()
                    relayWakeup.signal()
                }
                return written.value
            }
            if configuration.killAfterDirectWrites > 0, !written.appended.isEmpty,
                directWrites.add(1, ordering: .relaxed).newValue == configuration.killAfterDirectWrites
            {
                logger.warning("fault injection: SIGKILL after a direct write", metadata: ["seq": "\(written.appended.last!.seq)"])
                kill(getpid(), SIGKILL)
            }
            committed(written.value)
            if !written.appended.isEmpty { await a.deliver(written.appended) }
            // The turn taken, nothing appended: the store used the outbox (too many rows were
            // pending). The relay looks then.
            let fellBack = written.appended.isEmpty
            counters.writesByRoute.add((fellBack ? WriteRoute.backlog : .log).index, 1)
            let others = a.othersLive()
            logWriter.release(ticket, head: written.appended.last?.seq ?? ticket.head, drained: !fellBack && !others)
            if fellBack {
                logWriter.wroteOutbox()
                relayWakeup.signal()
            }
            return written.value
        } catch {
            if let ticket = turn.ticket { logWriter.release(ticket, head: nil, drained: false) }
            throw error
        }
    }

    /// One write's turn at the log writer, taken by the store when it is ready to append.
    private final class WriterTurn: @unchecked Sendable {  // its write's transaction, then the write
        private(set) var ticket: LogWriter.Ticket?
        private(set) var route: LogTurn!

        init(core: EngineCore, hooks: Hooks) {
            let writer = core.logWriter
            route = LogTurn(
                blocking: { [unowned self] in
                    self.granted(writer.acquireBlocking(), writer: writer, hooks: hooks)
                },
                async: { [unowned self] in
                    self.granted(await writer.acquire(), writer: writer, hooks: hooks)
                })
        }

        private func granted(_ t: LogWriter.Ticket, writer: LogWriter, hooks: Hooks) -> LogTurn.Grant? {
            // The lease may have gone while this write waited for its turn.
            guard hooks.isRelay() else {
                writer.release(t, head: t.head, drained: false)
                return nil
            }
            ticket = t
            return LogTurn.Grant(knownHead: t.head, outboxEmpty: t.outboxClean && !hooks.othersLive())
        }
    }

    /// Runs can make progress only in these run states.
    static let runnable: [RunState] = [.initiated, .running]

    // MARK: Building updates

    /// The update for a step's (or deadline's, or a worker's) result, or nil when the run-state
    /// machine refuses (the run is no longer runnable; the version check would refuse it anyway).
    ///
    /// Tasks follow the statuses: leaving an external status closes its task (withdrawn, unless
    /// `answering` names the worker's claim that chose this result), and entering one opens the
    /// task of the new version, in the same transaction.
    func transition(
        _ run: Run, to result: StepResult, definition: WorkflowDefinition, now: Timestamp, completesTimeout: Int64?,
        answering claim: Int64? = nil
    ) -> RunUpdate? {
        var machine = RunStateMachine(run.runState)
        let action = definition.isTerminal(result.status) ? machine.complete() : machine.advance()
        switch action {
        case .refuse:
            return nil
        case .changeRunState(let next):
            var r = run
            r.status = result.status
            r.runState = next
            r.version += 1
            if let o = result.object { r.object = o }
            r.reason = result.reason
            r.updatedAt = now
            r.meta = nil
            // Rows in workflow_timeouts can be pending for this run only if the status it leaves
            // has a timeout, a retry was scheduled (failures are kept in meta), or one just
            // fired; otherwise the cancel would be a statement that finds nothing.
            let mayHavePending = definition.timeouts[run.status] != nil || run.meta != nil || completesTimeout != nil
            let close: TaskClose? =
                if let claim { .complete(claim: claim) } else if definition.isExternal(run.status) { .withdraw } else { nil }
            return RunUpdate(
                run: r, expectedVersion: run.version, cancelPendingTimeouts: mayHavePending,
                newTimeouts: next == .completed ? [] : definition.newTimeouts(for: result.status, now: now),
                completesTimeout: completesTimeout, closesTask: close,
                opensTask: next != .completed && definition.isExternal(result.status))
        }
    }

    /// The update after a step threw: a durable retry with back-off, or, after
    /// `retry.maxAttempts` failures (or at once for a definition error), a pause with the error
    /// as reason. Nil if the run is not runnable.
    func failure(_ run: Run, error: any Error, now: Timestamp, completesTimeout: Int64?) -> RunUpdate? {
        counters.stepFailures.add(1, ordering: .relaxed)
        var meta = RunMeta(run.meta)
        meta.failures += 1
        let message = Self.describe(error)
        meta.lastError = message
        let isDefinitionError = (error as? WorkflowError)?.code == .definition
        var r = run
        r.updatedAt = now
        r.meta = meta.bytes
        if isDefinitionError || meta.failures >= configuration.retry.maxAttempts {
            r.version += 1  // the pause is a change of the run, with its event
            var machine = RunStateMachine(run.runState)
            guard case .changeRunState(let next) = machine.autoPause() else { return nil }
            r.runState = next
            r.reason =
                isDefinitionError
                ? "definition error: \(message)" : "step failed \(meta.failures) times; last error: \(message)"
            return RunUpdate(
                run: r, expectedVersion: run.version, cancelPendingTimeouts: true, completesTimeout: completesTimeout)
        }
        guard Self.runnable.contains(run.runState) else { return nil }
        // Scheduling a retry changes only bookkeeping: same version, no event.
        let delay = configuration.retry.delay(attempt: meta.failures, unit: configuration.random())
        let retry = NewTimeout(
            kind: .retry, status: run.status, expireAt: now.adding(milliseconds: delay), attempt: meta.failures)
        return RunUpdate(
            run: r, expectedVersion: run.version, newTimeouts: [retry], completesTimeout: completesTimeout,
            emitsEvent: false)
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? WorkflowError { return e.message }
        return String(describing: error)
    }

    /// Runs a step for `run` and returns the update to commit; nil when the step was abandoned
    /// (cancelled by a forced stop) or the run cannot move.
    func executeStep(
        _ run: Run, definition: WorkflowDefinition, attempt: Int, completesTimeout: Int64?
    ) async -> RunUpdate? {
        counters.stepsRun.add(1, ordering: .relaxed)
        let input = StepInput(run: run, now: clock.now(), attempt: attempt)
        let started = ContinuousClock.now
        defer { counters.stepLatency.observe(started.duration(to: .now)) }
        do {
            let result = try await definition.runStep(from: run.status, input)
            return transition(run, to: result, definition: definition, now: clock.now(), completesTimeout: completesTimeout)
        } catch is CancellationError where Task.isCancelled {
            return nil
        } catch {
            logger.debug(
                "step failed",
                metadata: ["run.id": "\(run.runID)", "workflow": "\(run.workflow)", "error": "\(Self.describe(error))"])
            return failure(run, error: error, now: clock.now(), completesTimeout: completesTimeout)
        }
    }

    /// Calls the definition's hooks for the run state `run` now has, if it changed.
    func runHooks(previous: RunState, run: Run) async {
        guard previous != run.runState, let hooks = definitions[run.workflow]?.hooks[run.runState] else { return }
        for hook in hooks { await hook(run) }
    }
}

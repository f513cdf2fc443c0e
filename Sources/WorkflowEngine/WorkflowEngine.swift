import Logging
import Synchronization

/// The durable workflow engine: the `WorkflowService` the server calls, and the long-lived
/// loops (relay, step consumers, timeout poller, leases) behind it.
///
/// ```swift
/// let engine = try WorkflowEngine(store: store, definitions: [orders])
/// try await withThrowingTaskGroup(of: Void.self) { group in
///     group.addTask { try await engine.run() }      // until cancelled or engine.shutdown()
///     let run = try await engine.trigger(workflow: "order-processor", foreignID: "order-1", object: bytes)
/// }
/// ```
///
/// Stopping (task cancellation or `shutdown()`) is graceful: no new steps start, in-flight steps
/// finish and commit (up to `drainMilliseconds`, then they are cancelled and left to be redone),
/// the outbox is relayed once more, cursors are written, and leases are released.
public final class WorkflowEngine: WorkflowService {
    let core: EngineCore
    let leases: LeaseKeeper
    let dispatcher: EventDispatcher
    let consumers: [StepConsumer]
    let poller: TimeoutPoller
    let retention: RetentionJob
    /// New runs are written in group commits.
    let creates: CreateBatcher
    /// One commit queue for every consumer and for workers' answers, so transitions of all
    /// statuses and partitions share transactions.
    let commits: CommitQueue
    private let runTask = Mutex<Task<Void, Never>?>(nil)
    let startedAtMilliseconds: Int64
    /// Fired when `run()` has stopped every part.
    let finished = OneShot()

    public init(
        store: any WorkflowStore, definitions: [WorkflowDefinition], configuration: Configuration = Configuration(),
        clock: any WorkflowClock = SystemClock(), ids: any RunIDGenerator = UUIDv7Generator(),
        logger: Logger = Logger(label: "workflowd.engine")
    ) throws {
        let names = definitions.map(\.name)
        guard Set(names).count == names.count else {
            throw WorkflowError(.definition, "two workflow definitions share a name")
        }
        guard configuration.partitionCount >= 1, configuration.maxConcurrentSteps >= 1,
            configuration.eventBatchSize >= 1, configuration.relayBatchSize >= 1, configuration.commitBatchSize >= 1, configuration.commitConcurrency >= 1,
            configuration.leaseTTLMilliseconds > 0, configuration.maxInstances >= 1,
            (configuration.retention.map { $0.batchSize >= 1 && $0.intervalMilliseconds >= 1 } ?? true)
        else {
            throw WorkflowError(.badRequest, "engine configuration: counts and the lease TTL must be positive")
        }
        let core = EngineCore(
            store: store, clock: clock, ids: ids, configuration: configuration, definitions: definitions,
            logger: logger)
        var consumers: [StepConsumer] = []
        for d in definitions {
            for status in d.stepStatuses {
                for p in 0..<configuration.partitionCount {
                    consumers.append(
                        StepConsumer(
                            core: core, definition: d, status: status,
                            partition: Partition(index: p, count: configuration.partitionCount)))
                }
            }
        }
        let leases = LeaseKeeper(
            core: core, partitioned: consumers.map { LeaseKeeper.Partitioned(name: $0.name, partition: $0.partition.index) })
        self.core = core
        self.consumers = consumers
        self.leases = leases
        // Parts waiting for a lease (or for others' work) look again as soon as leases move.
        let toWake = consumers
        leases.onChange { [core] in
            for c in toWake { c.signal() }
            core.relayWakeup.signal()
            core.pollerWakeup.signal()
            core.retentionWakeup.signal()
        }
        let dispatcher = EventDispatcher(core: core, leases: leases, consumers: consumers)
        self.dispatcher = dispatcher
        let hooks = EngineCore.Hooks(
            stepNow: { [dispatcher] runs in dispatcher.stepNow(runs) },
            isRelay: { [leases] in leases.holds(LeaseKeeper.relay) },
            othersLive: { [leases] in leases.othersLive },
            deliver: { [dispatcher, core] events in
                do { try await dispatcher.deliver(events) } catch {
                    // Logged; the next delivery fills the gap from the log.
                    core.storeHealth.failed("delivering events", error, started: .now)
                }
            })
        core.hooks.withLock { $0 = hooks }
        self.poller = TimeoutPoller(core: core)
        self.retention = RetentionJob(core: core)
        let store = core.store
        let recentRuns = core.recentRuns
        let tasks = core.tasks
        self.creates = CreateBatcher(maxBatch: configuration.commitBatchSize, maxInFlight: configuration.commitConcurrency) {
            batch in
            let results = try await core.write { route in
                try await store.create(batch: batch, route: route)
            } committed: { results in
                // Remembered before any caller resumes or any event is delivered, so the first
                // step finds the run in memory.
                let created = results.compactMap { if case .created(let run) = $0 { run } else { nil } }
                recentRuns.put(created)
                core.scheduled(batch.lazy.flatMap(\.timeouts).map(\.expireAt).min())
                if batch.contains(where: \.opensTask) {
                    let opened = Set(batch.filter(\.opensTask).map(\.run.runID))
                    tasks.created(created.filter { opened.contains($0.runID) })
                }
            }
            core.stepAtOnce(results.compactMap { if case .created(let run) = $0 { run } else { nil } })
            return results
        }
        self.commits = CommitQueue(core: core, maxInFlight: configuration.commitConcurrency)
        if definitions.contains(where: { !$0.externalStatuses.isEmpty }) {
            // Other instances' changes arrive as events: runs they moved into an external status
            // are offered to the workers here.
            _ = dispatcher.addListener { [core] events in
                core.tasks.eventsArrived(events, isExternal: core.isExternal(workflow:status:))
            }
        }
        self.startedAtMilliseconds = clock.now().milliseconds
    }

    public var workflows: [WorkflowDescription] {
        core.definitions.values.sorted { $0.name < $1.name }.map(\.description)
    }

    public var instanceID: String { core.configuration.instanceID }

    // MARK: Running

    /// Runs relay, consumers, poller and leases until the task is cancelled or `shutdown()` is
    /// called; returns after the graceful stop.
    public func run() async throws {
        let inner = Task { await self.runParts() }
        let first = runTask.withLock { t -> Bool in
            guard t == nil else { return false }
            t = inner
            return true
        }
        guard first else {
            inner.cancel()
            throw WorkflowError(.internalError, "the engine is already running")
        }
        await withTaskCancellationHandler {
            await inner.value
        } onCancel: {
            self.shutdown()
        }
    }

    /// Begins a graceful stop; `run()` returns when it is done.
    public func shutdown() {
        core.stopRequested.fire()
        wakeEverything()
    }

    private func wakeEverything() {
        for c in consumers { c.signal() }
        core.pollerWakeup.signal()
        core.retentionWakeup.signal()
        core.relayWakeup.signal()
        leases.wakeup.signal()
        core.tasks.wake()
    }

    private func runParts() async {
        await dispatcher.start()
        let workersDone = OneShot()
        let dispatcherDone = OneShot()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // The first round of leases before anyone waits for them.
                await self.leases.tick()
                self.wakeEverything()
                await self.leases.run(until: dispatcherDone)
            }
            group.addTask {
                await self.dispatcher.run(until: workersDone)
                dispatcherDone.fire()
                self.leases.wakeup.signal()
            }
            group.addTask {
                await self.openMissingTasks()
                await self.core.tasks.run(until: self.core.stopRequested)
            }
            group.addTask {
                // The engine's commit queue stops after the last consumer.
                let commits = self.commits
                await withDiscardingTaskGroup { workers in
                    workers.addTask {
                        await commits.run(afterBatch: { batch in
                            var flushed = Set<ObjectIdentifier>()
                            for c in batch {
                                guard let consumer = c.consumer, flushed.insert(ObjectIdentifier(consumer)).inserted
                                else { continue }
                                await consumer.flushCursor(force: false)
                            }
                        })
                    }
                    workers.addTask {
                        await withDiscardingTaskGroup { parts in
                            for c in self.consumers {
                                parts.addTask { await c.run(dispatcher: self.dispatcher, leases: self.leases, commits: commits) }
                            }
                            parts.addTask { await self.poller.run(leases: self.leases) }
                            parts.addTask { await self.retention.run(leases: self.leases) }
                        }
                        commits.close()
                    }
                }
                workersDone.fire()
                self.core.relayWakeup.signal()
            }
            group.addTask { await self.watchLag(until: dispatcherDone) }
            group.addTask {
                await self.core.stopRequested.wait()
                if Task.isCancelled { return }
                if await !dispatcherDone.wait(milliseconds: self.core.configuration.drainMilliseconds) {
                    self.core.logger.warning("graceful stop ran out of time; cancelling in-flight steps")
                    self.runTask.withLock { $0 }?.cancel()
                }
            }
        }
        finished.fire()
    }

    /// Runs already waiting in an external status when it became one (an upgrade, a change of
    /// `--external-steps`) have no task: open theirs, once, before offering anything.
    private func openMissingTasks() async {
        for definition in core.definitions.values {
            for status in definition.externalStatuses {
                while !core.isStopping, !Task.isCancelled {
                    let started = ContinuousClock.now
                    do {
                        let n = try await core.store.openMissingTasks(
                            workflow: definition.name, status: status, now: core.clock.now())
                        if n > 0 {
                            core.logger.info(
                                "opened tasks for runs already waiting in an external status",
                                metadata: ["workflow": "\(definition.name)", "status": "\(definition.statusName(status))", "tasks": "\(n)"])
                        }
                        break
                    } catch {
                        core.storeHealth.failed("opening missing tasks", error, started: started)
                        try? await Task.sleep(for: .milliseconds(500))
                    }
                }
            }
        }
    }

    /// Logs one warning when a consumer's lag passes `healthMaxLag` and one line when it is
    /// back under half of it: a line per episode, not per check.
    private func watchLag(until done: OneShot) async {
        let threshold = core.configuration.healthMaxLag
        var alerting: Set<String> = []
        while await !done.wait(milliseconds: core.configuration.lagCheckMilliseconds) {
            let head = dispatcher.knownHead
            for c in consumers {
                guard let lag = c.lag(head: head) else {
                    alerting.remove(c.name)
                    continue
                }
                if lag > threshold, alerting.insert(c.name).inserted {
                    core.logger.warning(
                        "consumer lag passed the alert threshold",
                        metadata: ["consumer": "\(c.name)", "lag": "\(lag)", "threshold": "\(threshold)"])
                } else if lag <= threshold / 2, alerting.remove(c.name) != nil {
                    core.logger.notice(
                        "consumer lag back under the alert threshold",
                        metadata: ["consumer": "\(c.name)", "lag": "\(lag)", "threshold": "\(threshold)"])
                }
            }
        }
    }

    // MARK: WorkflowService

    public func trigger(workflow: String, foreignID: String, object: [UInt8]) async throws -> CreateRunResult {
        guard let definition = core.definitions[workflow] else {
            throw WorkflowError(.notFound, "no workflow named \(workflow)")
        }
        guard !foreignID.isEmpty else { throw WorkflowError(.badRequest, "foreign_id must not be empty") }
        if core.isStopping { throw WorkflowError(.draining, "the engine is stopping", retryable: true) }
        let now = core.clock.now()
        let run = Run(
            workflow: workflow, foreignID: foreignID, runID: core.ids.next(now: now), runState: .initiated,
            status: definition.initialStatus, version: 1, object: object, createdAt: now, updatedAt: now)
        let result = try await creates.create(
            NewRun(
                run: run, timeouts: definition.newTimeouts(for: definition.initialStatus, now: now),
                opensTask: definition.isExternal(definition.initialStatus)))
        return result
    }

    public func recentRun(id: String, version: Int64) -> Run? { core.recentRuns.run(id, version: version) }

    public func run(id: String) async throws -> Run? { try await core.store.lookup(runID: id) }

    public func latestRun(workflow: String, foreignID: String) async throws -> Run? {
        try await core.store.latest(workflow: workflow, foreignID: foreignID)
    }

    public func list(_ query: RunQuery) async throws -> RunPage { try await core.store.list(query) }

    /// The run's events. The log trails a committed change by the relay's latency, so a client
    /// that changed the run and asks at once could miss the newest event: this waits (up to
    /// `historyWaitMilliseconds`, nudging the relay) until the log holds the run's current
    /// version, so callers read their own writes.
    public func history(runID: String) async throws -> [WorkflowEvent] {
        let current = try await core.store.lookup(runID: runID)?.version ?? 0
        var events = try await core.store.history(runID: runID)
        var waited = 0
        while (events.last?.version ?? 0) < current && waited < core.configuration.historyWaitMilliseconds {
            core.relayWakeup.signal()
            try await Task.sleep(for: .milliseconds(5))
            waited += 5
            events = try await core.store.history(runID: runID)
        }
        // Events are numbered 1…N per run: a history that does not start at version 1 lost its
        // beginning to retention (the relay logs a run's events in order, so the missing ones
        // were logged before the first one kept), and saying so beats answering with part of it.
        // An empty history is gone only when nothing waits in the outbox: otherwise the relay
        // may simply not have logged the run yet.
        var first = events.first?.version
        if first == nil, current > 0, try await core.store.outboxStats().pending == 0 { first = current + 1 }
        if let first, first > 1, let earliest = try await core.store.earliestSeq(), earliest > 1 {
            throw WorkflowError.gone(
                earliest: earliest,
                "the start of this run's history was removed by retention; the earliest seq still kept is \(earliest)")
        }
        return events
    }

    public func loggedHistory(runID: String) async throws -> [WorkflowEvent] {
        try await core.store.history(runID: runID)
    }

    /// Events after `seq`; `GONE` when retention already deleted `seq + 1`. Retention deletes
    /// only from the start of the log, so the earliest `seq` read after the events tells whether
    /// anything in the range was missing when they were read.
    public func events(after seq: Int64, filter: EventFilter, limit: Int) async throws -> [WorkflowEvent] {
        let events = try await core.store.events(after: seq, filter: filter, limit: limit)
        if let earliest = try await core.store.earliestSeq(), earliest - 1 > seq {  // (not seq + 1: seq may be Int64.max)
            throw WorkflowError.gone(
                earliest: earliest,
                "events after seq \(seq) up to \(earliest - 1) were removed by retention; the earliest seq still kept is \(earliest)")
        }
        return events
    }

    public func head() async throws -> Int64 { try await core.store.head() }

    public func earliestSeq() async throws -> Int64? { try await core.store.earliestSeq() }

    public func addEventListener(_ listener: @escaping @Sendable ([WorkflowEvent]) -> Void) -> EventListenerToken {
        dispatcher.addListener(listener)
    }

    public func removeEventListener(_ token: EventListenerToken) { dispatcher.removeListener(token) }

    /// Highest `seq` this instance has delivered to its listeners.
    public var deliveredHead: Int64 { dispatcher.knownHead }

    /// Consumer names (cursor and lease names), one per (workflow, status, partition).
    public var consumerNames: [String] { consumers.map(\.name) }

    /// Leases this instance holds now.
    public var heldLeases: [String] { leases.heldNames.sorted() }
}

import Synchronization

/// Brings new events into this instance, in `seq` order, exactly once each: as the relay (when
/// this instance holds the `relay` lease) it moves outbox rows into the log and hands what it
/// appended straight on; otherwise it polls the log. Either way it then calls the event
/// listeners and offers each local step consumer its share, so a consumer starts a step right
/// after the relay commit instead of at its next poll.
final class EventDispatcher: Sendable {
    typealias Listener = @Sendable ([WorkflowEvent]) -> Void

    private struct State {
        /// Highest `seq` delivered; everything up to it is committed in the log.
        var position: Int64 = 0
        var listeners: [Int: Listener] = [:]
        var nextToken = 0
    }

    private let core: EngineCore
    private let leases: LeaseKeeper
    private let state = Mutex(State())
    /// workflow → status → consumers by partition index.
    private let consumers: [String: [Int: [StepConsumer]]]
    private let allConsumers: [StepConsumer]
    private let partitionCount: Int

    init(core: EngineCore, leases: LeaseKeeper, consumers: [StepConsumer]) {
        self.core = core
        self.leases = leases
        self.allConsumers = consumers
        self.partitionCount = core.configuration.partitionCount
        var map: [String: [Int: [StepConsumer]]] = [:]
        for c in consumers {
            var byPartition = map[c.workflow, default: [:]][c.status] ?? Array(repeating: c, count: c.partition.count)
            byPartition[c.partition.index] = c
            map[c.workflow, default: [:]][c.status] = byPartition
        }
        self.consumers = map
    }

    /// Runs this instance just committed: each that waits in a status with a step goes to that
    /// step's consumer at once (it steps it if it holds the partition), without waiting for the
    /// relay and the event.
    func stepNow(_ runs: some Sequence<Run>) {
        for r in runs where r.runState == .initiated || r.runState == .running {
            guard let byPartition = consumers[r.workflow]?[r.status] else { continue }
            byPartition[Int(CRC32.checksum(r.runID.utf8) % UInt32(byPartition.count))].stepNow(r)
        }
    }

    /// Every event up to this `seq` is committed and visible in the log.
    var knownHead: Int64 { state.withLock { $0.position } }

    func addListener(_ listener: @escaping Listener) -> EventListenerToken {
        state.withLock { s in
            s.nextToken += 1
            s.listeners[s.nextToken] = listener
            return EventListenerToken(id: s.nextToken)
        }
    }

    func removeListener(_ token: EventListenerToken) { state.withLock { _ = $0.listeners.removeValue(forKey: token.id) } }

    /// Finds the head of the log; delivery starts after it.
    func start() async {
        while !Task.isCancelled {
            let started = ContinuousClock.now
            do {
                let head = try await core.store.head()
                state.withLock { $0.position = max($0.position, head) }
                return
            } catch {
                core.storeHealth.failed("reading the log head", error, started: started)
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// Relays or polls until `workersDone` fires; then drains the outbox once more (steps that
    /// finished during the stop wrote rows) and returns.
    func run(until workersDone: OneShot) async {
        let config = core.configuration
        while !Task.isCancelled {
            let finishing = workersDone.isFired
            let started = ContinuousClock.now
            do {
                if leases.holds(LeaseKeeper.relay) {
                    let others = leases.othersLive
                    // Alone, and every row of this instance already in the log: nothing to move.
                    if !others && core.logWriter.outboxClean && !finishing {
                        await core.relayWakeup.wait(milliseconds: config.idleBackstopMilliseconds)
                        continue
                    }
                    // The log writer: this instance's direct writes and the relay take turns.
                    let ticket = await core.logWriter.acquire()
                    let events: [WorkflowEvent]
                    do {
                        events = try await core.store.relay(limit: config.relayBatchSize)
                        if !events.isEmpty { try await deliver(events) }
                        core.logWriter.release(
                            ticket, head: events.last?.seq ?? ticket.head,
                            drained: !others && events.count < config.relayBatchSize)
                    } catch {
                        core.logWriter.release(ticket, head: nil, drained: false)
                        throw error
                    }
                    core.storeHealth.succeeded()
                    // A short batch took everything there was: wait for the next local commit
                    // (its signal, if it came during this batch, is already waiting) instead of
                    // a transaction that would most often find the outbox empty.
                    if events.count == config.relayBatchSize { continue }
                    if finishing && events.isEmpty { return }
                    // Other instances' rows can only be found by looking; alone, every row is
                    // this instance's and its commit signals (so do leases moving).
                    await core.relayWakeup.wait(
                        milliseconds: leases.othersLive ? config.relayIdleMilliseconds : config.idleBackstopMilliseconds)
                } else {
                    let after = knownHead
                    let events = try await core.store.events(after: after, filter: EventFilter(), limit: config.relayBatchSize)
                    core.storeHealth.succeeded()
                    if !events.isEmpty { try await deliver(events) }
                    if events.count == config.relayBatchSize { continue }
                    if finishing { return }
                    await core.relayWakeup.wait(milliseconds: config.eventPollMilliseconds)
                }
            } catch {
                if Task.isCancelled { return }
                core.storeHealth.failed("relay", error, started: started)
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// Hands a contiguous run of events on. Events at or below the position were delivered
    /// already (skipped); a gap before the first is filled from the log first.
    func deliver(_ incoming: [WorkflowEvent]) async throws {
        let position = knownHead
        var events = incoming.filter { $0.seq > position }
        guard let first = events.first else { return }
        if first.seq > position + 1 {
            let missing = try await core.store.events(
                after: position, filter: EventFilter(), limit: Int(first.seq - position - 1))
            guard missing.count == Int(first.seq - position - 1) else { return }  // try again next round
            events = missing + events
        }
        let to = events[events.count - 1].seq
        let listeners = state.withLock { s -> [Listener] in
            s.position = to
            return s.listeners.sorted { $0.key < $1.key }.map(\.value)
        }
        for l in listeners { l(events) }
        var byState = Array(repeating: 0, count: RunState.allCases.count)
        for e in events {
            if let i = RunState.allCases.firstIndex(of: e.runState) { byState[i] += 1 }
        }
        for (i, n) in byState.enumerated() where n > 0 { core.counters.eventsByRunState.add(i, n) }
        var shares: [ObjectIdentifier: [WorkflowEvent]] = [:]
        for e in events where e.runState == .initiated || e.runState == .running {
            guard let byPartition = consumers[e.workflow]?[e.status] else { continue }
            let p = Int(CRC32.checksum(e.runID.utf8) % UInt32(byPartition.count))
            shares[ObjectIdentifier(byPartition[p]), default: []].append(e)
        }
        for c in allConsumers { c.offer(from: position, to: to, events: shares[ObjectIdentifier(c)] ?? []) }
    }
}

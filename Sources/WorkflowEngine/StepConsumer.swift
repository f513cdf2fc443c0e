import Synchronization

/// Runs the step of one (workflow, status, partition) for every event that puts a run there.
///
/// Events arrive pushed by the local `EventDispatcher` right after the relay commit, or, to
/// catch up (start, lease taken over, a gap, an overfull inbox), read from the log after the
/// consumer's position. The runs of a batch are loaded in one query (a run this instance has
/// just committed at the event's version comes from `RecentRuns` instead); steps run concurrently up
/// to `maxConcurrentSteps`; finished steps are group-committed through a `CommitQueue`. An event
/// whose version is not the run's version is stale or a duplicate and is skipped. The cursor
/// advances to the low-water mark: the highest `seq` below which every event is finished.
final class StepConsumer: Sendable {
    let workflow: String
    let status: Int
    let partition: Partition
    /// Cursor and lease name.
    let name: String

    private let core: EngineCore
    private let definition: WorkflowDefinition
    private let filter: EventFilter
    private let wakeup = Wakeup()
    private let state = Mutex(State())

    private struct State {
        /// Holding the lease with a position loaded from the cursor.
        var active = false
        /// Grows each time the consumer (re)activates; work of an older epoch never moves the cursor.
        var epoch = 0
        /// Highest `seq` covered: every matching event up to it is finished, in flight or in the inbox.
        var position: Int64 = 0
        var inbox: [WorkflowEvent] = []
        var inboxHead = 0
        var needsPull = true
        var pulling = false
        var parked: [(from: Int64, to: Int64, events: [WorkflowEvent])] = []
        /// Taken from the inbox, not finished yet.
        var outstanding: Set<Int64> = []
        /// run id → version whose step is running or committing.
        var inFlightRuns: [String: Int64] = [:]
        /// Events read again (after the lease was lost and taken back) whose run's step, begun
        /// earlier, still runs: they are finished when that step is — never before, or a crash
        /// in between would leave the cursor past a step that never committed.
        var waitingOnStep: [String: [Int64]] = [:]
        var inFlight = 0
        /// Updates submitted to the commit queue whose outcome is not known yet.
        var committing = 0
        var cursorWritten: Int64 = 0
        var cursorBusy = false
        var lastCursorWrite = ContinuousClock.now
        /// Runs this instance just committed into this status, to step at once without waiting
        /// for the relay to log their event (taken before the inbox).
        var local: [Run] = []
        /// run id → the highest version stepped here (a bounded ring): the event of a version
        /// stepped locally, when it arrives, is finished without reading the run.
        var stepped: [String: Int64] = [:]
        var steppedOrder: [String] = []
        var steppedNext = 0
        /// Waiting with nothing to do and its cursor written: a range that moves the position
        /// (events of other statuses pass by) wakes it once, so the cursor follows.
        var parkedIdle = false

        var inboxCount: Int { inbox.count - inboxHead }

        static let steppedCapacity = 8_192

        mutating func noteStepped(_ runID: String, _ version: Int64) {
            if let v = stepped[runID] {
                if version > v { stepped[runID] = version }
                return
            }
            if steppedOrder.count < Self.steppedCapacity {
                steppedOrder.append(runID)
            } else {
                stepped[steppedOrder[steppedNext]] = nil
                steppedOrder[steppedNext] = runID
                steppedNext = (steppedNext + 1) % Self.steppedCapacity
            }
            stepped[runID] = version
        }

        /// Forgets the in-memory work of an epoch that ended (the lease was lost).
        mutating func deactivate() {
            active = false
            inbox = []
            inboxHead = 0
            parked = []
            outstanding = []
            waitingOnStep = [:]
            local = []
        }

        var lowWater: Int64 {
            var lw = position
            if let m = outstanding.min() { lw = min(lw, m - 1) }
            if inboxHead < inbox.count { lw = min(lw, inbox[inboxHead].seq - 1) }
            return lw
        }

        /// Takes a pushed range if it joins the position; otherwise asks for a pull.
        mutating func apply(from: Int64, to: Int64, events: [WorkflowEvent], maxBuffered: Int) -> Bool {
            guard from <= position else {
                needsPull = true
                return true
            }
            guard to > position else { return false }
            if inboxCount + events.count > maxBuffered {
                needsPull = true
                return true
            }
            var added = false
            for e in events where e.seq > position {
                inbox.append(e)
                added = true
            }
            position = to
            return added
        }
    }

    init(core: EngineCore, definition: WorkflowDefinition, status: Int, partition: Partition) {
        self.core = core
        self.definition = definition
        self.workflow = definition.name
        self.status = status
        self.partition = partition
        self.name = "consumer/\(definition.name)/\(status)/\(partition.index)of\(partition.count)"
        self.filter = EventFilter(
            workflow: definition.name, statuses: [status], runStates: EngineCore.runnable, partition: partition)
    }

    private var maxBuffered: Int { core.configuration.eventBatchSize * 8 }

    func signal() { wakeup.signal() }

    /// Events `(from, to]` of the log, already filtered to this consumer.
    func offer(from: Int64, to: Int64, events: [WorkflowEvent]) {
        let wake = state.withLock { s -> Bool in
            guard s.active else { return false }
            if s.pulling {
                s.parked.append((from, to, events))
                return false
            }
            var wake = s.apply(from: from, to: to, events: events, maxBuffered: maxBuffered)
            if s.parkedIdle, s.lowWater > s.cursorWritten {
                s.parkedIdle = false
                wake = true
            }
            return wake
        }
        if wake { wakeup.signal() }
    }

    /// Runs until the engine stops; `commits` is the engine's commit queue, which must keep
    /// running until this returns (the last steps' commits are waited for).
    func run(dispatcher: EventDispatcher, leases: LeaseKeeper, commits: CommitQueue) async {
        await withDiscardingTaskGroup { group in
            await readLoop(group: &group, commits: commits, dispatcher: dispatcher, leases: leases)
            while state.withLock({ $0.inFlight }) > 0, !Task.isCancelled {
                await wakeup.wait(milliseconds: 100)
            }
        }
        // Every step has ended; wait for the commits of their updates, then write the cursor.
        while state.withLock({ $0.committing }) > 0 {
            await wakeup.wait(milliseconds: 100)
        }
        await flushCursor(force: true)
    }

    private func readLoop(
        group: inout DiscardingTaskGroup, commits: CommitQueue, dispatcher: EventDispatcher, leases: LeaseKeeper
    ) async {
        let config = core.configuration
        while !core.isStopping, !Task.isCancelled {
            guard leases.holds(name) else {
                state.withLock { s in
                    if s.active { s.deactivate() }
                }
                // Woken when leases move; the timeout is only a backstop.
                await wakeup.wait(milliseconds: 5_000)
                continue
            }
            if !state.withLock({ $0.active }) {
                let started = ContinuousClock.now
                do {
                    let c = try await core.store.cursor(name)
                    state.withLock { s in
                        s.deactivate()
                        s.active = true
                        s.epoch += 1
                        s.position = c
                        s.cursorWritten = c
                        s.needsPull = true
                    }
                } catch {
                    core.storeHealth.failed("reading a cursor", error, started: started, metadata: ["consumer": "\(name)"])
                    try? await Task.sleep(for: .milliseconds(200))
                    continue
                }
            }
            let (local, localEpoch) = state.withLock { s -> ([Run], Int) in
                let room = max(0, config.maxConcurrentSteps - s.inFlight)
                let n = min(room, s.local.count)
                let taken = Array(s.local.prefix(n))
                s.local.removeFirst(n)
                return (taken, s.epoch)
            }
            if !local.isEmpty {
                core.counters.stepsAtOnce.add(local.count, ordering: .relaxed)
                startSteps(local, events: [:], epoch: localEpoch, group: &group, commits: commits)
            }
            let (batch, epoch, needsPull, capacity) = state.withLock {
                s -> ([WorkflowEvent], Int, Bool, Int) in
                let capacity = config.maxConcurrentSteps - s.inFlight
                let n = max(0, min(capacity, config.eventBatchSize, s.inboxCount))
                let batch = Array(s.inbox[s.inboxHead..<(s.inboxHead + n)])
                s.inboxHead += n
                if s.inboxHead == s.inbox.count {
                    s.inbox.removeAll(keepingCapacity: true)
                    s.inboxHead = 0
                } else if s.inboxHead > 1024 {
                    s.inbox.removeFirst(s.inboxHead)
                    s.inboxHead = 0
                }
                for e in batch { s.outstanding.insert(e.seq) }
                return (batch, s.epoch, s.needsPull, capacity)
            }
            if capacity <= 0 {
                await wakeup.wait(milliseconds: 1_000)
                continue
            }
            if batch.isEmpty {
                if needsPull {
                    await pull(dispatcher: dispatcher)
                    continue
                }
                // Idle: write the cursor, but never more often than `cursorFlushMilliseconds`
                // (a cursor only bounds the re-reading after a restart; at low load an idle
                // moment follows almost every event, and a write each time cost more SQL than
                // the transitions). If a write is still due, come back when it may be made.
                await flushCursor(force: false)
                let due = state.withLock { $0.active && $0.lowWater > $0.cursorWritten }
                // Nothing to do: events are pushed (and signal), so an idle consumer costs nothing.
                if due {
                    await wakeup.wait(milliseconds: config.cursorFlushMilliseconds)
                } else {
                    state.withLock { $0.parkedIdle = true }
                    await wakeup.wait()
                    state.withLock { $0.parkedIdle = false }
                }
                continue
            }
            await process(batch, epoch: epoch, group: &group, commits: commits)
        }
    }

    private func pull(dispatcher: EventDispatcher) async {
        let limit = core.configuration.eventBatchSize
        let after = state.withLock { s -> Int64 in
            s.pulling = true
            return s.position
        }
        // Everything up to the dispatcher's head is committed, so a short answer covers it all.
        let head = dispatcher.knownHead
        let started = ContinuousClock.now
        do {
            let events = try await core.store.events(after: after, filter: filter, limit: limit)
            state.withLock { s in
                s.pulling = false
                let full = events.count == limit
                for e in events where e.seq > s.position { s.inbox.append(e) }
                let covered = full ? events[events.count - 1].seq : max(head, events.last?.seq ?? after)
                s.position = max(s.position, covered)
                s.needsPull = full
                let parked = s.parked
                s.parked = []
                for p in parked { _ = s.apply(from: p.from, to: p.to, events: p.events, maxBuffered: maxBuffered) }
            }
        } catch {
            state.withLock { s in
                s.pulling = false
                s.parked = []
                s.needsPull = true
            }
            core.storeHealth.failed("reading events", error, started: started, metadata: ["consumer": "\(name)"])
            try? await Task.sleep(for: .milliseconds(200))
        }
    }

    private func process(
        _ batch: [WorkflowEvent], epoch: Int, group: inout DiscardingTaskGroup, commits: CommitQueue
    ) async {
        // Only the newest event of a run in this batch can still match the run's version.
        var latest: [String: WorkflowEvent] = [:]
        var finished: [Int64] = []
        for e in batch {
            if let prev = latest[e.runID] {
                if e.version > prev.version {
                    finished.append(prev.seq)
                    latest[e.runID] = e
                } else {
                    finished.append(e.seq)
                }
            } else {
                latest[e.runID] = e
            }
        }
        state.withLock { s in
            for (id, e) in latest where (s.inFlightRuns[id] ?? -1) >= e.version {
                if s.inFlightRuns[id] == e.version {
                    s.waitingOnStep[id, default: []].append(e.seq)
                } else {
                    finished.append(e.seq)  // the run's step in flight is for a newer version
                }
                latest[id] = nil
            }
            // Stepped here already (at once, after the commit that put the run here): done.
            for (id, e) in latest where (s.stepped[id] ?? -1) >= e.version {
                finished.append(e.seq)
                latest[id] = nil
            }
        }
        core.counters.skip(.superseded, finished.count)
        finish(finished, epoch: epoch)
        guard !latest.isEmpty else { return }
        // Runs this instance just committed at the event's version need no read.
        var runs: [Run] = []
        var missing: [String] = []
        for (id, e) in latest {
            if let run = core.recentRuns.run(id, version: e.version) { runs.append(run) } else { missing.append(id) }
        }
        core.counters.runsFromMemory.add(runs.count, ordering: .relaxed)
        let started = ContinuousClock.now
        do {
            if !missing.isEmpty { runs += try await core.store.lookup(runIDs: missing) }
        } catch {
            // Put the batch back; it is read again after a pause.
            state.withLock { s in
                guard s.epoch == epoch else { return }
                let back = latest.values.sorted { $0.seq < $1.seq }
                for e in back { s.outstanding.remove(e.seq) }
                s.inbox.insert(contentsOf: back, at: s.inboxHead)
            }
            core.storeHealth.failed("loading runs", error, started: started, metadata: ["consumer": "\(name)"])
            try? await Task.sleep(for: .milliseconds(200))
            return
        }
        var byID: [String: Run] = [:]
        for r in runs { byID[r.runID] = r }
        var skipped: [Int64] = []
        var ready: [Run] = []
        var events: [String: WorkflowEvent] = [:]
        for e in latest.values.sorted(by: { $0.seq < $1.seq }) {
            guard let run = byID[e.runID], run.version == e.version, run.status == status,
                EngineCore.runnable.contains(run.runState)
            else {
                let reason: EngineCore.SkipReason =
                    if let run = byID[e.runID] {
                        run.version != e.version || run.status != status ? .staleVersion : .notRunnable
                    } else { .runMissing }
                core.counters.skip(reason)
                skipped.append(e.seq)
                continue
            }
            ready.append(run)
            events[run.runID] = e
        }
        startSteps(ready, events: events, epoch: epoch, group: &group, commits: commits)
        finish(skipped, epoch: epoch)
    }

    /// Runs the step of each run (its event in `events`; none for a run this instance just
    /// committed here, stepped before its event is logged) and hands the results to the commit
    /// queue. A run whose step is already in flight here is left alone.
    private func startSteps(
        _ runs: [Run], events: [String: WorkflowEvent], epoch: Int, group: inout DiscardingTaskGroup, commits: CommitQueue
    ) {
        for run in runs {
            let e = events[run.runID]
            let start = state.withLock { s -> Bool in
                guard (s.inFlightRuns[run.runID] ?? -1) < run.version, (s.stepped[run.runID] ?? -1) < run.version else {
                    if let e { s.waitingOnStep[run.runID, default: []].append(e.seq) }
                    return false
                }
                s.inFlight += 1
                s.inFlightRuns[run.runID] = run.version
                s.noteStepped(run.runID, run.version)
                return true
            }
            guard start else { continue }
            let core = self.core
            let definition = self.definition
            group.addTask {
                let update = await core.executeStep(run, definition: definition, attempt: 0, completesTimeout: nil)
                if let update {
                    self.state.withLock { $0.committing += 1 }
                    await commits.submitInline(
                        PendingCommit(update: update, previousRunState: run.runState, consumer: self) { outcome in
                            self.stepDone(run: run, seq: e?.seq, epoch: epoch, finished: outcome != nil)
                            self.state.withLock { $0.committing -= 1 }
                            self.wakeup.signal()
                        })
                } else {
                    self.stepDone(run: run, seq: e?.seq, epoch: epoch, finished: !Task.isCancelled)
                }
                self.state.withLock { $0.inFlight -= 1 }
                self.wakeup.signal()
            }
        }
    }

    /// A run this instance just committed into this consumer's status: step it now, without
    /// waiting for the relay (its event, when it comes, is then finished without a read).
    /// Only while this consumer holds its partition; otherwise the event will bring it.
    func stepNow(_ run: Run) {
        let wake = state.withLock { s -> Bool in
            guard s.active, (s.stepped[run.runID] ?? -1) < run.version, (s.inFlightRuns[run.runID] ?? -1) < run.version,
                s.local.count < core.configuration.eventBatchSize * 8
            else { return false }
            s.local.append(run)
            return true
        }
        if wake { wakeup.signal() }
    }

    private func finish(_ seqs: [Int64], epoch: Int) {
        guard !seqs.isEmpty else { return }
        state.withLock { s in
            guard s.epoch == epoch else { return }
            for q in seqs { s.outstanding.remove(q) }
        }
    }

    private func stepDone(run: Run, seq: Int64?, epoch: Int, finished: Bool) {
        state.withLock { s in
            if s.inFlightRuns[run.runID] == run.version {
                s.inFlightRuns[run.runID] = nil
                // The same event read again in this epoch waited for this step.
                if let waiting = s.waitingOnStep.removeValue(forKey: run.runID), finished {
                    for q in waiting { s.outstanding.remove(q) }
                }
            }
            if !finished, s.stepped[run.runID] == run.version {
                s.stepped[run.runID] = nil  // abandoned (a forced stop): its event steps it again
            }
            if finished, s.epoch == epoch, let seq { s.outstanding.remove(seq) }
        }
    }

    /// Writes the low-water mark if it moved (at most every `cursorFlushMilliseconds` unless forced).
    func flushCursor(force: Bool) async {
        let interval = Duration.milliseconds(core.configuration.cursorFlushMilliseconds)
        let target = state.withLock { s -> Int64? in
            guard s.active, !s.cursorBusy else { return nil }
            let lw = s.lowWater
            guard lw > s.cursorWritten else { return nil }
            guard force || s.lastCursorWrite.duration(to: .now) >= interval else { return nil }
            s.cursorBusy = true
            return lw
        }
        guard let target else { return }
        let started = ContinuousClock.now
        do {
            try await core.store.setCursor(name, to: target)
            state.withLock { s in
                s.cursorWritten = max(s.cursorWritten, target)
                s.lastCursorWrite = .now
                s.cursorBusy = false
            }
        } catch {
            state.withLock { $0.cursorBusy = false }
            core.storeHealth.failed("writing a cursor", error, started: started, metadata: ["consumer": "\(name)"])
        }
    }

    /// The last cursor this consumer wrote and whether it is active (for tests and stats).
    var snapshot: (active: Bool, cursor: Int64, position: Int64) {
        state.withLock { ($0.active, $0.cursorWritten, $0.position) }
    }

    /// Events delivered to this instance that this consumer has not finished (nil when it does
    /// not hold its partition). Memory only: no database call.
    func lag(head: Int64) -> Int64? {
        state.withLock { s in s.active ? max(0, head - s.lowWater) : nil }
    }
}

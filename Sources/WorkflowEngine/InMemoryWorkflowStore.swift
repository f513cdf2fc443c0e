import Synchronization

/// A faithful in-memory `WorkflowStore` for pure engine tests (and in-memory benchmarks): version
/// checks, one unfinished run per (workflow, foreign id), outbox + gap-free `seq`, timeouts that
/// complete or cancel at most once, cursors, and leases that expire by the injected clock.
///
/// Every method runs under one lock and never suspends inside it, so each call is atomic like
/// a transaction. Not durable, of course: a test of a crash uses the MariaDB store.
public final class InMemoryWorkflowStore: WorkflowStore, RunCountingStore {
    struct State {
        var records: [String: Run] = [:]
        /// "workflow\0foreignID" → run id of the unfinished run.
        var active: [String: String] = [:]
        /// "workflow\0foreignID" → run id of the newest run.
        var latest: [String: String] = [:]
        var outbox: [OutboxRow] = []
        var outboxHead = 0
        var nextOutboxID: Int64 = 1
        var events: [WorkflowEvent] = []
        /// Events with `seq` below this were deleted by retention (their slots stay in `events`).
        var keptFrom: Int64 = 1
        /// Runs archived by retention, by run id.
        var archive: [String: Run] = [:]
        var historyIndex: [String: [Int64]] = [:]
        var timeouts: [Int64: TimeoutRecord] = [:]
        var pendingTimeouts: Set<Int64> = []
        var timeoutsByRun: [String: [Int64]] = [:]
        var nextTimeoutID: Int64 = 1
        var cursors: [String: Int64] = [:]
        var leases: [String: Lease] = [:]
        /// Tasks of external steps by "runID\0version".
        var tasks: [String: TaskRecord] = [:]
        var failingUpdates = 0
        var leaseReads = 0
        var updateCalls = 0
        var lookupCalls = 0
    }

    let state = Mutex(State())
    let clock: any WorkflowClock

    /// `clock` stamps outbox rows and timeouts (the real store uses the database's clock).
    public init(clock: any WorkflowClock = SystemClock()) { self.clock = clock }

    private static func key(_ workflow: String, _ foreignID: String) -> String { workflow + "\u{0}" + foreignID }

    // MARK: Test hooks

    /// The next `count` calls of `update` throw UNAVAILABLE without changing anything.
    public func failNextUpdates(_ count: Int) { state.withLock { $0.failingUpdates = count } }
    /// How many times `update` and `lookup(runIDs:)` were called (round trips, for batching tests).
    public var roundTrips: (updates: Int, lookups: Int) { state.withLock { ($0.updateCalls, $0.lookupCalls) } }
    public var allRuns: [Run] { state.withLock { Array($0.records.values) } }
    /// Runs retention archived.
    public var archivedRuns: [Run] { state.withLock { Array($0.archive.values) } }

    // MARK: RecordStore

    public func create(_ new: NewRun) async throws -> CreateRunResult {
        let now = clock.now()
        return state.withLock { s -> CreateRunResult in
            let k = Self.key(new.run.workflow, new.run.foreignID)
            if let id = s.active[k], let existing = s.records[id] { return .existing(existing) }
            precondition(s.records[new.run.runID] == nil, "duplicate run id \(new.run.runID)")
            s.records[new.run.runID] = new.run
            if !new.run.runState.isFinished { s.active[k] = new.run.runID }
            s.latest[k] = new.run.runID
            Self.addOutbox(&s, new.run.event, now: now)
            for t in new.timeouts { Self.addTimeout(&s, run: new.run, t, now: now) }
            if new.opensTask { Self.openTask(&s, new.run) }
            return .created(new.run)
        }
    }

    public func create(batch: [NewRun], route: EventRoute) async throws -> Written<[CreateRunResult]> {
        var results: [CreateRunResult] = []
        for n in batch { results.append(try await create(n)) }
        guard case .log(let turn) = route, await turn.takeAsync() != nil else { return Written(results) }
        return Written(results, appended: state.withLock { Self.logPendingOutbox(&$0) })
    }

    /// The `.log` route: the outbox rows this write just added, and any still pending before
    /// them, go into the log now (unless too many wait: then the relay moves them).
    private static func logPendingOutbox(_ s: inout State) -> [WorkflowEvent] {
        let pending = s.outbox.count - s.outboxHead
        guard pending > 0, pending <= 512 else { return [] }
        var out: [WorkflowEvent] = []
        for i in s.outboxHead..<s.outbox.count { out.append(appendEvent(&s, s.outbox[i].data)) }
        s.outboxHead = s.outbox.count
        return out
    }

    public func update(_ updates: [RunUpdate], route: EventRoute) async throws -> Written<[UpdateOutcome]> {
        let outcomes = try applyUpdates(updates)
        // The `.log` route: the turn, then the pending outbox rows (this write's among them)
        // into the log.
        guard case .log(let turn) = route, await turn.takeAsync() != nil else { return Written(outcomes) }
        return Written(outcomes, appended: state.withLock { Self.logPendingOutbox(&$0) })
    }

    private func applyUpdates(_ updates: [RunUpdate]) throws -> [UpdateOutcome] {
        let now = clock.now()
        return try state.withLock { s -> [UpdateOutcome] in
            s.updateCalls += 1
            if s.failingUpdates > 0 {
                s.failingUpdates -= 1
                throw WorkflowError(.unavailable, "injected failure", retryable: true)
            }
            var outcomes: [UpdateOutcome] = []
            outcomes.reserveCapacity(updates.count)
            for u in updates {
                guard let current = s.records[u.run.runID], current.version == u.expectedVersion else {
                    outcomes.append(.conflict)
                    continue
                }
                if let tid = u.completesTimeout {
                    guard s.pendingTimeouts.contains(tid), s.timeouts[tid]?.runID == u.run.runID else {
                        outcomes.append(.conflict)
                        continue
                    }
                }
                if let claim = u.taskClaim {
                    guard let t = s.tasks[Self.taskKey(claim.runID, claim.version)], t.isOpen, t.claim == claim.claim
                    else {
                        outcomes.append(.conflict)
                        continue
                    }
                }
                if let tid = u.completesTimeout {
                    s.pendingTimeouts.remove(tid)
                    s.timeouts[tid]?.completed = true
                }
                Self.closeTask(&s, u)
                if u.opensTask { Self.openTask(&s, u.run, held: u.opensHeld) }
                if u.cancelPendingTimeouts {
                    for tid in s.timeoutsByRun[u.run.runID] ?? [] where s.pendingTimeouts.contains(tid) {
                        s.pendingTimeouts.remove(tid)
                        s.timeouts[tid]?.cancelled = true
                    }
                }
                for t in u.newTimeouts { Self.addTimeout(&s, run: u.run, t, now: now) }
                s.records[u.run.runID] = u.run
                let k = Self.key(u.run.workflow, u.run.foreignID)
                if u.run.runState.isFinished {
                    if s.active[k] == u.run.runID { s.active[k] = nil }
                } else {
                    s.active[k] = u.run.runID
                }
                if u.emitsEvent { Self.addOutbox(&s, u.run.event, now: now) }
                outcomes.append(.applied)
            }
            return outcomes
        }
    }

    public func lookup(runID: String) async throws -> Run? { state.withLock { $0.records[runID] } }

    public func lookup(runIDs: [String]) async throws -> [Run] {
        state.withLock { s in
            s.lookupCalls += 1
            return runIDs.compactMap { s.records[$0] }
        }
    }

    public func latest(workflow: String, foreignID: String) async throws -> Run? {
        state.withLock { s in s.latest[Self.key(workflow, foreignID)].flatMap { s.records[$0] } }
    }

    public func list(_ query: RunQuery) async throws -> RunPage {
        let all = state.withLock { Array($0.records.values) }
        func before(_ a: Run, _ b: Run) -> Bool {
            (a.createdAt, a.runID) < (b.createdAt, b.runID)
        }
        var rows = all.filter { r in
            if let w = query.workflow, r.workflow != w { return false }
            if !query.foreignIDs.isEmpty, !query.foreignIDs.contains(r.foreignID) { return false }
            if !query.statuses.isEmpty, !query.statuses.contains(r.status) { return false }
            if !query.runStates.isEmpty, !query.runStates.contains(r.runState) { return false }
            if let a = query.createdAfter, r.createdAt < a { return false }
            if let b = query.createdBefore, r.createdAt >= b { return false }
            if let c = query.after {
                let key = (r.createdAt, r.runID)
                let ck = (c.createdAt, c.runID)
                return query.order == .ascending ? key > ck : key < ck
            }
            return true
        }
        rows.sort { query.order == .ascending ? before($0, $1) : before($1, $0) }
        let limit = max(query.limit, 1)
        if rows.count > limit {
            let page = Array(rows.prefix(limit))
            let last = page[page.count - 1]
            return RunPage(runs: page, next: RunCursor(createdAt: last.createdAt, runID: last.runID))
        }
        return RunPage(runs: rows, next: nil)
    }

    // MARK: EventLogStore

    public func outboxBatch(limit: Int) async throws -> [OutboxRow] {
        state.withLock { s in Array(s.outbox[s.outboxHead...].prefix(limit)) }
    }

    @discardableResult public func deleteOutbox(ids: [Int64]) async throws -> Int {
        state.withLock { s in
            let doomed = Set(ids)
            let before = s.outbox.count - s.outboxHead
            s.outbox = s.outbox[s.outboxHead...].filter { !doomed.contains($0.id) }
            s.outboxHead = 0
            return before - s.outbox.count
        }
    }

    public func outboxStats() async throws -> OutboxStats {
        state.withLock { s in
            OutboxStats(pending: s.outbox.count - s.outboxHead, oldest: s.outbox[s.outboxHead...].first?.createdAt)
        }
    }

    public func append(_ events: [EventData]) async throws -> [WorkflowEvent] {
        state.withLock { s in events.map { Self.appendEvent(&s, $0) } }
    }

    public func relay(limit: Int) async throws -> [WorkflowEvent] {
        state.withLock { s in
            let end = min(s.outbox.count, s.outboxHead + limit)
            var out: [WorkflowEvent] = []
            out.reserveCapacity(end - s.outboxHead)
            for i in s.outboxHead..<end { out.append(Self.appendEvent(&s, s.outbox[i].data)) }
            s.outboxHead = end
            if s.outboxHead > 4096, s.outboxHead * 2 > s.outbox.count {
                s.outbox.removeFirst(s.outboxHead)
                s.outboxHead = 0
            }
            return out
        }
    }

    public func events(after: Int64, filter: EventFilter, limit: Int) async throws -> [WorkflowEvent] {
        state.withLock { s in
            var out: [WorkflowEvent] = []
            var i = Int(max(after, s.keptFrom - 1, 0))
            while i < s.events.count, out.count < limit {
                if filter.matches(s.events[i].data) { out.append(s.events[i]) }
                i += 1
            }
            return out
        }
    }

    public func history(runID: String) async throws -> [WorkflowEvent] {
        state.withLock { s in (s.historyIndex[runID] ?? []).filter { $0 >= s.keptFrom }.map { s.events[Int($0 - 1)] } }
    }

    public func head() async throws -> Int64 { state.withLock { Int64($0.events.count) } }

    // MARK: TimeoutStore

    @discardableResult
    public func createTimeout(for run: Run, _ timeout: NewTimeout, now: Timestamp) async throws -> Int64 {
        state.withLock { s in Self.addTimeout(&s, run: run, timeout, now: now) }
    }

    public func completeTimeout(id: Int64) async throws -> Bool {
        state.withLock { s in
            guard s.pendingTimeouts.remove(id) != nil else { return false }
            s.timeouts[id]?.completed = true
            return true
        }
    }

    public func cancelTimeout(id: Int64) async throws -> Bool {
        state.withLock { s in
            guard s.pendingTimeouts.remove(id) != nil else { return false }
            s.timeouts[id]?.cancelled = true
            return true
        }
    }

    public func dueTimeouts(now: Timestamp, limit: Int) async throws -> [TimeoutRecord] {
        state.withLock { s in
            let due = s.pendingTimeouts.compactMap { s.timeouts[$0] }.filter { $0.expireAt <= now }
            return Array(due.sorted { $0.id < $1.id }.prefix(limit))
        }
    }

    public func nextTimeout(after now: Timestamp) async throws -> Timestamp? {
        state.withLock { s in s.pendingTimeouts.compactMap { s.timeouts[$0]?.expireAt }.filter { $0 > now }.min() }
    }

    public func timeouts(runID: String) async throws -> [TimeoutRecord] {
        state.withLock { s in (s.timeoutsByRun[runID] ?? []).compactMap { s.timeouts[$0] } }
    }

    // MARK: CursorStore

    public func cursor(_ name: String) async throws -> Int64 { state.withLock { $0.cursors[name] ?? 0 } }

    public func setCursor(_ name: String, to seq: Int64) async throws { state.withLock { $0.cursors[name] = seq } }

    // MARK: LeaseStore

    public func acquireLease(_ name: String, holder: String, now: Timestamp, ttlMilliseconds: Int64) async throws
        -> Lease?
    {
        state.withLock { s -> Lease? in
            let expires = now.adding(milliseconds: ttlMilliseconds)
            if let l = s.leases[name] {
                if l.holder == holder {
                    s.leases[name]!.expiresAt = expires
                    return s.leases[name]
                }
                guard l.expiresAt <= now else { return nil }
                let next = Lease(name: name, holder: holder, expiresAt: expires, generation: l.generation + 1)
                s.leases[name] = next
                return next
            }
            let next = Lease(name: name, holder: holder, expiresAt: expires, generation: 1)
            s.leases[name] = next
            return next
        }
    }

    @discardableResult public func releaseLease(_ name: String, holder: String) async throws -> Bool {
        state.withLock { s in
            guard let l = s.leases[name], l.holder == holder else { return false }
            // Keep the generation so the next holder's fencing token still grows.
            s.leases[name]!.expiresAt = Timestamp(milliseconds: Int64.min / 2)
            _ = l
            return true
        }
    }

    public func lease(_ name: String) async throws -> Lease? { state.withLock { $0.leases[name] } }

    public func leases() async throws -> [Lease] {
        state.withLock { s in
            s.leaseReads += 1
            return s.leases.values.sorted { $0.name < $1.name }
        }
    }

    public func acquireLeases(_ names: [String], holder: String, now: Timestamp, ttlMilliseconds: Int64) async throws
        -> Set<String>
    {
        var held: Set<String> = []
        for name in names where try await acquireLease(name, holder: holder, now: now, ttlMilliseconds: ttlMilliseconds) != nil {
            held.insert(name)
        }
        return held
    }

    public func releaseLeases(_ names: [String], holder: String) async throws {
        for name in names { try await releaseLease(name, holder: holder) }
    }

    // MARK: RetentionStore

    public func earliestSeq() async throws -> Int64? {
        state.withLock { s in Int64(s.events.count) >= s.keptFrom ? s.keptFrom : nil }
    }

    private static func prunable(_ s: State, before cutoff: Timestamp) -> [Run] {
        var cut = cutoff
        if let oldest = s.outbox[s.outboxHead...].first?.createdAt, oldest < cut { cut = oldest }
        return s.records.values.filter { RunState.prunable.contains($0.runState) && $0.updatedAt < cut }
            .sorted { $0.runID < $1.runID }
    }

    public func prunableRuns(updatedBefore cutoff: Timestamp) async throws -> Int {
        state.withLock { s in Self.prunable(s, before: cutoff).count }
    }

    public func pruneRuns(updatedBefore cutoff: Timestamp, archivedAt: Timestamp?, limit: Int) async throws -> Int {
        state.withLock { s in
            let doomed = Self.prunable(s, before: cutoff).prefix(limit)
            for run in doomed {
                if archivedAt != nil { s.archive[run.runID] = run }
                s.records[run.runID] = nil
                for id in s.timeoutsByRun.removeValue(forKey: run.runID) ?? [] {
                    s.timeouts[id] = nil
                    s.pendingTimeouts.remove(id)
                }
                for v in 1...max(1, run.version) { s.tasks[Self.taskKey(run.runID, v)] = nil }
                let k = Self.key(run.workflow, run.foreignID)
                if s.latest[k] == run.runID {
                    s.latest[k] = s.records.values.filter { $0.workflow == run.workflow && $0.foreignID == run.foreignID }
                        .max { ($0.createdAt, $0.runID) < ($1.createdAt, $1.runID) }?.runID
                }
            }
            return doomed.count
        }
    }

    public func eventPruneBound(before cutoff: Timestamp) async throws -> EventPruneBound {
        state.withLock { s in
            let head = Int64(s.events.count)
            guard head >= s.keptFrom else { return EventPruneBound(earliest: nil, keepFrom: 0, reason: .newest) }
            var bound = EventPruneBound(earliest: s.keptFrom, keepFrom: head, reason: .newest)
            if let young = s.events[Int(s.keptFrom - 1)...].first(where: { $0.at >= cutoff }), young.seq < bound.keepFrom {
                bound.keepFrom = young.seq
                bound.reason = .age
            }
            if let lowest = s.cursors.min(by: { ($0.value, $0.key) < ($1.value, $1.key) }), lowest.value + 1 < bound.keepFrom {
                bound.keepFrom = lowest.value + 1
                bound.reason = .cursor(lowest.key)
            }
            bound.keepFrom = max(bound.keepFrom, s.keptFrom)
            return bound
        }
    }

    public func deleteEvents(below: Int64, limit: Int) async throws -> Int {
        state.withLock { s in
            let end = min(below, s.keptFrom + Int64(limit), Int64(s.events.count) + 1)
            guard end > s.keptFrom else { return 0 }
            let n = Int(end - s.keptFrom)
            s.keptFrom = end
            return n
        }
    }

    // MARK: RunCountingStore

    public func runCounts() async throws -> [RunCount] {
        state.withLock { s in
            var counts: [String: RunCount] = [:]
            for r in s.records.values {
                let k = "\(r.workflow)\u{0}\(r.status)\u{0}\(r.runState.rawValue)"
                counts[k, default: RunCount(workflow: r.workflow, status: r.status, runState: r.runState, count: 0)]
                    .count += 1
            }
            return Array(counts.values)
        }
    }

    // MARK: Helpers (called under the lock)

    private static func addOutbox(_ s: inout State, _ data: EventData, now: Timestamp) {
        s.outbox.append(OutboxRow(id: s.nextOutboxID, data: data, createdAt: now))
        s.nextOutboxID += 1
    }

    private static func appendEvent(_ s: inout State, _ data: EventData) -> WorkflowEvent {
        let e = WorkflowEvent(seq: Int64(s.events.count) + 1, data: data)
        s.events.append(e)
        s.historyIndex[data.runID, default: []].append(e.seq)
        return e
    }

    @discardableResult
    private static func addTimeout(_ s: inout State, run: Run, _ t: NewTimeout, now: Timestamp) -> Int64 {
        let id = s.nextTimeoutID
        s.nextTimeoutID += 1
        s.timeouts[id] = TimeoutRecord(
            id: id, workflow: run.workflow, foreignID: run.foreignID, runID: run.runID, kind: t.kind, status: t.status,
            attempt: t.attempt, expireAt: t.expireAt, createdAt: now)
        s.pendingTimeouts.insert(id)
        s.timeoutsByRun[run.runID, default: []].append(id)
        return id
    }
}

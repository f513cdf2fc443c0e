import Logging
import Synchronization

/// Offers the tasks of external steps to the workers connected to this instance, and takes them
/// back when a worker leaves or a deadline passes. The decisions are `TaskOffers`'; this class
/// runs them under a lock and makes the database calls they ask for, in one loop that waits on
/// a signal (or the next deadline) rather than polling.
///
/// Tasks are claimed in the database (`TaskStore.claimTasks`: a conditional update), so a task
/// is held by one worker at a time whichever instance its worker is connected to. A run that
/// this instance moves into an external status is offered right after the commit; runs moved
/// by other instances are offered when their event arrives; anything else (work released by an
/// instance that stopped, a retry time reached, a backlog from before a worker connected) is
/// found by scanning the status while a worker has room: at once when a worker arrives, then at
/// the earliest time a scan saw a task become free, and at least every
/// `taskScanMilliseconds`.
final class TaskBroker: Sendable {
    typealias Offer = @Sendable ([ExternalTask]) -> Void

    private struct State {
        var offers: TaskOffers
        var deliver: [Int: Offer] = [:]
        var claimSeq = 0
    }

    private let state: Mutex<State>
    private let wakeup = Wakeup()
    private let store: any WorkflowStore
    private let clock: any WorkflowClock
    private let instanceID: String
    private let counters: Counters
    private let storeHealth: StoreHealth
    private let logger: Logger

    /// Counters for metrics; updated from any thread.
    final class Counters: Sendable {
        let offered = Atomic<Int>(0)
        let completed = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        let expired = Atomic<Int>(0)
        /// Time from a task becoming free to its offer.
        let wait = LatencyHistogram(bounds: [0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1_000, 5_000, 30_000, 300_000])
    }

    init(
        store: any WorkflowStore, clock: any WorkflowClock, instanceID: String, scanIntervalMilliseconds: Int64,
        counters: Counters, storeHealth: StoreHealth, logger: Logger
    ) {
        self.logger = logger
        self.store = store
        self.clock = clock
        self.instanceID = instanceID
        self.counters = counters
        self.storeHealth = storeHealth
        self.state = Mutex(State(offers: TaskOffers(scanIntervalMilliseconds: scanIntervalMilliseconds)))
    }

    // MARK: Workers

    func addWorker(_ spec: WorkerSpec, offer: @escaping Offer) -> WorkerToken {
        let id = state.withLock { s -> Int in
            let id = s.offers.addWorker(spec)
            s.deliver[id] = offer
            return id
        }
        logger.debug(
            "worker added",
            metadata: [
                "worker": "\(id)", "workflow": "\(spec.workflow)", "status": "\(spec.status)",
                "max_in_flight": "\(spec.maxInFlight)",
            ])
        return WorkerToken(id: id)
    }

    func setReady(_ token: WorkerToken, _ ready: Bool) {
        if state.withLock({ $0.offers.setReady(token.id, ready) }) { wakeup.signal() }
    }

    func removeWorker(_ token: WorkerToken) {
        let released = state.withLock { s -> Int in
            let before = s.offers.releasing.count
            s.offers.removeWorker(token.id)
            s.deliver[token.id] = nil
            return s.offers.releasing.count - before
        }
        logger.debug("worker removed", metadata: ["worker": "\(token.id)", "tasks.released": "\(released)"])
        wakeup.signal()
    }

    /// Workers connected here, and tasks they hold, for one external status.
    func local(workflow: String, status: Int) -> (workers: Int, held: Int) {
        state.withLock { s in
            let key = TaskOffers.GroupKey(workflow: workflow, status: status)
            return (s.offers.workers(of: key), s.offers.heldCount(of: key))
        }
    }

    // MARK: News

    /// Before a commit: the tasks these updates open go straight to ready workers here with
    /// room (`RunUpdate.opensHeld`), saving a claim after the commit. Returns the reservations
    /// by index, for `settle`.
    func reserve(_ updates: inout [RunUpdate]) -> [(index: Int, worker: Int, task: ExternalTask)] {
        guard updates.contains(where: \.opensTask) else { return [] }
        let now = clock.now()
        return state.withLock { s in
            guard s.offers.workerCount > 0 else { return [] }
            var out: [(Int, Int, ExternalTask)] = []
            s.claimSeq += 1
            let holder = "\(instanceID)#\(s.claimSeq)"
            for i in updates.indices where updates[i].opensTask {
                guard let (worker, task) = s.offers.reserve(updates[i].run, now: now) else { continue }
                updates[i].opensHeld = TaskHold(holder: holder, deadline: task.deadline)
                out.append((i, worker, task))
            }
            return out
        }
    }

    /// The commit of reserved tasks is known: deliver the committed ones to their workers.
    func settle(_ reservations: [(index: Int, worker: Int, task: ExternalTask)], committed: (Int) -> Bool) {
        guard !reservations.isEmpty else { return }
        var deliveries: [(Offer, ExternalTask)] = []
        var releasing = false
        state.withLock { s in
            for r in reservations {
                let ok = committed(r.index)
                if s.offers.settle(r.task, committed: ok), let offer = s.deliver[r.worker] {
                    deliveries.append((offer, r.task))
                } else if ok {
                    releasing = true
                }
            }
        }
        for (offer, task) in deliveries {
            counters.offered.add(1, ordering: .relaxed)
            counters.wait.observe(milliseconds: 0)
            offer([task])
        }
        if releasing { wakeup.signal() }
    }

    /// Updates this instance committed: tasks they closed free their workers here; tasks they
    /// opened (and did not hand over in the transaction) are offered at once.
    func committed(_ updates: some Sequence<RunUpdate>) {
        var wake = false
        state.withLock { s in
            for u in updates {
                if u.closesTask != nil {
                    s.offers.closed(runID: u.run.runID, version: u.expectedVersion)
                    wake = true
                }
                if u.opensTask && u.opensHeld == nil {
                    wake = s.offers.offerable(runID: u.run.runID, version: u.run.version, status: u.run.status, workflow: u.run.workflow) || wake
                }
            }
        }
        if wake { wakeup.signal() }
    }

    /// Runs created here in an external status.
    func created(_ runs: some Sequence<Run>) {
        let wake = state.withLock { s in
            runs.reduce(false) { s.offers.offerable(runID: $1.runID, version: $1.version, status: $1.status, workflow: $1.workflow) || $0 }
        }
        if wake { wakeup.signal() }
    }

    /// Events delivered to this instance (other instances' changes among them): a run in an
    /// external status with a worker here is a candidate.
    func eventsArrived(_ events: [WorkflowEvent], isExternal: (String, Int) -> Bool) {
        let wake = state.withLock { s -> Bool in
            guard s.offers.workerCount > 0 else { return false }
            var wake = false
            for e in events where (e.runState == .initiated || e.runState == .running) && isExternal(e.workflow, e.status) {
                wake = s.offers.offerable(runID: e.runID, version: e.version, status: e.status, workflow: e.workflow) || wake
            }
            return wake
        }
        if wake { wakeup.signal() }
    }

    /// An answer to `claim` committed (or was refused for good): its worker here has room.
    func finished(_ claim: TaskClaim) {
        if state.withLock({ $0.offers.finished(claim) }) != nil { wakeup.signal() }
    }

    /// A `fail` committed here: the task is free again at `at`.
    func retrying(workflow: String, status: Int, at: Timestamp) {
        state.withLock { $0.offers.freeAt(TaskOffers.GroupKey(workflow: workflow, status: status), at) }
        wakeup.signal()
    }

    func extended(_ claim: TaskClaim, to deadline: Timestamp) {
        state.withLock { $0.offers.extended(claim, to: deadline) }
        wakeup.signal()
    }

    /// The task if a worker here holds it under `claim`, with its worker's lease.
    func held(_ claim: TaskClaim) -> (task: ExternalTask, leaseMilliseconds: Int64)? {
        state.withLock { s in
            guard let h = s.offers.heldTask(claim), let w = s.offers.workers[h.worker] else { return nil }
            return (h.task, w.spec.leaseMilliseconds)
        }
    }

    // MARK: The loop

    func wake() { wakeup.signal() }

    /// Offers until `stop` fires, then frees every task held here so other instances can take
    /// them at once.
    func run(until stop: OneShot) async {
        while !stop.isFired, !Task.isCancelled {
            let again = await step()
            if again { continue }
            let now = clock.now()
            let next = state.withLock { $0.offers.nextWake(now: now) }
            if let next {
                let ms = max(1, next.milliseconds - now.milliseconds)
                await wakeup.wait(milliseconds: Int(min(ms, 60_000)))
            } else {
                await wakeup.wait(milliseconds: 60_000)
            }
        }
        let releases = state.withLock { s -> [TaskOffers.Release] in
            s.offers.releaseAll()
            return s.offers.takeReleasing()
        }
        if !releases.isEmpty { _ = try? await store.releaseTasks(releases.map(\.claim), now: clock.now()) }
    }

    /// One round: free what was released, take back what expired, make the planned claims.
    /// Returns true when another round should follow at once.
    private func step() async -> Bool {
        let now = clock.now()
        let (releases, expired, requests) = state.withLock { s in
            (s.offers.takeReleasing(), s.offers.expire(now: now), s.offers.plan(now: now))
        }
        if !expired.isEmpty { counters.expired.add(expired.count, ordering: .relaxed) }
        if !releases.isEmpty {
            let started = ContinuousClock.now
            do {
                try await store.releaseTasks(releases.map(\.claim), now: now)
                storeHealth.succeeded()
            } catch {
                // Not freed: they are free anyway once their deadline passes.
                storeHealth.failed("releasing tasks", error, started: started)
            }
            state.withLock { $0.offers.released(releases) }
        }
        for request in requests { await claim(request, now: now) }
        return !releases.isEmpty
    }

    private func claim(_ request: TaskOffers.ClaimRequest, now: Timestamp) async {
        let key = request.group
        let (holder, deadline) = state.withLock { s -> (String, Timestamp) in
            s.claimSeq += 1
            return ("\(instanceID)#\(s.claimSeq)", now.adding(milliseconds: request.leaseMilliseconds))
        }
        let started = ContinuousClock.now
        do {
            var ids = request.runIDs ?? []
            if request.runIDs == nil {
                let (free, next) = try await store.freeTasks(
                    workflow: key.workflow, status: key.status, now: now, limit: request.limit)
                ids = free
                state.withLock { $0.offers.scanned(key, full: free.count == request.limit, nextFree: next, now: now) }
            }
            let claimed =
                ids.isEmpty
                ? []
                : try await store.claimTasks(
                    workflow: key.workflow, status: key.status, runIDs: ids, holder: holder, now: now, deadline: deadline)
            storeHealth.succeeded()
            let tasks = claimed.map { ExternalTask(claim: $0.claim, run: $0.run, attempt: $0.attempt, deadline: $0.deadline) }
            for c in claimed { counters.wait.observe(milliseconds: Double(max(0, now.milliseconds - c.freeSince.milliseconds))) }
            let deliveries = state.withLock { s in
                s.offers.claimed(request, tasks).compactMap { a in s.deliver[a.worker].map { ($0, a.worker, a.tasks) } }
            }
            if logger.logLevel <= .debug {
                logger.debug(
                    "tasks claimed",
                    metadata: [
                        "status": "\(key.status)", "asked": "\(ids.count)", "claimed": "\(tasks.count)",
                        "given": "\(deliveries.map { "w\($0.1):\($0.2.count)" }.joined(separator: ","))",
                        "scan": "\(request.runIDs == nil)",
                    ])
            }
            for (offer, _, tasks) in deliveries {
                counters.offered.add(tasks.count, ordering: .relaxed)
                offer(tasks)
            }
        } catch {
            state.withLock { $0.offers.claimFailed(request, now: now) }
            storeHealth.failed("claiming tasks", error, started: started)
        }
    }
}

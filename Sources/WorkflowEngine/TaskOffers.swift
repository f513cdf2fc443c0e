/// A task given to a worker: the claim that names this offer, the run as stored when it was
/// claimed, the attempt and the deadline by which the worker answers or extends.
public struct ExternalTask: Sendable, Equatable {
    public var claim: TaskClaim
    public var run: Run
    public var attempt: Int
    public var deadline: Timestamp

    public init(claim: TaskClaim, run: Run, attempt: Int, deadline: Timestamp) {
        self.claim = claim
        self.run = run
        self.attempt = attempt
        self.deadline = deadline
    }

    public var idempotencyKey: String { claim.idempotencyKey }
}

/// What a worker asked for: the external status it works on, how many unanswered tasks it takes
/// at once, and how long each offer lasts before it is offered again.
public struct WorkerSpec: Sendable, Equatable {
    public var workflow: String
    public var status: Int
    public var maxInFlight: Int
    public var leaseMilliseconds: Int64

    public init(workflow: String, status: Int, maxInFlight: Int, leaseMilliseconds: Int64) {
        self.workflow = workflow
        self.status = status
        self.maxInFlight = maxInFlight
        self.leaseMilliseconds = leaseMilliseconds
    }
}

/// Names a registered worker (`WorkflowService.addWorker`).
public struct WorkerToken: Hashable, Sendable {
    public let id: Int
    public init(id: Int) { self.id = id }
}

/// The broker's decisions, without I/O or locks: which workers may take tasks, which runs to
/// claim for which status, how claimed tasks are shared out, when a held task expires. The
/// `TaskBroker` runs it under a lock and does the database calls it asks for.
///
/// - A worker is given tasks only while it is ready (its `work` reply is written and its
///   connection is below the write high-water mark) and holds fewer than `maxInFlight`.
/// - Candidates are run ids believed to have a free task: runs this instance just moved into an
///   external status, events from other instances, tasks released or expired. When there are
///   more than `maxCandidates`, or a worker arrives, the status is scanned in the database.
/// - A task that expired is offered to another worker first, if one has room.
struct TaskOffers {
    struct GroupKey: Hashable, Sendable {
        var workflow: String
        var status: Int
    }

    struct Worker: Equatable {
        let id: Int
        let spec: WorkerSpec
        var held: Set<String> = []
        var ready = false
        /// When it was last given a task (a counter), so work goes round.
        var lastServed: UInt64 = 0

        var room: Int { ready ? max(0, spec.maxInFlight - held.count) : 0 }
        /// What one claim may give it: its room, at most `claimBatch` (so a worker that stops
        /// reading is sent at most one batch past its connection's high-water mark).
        var roomThisRound: Int { min(room, TaskOffers.claimBatch) }
    }

    /// Tasks one claim gives one worker at most.
    static let claimBatch = 16

    struct Held: Equatable {
        var worker: Int
        var task: ExternalTask
    }

    struct Group: Equatable {
        var workers: [Int] = []
        /// Run ids to try, oldest first, without duplicates.
        var candidates: [String] = []
        var candidateSet: Set<String> = []
        /// run id → the worker that let it expire (offered to someone else first).
        var avoid: [String: Int] = [:]
        /// The database may hold free tasks not among the candidates.
        var scanDue = true
        /// When to scan next although nothing says so: the earliest free time a scan saw, or a
        /// periodic look for work released by other instances.
        var nextScan: Timestamp?
        /// A claim for this group is in flight (one at a time per group).
        var claiming = false
        /// After a failed claim: nothing before this time.
        var retryAt: Timestamp?
    }

    /// One database call the driver makes for a group.
    struct ClaimRequest: Equatable {
        var group: GroupKey
        /// Claim these run ids; nil: scan the status for free tasks first.
        var runIDs: [String]?
        var limit: Int
        var leaseMilliseconds: Int64
    }

    let maxCandidates: Int
    let scanIntervalMilliseconds: Int64
    private(set) var workers: [Int: Worker] = [:]
    private(set) var groups: [GroupKey: Group] = [:]
    /// Tasks held by this instance's workers, by run id (a run has at most one open task).
    private(set) var held: [String: Held] = [:]
    /// A claim to free in the database (its worker left), and its group.
    struct Release: Equatable {
        var claim: TaskClaim
        var group: GroupKey
    }

    /// Claims to free in the database.
    private(set) var releasing: [Release] = []
    /// (run id, version) pairs already claimed or finished here, so a late event for them does
    /// not cost a claim that finds nothing. A bounded ring.
    private var handled = RecentKeys(capacity: 8_192)
    private var nextWorkerID = 1
    private var serveCounter: UInt64 = 0

    init(maxCandidates: Int = 4_096, scanIntervalMilliseconds: Int64 = 1_000) {
        self.maxCandidates = maxCandidates
        self.scanIntervalMilliseconds = scanIntervalMilliseconds
    }

    // MARK: Workers

    mutating func addWorker(_ spec: WorkerSpec) -> Int {
        let id = nextWorkerID
        nextWorkerID += 1
        workers[id] = Worker(id: id, spec: spec)
        let key = GroupKey(workflow: spec.workflow, status: spec.status)
        groups[key, default: Group()].workers.append(id)
        groups[key]!.scanDue = true
        return id
    }

    /// Removes the worker; its held tasks go to `releasing` (freed, then offered again).
    mutating func removeWorker(_ id: Int) {
        guard let w = workers.removeValue(forKey: id) else { return }
        let key = GroupKey(workflow: w.spec.workflow, status: w.spec.status)
        groups[key]?.workers.removeAll { $0 == id }
        for runID in w.held {
            guard let h = held.removeValue(forKey: runID) else { continue }
            releasing.append(Release(claim: h.task.claim, group: key))
        }
        if groups[key]?.workers.isEmpty == true, !held.values.contains(where: { $0.task.run.status == key.status }) {
            groups[key]?.candidates = []
            groups[key]?.candidateSet = []
            groups[key]?.avoid = [:]
        }
    }

    /// Ready: its connection takes frames now. Returns whether that may start a claim.
    mutating func setReady(_ id: Int, _ ready: Bool) -> Bool {
        guard workers[id] != nil, workers[id]!.ready != ready else { return false }
        workers[id]!.ready = ready
        return ready
    }

    var workerCount: Int { workers.count }

    func workers(of key: GroupKey) -> Int { groups[key]?.workers.count ?? 0 }

    func heldCount(of key: GroupKey) -> Int { held.values.filter { $0.task.run.status == key.status && $0.task.run.workflow == key.workflow }.count }

    // MARK: Candidates

    /// Runs that entered (or were resumed in) an external status at `version`. Returns whether a
    /// claim may follow.
    mutating func offerable(runID: String, version: Int64, status: Int, workflow: String) -> Bool {
        let key = GroupKey(workflow: workflow, status: status)
        guard var g = groups[key], !g.workers.isEmpty else { return false }
        if let h = held[runID], h.task.claim.version >= version { return false }
        if handled.contains(runID, version) || g.candidateSet.contains(runID) { return false }
        if g.candidates.count >= maxCandidates {
            g.scanDue = true
        } else {
            g.candidates.append(runID)
            g.candidateSet.insert(runID)
        }
        groups[key] = g
        return true
    }

    /// The release of these claims committed: offer them again (first).
    mutating func released(_ releases: [Release]) {
        for r in releases {
            guard var g = groups[r.group], !g.workers.isEmpty else { continue }
            if !g.candidateSet.contains(r.claim.runID) {
                g.candidates.insert(r.claim.runID, at: 0)
                g.candidateSet.insert(r.claim.runID)
            }
            groups[r.group] = g
        }
    }

    mutating func takeReleasing() -> [Release] {
        defer { releasing = [] }
        return releasing
    }

    // MARK: Time

    /// Held tasks whose deadline passed: no longer their worker's; offered again, to someone
    /// else first.
    mutating func expire(now: Timestamp) -> [Held] {
        let due = held.values.filter { $0.task.deadline <= now }
        for h in due {
            let runID = h.task.claim.runID
            held[runID] = nil
            workers[h.worker]?.held.remove(runID)
            let key = GroupKey(workflow: h.task.run.workflow, status: h.task.run.status)
            guard var g = groups[key], !g.workers.isEmpty else { continue }
            if !g.candidateSet.contains(runID) {
                g.candidates.insert(runID, at: 0)
                g.candidateSet.insert(runID)
            }
            g.avoid[runID] = h.worker
            groups[key] = g
        }
        return due
    }

    /// When something is due without a signal: a held task's deadline, or a group's scan while
    /// it has room. Nil: nothing is (wait for a signal).
    func nextWake(now: Timestamp) -> Timestamp? {
        var next = held.values.map(\.task.deadline).min()
        for (key, g) in groups where !g.claiming && room(of: key) > 0 {
            if let r = g.retryAt, r > now {
                next = next.map { min($0, r) } ?? r
                continue
            }
            if g.scanDue || !g.candidates.isEmpty || g.nextScan == nil { return now }
            if let s = g.nextScan { next = next.map { min($0, s) } ?? s }
        }
        return next
    }

    // MARK: Claims

    private func room(of key: GroupKey) -> Int {
        groups[key]?.workers.reduce(0) { $0 + (workers[$1]?.room ?? 0) } ?? 0
    }

    /// The claims to make now: per group with room and no claim in flight, its candidates (up
    /// to the room of the workers sharing the roomiest worker's lease), or a scan when one is
    /// due. Marks those groups as claiming.
    mutating func plan(now: Timestamp) -> [ClaimRequest] {
        var requests: [ClaimRequest] = []
        for key in groups.keys.sorted(by: { ($0.workflow, $0.status) < ($1.workflow, $1.status) }) {
            guard var g = groups[key], !g.claiming, g.retryAt.map({ $0 <= now }) ?? true else { continue }
            g.retryAt = nil
            let ready = g.workers.compactMap { workers[$0] }.filter { $0.room > 0 }
                .sorted { ($0.lastServed, $0.id) < ($1.lastServed, $1.id) }
            // The lease comes from the worker next in turn, skipping one the first candidate
            // expired from when another can take it.
            let avoid = g.candidates.first.flatMap { g.avoid[$0] }
            guard let lead = ready.first(where: { $0.id != avoid }) ?? ready.first else { continue }
            let lease = lead.spec.leaseMilliseconds
            let room = ready.filter { $0.spec.leaseMilliseconds == lease }.reduce(0) { $0 + $1.roomThisRound }
            if !g.candidates.isEmpty {
                let n = min(room, g.candidates.count)
                let ids = Array(g.candidates.prefix(n))
                g.candidates.removeFirst(n)
                for id in ids { g.candidateSet.remove(id) }
                requests.append(ClaimRequest(group: key, runIDs: ids, limit: n, leaseMilliseconds: lease))
            } else if g.scanDue || (g.nextScan.map { $0 <= now } ?? true) {
                g.scanDue = false
                requests.append(ClaimRequest(group: key, runIDs: nil, limit: room, leaseMilliseconds: lease))
            } else {
                continue
            }
            g.claiming = true
            groups[key] = g
        }
        return requests
    }

    /// A task of `key` will be free at `at` (a `fail` committed here): look then, not at the
    /// next periodic scan.
    mutating func freeAt(_ key: GroupKey, _ at: Timestamp) {
        guard var g = groups[key] else { return }
        g.nextScan = g.nextScan.map { min($0, at) } ?? at
        groups[key] = g
    }

    /// A scan of `key` found `free` run ids (a full page when `full`) and the next free time.
    mutating func scanned(_ key: GroupKey, full: Bool, nextFree: Timestamp?, now: Timestamp) {
        guard var g = groups[key] else { return }
        if full { g.scanDue = true }
        let periodic = now.adding(milliseconds: scanIntervalMilliseconds)
        g.nextScan = nextFree.map { min($0, periodic) } ?? periodic
        groups[key] = g
    }

    /// A claim failed (the database): its candidates are tried again after a pause (a scan
    /// finds anything else).
    mutating func claimFailed(_ request: ClaimRequest, now: Timestamp, retryAfterMilliseconds: Int64 = 250) {
        guard var g = groups[request.group] else { return }
        g.claiming = false
        g.scanDue = true
        g.retryAt = now.adding(milliseconds: retryAfterMilliseconds)
        for id in (request.runIDs ?? []).reversed() where !g.candidateSet.contains(id) {
            g.candidates.insert(id, at: 0)
            g.candidateSet.insert(id)
        }
        groups[request.group] = g
    }

    /// Shares out what a claim got: to ready workers with that lease and room, least recently
    /// served first, not to the worker a task expired from while another has room. What nobody
    /// can take now (a worker left during the claim) goes to `releasing`.
    mutating func claimed(_ request: ClaimRequest, _ tasks: [ExternalTask]) -> [(worker: Int, tasks: [ExternalTask])] {
        let key = request.group
        groups[key]?.claiming = false
        var out: [Int: [ExternalTask]] = [:]
        var given: [Int: Int] = [:]
        for task in tasks {
            let runID = task.claim.runID
            handled.insert(runID, task.claim.version)
            let avoid = groups[key]?.avoid.removeValue(forKey: runID)
            let candidates = (groups[key]?.workers ?? []).compactMap { workers[$0] }
                .filter {
                    $0.room > 0 && given[$0.id, default: 0] < Self.claimBatch
                        && $0.spec.leaseMilliseconds == request.leaseMilliseconds
                }
                .sorted { ($0.lastServed, $0.id) < ($1.lastServed, $1.id) }
            guard let chosen = candidates.first(where: { $0.id != avoid }) ?? candidates.first else {
                releasing.append(Release(claim: task.claim, group: key))
                continue
            }
            serveCounter += 1
            workers[chosen.id]!.held.insert(runID)
            workers[chosen.id]!.lastServed = serveCounter
            held[runID] = Held(worker: chosen.id, task: task)
            out[chosen.id, default: []].append(task)
            given[chosen.id, default: 0] += 1
        }
        return out.keys.sorted().map { ($0, out[$0]!) }
    }

    // MARK: Handing over in the transaction

    /// A run about to enter (or be resumed in) an external status in a commit of this
    /// instance: if a ready worker here has room, the task is handed to it in that very
    /// transaction (claim 1, held until `now` + its lease) and is held here from now on.
    /// Returns the worker and the task; `settle` delivers it or takes it back.
    mutating func reserve(_ run: Run, now: Timestamp) -> (worker: Int, task: ExternalTask)? {
        let key = GroupKey(workflow: run.workflow, status: run.status)
        guard let g = groups[key] else { return nil }
        if let h = held[run.runID] {
            // The task this very update answers or closes (the step before): it is done with
            // once the commit is (and if the commit fails, its deadline brings it back).
            guard h.task.claim.version < run.version else { return nil }
            held[run.runID] = nil
            workers[h.worker]?.held.remove(run.runID)
        }
        let chosen = g.workers.compactMap { workers[$0] }.filter { $0.room > 0 }
            .min { ($0.lastServed, $0.id) < ($1.lastServed, $1.id) }
        guard let w = chosen else { return nil }
        let task = ExternalTask(
            claim: TaskClaim(runID: run.runID, version: run.version, claim: 1), run: run, attempt: 1,
            deadline: now.adding(milliseconds: w.spec.leaseMilliseconds))
        serveCounter += 1
        workers[w.id]!.held.insert(run.runID)
        workers[w.id]!.lastServed = serveCounter
        held[run.runID] = Held(worker: w.id, task: task)
        handled.insert(run.runID, run.version)
        return (w.id, task)
    }

    /// The commit of a reserved task is known: committed, it is its worker's (true: deliver it
    /// unless the worker left meanwhile, then it is released); not committed, it never existed.
    mutating func settle(_ task: ExternalTask, committed: Bool) -> Bool {
        let runID = task.claim.runID
        guard let h = held[runID], h.task.claim == task.claim else {
            // Its worker left after the reservation: what was committed must be freed.
            if committed {
                releasing.append(Release(claim: task.claim, group: GroupKey(workflow: task.run.workflow, status: task.run.status)))
            }
            return false
        }
        if committed { return true }
        held[runID] = nil
        workers[h.worker]?.held.remove(runID)
        return false
    }

    // MARK: Answers

    /// The task of `claim` was answered (or its run moved on): its worker has room again.
    /// Returns the worker that held it here, if any.
    @discardableResult
    mutating func finished(_ claim: TaskClaim) -> Int? {
        handled.insert(claim.runID, claim.version)
        guard let h = held[claim.runID], h.task.claim == claim else { return nil }
        held[claim.runID] = nil
        workers[h.worker]?.held.remove(claim.runID)
        return h.worker
    }

    /// The run left the task of `version` (a callback, a timeout, pause, cancel committed here):
    /// a worker holding it here has room again (its answer will be refused).
    mutating func closed(runID: String, version: Int64) {
        handled.insert(runID, version)
        guard let h = held[runID], h.task.claim.version == version else { return }
        held[runID] = nil
        workers[h.worker]?.held.remove(runID)
    }

    /// The deadline of a task held here moved.
    mutating func extended(_ claim: TaskClaim, to deadline: Timestamp) {
        guard held[claim.runID]?.task.claim == claim else { return }
        held[claim.runID]!.task.deadline = deadline
    }

    /// The task as held here under this claim (its run as claimed), if it is.
    func heldTask(_ claim: TaskClaim) -> Held? {
        guard let h = held[claim.runID], h.task.claim == claim else { return nil }
        return h
    }

    /// Every held task, for a graceful stop (they go to `releasing`).
    mutating func releaseAll() {
        for (_, h) in held {
            releasing.append(
                Release(claim: h.task.claim, group: GroupKey(workflow: h.task.run.workflow, status: h.task.run.status)))
        }
        held = [:]
        for id in workers.keys { workers[id]!.held = [] }
    }
}

/// A bounded set of (run id, version), the oldest forgotten first.
struct RecentKeys: Equatable {
    private var ring: [String?]
    private var set: Set<String> = []
    private var next = 0

    init(capacity: Int) { ring = Array(repeating: nil, count: max(1, capacity)) }

    private static func key(_ runID: String, _ version: Int64) -> String { runID + "\u{0}" + String(version) }

    func contains(_ runID: String, _ version: Int64) -> Bool { set.contains(Self.key(runID, version)) }

    mutating func insert(_ runID: String, _ version: Int64) {
        let k = Self.key(runID, version)
        guard set.insert(k).inserted else { return }
        if let old = ring[next] { set.remove(old) }
        ring[next] = k
        next = (next + 1) % ring.count
    }
}

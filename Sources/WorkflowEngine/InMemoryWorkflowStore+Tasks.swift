extension InMemoryWorkflowStore {
    static func taskKey(_ runID: String, _ version: Int64) -> String { runID + "\u{0}" + String(version) }

    /// Opens the task of `run` at its version, free at once (under the lock).
    static func openTask(_ s: inout State, _ run: Run, held: TaskHold? = nil) {
        s.tasks[taskKey(run.runID, run.version)] = TaskRecord(
            runID: run.runID, version: run.version, workflow: run.workflow, foreignID: run.foreignID, status: run.status,
            attempt: 1, claim: held == nil ? 0 : 1, availableAt: held?.deadline ?? run.updatedAt, holder: held?.holder,
            doneClaim: nil, doneStatus: nil)
    }

    /// Applies an update's `closesTask` to the task at its expected version (under the lock;
    /// the claim was checked by the caller).
    static func closeTask(_ s: inout State, _ u: RunUpdate) {
        guard let close = u.closesTask else { return }
        let key = taskKey(u.run.runID, u.expectedVersion)
        guard var t = s.tasks[key], t.isOpen else { return }
        t.holder = nil
        switch close {
        case .withdraw:
            t.availableAt = nil
        case .complete(let claim):
            t.availableAt = nil
            t.doneClaim = claim
            t.doneStatus = u.run.status
        case .retry(_, let at, let attempt):
            t.availableAt = at
            t.attempt = attempt
        }
        s.tasks[key] = t
    }

    public func claimTasks(
        workflow: String, status: Int, runIDs: [String], holder: String, now: Timestamp, deadline: Timestamp
    ) async throws -> [ClaimedTask] {
        let wanted = Set(runIDs)
        return state.withLock { s in
            var out: [ClaimedTask] = []
            for (key, t) in s.tasks {
                guard t.workflow == workflow, t.status == status, wanted.contains(t.runID), let at = t.availableAt,
                    at <= now, let run = s.records[t.runID]
                else { continue }
                guard run.version == t.version, run.status == t.status, run.runState == .initiated || run.runState == .running
                else {
                    s.tasks[key]!.availableAt = nil  // its run has left it: closed, not offered
                    continue
                }
                var claimed = t
                claimed.claim += 1
                claimed.availableAt = deadline
                claimed.holder = holder
                s.tasks[key] = claimed
                out.append(
                    ClaimedTask(
                        claim: TaskClaim(runID: t.runID, version: t.version, claim: claimed.claim), run: run,
                        attempt: t.attempt, deadline: deadline, freeSince: at))
            }
            return out.sorted { ($0.freeSince, $0.claim.runID) < ($1.freeSince, $1.claim.runID) }
        }
    }

    public func freeTasks(workflow: String, status: Int, now: Timestamp, limit: Int) async throws -> (
        runIDs: [String], next: Timestamp?
    ) {
        state.withLock { s in
            let open = s.tasks.values.filter { $0.workflow == workflow && $0.status == status && $0.isOpen }
                .sorted { ($0.availableAt!, $0.runID) < ($1.availableAt!, $1.runID) }
            let due = open.filter { $0.availableAt! <= now }.prefix(limit).map(\.runID)
            return (Array(due), open.first { $0.availableAt! > now }?.availableAt)
        }
    }

    @discardableResult public func releaseTasks(_ claims: [TaskClaim], now: Timestamp) async throws -> Int {
        state.withLock { s in
            var n = 0
            for c in claims {
                let key = Self.taskKey(c.runID, c.version)
                guard var t = s.tasks[key], t.isOpen, t.claim == c.claim, t.holder != nil else { continue }
                t.availableAt = now
                t.holder = nil
                s.tasks[key] = t
                n += 1
            }
            return n
        }
    }

    public func extendTask(_ claim: TaskClaim, until deadline: Timestamp, now: Timestamp) async throws -> Bool {
        state.withLock { s in
            let key = Self.taskKey(claim.runID, claim.version)
            guard var t = s.tasks[key], t.isOpen, t.claim == claim.claim, t.holder != nil else { return false }
            t.availableAt = deadline
            s.tasks[key] = t
            return true
        }
    }

    public func task(runID: String, version: Int64) async throws -> TaskRecord? {
        state.withLock { $0.tasks[Self.taskKey(runID, version)] }
    }

    public func openMissingTasks(workflow: String, status: Int, now: Timestamp) async throws -> Int {
        state.withLock { s in
            var n = 0
            for run in s.records.values
            where run.workflow == workflow && run.status == status && (run.runState == .initiated || run.runState == .running)
                && s.tasks[Self.taskKey(run.runID, run.version)] == nil
            {
                var r = run
                r.updatedAt = now
                Self.openTask(&s, r)
                n += 1
            }
            return n
        }
    }

    public func taskCounts(workflow: String, status: Int, now: Timestamp) async throws -> TaskCount {
        state.withLock { s in
            var c = TaskCount(workflow: workflow, status: status, waiting: 0, held: 0, scheduled: 0, oldestWaiting: nil)
            for t in s.tasks.values where t.workflow == workflow && t.status == status {
                guard let at = t.availableAt else { continue }
                if at <= now {
                    c.waiting += 1
                    c.oldestWaiting = c.oldestWaiting.map { min($0, at) } ?? at
                } else if t.holder != nil {
                    c.held += 1
                } else {
                    c.scheduled += 1
                }
            }
            return c
        }
    }
}

/// One offer of the task of an external step: the run, the version whose step it is, and the
/// claim number, which grows each time the task is given to a worker. A worker's answer names
/// all three, so an answer to an older offer (the task was offered again meanwhile) is refused.
public struct TaskClaim: Sendable, Hashable, CustomStringConvertible {
    public var runID: String
    public var version: Int64
    public var claim: Int64

    public init(runID: String, version: Int64, claim: Int64) {
        self.runID = runID
        self.version = version
        self.claim = claim
    }

    /// The task id on the wire: `<run_id>/<version>/<claim>` (opaque to clients).
    public var text: String { "\(runID)/\(version)/\(claim)" }
    public var description: String { text }

    /// Parses `text`; nil for anything this server did not issue.
    public init?(text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 3, let claim = Int64(parts[parts.count - 1]), claim >= 1,
            let version = Int64(parts[parts.count - 2]), version >= 1
        else { return nil }
        let runID = parts[0..<(parts.count - 2)].joined(separator: "/")
        guard !runID.isEmpty else { return nil }
        self.init(runID: runID, version: version, claim: claim)
    }

    /// The key a worker passes to outside services: the same for every offer of one step of one
    /// run (`<run_id>:<version>`, as a built-in step's `StepInput.idempotencyKey`).
    public var idempotencyKey: String { "\(runID):\(version)" }
}

/// A task opened already held: by whom and until when (`RunUpdate.opensHeld`).
public struct TaskHold: Sendable, Equatable {
    public var holder: String
    public var deadline: Timestamp
    public init(holder: String, deadline: Timestamp) {
        self.holder = holder
        self.deadline = deadline
    }
}

/// How an update ends the open task of the step at its `expectedVersion`.
public enum TaskClose: Sendable, Equatable {
    /// The run leaves the status (or stops running) some other way: a timeout, a callback,
    /// pause, cancel. Whoever holds the task can no longer answer it.
    case withdraw
    /// A worker answered under `claim`: the task is closed and the answer recorded, so a repeat
    /// of the same answer is recognised. Refused (the update is a conflict) unless `claim` is
    /// the task's current claim and the task is still open.
    case complete(claim: Int64)
    /// A worker's `fail` under `claim`, with retries left: the task is free again at
    /// `availableAt` as attempt `attempt`. Conditional on the claim like `complete`.
    case retry(claim: Int64, availableAt: Timestamp, attempt: Int)
}

/// A task as stored (`workflow_tasks`): one row per (run, version) whose status is external.
public struct TaskRecord: Sendable, Equatable {
    public var runID: String
    public var version: Int64
    public var workflow: String
    public var foreignID: String
    public var status: Int
    /// 1 for the first offer of this step; grows with each `fail`.
    public var attempt: Int
    /// The current claim (0: never offered).
    public var claim: Int64
    /// When it may be given to a worker: now or earlier when free, the deadline while held,
    /// the retry time after a `fail`; nil once the task is closed.
    public var availableAt: Timestamp?
    /// The claim batch that holds it (`<instance>#<n>`), nil when free or closed.
    public var holder: String?
    /// The claim whose answer closed it, and the status it chose (nil when withdrawn or open).
    public var doneClaim: Int64?
    public var doneStatus: Int?

    public init(
        runID: String, version: Int64, workflow: String, foreignID: String, status: Int, attempt: Int, claim: Int64,
        availableAt: Timestamp?, holder: String?, doneClaim: Int64?, doneStatus: Int?
    ) {
        self.runID = runID
        self.version = version
        self.workflow = workflow
        self.foreignID = foreignID
        self.status = status
        self.attempt = attempt
        self.claim = claim
        self.availableAt = availableAt
        self.holder = holder
        self.doneClaim = doneClaim
        self.doneStatus = doneStatus
    }

    public var isOpen: Bool { availableAt != nil }
}

/// A task just claimed for a worker, with its run as stored.
public struct ClaimedTask: Sendable, Equatable {
    public var claim: TaskClaim
    public var run: Run
    public var attempt: Int
    public var deadline: Timestamp
    /// When it became free (opened, released, retry time, or an earlier holder's deadline).
    public var freeSince: Timestamp

    public init(claim: TaskClaim, run: Run, attempt: Int, deadline: Timestamp, freeSince: Timestamp) {
        self.claim = claim
        self.run = run
        self.attempt = attempt
        self.deadline = deadline
        self.freeSince = freeSince
    }
}

/// Open tasks of one external status, as counted by the database.
public struct TaskCount: Sendable, Equatable {
    public var workflow: String
    public var status: Int
    /// Free now (no worker has them).
    public var waiting: Int
    /// Held by a worker until a deadline still ahead.
    public var held: Int
    /// Waiting for the time of their next offer (after a `fail`).
    public var scheduled: Int
    /// Since when the longest-waiting free one has been free (its `availableAt`).
    public var oldestWaiting: Timestamp?

    public init(workflow: String, status: Int, waiting: Int, held: Int, scheduled: Int, oldestWaiting: Timestamp?) {
        self.workflow = workflow
        self.status = status
        self.waiting = waiting
        self.held = held
        self.scheduled = scheduled
        self.oldestWaiting = oldestWaiting
    }
}

/// The tasks of external steps. They are opened and closed by `RecordStore.update` and
/// `create` (in the transaction of the change, like outbox rows); this protocol claims, frees,
/// extends and reads them. Every write is conditional, so two instances never hold one task.
public protocol TaskStore: Sendable {
    /// Claims the open tasks of these runs in (workflow, status) that are free at `now`, for
    /// `holder` until `deadline`; each claim raises the task's claim number. Returns what this
    /// call claimed, with the runs as stored. A task another instance claimed first is not
    /// returned.
    func claimTasks(
        workflow: String, status: Int, runIDs: [String], holder: String, now: Timestamp, deadline: Timestamp
    ) async throws -> [ClaimedTask]
    /// Run ids of open tasks of (workflow, status) free at `now`, the longest-free first (at
    /// most `limit`), and the earliest later time at which another one becomes free (a held
    /// task's deadline, a retry time), if any.
    func freeTasks(workflow: String, status: Int, now: Timestamp, limit: Int) async throws -> (
        runIDs: [String], next: Timestamp?
    )
    /// Frees these claims at once (their worker is gone), where they are still current and open.
    /// Returns how many were freed.
    @discardableResult func releaseTasks(_ claims: [TaskClaim], now: Timestamp) async throws -> Int
    /// Moves the deadline of an open task held under `claim`; false when the claim is no longer
    /// current or the task is closed.
    func extendTask(_ claim: TaskClaim, until deadline: Timestamp, now: Timestamp) async throws -> Bool
    /// The task of (run, version), open or closed; nil when the run never had one there.
    func task(runID: String, version: Int64) async throws -> TaskRecord?
    /// Opens the task of every runnable run in (workflow, status) that has none at its version:
    /// runs that were already waiting there when the status became external (an upgrade, a
    /// change of `--external-steps`). Idempotent; returns how many it opened.
    func openMissingTasks(workflow: String, status: Int, now: Timestamp) async throws -> Int
    /// The open tasks of one external status, counted.
    func taskCounts(workflow: String, status: Int, now: Timestamp) async throws -> TaskCount
}
